package ingress_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/queue"
)

// The fakes below wrap the real dependencies and change one answer, for the cases no
// real service can be made to produce on cue.

// failingLedger is the real ledger but for the methods given an error.
type failingLedger struct {
	ingress.Ledger
	claim, enqueue, poll, get error
}

func (l failingLedger) ClaimIdempotencyKey(ctx context.Context, scope, key, ticketID, object string, ttl time.Duration) (admission.Binding, error) {
	if l.claim != nil {
		return admission.Binding{}, l.claim
	}
	return l.Ledger.ClaimIdempotencyKey(ctx, scope, key, ticketID, object, ttl)
}

func (l failingLedger) Accept(ctx context.Context, t admission.Ticket) (admission.Position, error) {
	if l.enqueue != nil {
		return admission.Position{}, l.enqueue
	}
	return l.Ledger.Accept(ctx, t)
}

func (l failingLedger) Poll(ctx context.Context, id string) (admission.Position, error) {
	if l.poll != nil {
		return admission.Position{}, l.poll
	}
	return l.Ledger.Poll(ctx, id)
}

func (l failingLedger) PollAs(ctx context.Context, id, owner string) (admission.Position, error) {
	if l.poll != nil {
		return admission.Position{}, l.poll
	}
	return l.Ledger.PollAs(ctx, id, owner)
}

func (l failingLedger) Get(ctx context.Context, id string) (admission.Position, error) {
	if l.get != nil {
		return admission.Position{}, l.get
	}
	return l.Ledger.Get(ctx, id)
}

// countingPublisher counts the tickets published through it.
type countingPublisher struct {
	ingress.Publisher
	n atomic.Int64
}

func (p *countingPublisher) Publish(ctx context.Context, t queue.Ticket) (uint64, error) {
	p.n.Add(1)
	return p.Publisher.Publish(ctx, t)
}

// When the Idempotency-Key's record cannot be written, the request is refused with
// 503 naming JetStream, before anything is published: a retry must not find a ticket
// made without its key.
func TestIdempotencyRecordUnavailablePublishesNothing(t *testing.T) {
	pub := &countingPublisher{}
	a := newAPI(t, func(c *ingress.Config) {
		c.Ledger = failingLedger{Ledger: c.Ledger, claim: fmt.Errorf("bind key: %w", admission.ErrRecordsUnavailable)}
		pub.Publisher = c.Publisher
		c.Publisher = pub
	})
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt"),
		header: map[string]string{"Idempotency-Key": "k1"}}).problem(t, http.StatusServiceUnavailable, "nats_unavailable")
	if n := pub.n.Load(); n != 0 {
		t.Errorf("%d tickets published for a refused request", n)
	}
	// Without a key the ledger's records are not needed.
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, nil)
}

// A ticket JetStream stored is accepted (202) even if the ledger then fails to record
// it and cannot be read: the answer describes it from its message, and a worker
// records it later.
func TestAcceptedWhenTheLedgerFailsAfterThePublish(t *testing.T) {
	down := fmt.Errorf("enqueue: %w", admission.ErrUnavailable)
	a := newAPI(t, func(c *ingress.Config) {
		c.Ledger = failingLedger{Ledger: c.Ledger, enqueue: down, poll: down}
	})
	var tk client.Ticket
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, &tk)
	if tk.Status != client.StatusQueued || tk.Object != "demo/hello.txt" || tk.ID == "" {
		t.Errorf("accepted ticket described as %+v", tk)
	}
	if n := a.storedTickets(t); n != 1 {
		t.Errorf("the ticket stream holds %d messages, want 1", n)
	}
}

// An error nobody planned for (a script that answers nonsense) is a 500 that says
// nothing of its cause; a dependency that timed out is a 503 to retry.
func TestUnexpectedLedgerErrors(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{errors.New("ERR user_script:1: secret internals"), http.StatusInternalServerError, "internal"},
		{fmt.Errorf("read ticket: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, "timeout"},
	} {
		t.Run(c.code, func(t *testing.T) {
			a := newAPI(t, func(cfg *ingress.Config) {
				cfg.Ledger = failingLedger{Ledger: cfg.Ledger, get: c.err, poll: c.err}
			})
			ans := a.do(t, request{method: http.MethodGet, path: "/api/v1/tickets/t" + strings.Repeat("a", 26)})
			ans.problem(t, c.status, c.code)
			if strings.Contains(string(ans.body), "secret internals") {
				t.Errorf("the answer leaks the cause: %s", ans.body)
			}
		})
	}
}

// unavailableKeys is a key store whose records cannot be read.
type unavailableKeys struct{ ingress.Keys }

func (unavailableKeys) Check(context.Context, string) (apikeys.Key, error) {
	return apikeys.Key{}, fmt.Errorf("read key: %w", apikeys.ErrUnavailable)
}

// A key that cannot be checked because its records are unreachable is a 503 to
// retry, never a 401 that would make a client drop a good key.
func TestKeyStoreUnavailableIsNotUnauthorized(t *testing.T) {
	a := newAPI(t, func(c *ingress.Config) { c.Keys = unavailableKeys{c.Keys} })
	a.do(t, request{method: http.MethodGet, path: "/api/v1/admin/limits", key: apikeys.Generate()}).
		problem(t, http.StatusServiceUnavailable, "nats_unavailable")
	// Anonymous downloads need no key and go on.
	a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download("demo/hello.txt")}).
		decode(t, http.StatusAccepted, nil)
}
