package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// One client cannot fill the queue: past --ticket-burst tickets at once it gets 429 with
// Retry-After and its refused requests queue nothing; the count is per API key (per
// address without one) and shared by every ingress; after the Retry-After delay the
// client is served again.
func TestAdmissionTicketRateLimitPerClient(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1,
		Env: []string{"SLUICE_TICKET_RATE=30", "SLUICE_TICKET_BURST=3"}}) // one every 2 s after the burst
	s.putObject("r.bin", randomBytes(1024, 7))
	s.start("worker")
	s.start("ingress")
	first := s.ingressURL
	s.start("ingress")
	second := s.ingressURL
	_, keyA := s.createKey("client", "acme")
	_, keyB := s.createKey("client", "acme") // same tenant, another client

	post := func(url, key string) (int, http.Header, string) {
		code, h, raw := call(t, http.MethodPost, url+"/api/v1/downloads", key, map[string]string{"object": "r.bin"})
		return code, h, string(raw)
	}
	// The burst, spread over both ingresses.
	for i, url := range []string{first, second, first} {
		if code, _, body := post(url, keyA); code != http.StatusAccepted {
			t.Fatalf("ticket %d of the burst: %d %s", i+1, code, body)
		}
	}
	queued := s.admissionStats().Backlog
	code, h, body := post(second, keyA)
	if code != http.StatusTooManyRequests || !strings.Contains(body, `"code":"rate_limited"`) || !strings.Contains(body, "at most 30 per minute after a burst of 3") {
		t.Fatalf("ticket past the burst: %d %s, want 429 rate_limited saying the rate", code, body)
	}
	retry, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 2 {
		t.Fatalf("Retry-After %q, want 1 or 2 s (30 tickets a minute)", h.Get("Retry-After"))
	}
	if st := s.admissionStats(); st.Backlog != queued {
		t.Fatalf("a refused ticket changed the backlog: %d, was %d", st.Backlog, queued)
	}
	// Another key of the same tenant, and an anonymous client, are not held back.
	if code, _, body := post(first, keyB); code != http.StatusAccepted {
		t.Fatalf("another client's ticket: %d %s", code, body)
	}
	if code, _, body := post(first, ""); code != http.StatusAccepted {
		t.Fatalf("an anonymous ticket: %d %s", code, body)
	}
	// After the Retry-After delay, the limited client is served again.
	time.Sleep(time.Duration(retry) * time.Second)
	if code, _, body := post(first, keyA); code != http.StatusAccepted {
		t.Fatalf("after Retry-After: %d %s", code, body)
	}
	// Anonymous clients are counted by address: its burst (3, one used above, plus at
	// most one more earned while the test slept) runs out too.
	accepted := 1
	for accepted <= 5 {
		code, _, body := post(second, "")
		if code == http.StatusTooManyRequests {
			break
		}
		if code != http.StatusAccepted {
			t.Fatalf("anonymous ticket: %d %s", code, body)
		}
		accepted++
	}
	if accepted < 3 || accepted > 4 {
		t.Fatalf("an anonymous address took %d tickets before 429, want its burst of 3 (4 with the one earned meanwhile)", accepted)
	}
	// The one URL for plain clients takes tickets too, under the same count.
	if code, h, raw := call(t, http.MethodGet, first+"/api/v1/files/r.bin", "", nil); code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("GET /api/v1/files past the limit: %d %s, want 429 with Retry-After", code, raw)
	}
}
