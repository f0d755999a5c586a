package signer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memStore is an objstore.Store in memory. Objects are either bytes or a pattern
// generated on read, so that a large object costs no memory.
type memStore struct {
	mu          sync.Mutex
	objects     map[string]memObject
	unavailable bool
	refusal     error // answered by Stat and Open (setRefusing)
	openErr     error // returned by Open, once set
	opens       []openCall
	stats       int // Stat calls
}

type memObject struct {
	info objstore.Info
	fill func(off int64, p []byte)
}

type openCall struct {
	key            string
	offset, length int64
	etag           string
}

var _ objstore.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objects: make(map[string]memObject)} }

var testModTime = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// put stores data under key with the given etag.
func (s *memStore) put(key, etag string, data []byte) {
	s.putFill(key, etag, int64(len(data)), func(off int64, p []byte) { copy(p, data[off:]) })
}

// putPattern stores size bytes of patternAt under key, generated as they are read.
func (s *memStore) putPattern(key, etag string, size int64) {
	s.putFill(key, etag, size, fillPattern)
}

func (s *memStore) putFill(key, etag string, size int64, fill func(int64, []byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = memObject{
		info: objstore.Info{Key: key, Size: size, ETag: etag, ContentType: "application/x-test", ModTime: testModTime},
		fill: fill,
	}
}

func (s *memStore) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
}

func (s *memStore) setUnavailable(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailable = v
}

// setRefusing makes every Stat and Open answer err (nil: answer again).
func (s *memStore) setRefusing(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusal = err
}

func (s *memStore) setOpenErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.openErr = err
}

func (s *memStore) openCalls() []openCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]openCall(nil), s.opens...)
}

func (s *memStore) statCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *memStore) Stat(ctx context.Context, key string) (objstore.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats++
	if s.unavailable {
		return objstore.Info{}, objstore.ErrUnavailable
	}
	if s.refusal != nil {
		return objstore.Info{}, s.refusal
	}
	o, ok := s.objects[key]
	if !ok {
		return objstore.Info{}, objstore.ErrNotFound
	}
	return o.info, nil
}

// Open insists on being asked for bytes that exist, as a real range request would.
func (s *memStore) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens = append(s.opens, openCall{key, offset, length, etag})
	switch o, ok := s.objects[key]; {
	case s.unavailable:
		return nil, objstore.ErrUnavailable
	case s.refusal != nil:
		return nil, s.refusal
	case s.openErr != nil:
		return nil, s.openErr
	case !ok:
		return nil, objstore.ErrNotFound
	case etag != "" && etag != o.info.ETag:
		return nil, objstore.ErrChanged
	case offset < 0 || length <= 0 || offset+length > o.info.Size:
		return nil, errors.New("memstore: range outside the object")
	default:
		return &memReader{ctx: ctx, obj: o, off: offset, end: offset + length}, nil
	}
}

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (objstore.Info, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return objstore.Info{}, err
	}
	s.put(key, "put", data)
	return s.Stat(ctx, key)
}

func (s *memStore) Ping(context.Context) error { return nil }

type memReader struct {
	ctx      context.Context
	obj      memObject
	off, end int64
}

func (r *memReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.off >= r.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.end-r.off)]
	r.obj.fill(r.off, p)
	r.off += int64(len(p))
	return len(p), nil
}

func (r *memReader) Close() error { return nil }

// patternBlock repeats through patterned objects; its odd length keeps the block
// boundaries off every power-of-two buffer and range edge.
var patternBlock = func() []byte {
	b := make([]byte, 65521)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

func fillPattern(off int64, p []byte) {
	for len(p) > 0 {
		n := copy(p, patternBlock[off%int64(len(patternBlock)):])
		p, off = p[n:], off+int64(n)
	}
}

func patternBytes(off, n int64) []byte {
	b := make([]byte, n)
	fillPattern(off, b)
	return b
}

// The admission ledger's refusals, as the edge receives them.
var (
	errNotHeld = admission.ErrSlotNotHeld
	errTooMany = admission.ErrTooManyConnections
)

// fakeSlots records the edge's calls to the ledger and answers as told.
type fakeSlots struct {
	mu       sync.Mutex
	calls    []slotCall
	beginErr error
	renewErr func(n int) error // answer to the n-th RenewStream (from 1)
	renews   int
	endErr   func(n int) error // answer to the n-th EndStream (from 1)
	ends     int
	ended    chan slotCall
	// lastEnd is the stream and total of the last EndStream.
	lastEnd      admission.Stream
	lastEndTotal int64
}

type slotCall struct {
	op           string
	ticket, conn string
	epoch, sent  int64
	failed       bool
}

var _ SlotKeeper = (*fakeSlots)(nil)

func newFakeSlots() *fakeSlots { return &fakeSlots{ended: make(chan slotCall, 1024)} }

func (f *fakeSlots) record(op, ticket, conn string, epoch, sent int64, err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slotCall{op, ticket, conn, epoch, sent, err != nil})
	return err
}

func (f *fakeSlots) BeginStream(_ context.Context, s admission.Stream) error {
	f.mu.Lock()
	err := f.beginErr
	f.mu.Unlock()
	return f.record("begin", s.Ticket, s.Conn, s.Epoch, 0, err)
}

func (f *fakeSlots) RenewStream(_ context.Context, s admission.Stream, sent, _ int64) error {
	ticket, conn, epoch := s.Ticket, s.Conn, s.Epoch
	f.mu.Lock()
	f.renews++
	var err error
	if f.renewErr != nil {
		err = f.renewErr(f.renews)
	}
	f.mu.Unlock()
	return f.record("renew", ticket, conn, epoch, sent, err)
}

func (f *fakeSlots) EndStream(_ context.Context, s admission.Stream, sent, total int64) error {
	ticket, conn, epoch := s.Ticket, s.Conn, s.Epoch
	f.mu.Lock()
	f.ends++
	f.lastEnd, f.lastEndTotal = s, total
	var err error
	if f.endErr != nil {
		err = f.endErr(f.ends)
	}
	f.mu.Unlock()
	if err = f.record("end", ticket, conn, epoch, sent, err); err != nil {
		return err
	}
	select {
	case f.ended <- slotCall{"end", ticket, conn, epoch, sent, false}:
	default: // nobody waits for this many; the call is recorded all the same
	}
	return err
}

// CheckStream answers as BeginStream would (beginErr), without opening anything.
func (f *fakeSlots) CheckStream(_ context.Context, s admission.Stream) error {
	f.mu.Lock()
	err := f.beginErr
	f.mu.Unlock()
	return f.record("check", s.Ticket, s.Conn, s.Epoch, 0, err)
}

func (f *fakeSlots) snapshot() []slotCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]slotCall(nil), f.calls...)
}

func (f *fakeSlots) count(op string) int {
	n := 0
	for _, c := range f.snapshot() {
		if c.op == op {
			n++
		}
	}
	return n
}

// reported is the sum of the bytes the ledger accepted: successful renewals and the end.
func (f *fakeSlots) reported() int64 {
	var n int64
	for _, c := range f.snapshot() {
		if !c.failed {
			n += c.sent
		}
	}
	return n
}

// waitEnd waits for one EndStream.
func (f *fakeSlots) waitEnd(t testing.TB) slotCall {
	t.Helper()
	select {
	case c := <-f.ended:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("EndStream was not called")
		return slotCall{}
	}
}

// testClock is real time shifted by what a test adds to it.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// harness is an edge behind a real HTTP server, over an in-memory store and a fake ledger.
type harness struct {
	keys   *token.Keyring
	store  *memStore
	slots  *fakeSlots
	clock  *testClock
	srv    *httptest.Server
	client *http.Client
	edge   *Edge
	writes atomic.Int64 // writes to the server's client connections
}

// countingListener counts the writes to its connections.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func newHarness(t testing.TB, configure ...func(*EdgeConfig)) *harness {
	t.Helper()
	keys, err := token.NewKeyring("k1", map[string][]byte{"k1": token.GenerateKey()})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{keys: keys, store: newMemStore(), slots: newFakeSlots(), clock: &testClock{}}
	cfg := EdgeConfig{Keyring: keys, Store: h.store, Slots: h.slots, Now: h.clock.Now}
	for _, c := range configure {
		c(&cfg)
	}
	h.edge = NewEdge(cfg)
	h.srv = httptest.NewUnstartedServer(h.edge.Handler())
	h.srv.Listener = &countingListener{Listener: h.srv.Listener, writes: &h.writes}
	h.srv.Config.ConnContext = h.edge.ConnContext
	h.srv.Config.ConnState = h.edge.ConnState
	h.srv.Start()
	transport := &http.Transport{DisableCompression: true}
	h.client = &http.Client{Transport: transport}
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		h.srv.Close()
		h.edge.Close(context.Background())
	})
	return h
}

// url is the download URL of a token for key, valid for an hour, at key's current version.
func (h *harness) url(t testing.TB, key string, modify ...func(*token.Claims)) string {
	t.Helper()
	etag := "no-such-object"
	if info, err := h.store.Stat(t.Context(), key); err == nil {
		etag = info.ETag
	}
	c := token.Claims{Ticket: "t-1", Object: key, ETag: etag, Epoch: 7, Expires: h.clock.Now().Add(time.Hour)}
	for _, m := range modify {
		m(&c)
	}
	tok, err := h.keys.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	return h.srv.URL + "/d/" + tok
}

// do sends a request with headers given as name, value pairs, and reads the whole body.
func (h *harness) do(t testing.TB, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	resp := h.send(t, method, url, header...)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, body
}

// send sends a request and leaves the body to the caller, who must close it.
func (h *harness) send(t testing.TB, method, url string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func wantStatus(t testing.TB, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d", resp.StatusCode, want)
	}
}

func wantHeader(t testing.TB, resp *http.Response, name, want string) {
	t.Helper()
	if got := resp.Header.Get(name); got != want {
		t.Errorf("%s: %q, want %q", name, got, want)
	}
}

func wantBody(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("body: %d bytes not the %d expected", len(got), len(want))
	}
}
