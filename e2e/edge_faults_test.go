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
	// Requests fail through to the dead store (each as slow as its connection attempt)
	// until the breaker opens; the edge's /metrics says when it has.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the breaker never opened while MinIO was down")
		}
		if st, retry := getStatus(t, link); st != http.StatusServiceUnavailable || retry == "" {
			t.Fatalf("with MinIO down: %d Retry-After=%q, want 503 with Retry-After", st, retry)
		}
		if m, _ := scrape(t, s.edgeMetricsURL+"/metrics"); m[`sluice_breaker_state{breaker="objects",state="open"}`] == 1 {
			break
		}
	}
	// Open, it answers at once (it stays open for 5 s, far longer than these take).
	for range 10 {
		start := time.Now()
		st, retry := getStatus(t, link)
		if took := time.Since(start); st != http.StatusServiceUnavailable || retry == "" || took >= 50*time.Millisecond {
			t.Fatalf("with the breaker open: %d Retry-After=%q in %s, want 503 with Retry-After in under 50ms", st, retry, took)
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
