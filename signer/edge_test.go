package signer

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

const (
	testKey  = "releases/v1/sluice.tar.gz"
	testETag = "etag-v1"
	testSize = 10_000
)

var lastModified = testModTime.Format(http.TimeFormat)

func newTestEdge(t testing.TB, configure ...func(*EdgeConfig)) (*harness, []byte) {
	t.Helper()
	h := newHarness(t, configure...)
	data := patternBytes(0, testSize)
	h.store.put(testKey, testETag, data)
	return h, data
}

func TestFullDownload(t *testing.T) {
	h, data := newTestEdge(t)
	resp, body := h.do(t, "GET", h.url(t, testKey))
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
	for name, want := range map[string]string{
		"Content-Length":      fmt.Sprint(testSize),
		"Content-Type":        "application/x-test",
		"Content-Disposition": `attachment; filename="sluice.tar.gz"`,
		"ETag":                `"` + testETag + `"`,
		"Last-Modified":       lastModified,
		"Accept-Ranges":       "bytes",
		"Cache-Control":       "private, no-store",
		"Content-Range":       "",
	} {
		wantHeader(t, resp, name, want)
	}

	end := h.slots.waitEnd(t)
	if end.ticket != "t-1" || end.epoch != 7 {
		t.Errorf("EndStream for %+v, want the token's ticket and epoch", end)
	}
	// One stream is one connection in the ledger: begin and end name the same one.
	if calls := h.slots.snapshot(); len(calls) == 0 || calls[0].op != "begin" || calls[0].conn == "" || calls[0].conn != end.conn {
		t.Errorf("connection ids: begin %+v, end %+v; want one non-empty id for the stream", calls, end)
	}
	if got := h.slots.reported(); got != testSize {
		t.Errorf("ledger told %d bytes, want %d", got, testSize)
	}
	if n := h.slots.count("begin"); n != 1 {
		t.Errorf("%d BeginStream calls, want 1", n)
	}
	wantOpens(t, h.store, openCall{testKey, 0, testSize, testETag})
}

// The trailing file name is for clients that name the file after the URL; it changes nothing.
func TestDownloadWithFileName(t *testing.T) {
	h, data := newTestEdge(t)
	resp, body := h.do(t, "GET", h.url(t, testKey)+"/sluice.tar.gz")
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
}

func TestHeadIsGetWithoutBodyOrSlot(t *testing.T) {
	for name, header := range map[string][]string{
		"whole object": nil,
		"one range":    {"Range", "bytes=100-199"},
	} {
		t.Run(name, func(t *testing.T) {
			h, _ := newTestEdge(t)
			url := h.url(t, testKey)
			head, body := h.do(t, "HEAD", url, header...)
			if len(body) != 0 {
				t.Errorf("HEAD: %d body bytes", len(body))
			}
			// One read of the ledger (is the slot still held?), nothing opened or taken.
			calls, opens := h.slots.snapshot(), h.store.openCalls()
			if len(calls) != 1 || calls[0].op != "check" || len(opens) != 0 {
				t.Fatalf("HEAD took a slot or opened the object: %v %v", calls, opens)
			}
			get, _ := h.do(t, "GET", url, header...)
			h.slots.waitEnd(t)
			if head.StatusCode != get.StatusCode {
				t.Errorf("HEAD %d, GET %d", head.StatusCode, get.StatusCode)
			}
			head.Header.Del("Date")
			get.Header.Del("Date")
			if !maps.EqualFunc(head.Header, get.Header, slices.Equal) {
				t.Errorf("HEAD headers %v\nGET headers  %v", head.Header, get.Header)
			}
		})
	}
}

func TestSingleRanges(t *testing.T) {
	const n = testSize
	for _, tc := range []struct {
		name, header string
		start, last  int64
	}{
		{"first bytes", "bytes=0-99", 0, 99},
		{"middle", "bytes=1000-1999", 1000, 1999},
		{"one byte", "bytes=5-5", 5, 5},
		{"suffix", "bytes=-500", n - 500, n - 1},
		{"suffix beyond the size", "bytes=-50000", 0, n - 1},
		{"open-ended", "bytes=9000-", 9000, n - 1},
		{"last byte past the end", "bytes=9990-20000", 9990, n - 1},
		{"coalesced", "bytes=0-9, 10-19, 5-15", 0, 19},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, data := newTestEdge(t)
			resp, body := h.do(t, "GET", h.url(t, testKey), "Range", tc.header)
			wantStatus(t, resp, http.StatusPartialContent)
			wantBody(t, body, data[tc.start:tc.last+1])
			wantHeader(t, resp, "Content-Range", fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.last, n))
			wantHeader(t, resp, "Content-Length", fmt.Sprint(tc.last-tc.start+1))
			wantHeader(t, resp, "Content-Type", "application/x-test")
			h.slots.waitEnd(t)
			if got := h.slots.reported(); got != tc.last-tc.start+1 {
				t.Errorf("ledger told %d bytes, want %d", got, tc.last-tc.start+1)
			}
			// Storage is asked for exactly the range, never for the rest of the object.
			wantOpens(t, h.store, openCall{testKey, tc.start, tc.last - tc.start + 1, testETag})
		})
	}
}

func TestIgnoredRangeSendsWholeObject(t *testing.T) {
	h, data := newTestEdge(t)
	url := h.url(t, testKey)
	for _, header := range []string{
		"bytes=abc",
		"bytes=5-1",
		"pages=0-1",
		"bytes=" + strings.Repeat("0-0,", maxRanges+1),
	} {
		resp, body := h.do(t, "GET", url, "Range", header)
		wantStatus(t, resp, http.StatusOK)
		wantBody(t, body, data)
		wantHeader(t, resp, "Content-Range", "")
	}
	// Two Range fields are not one valid header.
	resp, body := h.do(t, "GET", url, "Range", "bytes=0-1", "Range", "bytes=2-3")
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
}

func TestUnsatisfiableRange(t *testing.T) {
	h, _ := newTestEdge(t)
	url := h.url(t, testKey)
	for _, header := range []string{"bytes=10000-", "bytes=20000-30000", "bytes=-0", "bytes=99999999999999999999999-"} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, _ := h.do(t, method, url, "Range", header)
			wantStatus(t, resp, http.StatusRequestedRangeNotSatisfiable)
			wantHeader(t, resp, "Content-Range", fmt.Sprintf("bytes */%d", testSize))
		}
	}
	if calls := h.slots.snapshot(); len(calls) != 0 {
		t.Errorf("a 416 touched the ledger: %v", calls)
	}
}

func TestMultipleRanges(t *testing.T) {
	h, data := newTestEdge(t)
	resp, body := h.do(t, "GET", h.url(t, testKey), "Range", "bytes=5000-5099, 0-9, 5050-5199")
	wantStatus(t, resp, http.StatusPartialContent)
	if resp.ContentLength != int64(len(body)) {
		t.Fatalf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}
	media, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || media != "multipart/byteranges" {
		t.Fatalf("Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
	}
	wantHeader(t, resp, "Content-Range", "")

	// In request order, the overlapping ranges served as one.
	want := []struct{ start, last int }{{5000, 5199}, {0, 9}}
	mr := multipart.NewReader(strings.NewReader(string(body)), params["boundary"])
	for i, w := range want {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if cr := part.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", w.start, w.last, testSize) {
			t.Errorf("part %d Content-Range %q", i, cr)
		}
		got, _ := io.ReadAll(part)
		wantBody(t, got, data[w.start:w.last+1])
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more parts than ranges: %v", err)
	}
	h.slots.waitEnd(t)
	if got := h.slots.reported(); got != 210 {
		t.Errorf("ledger told %d bytes, want the 210 of object data", got)
	}
	wantOpens(t, h.store, openCall{testKey, 5000, 200, testETag}, openCall{testKey, 0, 10, testETag})
}

func TestIfRange(t *testing.T) {
	h, data := newTestEdge(t)
	url := h.url(t, testKey)
	for _, tc := range []struct {
		ifRange string
		partial bool
	}{
		{`"` + testETag + `"`, true},
		{lastModified, true},
		{`"etag-v0"`, false},
		{`W/"` + testETag + `"`, false}, // If-Range compares strongly
		{testModTime.Add(-time.Hour).Format(http.TimeFormat), false},
		{"not a validator", false},
	} {
		resp, body := h.do(t, "GET", url, "Range", "bytes=0-9", "If-Range", tc.ifRange)
		if tc.partial {
			wantStatus(t, resp, http.StatusPartialContent)
			wantBody(t, body, data[:10])
		} else {
			wantStatus(t, resp, http.StatusOK)
			wantBody(t, body, data)
		}
	}
}

func TestConditionals(t *testing.T) {
	current := `"` + testETag + `"`
	before := testModTime.Add(-time.Hour).Format(http.TimeFormat)
	after := testModTime.Add(time.Hour).Format(http.TimeFormat)
	for _, tc := range []struct {
		name   string
		header []string
		want   int
	}{
		{"If-None-Match current", []string{"If-None-Match", current}, http.StatusNotModified},
		{"If-None-Match weak current", []string{"If-None-Match", `W/"` + testETag + `"`}, http.StatusNotModified},
		{"If-None-Match in a list", []string{"If-None-Match", `"a", ` + current}, http.StatusNotModified},
		{"If-None-Match star", []string{"If-None-Match", "*"}, http.StatusNotModified},
		{"If-None-Match other", []string{"If-None-Match", `"other"`}, http.StatusOK},
		{"If-Match current", []string{"If-Match", current}, http.StatusOK},
		{"If-Match star", []string{"If-Match", "*"}, http.StatusOK},
		{"If-Match other", []string{"If-Match", `"other"`}, http.StatusPreconditionFailed},
		{"If-Match weak", []string{"If-Match", `W/"` + testETag + `"`}, http.StatusPreconditionFailed},
		{"If-Modified-Since after", []string{"If-Modified-Since", after}, http.StatusNotModified},
		{"If-Modified-Since same", []string{"If-Modified-Since", lastModified}, http.StatusNotModified},
		{"If-Modified-Since before", []string{"If-Modified-Since", before}, http.StatusOK},
		{"If-Modified-Since malformed", []string{"If-Modified-Since", "yesterday"}, http.StatusOK},
		{"If-Unmodified-Since before", []string{"If-Unmodified-Since", before}, http.StatusPreconditionFailed},
		{"If-Unmodified-Since after", []string{"If-Unmodified-Since", after}, http.StatusOK},
		// RFC 9110 §13.2.2: If-Match decides before If-Unmodified-Since, If-None-Match
		// before If-Modified-Since, and failed preconditions before 304.
		{"If-Match over If-Unmodified-Since", []string{"If-Match", current, "If-Unmodified-Since", before}, http.StatusOK},
		{"If-None-Match over If-Modified-Since", []string{"If-None-Match", `"other"`, "If-Modified-Since", after}, http.StatusOK},
		{"412 before 304", []string{"If-Match", `"other"`, "If-None-Match", current}, http.StatusPreconditionFailed},
		{"preconditions before Range", []string{"If-None-Match", current, "Range", "bytes=0-1"}, http.StatusNotModified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestEdge(t)
			resp, body := h.do(t, "GET", h.url(t, testKey), tc.header...)
			wantStatus(t, resp, tc.want)
			if tc.want == http.StatusOK {
				h.slots.waitEnd(t)
				return
			}
			if tc.want == http.StatusNotModified {
				if len(body) != 0 {
					t.Errorf("304 with a %d byte body", len(body))
				}
				wantHeader(t, resp, "ETag", current)
			}
			if calls := h.slots.snapshot(); len(calls) != 0 {
				t.Errorf("a %d touched the ledger: %v", tc.want, calls)
			}
		})
	}
}

func TestEmptyObject(t *testing.T) {
	h := newHarness(t)
	h.store.put("empty.txt", "e0", nil)
	url := h.url(t, "empty.txt")

	resp, body := h.do(t, "GET", url)
	wantStatus(t, resp, http.StatusOK)
	wantHeader(t, resp, "Content-Length", "0")
	if len(body) != 0 {
		t.Errorf("%d body bytes", len(body))
	}
	if end := h.slots.waitEnd(t); end.sent != 0 {
		t.Errorf("EndStream sent %d", end.sent)
	}
	for _, header := range []string{"bytes=0-", "bytes=0-0", "bytes=-1"} {
		resp, _ := h.do(t, "GET", url, "Range", header)
		wantStatus(t, resp, http.StatusRequestedRangeNotSatisfiable)
		wantHeader(t, resp, "Content-Range", "bytes */0")
	}
}

// wantProblem checks a refusal is RFC 9457 problem details with a code, that the
// token never comes back in the body, and returns the details.
func wantProblem(t testing.TB, resp *http.Response, body []byte, status int, mentions string) api.Problem {
	t.Helper()
	wantStatus(t, resp, status)
	wantHeader(t, resp, "Content-Type", "application/problem+json")
	var e api.Problem
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if e.Error == "" || e.Hint == "" || e.Code == "" || e.Title == "" {
		t.Errorf("body %q lacks an error, a hint, a code or a title", body)
	}
	if e.Status != status || e.Detail != e.Error || e.Type != "https://sluice.dev/problems/"+e.Code {
		t.Errorf("body %q: status, detail or type do not match the answer", body)
	}
	if e.Instance != "/d/redacted" {
		t.Errorf("instance %q, want the path with the token redacted", e.Instance)
	}
	if _, tok, _ := strings.Cut(resp.Request.URL.Path, "/d/"); len(tok) > 3 && strings.Contains(string(body), tok) {
		t.Errorf("body %q echoes the token", body)
	}
	if !strings.Contains(e.Error+" "+e.Hint, mentions) {
		t.Errorf("body %q does not mention %q", body, mentions)
	}
	return e
}

func TestRefusedBeforeStreaming(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(t testing.TB, h *harness) string // returns the URL to get
		status   int
		mentions string
		code     string
	}{
		{"forged token", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			return url[:len(url)-3] + "AAA"
		}, http.StatusForbidden, "new ticket", "invalid_link"},
		{"garbage token", func(t testing.TB, h *harness) string { return h.srv.URL + "/d/garbage" }, http.StatusForbidden, "invalid", "invalid_link"},
		{"token of another object", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			other := h.url(t, "other", func(c *token.Claims) { c.ETag = testETag })
			// the other token's payload under this token's MAC
			base, tok, _ := strings.Cut(url, "/d/")
			_, otherToken, _ := strings.Cut(other, "/d/")
			p, o := strings.Split(tok, "."), strings.Split(otherToken, ".")
			return base + "/d/" + p[0] + "." + o[1] + "." + p[2]
		}, http.StatusForbidden, "invalid", "invalid_link"},
		{"expired token", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey, func(c *token.Claims) { c.Expires = h.clock.Now().Add(time.Minute) })
			h.clock.advance(2 * time.Minute)
			return url
		}, http.StatusGone, "new ticket", "link_expired"},
		{"object changed", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			h.store.put(testKey, "etag-v2", []byte("new content"))
			return url
		}, http.StatusGone, "object changed since the ticket was issued", "object_changed"},
		{"object removed", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			h.store.remove(testKey)
			return url
		}, http.StatusNotFound, "not found", "object_not_found"},
		{"storage down", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			h.store.setUnavailable(true)
			return url
		}, http.StatusServiceUnavailable, "Retry-After", "storage_unavailable"},
		{"storage refuses the edge's credentials", func(t testing.TB, h *harness) string {
			url := h.url(t, testKey)
			h.store.setRefusing(fmt.Errorf("stat %q: %w", testKey, &objstore.AccessError{Code: "AccessDenied", Message: "Access Denied."}))
			return url
		}, http.StatusServiceUnavailable, "AccessDenied: Access Denied.", "storage_access_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestEdge(t)
			url := tc.setup(t, h)
			resp, body := h.do(t, "GET", url)
			if p := wantProblem(t, resp, body, tc.status, tc.mentions); p.Code != tc.code {
				t.Errorf("code %q, want %q", p.Code, tc.code)
			}
			switch tc.code {
			case "storage_unavailable":
				wantHeader(t, resp, "Retry-After", "5")
			case "storage_access_denied": // no use retrying until an operator acts
				wantHeader(t, resp, "Retry-After", "30")
			}
			wantHeader(t, resp, "Content-Disposition", "")
			if calls := h.slots.snapshot(); len(calls) != 0 {
				t.Errorf("refused request touched the ledger: %v", calls)
			}
			head, _ := h.do(t, "HEAD", url)
			wantStatus(t, head, tc.status)
		})
	}
}

func TestLedgerRefusals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		retryAfter string
		code       string
	}{
		{"too many connections", errTooMany, http.StatusTooManyRequests, "5", "too_many_connections"},
		{"wrapped too many connections", fmt.Errorf("begin: %w", errTooMany), http.StatusTooManyRequests, "5", "too_many_connections"},
		{"slot not held", errNotHeld, http.StatusGone, "", "slot_not_held"},
		{"ledger unreachable", fmt.Errorf("dial tcp: connection refused"), http.StatusServiceUnavailable, "5", "redis_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestEdge(t)
			h.slots.beginErr = tc.err
			resp, body := h.do(t, "GET", h.url(t, testKey))
			if p := wantProblem(t, resp, body, tc.status, ""); p.Code != tc.code {
				t.Errorf("code %q, want %q", p.Code, tc.code)
			}
			wantHeader(t, resp, "Retry-After", tc.retryAfter)
			wantHeader(t, resp, "Content-Length", fmt.Sprint(len(body)))
			if n := h.slots.count("end"); n != 0 {
				t.Errorf("%d EndStream calls for a stream that never began", n)
			}
			if opens := h.store.openCalls(); len(opens) != 0 {
				t.Errorf("opened the object without a slot: %v", opens)
			}
			// HEAD takes no slot but answers as GET does: an ended ticket's link is 410.
			head, body := h.do(t, "HEAD", h.url(t, testKey))
			wantStatus(t, head, tc.status)
			wantHeader(t, head, "Retry-After", tc.retryAfter)
			if len(body) != 0 {
				t.Errorf("HEAD with a %d byte body", len(body))
			}
			if n := h.slots.count("check"); n != 1 {
				t.Errorf("HEAD asked the ledger %d times, want once", n)
			}
		})
	}
}

// The object changes between Stat and Open: nothing has been sent, so the client
// still gets a proper 410, and the slot taken is given back.
func TestObjectChangedBeforeFirstByte(t *testing.T) {
	h, _ := newTestEdge(t)
	h.store.setOpenErr(fmt.Errorf("memstore: %w", objstore.ErrChanged))
	resp, body := h.do(t, "GET", h.url(t, testKey))
	wantProblem(t, resp, body, http.StatusGone, "object changed")
	if end := h.slots.waitEnd(t); end.sent != 0 {
		t.Errorf("EndStream sent %d, want 0", end.sent)
	}
}

func TestMethodsAndHealth(t *testing.T) {
	h, _ := newTestEdge(t)
	resp, body := h.do(t, "GET", h.srv.URL+"/healthz")
	wantStatus(t, resp, http.StatusOK)
	if string(body) != "{\"status\":\"ok\"}\n" {
		t.Errorf("healthz body %q", body)
	}
	resp, body = h.do(t, "POST", h.url(t, testKey))
	if p := wantProblem(t, resp, body, http.StatusMethodNotAllowed, "GET"); p.Code != "method_not_allowed" || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: code %q, Allow %q", p.Code, resp.Header.Get("Allow"))
	}
	resp, body = h.do(t, "GET", h.srv.URL+"/d/")
	if p := wantProblem(t, resp, body, http.StatusNotFound, "download_url"); p.Code != "no_route" {
		t.Errorf("GET /d/: code %q", p.Code)
	}
}

func TestContentDisposition(t *testing.T) {
	for name, want := range map[string]string{
		"sluice.tar.gz":   `attachment; filename="sluice.tar.gz"`,
		"my file (1).iso": `attachment; filename="my file (1).iso"`,
		"résumé.pdf":      `attachment; filename="r_sum_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`,
		"数据.zip":          `attachment; filename="__.zip"; filename*=UTF-8''%E6%95%B0%E6%8D%AE.zip`,
		`say "hi".txt`:    `attachment; filename="say _hi_.txt"; filename*=UTF-8''say%20%22hi%22.txt`,
		`100%.bin`:        `attachment; filename="100_.bin"; filename*=UTF-8''100%25.bin`,
		"tab\there":       `attachment; filename="tab_here"; filename*=UTF-8''tab%09here`,
	} {
		if got := contentDisposition(name); got != want {
			t.Errorf("contentDisposition(%q) = %s\nwant %s", name, got, want)
		}
		// A client that understands filename* must read back the exact name.
		_, params, err := mime.ParseMediaType(contentDisposition(name))
		if err != nil || params["filename"] != name {
			t.Errorf("%q: mime reads %q, %v", name, params["filename"], err)
		}
	}
}

func wantOpens(t testing.TB, store *memStore, want ...openCall) {
	t.Helper()
	if got := store.openCalls(); !slices.Equal(got, want) {
		t.Errorf("store opened %v, want %v", got, want)
	}
}
