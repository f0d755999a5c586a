package e2e

import (
	"net/http"
	"testing"
	"time"
)

// DELETE gives the slot back at once: the ticket waiting behind it is admitted.
func TestCancelGivesBackTheSlot(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1})
	s.dumpLogsOnFailure()
	s.putObject("f.bin", randomBytes(1<<20, 5))
	s.startAll(1)

	first := s.request("f.bin")
	firstLink := s.follow(first.ID, 10*time.Second) // holds the only slot, unused
	second := s.request("f.bin")
	time.Sleep(500 * time.Millisecond)
	if tk := s.ticket(second.ID); tk.Status != "queued" || tk.Position != 0 {
		t.Fatalf("second ticket should wait at the front: %+v", tk)
	}
	req, _ := http.NewRequest(http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+first.ID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", err, resp)
	}
	if tk := s.ticket(first.ID); tk.Status != "canceled" {
		t.Fatalf("canceled ticket is %q", tk.Status)
	}
	// Its link is gone for HEAD as for GET.
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		linkReq, _ := http.NewRequest(method, firstLink, nil)
		r, err := http.DefaultClient.Do(linkReq)
		if err != nil || r.StatusCode != http.StatusGone {
			t.Errorf("%s on a canceled ticket's link: %v %v, want 410", method, err, r)
		}
		if r != nil {
			r.Body.Close()
		}
	}
	start := time.Now()
	s.follow(second.ID, 5*time.Second)
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("the freed slot took %s to reach the next ticket", waited)
	}
	// Canceling again is harmless; canceling an ended ticket is a conflict.
	if r, _ := http.DefaultClient.Do(req); r.StatusCode != http.StatusOK {
		t.Errorf("second DELETE: %d", r.StatusCode)
	}
}

// An admitted ticket whose link is never used expires with its link; its slot comes
// back and the ticket answers 410 from then on.
func TestUnusedLinkExpires(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1, Env: []string{"SLUICE_TOKEN_TTL=1s"}})
	s.dumpLogsOnFailure()
	s.putObject("f.bin", randomBytes(1<<10, 6))
	s.startAll(1)

	tk := s.request("f.bin")
	link := s.follow(tk.ID, 10*time.Second)
	next := s.request("f.bin")
	expired := s.waitStatus(tk.ID, "expired", 5*time.Second)
	if expired.Error == "" {
		t.Error("an expired ticket should say why")
	}
	if r, _ := noRedirect.Get(s.ingressURL + "/api/v1/tickets/" + tk.ID + "/download"); r.StatusCode != http.StatusGone {
		t.Errorf("/download of an expired ticket: %d, want 410", r.StatusCode)
	}
	if r, _ := http.Get(link); r.StatusCode != http.StatusGone {
		t.Errorf("expired link: %d, want 410", r.StatusCode)
	}
	// The slot came back: the next ticket is admitted.
	s.follow(next.ID, 5*time.Second)
}
