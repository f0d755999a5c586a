package signer

import (
	"bytes"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// FuzzRangeAgainstServeContent is a differential test of the edge's Range and
// conditional handling (ranges.go, conditional.go) against net/http.ServeContent over
// a bytes.Reader. For random Range, If-Range, If-Match, If-None-Match,
// If-Modified-Since and If-Unmodified-Since headers, object sizes and modification
// times, the edge (a real request through its handler) must answer the status
// ServeContent answers and, for a single range, the same Content-Range and bytes.
//
// Where the edge differs on purpose, expect() says so and asks ServeContent the
// question whose answer the edge gives; each difference is commented there. Multiple
// ranges are compared as the set of bytes they select: the edge coalesces, ServeContent
// does not (and gives up on overlapping ranges), so the parts and their framing differ.
//
// Headers are sent at most once each (the edge and ServeContent read repeated
// conditional headers differently, and clients do not repeat them).
func FuzzRangeAgainstServeContent(f *testing.F) {
	et := `"` + testETag + `"`
	date := func(d time.Duration) string { return testModTime.Add(d).Format(http.TimeFormat) }
	// present is a bitmask: which of Range, If-Range, If-Match, If-None-Match,
	// If-Modified-Since, If-Unmodified-Since are sent (a header may be sent empty).
	for _, s := range []struct {
		size                       uint16
		nanos                      uint32
		present                    uint8
		rng, ir, im, inm, ims, ius string
	}{
		{1000, 0, 0b000001, "bytes=0-99", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=-100", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=900-", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=990-5000", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=1000-", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=0-9,20-29,5-14", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=0-9,10-19", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=0-0," + strings.Repeat("2-2,", 16), "", "", "", "", ""},
		{1000, 0, 0b000001, "Bytes=0-1", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=0 - 1", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=-0", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=99999999999999999999-", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=99999999999999999999-99999999999999999998", "", "", "", "", ""},
		{1000, 0, 0b000001, "bytes=5-3", "", "", "", "", ""},
		{1000, 0, 0b000001, "items=0-1", "", "", "", "", ""},
		{0, 0, 0b000001, "bytes=0-", "", "", "", "", ""},
		{0, 0, 0b000001, "bytes=-5", "", "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", et, "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", `"etag-v0"`, "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", `W/` + et, "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", et + ` x`, "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", date(0), "", "", "", ""},
		{1000, 5e8, 0b000011, "bytes=0-9", date(0), "", "", "", ""},
		{1000, 0, 0b000011, "bytes=0-9", "", "", "", "", ""},
		{1000, 0, 0b000100, "", "", et, "", "", ""},
		{1000, 0, 0b000100, "", "", `"x", ` + et, "", "", ""},
		{1000, 0, 0b000100, "", "", "*", "", "", ""},
		{1000, 0, 0b000100, "", "", `W/` + et, "", "", ""},
		{1000, 0, 0b000100, "", "", "", "", "", ""},
		{1000, 0, 0b001000, "", "", "", et, "", ""},
		{1000, 0, 0b001000, "", "", "", `W/` + et, "", ""},
		{1000, 0, 0b001000, "", "", "", "*", "", ""},
		{1000, 0, 0b011000, "", "", "", "", date(0), ""},
		{1000, 0, 0b010000, "", "", "", "", date(0), ""},
		{1000, 0, 0b010000, "", "", "", "", date(-time.Second), ""},
		{1000, 0, 0b100000, "", "", "", "", "", date(-time.Second)},
		{1000, 0, 0b100000, "", "", "", "", "", date(0)},
		{1000, 999999999, 0b100001, "bytes=0-1", "", "", "", "", "Friday, 14-Mar-25 15:09:26 GMT"},
		{1000, 0, 0b101101, "bytes=1-2", "", et, `"other"`, "", date(time.Hour)},
	} {
		f.Add(s.size, s.nanos, s.present, s.rng, s.ir, s.im, s.inm, s.ims, s.ius)
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, size uint16, nanos uint32, present uint8, rng, ir, im, inm, ims, ius string) {
		names := []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"}
		header := http.Header{}
		for i, v := range []string{rng, ir, im, inm, ims, ius} {
			if present&(1<<i) == 0 {
				continue
			}
			if !validFieldValue(v) {
				t.Skip("not a value an HTTP client can send")
			}
			// The server hands handlers values without surrounding whitespace.
			header[names[i]] = []string{strings.Trim(v, " \t")}
		}
		obj := fuzzObject{size: int64(size), modTime: testModTime.Add(time.Duration(nanos % 1e9)), etag: `"` + testETag + `"`}
		obj.data = patternBytes(0, obj.size)
		h.store.mu.Lock()
		h.store.objects[testKey] = memObject{
			info: objstore.Info{Key: testKey, Size: obj.size, ETag: testETag, ContentType: "application/octet-stream", ModTime: obj.modTime},
			fill: fillPattern,
		}
		h.store.opens = nil
		h.store.mu.Unlock()

		want := expect(t, obj, header)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.url(t, testKey), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header.Clone()
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		got := outcome{status: resp.StatusCode}
		switch resp.StatusCode {
		case http.StatusOK:
			if !bytes.Equal(body, obj.data) {
				t.Fatalf("%v: 200 with %d bytes that are not the object's %d", header, len(body), obj.size)
			}
		case http.StatusPartialContent:
			got.parts = servedParts(t, obj, resp.Header, body)
		case http.StatusRequestedRangeNotSatisfiable:
			if cr := resp.Header.Get("Content-Range"); cr != "bytes */"+strconv.FormatInt(obj.size, 10) {
				t.Fatalf("%v: 416 with Content-Range %q", header, cr)
			}
		}
		if got.status != want.status || !slices.Equal(got.parts, want.parts) {
			t.Fatalf("object of %d bytes, modified %s, headers %q:\nedge         %d %v\nServeContent %d %v (%s)",
				obj.size, obj.modTime.Format(time.RFC3339Nano), header, got.status, got.parts, want.status, want.parts, want.why)
		}
	})
}

type fuzzObject struct {
	size    int64
	modTime time.Time
	etag    string // quoted
	data    []byte
}

// span is a served part: bytes first..last of the object.
type span struct{ first, last int64 }

// outcome is a response reduced to what must agree: the status and, for 206, the
// spans served (in order for a single range, sorted for several).
type outcome struct {
	status int
	parts  []span
	why    string // which difference, if any, shaped the expectation
}

// neverMatches is an entity-tag no object has: the question that makes ServeContent
// answer as the edge does where the two read a header differently.
const neverMatches = `"sluice-fuzz-never-matches"`

// expect asks ServeContent what the edge must answer.
func expect(t *testing.T, obj fuzzObject, h http.Header) outcome {
	h = h.Clone()
	var why []string
	// An empty If-Match or If-None-Match is a list of no entity-tags, which nothing
	// matches (RFC 9110 §13.1.1, §13.1.2): If-Match fails, If-None-Match passes, and
	// either, being present, turns off its date counterpart. ServeContent reads an
	// empty value as an absent header.
	for _, name := range []string{"If-Match", "If-None-Match"} {
		if v, ok := h[name]; ok && v[0] == "" {
			h.Set(name, neverMatches)
			why = append(why, "empty "+name)
		}
	}
	// If-Range is one entity-tag or one HTTP-date (RFC 9110 §13.1.5). The edge honours
	// the Range only for exactly the current strong tag, or the date; an empty value,
	// or a tag followed by anything, is no validator and the whole object is sent.
	// ServeContent takes an empty If-Range as absent and ignores what follows a tag.
	if v, ok := h["If-Range"]; ok {
		if ir := v[0]; ir == "" || (strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/")) && !oneEntityTag.MatchString(ir) {
			h.Set("If-Range", neverMatches)
			why = append(why, "If-Range not exactly one validator")
		}
	}
	rng, hasRange := h["Range"]
	var specs []string
	if hasRange {
		var ok bool
		if specs, ok = strictRangeSpecs(rng[0]); !ok || len(specs) == 0 {
			// The edge ignores a Range it cannot read, of another unit, with a spec
			// that breaks the grammar (spaces inside, signs, last < first) or with more
			// than maxRanges ranges, and sends the whole object (RFC 9110 §14.2 lets a
			// server ignore it; clients that send such headers get their file). It reads
			// the unit case-insensitively. ServeContent answers 416 to most of these.
			h.Del("Range")
			hasRange = false
			if rng[0] != "" {
				why = append(why, "Range ignored")
			}
		}
	}
	noRange := h.Clone()
	noRange.Del("Range")
	whole := serveContent(obj, noRange, "")
	whole.why = strings.Join(why, "; ")
	if !hasRange || whole.status != http.StatusOK {
		return whole // no Range, or the preconditions decided (304, 412)
	}
	// Does If-Range let the Range apply? Asked of a one-byte object with the same
	// validators, where ServeContent's answer cannot be confused with anything else.
	probe := fuzzObject{size: 1, modTime: obj.modTime, etag: obj.etag, data: []byte{0}}
	if serveContent(probe, h, "bytes=0-0").status != http.StatusPartialContent {
		return whole
	}
	// Each range on its own, its numbers saturated at MaxInt64: the edge reads a
	// number too large for an int64 as the valid, huge number it is (past the end of
	// any object), ServeContent as invalid.
	var ranges []span
	for _, spec := range specs {
		one := serveContent(obj, h, "bytes="+spec)
		// A suffix of 0 bytes, and any range of an empty object, select no byte: the
		// edge finds them unsatisfiable (RFC 9110 §14.1.1) where ServeContent sends an
		// empty 206 or, for an empty object, 200.
		if one.status == http.StatusPartialContent && len(one.parts) == 1 {
			ranges = append(ranges, one.parts[0])
		}
	}
	if len(ranges) == 0 {
		return outcome{status: http.StatusRequestedRangeNotSatisfiable, why: strings.Join(append(why, "no satisfiable range"), "; ")}
	}
	if len(specs) > 1 {
		// The edge coalesces overlapping and adjacent ranges (a byte is never sent
		// twice) where ServeContent sends each part, or the whole object when the parts
		// add up to more than it.
		why = append(why, "ranges coalesced")
	}
	return outcome{status: http.StatusPartialContent, parts: union(ranges), why: strings.Join(why, "; ")}
}

// serveContent is net/http's answer for obj with the request headers h, Range
// replaced by rng when rng is not empty.
func serveContent(obj fuzzObject, h http.Header, rng string) outcome {
	req := httptest.NewRequest(http.MethodGet, "/obj", nil)
	req.Header = h.Clone()
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	rec := httptest.NewRecorder()
	rec.Header().Set("ETag", obj.etag)
	rec.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(rec, req, "obj", obj.modTime, bytes.NewReader(obj.data))
	o := outcome{status: rec.Code}
	if rec.Code == http.StatusPartialContent && !strings.HasPrefix(rec.Header().Get("Content-Type"), "multipart/") {
		if s, ok := parseContentRange(rec.Header().Get("Content-Range")); ok && s.last >= s.first {
			o.parts = []span{s}
		}
	}
	return o
}

// servedParts checks the parts of a 206 from the edge against the object and returns
// their spans, sorted when there are several.
func servedParts(t *testing.T, obj fuzzObject, h http.Header, body []byte) []span {
	t.Helper()
	mt, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt != "multipart/byteranges" {
		s, ok := parseContentRange(h.Get("Content-Range"))
		if !ok || s.last >= obj.size || !bytes.Equal(body, obj.data[s.first:s.last+1]) {
			t.Fatalf("206 %q: %d bytes that are not the object's", h.Get("Content-Range"), len(body))
		}
		return []span{s}
	}
	var parts []span
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart body: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("multipart part: %v", err)
		}
		s, ok := parseContentRange(p.Header.Get("Content-Range"))
		if !ok || s.last >= obj.size || !bytes.Equal(b, obj.data[s.first:s.last+1]) {
			t.Fatalf("part %q: %d bytes that are not the object's", p.Header.Get("Content-Range"), len(b))
		}
		parts = append(parts, s)
	}
	if len(parts) < 2 {
		t.Fatalf("multipart/byteranges with %d parts", len(parts))
	}
	slices.SortFunc(parts, func(a, b span) int { return int(a.first - b.first) })
	for i := 1; i < len(parts); i++ {
		if parts[i].first <= parts[i-1].last+1 {
			t.Fatalf("parts %v overlap or touch: they should have been coalesced", parts)
		}
	}
	return parts
}

var contentRangePattern = regexp.MustCompile(`^bytes ([0-9]+)-([0-9]+)/[0-9]+$`)

func parseContentRange(v string) (span, bool) {
	m := contentRangePattern.FindStringSubmatch(v)
	if m == nil {
		return span{}, false
	}
	first, err1 := strconv.ParseInt(m[1], 10, 64)
	last, err2 := strconv.ParseInt(m[2], 10, 64)
	return span{first, last}, err1 == nil && err2 == nil
}

// union merges spans that overlap or touch, sorted by their first byte.
func union(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return int(a.first - b.first) })
	out := spans[:1]
	for _, s := range spans[1:] {
		cur := &out[len(out)-1]
		if s.first > cur.last+1 {
			out = append(out, s)
			continue
		}
		cur.last = max(cur.last, s.last)
	}
	return out
}

var (
	oneEntityTag = regexp.MustCompile(`^(W/)?"[\x21\x23-\x7e\x80-\xff]*"$`)
	rangeElement = regexp.MustCompile(`^(?:([0-9]+)-([0-9]*)|-([0-9]+))$`)
)

// strictRangeSpecs reads a Range header by RFC 9110 §14.1.1's grammar, written out
// independently of parseRange: the unit "bytes" in any case, a comma-separated list
// with optional whitespace around the elements, each "first-last" (first <= last),
// "first-" or "-suffix", at most maxRanges of them. It returns the specs with their
// numbers saturated at MaxInt64, ok false when the header does not follow the grammar.
func strictRangeSpecs(v string) ([]string, bool) {
	unit, set, ok := strings.Cut(v, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return nil, false
	}
	var specs []string
	for elem := range strings.SplitSeq(set, ",") {
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue
		}
		m := rangeElement.FindStringSubmatch(elem)
		if m == nil || m[2] != "" && digitsLess(m[2], m[1]) {
			return nil, false
		}
		switch {
		case m[3] != "":
			specs = append(specs, "-"+saturate(m[3]))
		case m[2] == "":
			specs = append(specs, saturate(m[1])+"-")
		default:
			specs = append(specs, saturate(m[1])+"-"+saturate(m[2]))
		}
	}
	return specs, len(specs) <= maxRanges
}

// digitsLess compares two decimal numbers of any length.
func digitsLess(a, b string) bool {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func saturate(digits string) string {
	if n, err := strconv.ParseInt(digits, 10, 64); err == nil {
		return strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(math.MaxInt64, 10)
}

// validFieldValue: what net/http's client agrees to send as a header value.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
