package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failure is how the test server fails one request.
type failure func(w http.ResponseWriter)

func answer(status int, code, retryAfter string) failure {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": "the admission ledger is unavailable", "code": code})
	}
}

// reset cuts the connection with a TCP RST, as a crashing proxy or server does.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

// hangUp closes the connection without an answer (the client reads EOF).
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// flaky serves GET /api/v1/tickets/T: the failures in order, then the ticket.
type flaky struct {
	mu       sync.Mutex
	failures []failure
	calls    atomic.Int64
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	f.mu.Lock()
	var next failure
	if len(f.failures) > 0 {
		next, f.failures = f.failures[0], f.failures[1:]
	}
	f.mu.Unlock()
	if next != nil {
		next(w)
		return
	}
	if r.URL.Path != "/api/v1/tickets/T" {
		http.Error(w, `{"error":"no such ticket","code":"ticket_not_found"}`, http.StatusNotFound)
		return
	}
	json.NewEncoder(w).Encode(Ticket{ID: "T", Status: StatusQueued, Position: 3})
}

func newFlaky(t *testing.T, failures ...failure) (*flaky, *Client) {
	t.Helper()
	f := &flaky{failures: failures}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

// notes collects what a policy tells the user.
type notes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notes) add(m string) { n.mu.Lock(); n.msgs = append(n.msgs, m); n.mu.Unlock() }
func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

func fastPolicy(n *notes) RetryPolicy {
	return RetryPolicy{Budget: 30 * time.Second, FirstWait: 5 * time.Millisecond, MaxWait: 50 * time.Millisecond, Notify: n.add}
}

// Each kind of outage, repeated, is ridden out: the same ticket comes back, and the
// user is told once that the server is away and once that it is back.
func TestRetryRidesOutAnOutage(t *testing.T) {
	cases := map[string][]failure{
		"503 with Retry-After": {answer(503, "redis_unavailable", "1"), answer(503, "redis_unavailable", "1"), answer(503, "redis_unavailable", "1")},
		"500":                  {answer(500, "internal", ""), answer(500, "internal", ""), answer(500, "internal", "")},
		"502 and 504":          {answer(502, "", ""), answer(504, "", "")},
		"connection reset":     {reset, reset, reset},
		"hang-up (EOF)":        {hangUp, hangUp},
		"mixed":                {answer(503, "redis_unavailable", "2"), reset, answer(500, "", ""), hangUp},
	}
	for name, failures := range cases {
		t.Run(name, func(t *testing.T) {
			f, c := newFlaky(t, failures...)
			var n notes
			var p Poll
			err := fastPolicy(&n).Do(t.Context(), func() (err error) {
				p, err = c.Ticket(t.Context(), "T")
				return err
			})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if p.ID != "T" || p.Position != 3 {
				t.Fatalf("got ticket %+v, want T at position 3", p.Ticket)
			}
			if got, want := f.calls.Load(), int64(len(failures)+1); got != want {
				t.Fatalf("%d requests, want %d (every failure retried, then one success)", got, want)
			}
			msgs := n.all()
			if len(msgs) != 2 || !strings.Contains(msgs[0], "retrying for up to 30s") || !strings.Contains(msgs[1], "answers again") {
				t.Fatalf("told the user %q, want one outage message and one recovery message", msgs)
			}
		})
	}
}

func TestRetryNamesTheFailedDependency(t *testing.T) {
	_, c := newFlaky(t, answer(503, "redis_unavailable", "1"))
	var n notes
	if err := fastPolicy(&n).Do(t.Context(), func() error { _, err := c.Ticket(t.Context(), "T"); return err }); err != nil {
		t.Fatal(err)
	}
	if msgs := n.all(); len(msgs) == 0 || !strings.HasPrefix(msgs[0], "server unavailable (503 redis_unavailable: the admission ledger is unavailable); retrying for up to") {
		t.Fatalf("outage message %q does not say what is down", msgs)
	}
}

// A refusal that retrying cannot change is final at once, unwrapped, with its message.
func TestRetryStopsAtA4xx(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 410} {
		f, c := newFlaky(t, answer(status, "nope", "1"))
		var n notes
		err := fastPolicy(&n).Do(t.Context(), func() error { _, err := c.Ticket(t.Context(), "T"); return err })
		if StatusOf(err) != status || CodeOf(err) != "nope" {
			t.Fatalf("%d: got %v, want the server's %d", status, err, status)
		}
		if strings.Contains(err.Error(), "gave up") {
			t.Fatalf("%d: %q reads as if it had been retried", status, err)
		}
		if f.calls.Load() != 1 || len(n.all()) != 0 {
			t.Fatalf("%d: %d requests and notes %q, want 1 and none", status, f.calls.Load(), n.all())
		}
	}
}

// 408 and 429 are the server asking to come back: retried.
func TestRetryRetriesRequestTimeoutAndTooManyRequests(t *testing.T) {
	f, c := newFlaky(t, answer(408, "", ""), answer(429, "ticket_rate", ""))
	err := fastPolicy(&notes{}).Do(t.Context(), func() error { _, err := c.Ticket(t.Context(), "T"); return err })
	if err != nil || f.calls.Load() != 3 {
		t.Fatalf("got %v after %d requests, want success after 3", err, f.calls.Load())
	}
}

// A 429's Retry-After is the server's pacing of this client: waited in full even past
// the outage cap, since coming back sooner is refused again.
func TestRetryHonoursRetryAfterOf429(t *testing.T) {
	_, c := newFlaky(t, answer(429, "ticket_rate", "1"))
	start := time.Now()
	if err := fastPolicy(&notes{}).Do(t.Context(), func() error { _, err := c.Ticket(t.Context(), "T"); return err }); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("came back after %s, before the 1s Retry-After", waited)
	}
}

// An outage longer than the budget ends with the last error, saying how long it was
// retried; nothing is retried past the deadline.
func TestRetryGivesUpAfterTheBudget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		answer(503, "redis_unavailable", "1")(w)
	}))
	t.Cleanup(srv.Close)
	c, _ := New(srv.URL, Options{})
	var n notes
	p := fastPolicy(&n)
	p.Budget = 400 * time.Millisecond
	start := time.Now()
	attempts := 0
	err := p.Do(t.Context(), func() error { attempts++; _, err := c.Ticket(t.Context(), "T"); return err })
	if StatusOf(err) != 503 || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("got %v, want the 503 after giving up", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("gave up after %s with a budget of 400ms", took)
	}
	if attempts < 3 {
		t.Fatalf("%d attempts in the budget, want several", attempts)
	}
	if msgs := n.all(); len(msgs) != 1 {
		t.Fatalf("notes %q, want only the outage message", msgs)
	}

	p.Deadline = time.Now().Add(-time.Second)
	attempts = 0
	if err := p.Do(t.Context(), func() error { attempts++; _, err := c.Ticket(t.Context(), "T"); return err }); StatusOf(err) != 503 || attempts != 1 {
		t.Fatalf("past the deadline: %d attempts, %v; want one attempt and its 503", attempts, err)
	}
}

// A server that is not listening at all (refused) is retried like any outage.
func TestRetryRetriesRefusedConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, _ := New("http://"+addr, Options{})
	p := fastPolicy(&notes{})
	p.Budget = 300 * time.Millisecond
	attempts := 0
	err = p.Do(t.Context(), func() error { attempts++; _, err := c.Ticket(t.Context(), "T"); return err })
	if !ConnectionFailed(err) || attempts < 2 {
		t.Fatalf("got %v after %d attempts, want a refused connection retried", err, attempts)
	}
}

// Ctrl-C ends the retrying at once.
func TestRetryStopsWhenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	p := fastPolicy(&notes{})
	p.FirstWait, p.MaxWait = time.Hour, time.Hour
	done := make(chan error, 1)
	go func() { done <- p.Do(ctx, func() error { return answerErr(503) }) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still retrying 10s after the context ended")
	}
}

func answerErr(status int) error { return &Error{Status: status, Method: "GET", Path: "/x"} }

func TestRetryableClassifiesErrors(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{answerErr(500), true}, {answerErr(502), true}, {answerErr(503), true}, {answerErr(504), true},
		{answerErr(429), true}, {answerErr(408), true},
		{answerErr(400), false}, {answerErr(404), false}, {answerErr(501), false},
		{&net.DNSError{Err: "no such host", Name: "sluice.invalid", IsNotFound: true}, false},
		{context.Canceled, false},
		{errors.New("answer is not the expected JSON"), false},
	}
	for _, c := range cases {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("Retryable(%v) = %t, want %t", c.err, got, c.want)
		}
	}
}
