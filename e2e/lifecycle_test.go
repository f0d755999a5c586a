package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// Every role is sent SIGTERM while clients create tickets and download: each goes
// unready at once and keeps serving for the drain delay, exits 0 within its deadline,
// workers hand their ticket messages back to the stream, a download running on the
// edge completes, and after the restarts every accepted ticket ends done.
func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	const drain, wait = 2 * time.Second, 5 * time.Second
	limit := drain + wait + 5*time.Second // the deadline, with room for a loaded machine
	s := newStack(t, stackOptions{GlobalLimit: 3, Env: []string{
		"SLUICE_DRAIN_DELAY=" + drain.String(),
		"SLUICE_SHUTDOWN_WAIT=" + wait.String(),
		// A held ticket message can then come back within the test only by hand-back.
		"SLUICE_ACK_WAIT=60s", "SLUICE_TICKET_ACK_WAIT=60s",
		"SLUICE_LOG_LEVEL=info",
		"SLUICE_ADMIN_KEY=" + lifecycleAdminKey,
	}})
	s.dumpLogsOnFailure()
	objects := map[string][]byte{"a.bin": randomBytes(256<<10, 1), "b.bin": randomBytes(1<<20, 2)}
	for k, v := range objects {
		s.putObject(k, v)
	}
	big := randomBytes(24<<20, 9) // well past the socket buffers: the edge is still writing
	s.putObject("big.bin", big)

	ingressPort := testenv.FreePort(t)
	edge := s.startRoleOn("edge", s.edgePort)
	w1 := s.startRoleOn("worker", 0)
	w2 := s.startRoleOn("worker", 0)
	ingress := s.startRoleOn("ingress", ingressPort)

	l := startLoad(t, s.ingressURL, 5, objects)
	l.waitProgress(5, 30*time.Second, "downloads under load before any SIGTERM")

	// The ingress: unready at once, still accepting tickets during the drain delay.
	ex := sigterm(t, ingress)
	eventually(t, time.Second, "ingress /readyz answering 503 after SIGTERM", func() bool {
		return httpStatus(s.ingressURL+"/readyz") == http.StatusServiceUnavailable
	})
	l.adopt(s.request("a.bin").ID, "a.bin") // 202 while draining
	code, took := ex.wait(limit)
	if code != 0 {
		t.Errorf("ingress exited with %d after SIGTERM, want 0", code)
	}
	if took < drain {
		t.Errorf("ingress exited %s after SIGTERM, before its drain delay of %s", took, drain)
	}
	t.Logf("ingress: exit %d after %s", code, took.Round(time.Millisecond))
	s.startRoleOn("ingress", ingressPort)
	l.waitProgress(3, 30*time.Second, "downloads after the ingress restart")

	// The workers, holding queued tickets (admission paused, so they stay queued): both
	// exit 0 and hand their ticket messages back. A handed-back message goes at once to
	// the next worker; one that was not would wait out the 60s AckWait.
	s.admin(http.MethodPost, "/api/v1/admin/pause")
	for range 8 {
		tk := s.request("b.bin")
		l.adopt(tk.ID, "b.bin")
	}
	eventually(t, 10*time.Second, "workers holding the queued tickets", func() bool {
		return consumerInfo(t.Context(), t, s.nats.URL).NumAckPending >= 8
	})
	e1, e2 := sigterm(t, w1), sigterm(t, w2)
	for i, e := range []*exiting{e1, e2} {
		code, took := e.wait(limit)
		if code != 0 {
			t.Errorf("worker %d exited with %d after SIGTERM, want 0", i+1, code)
		}
		t.Logf("worker %d: exit %d after %s", i+1, code, took.Round(time.Millisecond))
	}
	// With no worker running, the pending messages are exactly those the workers held
	// and handed back (the queued tickets', and ended ones' not acked yet). The new
	// worker has them all when every message still pending was delivered more than
	// once (NumRedelivered counts distinct messages; the ended ones it acks drop out of
	// both counts) — but for the tickets no worker had fetched yet or the load created
	// since, delivered once — and each was delivered since it started.
	// The stream's sequence first: a ticket accepted between the two reads is then
	// counted as new (harmless), never missed.
	heldSeq := ticketStreamSeq(t, s.nats.URL)
	held := consumerInfo(t.Context(), t, s.nats.URL)
	if held.NumAckPending < 8 {
		t.Fatalf("%d ticket messages pending after the workers stopped, want at least the 8 queued tickets", held.NumAckPending)
	}
	restarted := time.Now()
	s.startRoleOn("worker", 0)
	var last string
	eventually(t, 10*time.Second, "the handed-back ticket messages reaching the restarted worker", func() bool {
		firsts := int(held.NumPending) + int(ticketStreamSeq(t, s.nats.URL)-heldSeq)
		c := consumerInfo(t.Context(), t, s.nats.URL)
		last = fmt.Sprintf("%d pending, %d of them redelivered, %d delivered for the first time at most; %d deliveries since the restart",
			c.NumAckPending, c.NumRedelivered, firsts, c.Delivered.Consumer-held.Delivered.Consumer)
		return c.NumAckPending >= 8 && c.NumRedelivered+firsts >= c.NumAckPending &&
			c.Delivered.Consumer >= held.Delivered.Consumer+uint64(c.NumAckPending)
	})
	t.Logf("ticket messages after the restart: %s", last)
	t.Logf("workers stopped; their ticket messages reached a new worker %s after it started (AckWait 60s)",
		time.Since(restarted).Round(time.Millisecond))
	s.startRoleOn("worker", 0)
	s.admin(http.MethodPost, "/api/v1/admin/resume")
	l.waitProgress(3, 60*time.Second, "downloads after the worker restarts")

	// The edge, streaming: unready at once, the listener closes after the drain delay,
	// the running download still completes intact, the process exits 0.
	id := s.request("big.bin").ID
	link := s.follow(id, 60*time.Second)
	type result struct {
		body []byte
		err  error
		at   time.Time
	}
	got := make(chan result, 1)
	go func() {
		b, err := slowRead(link, 256<<10, 40*time.Millisecond) // about 4s
		got <- result{b, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	ex = sigterm(t, edge)
	eventually(t, time.Second, "edge /readyz answering 503 after SIGTERM", func() bool {
		return httpStatus(s.edgeURL+"/readyz") == http.StatusServiceUnavailable
	})
	eventually(t, drain+3*time.Second, "edge listener closing after the drain delay", func() bool {
		return httpStatus(s.edgeURL+"/healthz") == -1
	})
	closed := time.Now()
	var r result
	select {
	case r = <-got:
	case <-time.After(limit):
		t.Fatal("the running download did not end")
	}
	if r.err != nil || sha(r.body) != sha(big) {
		t.Fatalf("the download running at SIGTERM did not complete intact: %d of %d bytes, %v", len(r.body), len(big), r.err)
	}
	if !r.at.After(closed) {
		t.Fatal("the download ended before the edge stopped listening; it proves nothing about the grace (make it slower)")
	}
	code, took = ex.wait(limit)
	if code != 0 {
		t.Errorf("edge exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("edge: download completed %s after the listener closed; exit %d after %s",
		r.at.Sub(closed).Round(time.Millisecond), code, took.Round(time.Millisecond))
	s.startRoleOn("edge", s.edgePort)
	s.waitStatus(id, "done", 10*time.Second)

	l.finish(s)
}

// ticketStreamSeq is the ticket stream's last sequence: a ticket accepted later is above it.
func ticketStreamSeq(t *testing.T, natsURL string) uint64 {
	t.Helper()
	js, done := connectJetStream(t, natsURL)
	defer done()
	st, err := js.Stream(t.Context(), queue.TicketStream)
	if err != nil {
		t.Fatalf("ticket stream: %v", err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("ticket stream info: %v", err)
	}
	return info.State.LastSeq
}

const lifecycleAdminKey = "slk_e2e_lifecycle_operator_key"

// admin calls the admin API with the operator key and expects 200.
func (s *stack) admin(method, path string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.ingressURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+lifecycleAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, body)
	}
}

// A stream that outlives --shutdown-wait is cut at the deadline and the edge still
// exits 0 on time; the client resumes from where it was cut on the restarted edge.
func TestEdgeSIGTERMCutsStreamsAtTheDeadline(t *testing.T) {
	const wait = time.Second
	s := newStack(t, stackOptions{Env: []string{"SLUICE_DRAIN_DELAY=0s", "SLUICE_SHUTDOWN_WAIT=" + wait.String()}})
	s.dumpLogsOnFailure()
	obj := randomBytes(64<<20, 3)
	s.putObject("huge.bin", obj)
	edge := s.startRoleOn("edge", s.edgePort)
	s.startRoleOn("worker", 0)
	s.startRoleOn("ingress", testenv.FreePort(t))
	id := s.request("huge.bin").ID
	link := s.follow(id, 20*time.Second)

	resp, err := http.Get(link)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET link: %v %v", err, resp)
	}
	defer resp.Body.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	// The client stops reading: the stream cannot finish by itself.
	code, took := terminate(t, edge, wait+8*time.Second)
	if code != 0 {
		t.Errorf("edge exited with %d, want 0", code)
	}
	if took < wait {
		t.Errorf("edge exited after %s, before its shutdown wait of %s: the stream was not given its grace", took, wait)
	}
	t.Logf("edge: stalled stream cut, exit %d after %s", code, took.Round(time.Millisecond))
	rest, _ := io.ReadAll(resp.Body)
	have := append(head, rest...)
	if len(have) >= len(obj) {
		t.Fatalf("the stalled download was not cut: %d bytes", len(have))
	}
	if !bytes.Equal(have, obj[:len(have)]) {
		t.Fatal("the bytes received before the cut are wrong")
	}

	s.startRoleOn("edge", s.edgePort)
	req, _ := http.NewRequest(http.MethodGet, link, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(have)))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if r2.StatusCode != http.StatusPartialContent {
		t.Fatalf("resume after the restart: %d, want 206", r2.StatusCode)
	}
	tailBytes, err := io.ReadAll(r2.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(have, tailBytes...), obj) {
		t.Fatal("resumed download is corrupt")
	}
	s.waitStatus(id, "done", 10*time.Second)
}
