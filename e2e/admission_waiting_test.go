package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Abandonment, with real processes: a queued ticket nobody polls is dropped before it
// is admitted and does not hold up the ticket behind it; an admitted ticket whose link
// is never used gives its slot back when the link lapses (SLUICE_TOKEN_TTL); DELETE
// gives it back at once.
func TestAdmissionAbandonedTicketsNeverHoldUpOthers(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1,
		Env: []string{"SLUICE_ABANDON_AFTER=2s", "SLUICE_TOKEN_TTL=4s"}})
	s.putObject("a.bin", randomBytes(8<<10, 34))
	s.startAll(2)
	rdb := s.redis.Client(t)
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)

	unused := s.request("a.bin")
	s.follow(unused.ID, 10*time.Second) // admitted; its link is never used
	silent := s.request("a.bin")        // its client goes away at once
	polled := s.request("a.bin")        // its client keeps polling
	keepPolling := func(id string) func() {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(300 * time.Millisecond):
				}
				if r, err := http.Get(s.ingressURL + "/api/v1/tickets/" + id); err == nil {
					r.Body.Close()
				}
			}
		})
		return func() { close(done); wg.Wait() }
	}
	stopPolling := keepPolling(polled.ID)
	defer stopPolling()
	silentAt := time.Now()

	// The silent ticket (not polled for more than 2 s) leaves the queue while the
	// unused link still holds the only slot: the polled one moves to the front.
	time.Sleep(time.Until(silentAt.Add(2500 * time.Millisecond)))
	if d := ledgerTicket(t, rdb, silent.ID); d["status"] != "expired" { // read from Redis: a GET would count as a poll
		t.Errorf("2.5 s after its last poll the silent ticket is %q, want expired", d["status"])
	}
	if tk := s.ticket(polled.ID); tk.Status != "queued" || tk.Position != 0 {
		t.Errorf("the ticket behind the abandoned one: %s at position %d, want queued at 0", tk.Status, tk.Position)
	}
	if u := ledgerTicket(t, rdb, unused.ID); u["status"] != "ready" {
		t.Fatalf("the unused link's ticket is %q, want still ready (4 s link): the check above proves nothing", u["status"])
	}

	// The unused link lapses after 4 s: its slot comes back and the polled ticket is
	// admitted at once.
	expired := s.waitStatus(unused.ID, "expired", 8*time.Second)
	if !strings.Contains(expired.Error, "not used") {
		t.Errorf("the unused link's ticket should say why it expired: %q", expired.Error)
	}
	ready := s.waitStatus(polled.ID, "ready", 3*time.Second)
	dropped := s.ticket(silent.ID)
	if dropped.Status != "expired" || !strings.Contains(dropped.Error, "not polled") {
		t.Errorf("the ticket nobody polled: %+v, want expired because it was not polled", dropped)
	}
	u, p, d := ledgerTicket(t, rdb, unused.ID), ledgerTicket(t, rdb, polled.ID), ledgerTicket(t, rdb, silent.ID)
	if d["epoch"] != "" {
		t.Errorf("the abandoned ticket was admitted (epoch %s) before it was dropped", d["epoch"])
	}
	lapsed, _ := strconv.ParseInt(u["ended_ms"], 10, 64)
	readyAt, _ := strconv.ParseInt(p["ready_ms"], 10, 64)
	linkLife := lapsed - mustMillis(t, u["ready_ms"])
	t.Logf("unused link: slot back %d ms after it was issued (TOKEN_TTL 4s); next polled ticket ready %d ms later",
		linkLife, readyAt-lapsed)
	if linkLife < 3900 || linkLife > 5000 {
		t.Errorf("an unused link's slot came back %d ms after it was issued, want at its 4 s expiry", linkLife)
	}
	if readyAt-lapsed > 1000 {
		t.Errorf("the ticket behind the abandoned one waited %d ms after the slot came back", readyAt-lapsed)
	}
	if r, _ := http.Get(s.ingressURL + "/api/v1/tickets/" + silent.ID + "/download"); r.StatusCode != http.StatusGone {
		t.Errorf("/download of a dropped ticket: %d, want 410", r.StatusCode)
	}

	// DELETE gives the slot back at once.
	next := s.request("a.bin")
	stopNext := keepPolling(next.ID)
	defer stopNext()
	time.Sleep(300 * time.Millisecond)
	if tk := s.ticket(next.ID); tk.Status != "queued" || tk.Position != 0 {
		t.Fatalf("next ticket should wait at the front: %+v", tk)
	}
	if code, _, body := call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+ready.ID, "", nil); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	canceled := time.Now()
	s.waitStatus(next.ID, "ready", 2*time.Second)
	t.Logf("DELETE: the next ticket was ready %s later", time.Since(canceled).Round(time.Millisecond))
	close(stop)
	if most := mostSlots(); most > 1 {
		t.Errorf("%d slots held at once under a limit of 1", most)
	}
}

func mustMillis(t *testing.T, v string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("ledger time %q: %v", v, err)
	}
	return n
}

// Pause and resume: while paused nothing is admitted, even into free slots; queued
// tickets keep their place and their clients keep getting answers (position,
// Retry-After, and no wait estimate, since none can be honest until an operator
// resumes); the autoscaling signal says there is nothing to admit. Resume admits them
// in their order.
func TestAdmissionPauseKeepsPlaces(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.putObject("p.bin", randomBytes(8<<10, 35))
	s.startAll(2)
	rdb := s.redis.Client(t)

	// A few completed downloads so that waits can be estimated.
	for range 4 {
		link := s.follow(s.request("p.bin").ID, 10*time.Second)
		download(t, link)
		time.Sleep(400 * time.Millisecond)
	}
	holder := s.request("p.bin")
	s.follow(holder.ID, 10*time.Second)
	var queued []string
	for range 4 {
		queued = append(queued, s.request("p.bin").ID)
	}
	for i, id := range queued {
		if tk := s.ticket(id); tk.Status != "queued" || tk.Position != int64(i) || !tk.ETAKnown {
			t.Fatalf("before pausing, ticket %d: %+v, want queued at position %d with a known estimate", i, tk, i)
		}
	}

	s.operator(http.MethodPost, "/api/v1/admin/pause", nil, nil)
	call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+holder.ID, "", nil) // a free slot
	late := s.request("p.bin")
	queued = append(queued, late.ID)
	time.Sleep(1500 * time.Millisecond)
	for i, id := range queued {
		code, h, raw := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+id, "", nil)
		tk := s.ticket(id)
		if code != 200 || tk.Status != "queued" || tk.Position != int64(i) || !strings.Contains(string(raw), `"paused":true`) {
			t.Errorf("paused, ticket %d: %d %s, want queued at position %d, saying admission is paused", i, code, raw, i)
		}
		if tk.ETAKnown {
			t.Errorf("paused, ticket %d claims a known wait of %d s", i, tk.ETASeconds)
		}
		if ra, _ := strconv.Atoi(h.Get("Retry-After")); ra < 1 {
			t.Errorf("paused, ticket %d: Retry-After %q", i, h.Get("Retry-After"))
		}
	}
	if live, _ := slotsHeld(t, rdb); live != 0 {
		t.Errorf("%d slots taken while paused", live)
	}
	st := s.admissionStats()
	if !st.Paused || st.Backlog != 5 || st.Admissible != 0 {
		t.Errorf("paused stats: %+v, want paused, backlog 5, admissible backlog 0", st)
	}
	// The scaling signal is exported for autoscalers too (ledger figures are read at
	// scrape time, at most once a second).
	eventually(t, 3*time.Second, "paused figures on the ingress /metrics", func() bool {
		m, _ := scrape(t, s.ingressURL+"/metrics")
		return m["sluice_queue_backlog_tickets"] == 5 && m["sluice_queue_admissible_backlog_tickets"] == 0 &&
			m["sluice_admission_paused"] == 1
	})

	s.operator(http.MethodPost, "/api/v1/admin/resume", nil, nil)
	resumed := time.Now()
	s.waitStatus(queued[0], "ready", 2*time.Second)
	t.Logf("resume: the first ticket was ready %s later", time.Since(resumed).Round(time.Millisecond))
	if tk := s.ticket(queued[1]); tk.Position != 0 || !tk.ETAKnown {
		t.Errorf("after resume, the next ticket: %+v, want position 0 with a known estimate", tk)
	}
	eventually(t, 3*time.Second, "the admissible backlog once resumed", func() bool {
		m, _ := scrape(t, s.ingressURL+"/metrics")
		return m["sluice_queue_admissible_backlog_tickets"] == 0 && m["sluice_admission_paused"] == 0 &&
			m["sluice_queue_backlog_tickets"] == 4
	})
	// The rest follow in their order as slots free up.
	prev := epochOf(t, rdb, queued[0])
	for _, id := range queued[1:] {
		call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+ledgerHolder(t, s, queued), "", nil)
		s.waitStatus(id, "ready", 2*time.Second)
		if e := epochOf(t, rdb, id); e <= prev {
			t.Errorf("ticket admitted out of order after resume")
		} else {
			prev = e
		}
	}
}

// ledgerHolder returns the one ticket of ids that holds a ready link.
func ledgerHolder(t *testing.T, s *stack, ids []string) string {
	t.Helper()
	for id, st := range statuses(t, s.redis.Client(t), ids) {
		if st == "ready" {
			return id
		}
	}
	t.Fatal("no ticket holds the slot")
	return ""
}
