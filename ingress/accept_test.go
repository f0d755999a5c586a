package ingress_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// A new ticket costs one ledger call, whose one script run answers the 202 (no
// read-back), and the catalog check no Redis command: the ingress checks the record,
// from its copy of the catalog once it follows it.
func TestAcceptIsOneLedgerCall(t *testing.T) {
	var catalogCommands atomic.Int64
	rdb := testenv.StartRedis(t).Client(t)
	rdb.AddHook(countingHook{&catalogCommands})
	cat, err := catalog.Open(t.Context(), testenv.StartNATS(t).JetStream(t), rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cat.Follow(ctx, slog.New(slog.DiscardHandler)) })
	defer func() { stop(); wg.Wait() }()

	led := &countingLedger{}
	a := newAPI(t, func(c *ingress.Config) {
		led.Ledger = c.Ledger
		c.Ledger = led
		c.Releases.Catalog = cat
	})
	for i, object := range []string{"demo/hello.txt", "demo/other.txt"} {
		var tk client.Ticket
		a.do(t, request{method: http.MethodPost, path: "/api/v1/downloads", body: download(object)}).
			decode(t, http.StatusAccepted, &tk)
		if tk.Status != client.StatusQueued || tk.Position != int64(i) {
			t.Errorf("ticket %d answered %s at position %d, want queued at %d", i+1, tk.Status, tk.Position, i)
		}
	}
	if got := led.calls(); got != "accept=2" {
		t.Errorf("two new tickets made the ledger calls %s, want accept=2 only", got)
	}
	if n := catalogCommands.Load(); n != 0 {
		t.Errorf("the catalog check of two downloads sent %d Redis commands, want none", n)
	}
}

// countingLedger counts the ledger calls that read or record a ticket.
type countingLedger struct {
	ingress.Ledger
	accept, poll, get atomic.Int64
}

func (l *countingLedger) calls() string {
	return "accept=" + itoa(l.accept.Load()) + nonzero(" poll=", l.poll.Load()) + nonzero(" get=", l.get.Load())
}

func (l *countingLedger) Accept(ctx context.Context, t admission.Ticket) (admission.Position, error) {
	l.accept.Add(1)
	return l.Ledger.Accept(ctx, t)
}

func (l *countingLedger) Poll(ctx context.Context, id string) (admission.Position, error) {
	l.poll.Add(1)
	return l.Ledger.Poll(ctx, id)
}

func (l *countingLedger) Get(ctx context.Context, id string) (admission.Position, error) {
	l.get.Add(1)
	return l.Ledger.Get(ctx, id)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func nonzero(label string, n int64) string {
	if n == 0 {
		return ""
	}
	return label + itoa(n)
}

// countingHook counts the commands (and pipelines) a Redis client sends.
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
