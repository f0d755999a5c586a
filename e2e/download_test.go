package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The whole path, as a client lives it: request, poll, follow the redirect, download,
// and the ticket ends done.
func TestDownloadFlow(t *testing.T) {
	for _, tc := range []struct {
		name string
		s3   bool
	}{{"minio", true}, {"local-disk", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{S3: tc.s3})
			s.dumpLogsOnFailure()
			data := randomBytes(9<<20+123, 1)
			s.putObject("releases/v1.0/sluice-linux-amd64.tar.gz", data)
			s.startAll(1)

			tk := s.request("releases/v1.0/sluice-linux-amd64.tar.gz")
			// With a slot free, the worker may admit it before the POST is answered.
			if fresh := tk.Status == "queued" || tk.Status == "admitting" || tk.Status == "ready"; !fresh || tk.Size != int64(len(data)) || len(tk.ID) < 20 {
				t.Fatalf("new ticket: %+v", tk)
			}
			link := s.follow(tk.ID, 10*time.Second)
			if !strings.HasPrefix(link, s.edgeURL+"/d/") {
				t.Fatalf("download link %q does not start with the public edge URL", link)
			}
			ready := s.ticket(tk.ID)
			if ready.Status != "ready" || ready.DownloadURL != link || ready.ExpiresAt == nil || ready.ExpiresAt.Before(time.Now()) {
				t.Fatalf("ready ticket: %+v", ready)
			}

			head, err := http.Head(link)
			if err != nil || head.StatusCode != http.StatusOK || head.ContentLength != int64(len(data)) {
				t.Fatalf("HEAD link: %v %+v", err, head)
			}
			sum, n, resp := download(t, link)
			if sum != sha(data) || n != int64(len(data)) {
				t.Fatalf("downloaded %d bytes with sha256 %s, want %d bytes %s", n, sum, len(data), sha(data))
			}
			for h, want := range map[string]string{
				"Content-Length":      fmt.Sprint(len(data)),
				"Accept-Ranges":       "bytes",
				"Content-Disposition": `attachment; filename="sluice-linux-amd64.tar.gz"`,
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
			if resp.Header.Get("ETag") == "" || resp.Header.Get("Content-Type") == "" {
				t.Errorf("missing ETag or Content-Type: %v", resp.Header)
			}
			done := s.waitStatus(tk.ID, "done", 10*time.Second)
			if done.BytesSent != int64(len(data)) {
				t.Errorf("done ticket reports %d bytes sent, want %d", done.BytesSent, len(data))
			}
			// A finished ticket's link and redirect are gone.
			if r, _ := noRedirect.Get(s.ingressURL + "/api/v1/tickets/" + tk.ID + "/download"); r.StatusCode != http.StatusGone {
				t.Errorf("/download of a done ticket: %d, want 410", r.StatusCode)
			}
			if r, _ := http.Get(link); r.StatusCode != http.StatusGone {
				t.Errorf("link of a done ticket: %d, want 410", r.StatusCode)
			}
			if r, _ := http.Head(link); r.StatusCode != http.StatusGone {
				t.Errorf("HEAD on the link of a done ticket: %d, want 410 as GET", r.StatusCode)
			}
		})
	}
}

// Ranges through the real edge and store: a resumed download is byte-exact.
func TestRangesThroughEdge(t *testing.T) {
	s := newStack(t, stackOptions{S3: true})
	s.dumpLogsOnFailure()
	data := randomBytes(3<<20, 2)
	s.putObject("r.bin", data)
	s.startAll(1)
	link := s.follow(s.request("r.bin").ID, 10*time.Second)

	get := func(rng string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, link, nil)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := get("bytes=1000-1999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, data[1000:2000]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(data)) {
		t.Fatalf("middle range: %d %q %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(b))
	}
	resp, b = get("bytes=-10")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, data[len(data)-10:]) {
		t.Fatalf("suffix range: %d", resp.StatusCode)
	}
	resp, _ = get(fmt.Sprintf("bytes=%d-", len(data)+5))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
		t.Fatalf("range past the end: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	// Resume: the first half, then the rest, assemble the object exactly.
	_, first := get("bytes=0-1048575")
	_, rest := get("bytes=1048576-")
	if sha(append(first, rest...)) != sha(data) {
		t.Fatal("resumed download does not match the object")
	}
}

// Bad input gets a clear 4xx and changes nothing; forged and tampered links get 403.
func TestBadInput(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.putObject("ok.txt", []byte("fine"))
	s.startAll(1)

	post := func(body string) (int, string) {
		resp, err := http.Post(s.ingressURL+"/api/v1/downloads", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	long := strings.Repeat("a", 1100)
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"object": "../etc/passwd"}`, 400},
		{`{"object": "a/../../b"}`, 400},
		{`{"object": "/etc/passwd"}`, 400},
		{`{"object": ""}`, 400},
		{`{"object": "` + long + `"}`, 400},
		{"{\"object\": \"bad\xff\xfeutf8\"}", 400},
		{`{"object": "a\u0000b"}`, 400},
		{`{"object": 42}`, 400},
		{`not json`, 400},
		{`{"object": "missing.txt"}`, 404},
	} {
		code, body := post(tc.body)
		if code != tc.want || !strings.Contains(body, `"error"`) || !strings.Contains(body, `"hint"`) {
			t.Errorf("POST %.60q: %d %s, want %d with a JSON error and hint", tc.body, code, body, tc.want)
		}
	}
	for _, path := range []string{"/api/v1/tickets/nope", "/api/v1/tickets/t" + strings.Repeat("a", 26)} {
		if r, _ := http.Get(s.ingressURL + path); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, r.StatusCode)
		}
	}
	// Tokens: forged, truncated, tampered.
	link := s.follow(s.request("ok.txt").ID, 10*time.Second)
	token := strings.TrimPrefix(link, s.edgeURL+"/d/")
	token = token[:strings.IndexByte(token, '/')]
	tampered := []byte(token)
	tampered[len(tampered)/2] ^= 1
	for _, bad := range []string{"garbage", token[:len(token)-3], string(tampered), "k1." + strings.Repeat("A", 40) + ".AAAA"} {
		if r, _ := http.Get(s.edgeURL + "/d/" + bad); r.StatusCode != http.StatusForbidden {
			t.Errorf("token %.20q…: %d, want 403", bad, r.StatusCode)
		}
	}
	if sum, _, _ := download(t, link); sum != sha([]byte("fine")) {
		t.Fatal("the genuine link stopped working")
	}
}

// NATS unreachable: 503 with Retry-After, fast, never a hang; back by itself.
func TestQueueOutage(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.putObject("ok.txt", []byte("fine"))
	s.startAll(1)
	s.nats.Stop()
	start := time.Now()
	resp, err := http.Post(s.ingressURL+"/api/v1/downloads", "application/json", strings.NewReader(`{"object":"ok.txt"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || time.Since(start) > time.Second {
		t.Fatalf("with NATS down: %d Retry-After=%q after %s, want a fast 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start))
	}
	if r, _ := http.Get(s.ingressURL + "/readyz"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with NATS down: %d", r.StatusCode)
	}
	s.nats.Restart(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Post(s.ingressURL+"/api/v1/downloads", "application/json", strings.NewReader(`{"object":"ok.txt"}`))
		if err == nil && resp.StatusCode == http.StatusAccepted {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ingress did not recover after NATS came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// slowRead downloads link at about rate bytes/s and reports the sha256.
func slowRead(url string, chunk int, pause time.Duration) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET link: %d", resp.StatusCode)
	}
	var out bytes.Buffer
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		out.Write(buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		time.Sleep(pause)
	}
}

// watchSlots samples the ledger's held slots until stop and returns the most seen.
func watchSlots(t *testing.T, s *stack, stop <-chan struct{}) func() int64 {
	rdb := s.redis.Client(t)
	var most atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := rdb.ZCount(t.Context(), "sluice:{adm}:slots", fmt.Sprint(time.Now().UnixMilli()), "+inf").Result()
			if err == nil && n > most.Load() {
				most.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	return func() int64 { wg.Wait(); return most.Load() }
}

// The global limit holds across several workers: 20 slow downloads, limit 2.
func TestGlobalLimitAcrossWorkers(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 2})
	s.dumpLogsOnFailure()
	data := randomBytes(256<<10, 3)
	s.putObject("slow.bin", data)
	s.startAll(3)

	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	var ids []string
	for i := range 20 {
		tk := s.request("slow.bin")
		ids = append(ids, tk.ID)
		wg.Go(func() {
			link := s.follow(tk.ID, 60*time.Second)
			body, err := slowRead(link, 64<<10, 40*time.Millisecond)
			if err == nil && sha(body) != sha(data) {
				err = fmt.Errorf("download %d corrupted", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	close(stop)
	// Admitted = holding a slot in the ledger. (A client-side count would overstate it:
	// the edge is done, and the slot free, once the last bytes sit in socket buffers.)
	if most := mostSlots(); most != 2 {
		t.Errorf("at most %d slots were held at once, want the limit 2 reached and never exceeded", most)
	}
	for _, id := range ids {
		s.waitStatus(id, "done", 5*time.Second)
	}
}

// kill -9 a worker holding tickets: another worker takes them over and every ticket is
// still served; a redelivered ticket never gets a second slot.
func TestWorkerKilledMidTicket(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1})
	s.dumpLogsOnFailure()
	s.putObject("f.bin", randomBytes(64<<10, 4))
	s.start("edge")
	first := s.start("worker")
	s.start("ingress")

	var ids []string
	for range 5 {
		ids = append(ids, s.request("f.bin").ID)
	}
	link := s.follow(ids[0], 10*time.Second)
	// The first worker holds all five messages; kill it without a chance to hand back.
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)
	s.start("worker")

	download(t, link)
	for _, id := range ids[1:] {
		l := s.follow(id, 30*time.Second)
		if sum, _, _ := download(t, l); sum != sha(randomBytes(64<<10, 4)) {
			t.Fatalf("ticket %s downloaded wrong bytes", id)
		}
		s.waitStatus(id, "done", 5*time.Second)
	}
	close(stop)
	if most := mostSlots(); most > 1 {
		t.Errorf("%d slots held at once under a limit of 1 while tickets were redelivered", most)
	}
}
