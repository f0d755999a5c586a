package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// MinIO goes down: once the breaker is open the edge answers 503 + Retry-After in
// under 50 ms; clients that hang up never trip the breaker; and downloads work again
// by themselves when MinIO is back.
func TestStorageOutageAtTheEdge(t *testing.T) {
	s := newStack(t, stackOptions{S3: true})
	s.dumpLogsOnFailure()
	data := randomBytes(8<<20, 51)
	s.putObject("pkg.deb", data)
	s.startAll(1)

	// Clients that give up at every moment of a request: before the answer, during
	// the store calls, mid-body. None of it may count against the store.
	_, churn := s.link("pkg.deb")
	for i := range 40 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Duration(i)*250*time.Microsecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, churn, nil)
		req.Header.Set("Range", "bytes=0-1048575") // never the whole object: the ticket stays open
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.CopyN(io.Discard, resp.Body, 64<<10)
			resp.Body.Close()
		}
		cancel()
	}
	_, link := s.link("pkg.deb")
	if st, _ := getStatus(t, link, "Range", "bytes=0-0"); st != http.StatusPartialContent {
		t.Fatalf("after 40 client hang-ups the edge answers %d: the breaker must not have tripped", st)
	}

	s.minio.Stop()
	var fast int
	deadline := time.Now().Add(30 * time.Second)
	for fast < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the edge never answered fast while MinIO was down")
		}
		start := time.Now()
		st, retry := getStatus(t, link)
		took := time.Since(start)
		if st != http.StatusServiceUnavailable || retry == "" {
			t.Fatalf("with MinIO down: %d Retry-After=%q, want 503 with Retry-After", st, retry)
		}
		if took < 50*time.Millisecond {
			fast++
		} else if fast > 0 {
			t.Fatalf("a 503 took %s once the breaker was open, want under 50ms", took)
		}
	}

	s.minio.Start(t)
	eventually(t, 30*time.Second, "downloads work again after MinIO came back", func() bool {
		st, _ := getStatus(t, link, "Range", "bytes=0-0")
		return st == http.StatusPartialContent
	})
	if sum, n, _ := download(t, link); sum != sha(data) {
		t.Fatalf("after recovery: %d bytes that do not match", n)
	}
}
