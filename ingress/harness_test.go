package ingress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// api is an ingress served by httptest over real services: redis-server for the
// ledger, an in-process JetStream for the ticket stream and the records, and a local
// object directory holding a few objects. Its dependencies are open to the test, which
// uses them to move tickets along as a worker would and to check what was stored.
type api struct {
	url      string
	operator string // the bootstrap operator key
	redis    *testenv.Redis
	js       jetstream.JetStream
	ledger   *admission.Ledger
	keys     *apikeys.Store
	tickets  jetstream.Consumer // the workers' consumer of the ticket stream
}

// apiOption adjusts the ingress configuration before the server is built.
type apiOption func(*ingress.Config)

// objects are what the test object directory holds.
var objects = map[string]string{
	"demo/hello.txt": "hello, sluice\n",
	"demo/other.txt": "another object\n",
}

func newAPI(t *testing.T, opts ...apiOption) *api {
	t.Helper()
	ctx := t.Context()
	discard := slog.New(slog.DiscardHandler)

	dir := t.TempDir()
	for key, body := range objects {
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	local, err := objstore.NewLocal(dir, objstore.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}

	js := testenv.StartNATS(t).JetStream(t)
	consumer, err := queue.EnsureTickets(ctx, js, queue.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	buckets := map[string]jetstream.KeyValue{}
	for _, name := range []string{queue.KeysBucket, queue.SettingsBucket, queue.IdempotencyBucket, queue.EndedBucket} {
		if buckets[name], err = queue.EnsureRecords(ctx, js, queue.RecordConfig{Bucket: name}); err != nil {
			t.Fatal(err)
		}
	}

	r := testenv.StartRedis(t)
	ledger := admission.New(r.Client(t), admission.Config{
		GlobalLimit: 1,
		Records:     buckets[queue.SettingsBucket],
		Bindings:    buckets[queue.IdempotencyBucket],
		Ended:       buckets[queue.EndedBucket],
	})
	if _, err := ledger.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}

	operator := apikeys.Generate()
	keys := apikeys.New(buckets[queue.KeysBucket], operator)
	publisher, err := queue.NewPublisher(js.Conn(), queue.AtomicBatches, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ingress.Config{
		Objects:   local,
		Ledger:    ledger,
		Publisher: publisher,
		Tickets:   queue.NewTickets(js),
		Keys:      keys,
		Checks:    []health.Check{{Name: "redis", Ping: ledger.Ping}},
		Logger:    discard,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv := httptest.NewServer(ingress.New(cfg).Handler())
	t.Cleanup(srv.Close)
	return &api{url: srv.URL, operator: operator, redis: r, js: js, ledger: ledger, keys: keys, tickets: consumer}
}

// key creates an API key of scope for tenant and returns the secret.
func (a *api) key(t *testing.T, scope apikeys.Scope, tenant string) string {
	t.Helper()
	_, secret, err := a.keys.Create(t.Context(), scope, tenant, "test")
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// answer is one HTTP answer, its body kept for decoding.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// problem is an error answer's body (application/problem+json).
type problem struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Hint   string `json:"hint"`
}

// request is one call: the key ("" for none) and extra headers.
type request struct {
	method, path string
	key          string
	body         any // marshalled as JSON unless a string
	header       map[string]string
}

func (a *api) do(t *testing.T, r request) answer {
	t.Helper()
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = bytes.NewBufferString(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), r.method, a.url+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.key != "" {
		req.Header.Set("Authorization", "Bearer "+r.key)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	// Redirects are answers under test, not to be followed.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: raw}
}

// decode reads the answer's body into v, failing the test unless the status is want.
func (ans answer) decode(t *testing.T, want int, v any) {
	t.Helper()
	if ans.status != want {
		t.Fatalf("status %d, want %d: %s", ans.status, want, ans.body)
	}
	if v == nil {
		return
	}
	if err := json.Unmarshal(ans.body, v); err != nil {
		t.Fatalf("decode %s: %v", ans.body, err)
	}
}

// problem decodes an error answer, failing the test unless it has the status and code.
func (ans answer) problem(t *testing.T, status int, code string) problem {
	t.Helper()
	var p problem
	ans.decode(t, status, &p)
	if p.Code != code || p.Status != status {
		t.Fatalf("answer %d %q, want %d %q: %s", p.Status, p.Code, status, code, ans.body)
	}
	if ct := ans.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if p.Detail == "" || p.Hint == "" {
		t.Errorf("an error answer says what happened and what to do; got %s", ans.body)
	}
	return p
}

// storedTickets is how many ticket messages the stream holds.
func (a *api) storedTickets(t *testing.T) uint64 {
	t.Helper()
	stream, err := a.js.Stream(t.Context(), queue.TicketStream)
	if err != nil {
		t.Fatal(err)
	}
	return stream.CachedInfo().State.Msgs
}

// grant admits the oldest queued ticket and gives it a link, as a worker would.
func (a *api) grant(t *testing.T, ctx context.Context) string {
	t.Helper()
	grants, err := a.ledger.Admit(ctx, 1)
	if err != nil || len(grants) != 1 {
		t.Fatalf("admit: %v %v", grants, err)
	}
	link := "https://edge.test/d/token/" + grants[0].Ticket.ID
	if err := a.ledger.MarkReady(ctx, grants[0], link, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return grants[0].Ticket.ID
}
