package signer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// oneConnClient is a client that sends every request over one keep-alive connection.
func oneConnClient(t *testing.T) (*http.Client, *http.Transport) {
	t.Helper()
	tr := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, tr
}

// getRange fetches bytes [start, start+n) of url and checks them.
func getRange(t *testing.T, h *harness, c *http.Client, url string, start, n int64) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, start+n-1))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	wantStatus(t, resp, http.StatusPartialContent)
	body := make([]byte, n+1)
	got, _ := readFull(resp, body)
	wantBody(t, body[:got], patternBytes(start, n))
}

func readFull(resp *http.Response, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := resp.Body.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Many range requests on one keep-alive connection open one connection in the ledger:
// the token is verified on each, but the ledger is asked once.
func TestKeepAliveRangesShareOneLedgerConnection(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = time.Hour, time.Hour })
	const size = 1 << 20
	h.store.putPattern("big.bin", "v1", size)
	url := h.url(t, "big.bin")
	c, tr := oneConnClient(t)
	const requests = 200
	for i := range requests {
		getRange(t, h, c, url, int64(i%8)*(64<<10), 64<<10) // never the whole object
	}
	if got := h.slots.count("begin"); got != 1 {
		t.Fatalf("%d BeginStream for %d requests on one connection, want 1", got, requests)
	}
	if got := h.slots.count("end") + h.slots.count("renew"); got != 0 {
		t.Fatalf("%d ledger calls besides the begin while the connection is open, want 0", got)
	}
	// An expired token is refused even on a connection that holds the slot.
	expired := h.url(t, "big.bin", func(cl *token.Claims) { cl.Expires = h.clock.Now().Add(-time.Second) })
	resp, err := c.Get(expired)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusGone)

	tr.CloseIdleConnections()
	end := h.slots.waitEnd(t)
	if end.sent != requests*(64<<10) {
		t.Errorf("end reported %d bytes, want %d", end.sent, requests*(64<<10))
	}
	if got, want := h.slots.lastEnd.Parts, []admission.Span{{Start: 0, Length: 8 * 64 << 10}}; !slices.Equal(got, want) {
		t.Errorf("covered %v, want %v", got, want)
	}
}

// A keep-alive connection's responses start at the write size the previous one
// reached: the first 64 KiB range grows from the smallest chunk, each later one goes
// out in a single write of its body.
func TestKeepAliveRangesStartAtTheLearnedChunk(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = time.Hour, time.Hour })
	h.store.putPattern("big.bin", "v1", 1<<20)
	url := h.url(t, "big.bin")
	c, _ := oneConnClient(t)
	writes := func(off int64) int64 {
		before := h.writes.Load()
		getRange(t, h, c, url, off, 64<<10)
		return h.writes.Load() - before
	}
	first := writes(0)
	var later []int64
	for i := range 5 {
		later = append(later, writes(int64(i+1)*(64<<10)))
	}
	if first < 3 {
		t.Errorf("the first range took %d writes, want the pacer's growth from %d KiB (3 or more)", first, minChunk>>10)
	}
	for i, n := range later {
		if n > 2 { // the headers, the body
			t.Errorf("range %d on the same connection took %d writes, want at most 2", i+2, n)
		}
	}
}

// The token a connection already presented is not verified again, but its expiry
// still is: the same link on the same connection is refused once it has expired, and
// a forged variant of it never passes as the remembered one.
func TestKeepAliveTokenExpiresOnItsConnection(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = time.Hour, time.Hour })
	h.store.putPattern("big.bin", "v1", 1<<20)
	url := h.url(t, "big.bin", func(cl *token.Claims) { cl.Expires = h.clock.Now().Add(time.Minute) })
	c, _ := oneConnClient(t)
	getRange(t, h, c, url, 0, 64<<10)
	forged := url[:len(url)-2] + "AA"
	if url[len(url)-2:] == "AA" {
		forged = url[:len(url)-2] + "BB"
	}
	resp, err := c.Get(forged)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusForbidden)
	getRange(t, h, c, url, 64<<10, 64<<10) // the remembered token, still valid
	h.clock.advance(2 * time.Minute)
	resp, err = c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusGone)
}

// With Revalidate, the store's answer that an object is at the token's version holds
// that long: ranges within it Stat nothing. A version replaced meanwhile is still
// refused before the first byte (Open names the version), and once the answer has
// lapsed the store is asked again.
func TestRevalidateSparesTheStat(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.Revalidate = time.Hour })
	h.store.putPattern("big.bin", "v1", 1<<20)
	url := h.url(t, "big.bin") // (reads the version from the store)
	before := h.store.statCalls()
	for i := range 20 {
		getRange(t, h, h.client, url, int64(i)*(16<<10), 16<<10)
	}
	if n := h.store.statCalls() - before; n != 1 {
		t.Errorf("20 ranges of one version made %d Stat calls, want 1", n)
	}
	h.store.putPattern("big.bin", "v2", 1<<20) // replaced in the store
	resp, body := h.do(t, "GET", url, "Range", "bytes=0-99")
	wantProblem(t, resp, body, http.StatusGone, "object changed")
	// Open found the change: the answer is forgotten, the next request asks the store.
	before = h.store.statCalls()
	resp, body = h.do(t, "GET", url, "Range", "bytes=0-99")
	wantProblem(t, resp, body, http.StatusGone, "object changed")
	if n := h.store.statCalls() - before; n != 1 {
		t.Errorf("the request after a refused Open made %d Stat calls, want 1", n)
	}

	h2 := newHarness(t, func(c *EdgeConfig) { c.Revalidate = 50 * time.Millisecond })
	h2.store.putPattern("a.bin", "v1", 1<<16)
	url = h2.url(t, "a.bin")
	before = h2.store.statCalls()
	getRange(t, h2, h2.client, url, 0, 100)
	time.Sleep(60 * time.Millisecond)
	getRange(t, h2, h2.client, url, 100, 100)
	if n := h2.store.statCalls() - before; n != 2 {
		t.Errorf("two ranges a lapsed answer apart made %d Stat calls, want 2", n)
	}
}

// Coverage over keep-alive ranges ends the hold (and so lets the ledger mark the ticket
// done) the moment the connection has sent every byte, not before.
func TestKeepAliveCoverageEndsWhenAllBytesSent(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = time.Hour, time.Hour })
	const size, chunk = 1 << 20, 64 << 10
	h.store.putPattern("big.bin", "v1", size)
	url := h.url(t, "big.bin")
	c, _ := oneConnClient(t)
	// Backwards, and the first chunk twice: coverage, not a sum, decides.
	getRange(t, h, c, url, size-chunk, chunk)
	getRange(t, h, c, url, size-chunk, chunk)
	for start := int64(size - chunk); start > 0; start -= chunk {
		if h.slots.count("end") != 0 {
			t.Fatalf("the hold ended with %d bytes still unsent", start)
		}
		getRange(t, h, c, url, start-chunk, chunk)
	}
	end := h.slots.waitEnd(t)
	if end.sent != size+chunk {
		t.Errorf("end reported %d bytes sent, want %d", end.sent, size+chunk)
	}
	if got, want := h.slots.lastEnd.Parts, []admission.Span{{Start: 0, Length: size}}; !slices.Equal(got, want) || h.slots.lastEndTotal != size {
		t.Errorf("covered %v (total %d), want %v", got, h.slots.lastEndTotal, want)
	}
	if got := h.slots.count("begin"); got != 1 {
		t.Errorf("%d BeginStream, want 1", got)
	}
}

// A connection that closes, goes idle, or outlives the edge reports its bytes.
func TestHoldFlushedWhenConnectionEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holdIdle time.Duration
		finish   func(h *harness, tr *http.Transport)
	}{
		{"closed", time.Hour, func(_ *harness, tr *http.Transport) { tr.CloseIdleConnections() }},
		{"idle", 50 * time.Millisecond, func(*harness, *http.Transport) {}},
		{"edge closed", time.Hour, func(h *harness, _ *http.Transport) { h.edge.Close(context.Background()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = time.Hour, tc.holdIdle })
			h.store.putPattern("big.bin", "v1", 1<<20)
			url := h.url(t, "big.bin")
			c, tr := oneConnClient(t)
			for i := range 3 {
				getRange(t, h, c, url, int64(i)*1000, 1000)
			}
			tc.finish(h, tr)
			end := h.slots.waitEnd(t)
			if end.sent != 3000 || h.slots.lastEndTotal != 3000 {
				t.Errorf("end reported %d bytes sent, %d covered; want 3000, 3000", end.sent, h.slots.lastEndTotal)
			}
			if got := h.slots.count("begin"); got != 1 {
				t.Errorf("%d BeginStream, want 1", got)
			}
		})
	}
}

// A hold the ledger refused is not reused: the next request asks the ledger again.
func TestRefusedHoldIsNotReused(t *testing.T) {
	h := newHarness(t, func(c *EdgeConfig) { c.RenewEvery, c.HoldIdle = 20*time.Millisecond, time.Hour })
	h.store.putPattern("big.bin", "v1", 1<<20)
	url := h.url(t, "big.bin")
	c, _ := oneConnClient(t)
	getRange(t, h, c, url, 0, 1000)
	h.slots.mu.Lock()
	h.slots.renewErr = func(int) error { return errNotHeld }
	h.slots.beginErr = errNotHeld
	h.slots.mu.Unlock()
	h.slots.waitEnd(t) // the refused renewal released the idle hold
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusGone)
	if got := h.slots.count("begin"); got != 2 {
		t.Errorf("%d BeginStream, want 2", got)
	}
}

// countingStore counts the opens of the store it wraps.
type countingStore struct {
	objstore.Store
	opens atomic.Int64
}

func (s *countingStore) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	s.opens.Add(1)
	return s.Store.Open(ctx, key, offset, length, etag)
}

// A local file is opened once per connection, whatever the number of ranges (multipart
// ones too), and a new version of it is still refused on that connection.
func TestLocalFileOpenedOncePerConnection(t *testing.T) {
	local, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: local}
	h := newHarness(t, func(c *EdgeConfig) { c.Store, c.RenewEvery, c.HoldIdle = store, time.Hour, time.Hour })
	data := patternBytes(0, 1<<20)
	if _, err := local.Put(t.Context(), "f.bin", bytes.NewReader(data), int64(len(data)), ""); err != nil {
		t.Fatal(err)
	}
	h.store = nil
	info, err := local.Stat(t.Context(), "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := h.keys.Issue(token.Claims{Ticket: "t-1", Object: "f.bin", ETag: info.ETag, Epoch: 7, Expires: h.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	url := h.srv.URL + "/d/" + tok
	c, _ := oneConnClient(t)
	for i := range 50 {
		getRange(t, h, c, url, int64(i)*4096, 4096)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	req.Header.Set("Range", "bytes=0-9,100-109")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantStatus(t, resp, http.StatusPartialContent)
	if !bytes.Contains(body, data[100:110]) || !bytes.Contains(body, data[0:10]) {
		t.Fatal("multipart body lacks its parts")
	}
	if got := store.opens.Load(); got != 1 {
		t.Errorf("%d opens for 51 requests on one connection, want 1", got)
	}

	if _, err := local.Put(t.Context(), "f.bin", bytes.NewReader(data[:1000]), 1000, ""); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantStatus(t, resp, http.StatusGone)
}
