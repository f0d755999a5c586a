package signer

import (
	"cmp"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Range requests (RFC 9110 §14), parsed here rather than by http.ServeContent so that
// storage is asked for exactly the bytes a response carries (see FIELD-NOTES: seeking
// a remote object is six times slower).
//
// What the edge does with a Range header:
//   - absent, of another unit than bytes, syntactically invalid, or listing more than
//     maxRanges ranges: ignored, the whole object is sent with 200;
//   - valid but with no range overlapping the object: 416 with Content-Range bytes */size;
//     on an empty object every range is unsatisfiable, since no 206 can describe it;
//   - a suffix longer than the object selects the whole object, and a last position at
//     or past the end is clamped to the last byte;
//   - the satisfiable ranges are coalesced where they overlap or touch. One range left
//     is a plain 206 with Content-Range; several are one 206 multipart/byteranges with
//     the parts in the order the client asked for them (RFC 9110 §14.6) and an exact
//     Content-Length. Coalescing also means a multipart body never carries a byte twice,
//     so it is never larger than the object plus the part headers.

// maxRanges is the most range-specs a Range header may list before it is ignored: more
// is the mark of a broken client or of an attempt to make the edge do needless work.
const maxRanges = 16

// errRangeUnsatisfiable: no range of a valid Range header overlaps the object.
var errRangeUnsatisfiable = errors.New("range not satisfiable")

// byteRange is a non-empty span of an object: length bytes from start.
type byteRange struct {
	start, length int64
}

func (r byteRange) last() int64 { return r.start + r.length - 1 }

// contentRange is the Content-Range value of r within an object of size bytes.
func (r byteRange) contentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.start, 10) + "-" + strconv.FormatInt(r.last(), 10) + "/" + strconv.FormatInt(size, 10)
}

// rangeSpec is one parsed range-spec, not yet resolved against a size.
type rangeSpec struct {
	first, last int64 // last < 0: open-ended "first-"
	suffix      int64 // suffix > -1 only for "-suffix", then first and last are unused
}

// parseRange resolves a Range header against an object of size bytes. nil ranges and a
// nil error mean the header is to be ignored (send the whole object); the error is
// errRangeUnsatisfiable when the header is valid but selects nothing.
func parseRange(header string, size int64) ([]byteRange, error) {
	unit, set, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return nil, nil
	}
	var specs []rangeSpec
	for elem := range strings.SplitSeq(set, ",") {
		elem = strings.Trim(elem, " \t")
		if elem == "" {
			continue // empty list elements are allowed and ignored (RFC 9110 §5.6.1)
		}
		if len(specs) == maxRanges {
			return nil, nil
		}
		spec, ok := parseRangeSpec(elem)
		if !ok {
			return nil, nil
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		return nil, nil
	}
	ranges := make([]byteRange, 0, len(specs))
	for _, spec := range specs {
		if r, ok := spec.resolve(size); ok {
			ranges = append(ranges, r)
		}
	}
	if len(ranges) == 0 {
		return nil, errRangeUnsatisfiable
	}
	return coalesce(ranges), nil
}

// parseRangeSpec parses "first-last", "first-" or "-suffix". Numbers too large for an
// int64 saturate: they are still valid numbers, only past the end of any object.
func parseRangeSpec(s string) (rangeSpec, bool) {
	firstStr, lastStr, ok := strings.Cut(s, "-")
	if !ok {
		return rangeSpec{}, false
	}
	if firstStr == "" {
		n, ok := parseDigits(lastStr)
		return rangeSpec{suffix: n}, ok
	}
	first, ok := parseDigits(firstStr)
	if !ok {
		return rangeSpec{}, false
	}
	if lastStr == "" {
		return rangeSpec{first: first, last: -1, suffix: -1}, true
	}
	last, ok := parseDigits(lastStr)
	// Two numbers that both saturated still have an order: that of their digits.
	if !ok || last < first || last == math.MaxInt64 && first == math.MaxInt64 && decimalLess(lastStr, firstStr) {
		return rangeSpec{}, false
	}
	return rangeSpec{first: first, last: last, suffix: -1}, true
}

// decimalLess compares two strings of decimal digits of any length.
func decimalLess(a, b string) bool {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func parseDigits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
		} else {
			n = n*10 + d
		}
	}
	return n, true
}

// resolve turns the spec into a span of an object of size bytes; false when the spec
// is unsatisfiable.
func (s rangeSpec) resolve(size int64) (byteRange, bool) {
	if s.suffix >= 0 {
		if s.suffix == 0 || size == 0 {
			return byteRange{}, false
		}
		n := min(s.suffix, size)
		return byteRange{start: size - n, length: n}, true
	}
	if s.first >= size {
		return byteRange{}, false
	}
	last := size - 1
	if s.last >= 0 && s.last < last {
		last = s.last
	}
	return byteRange{start: s.first, length: last - s.first + 1}, true
}

// coalesce merges ranges that overlap or touch. The merged ranges keep the order of
// the first request range each contains.
func coalesce(ranges []byteRange) []byteRange {
	if len(ranges) == 1 {
		return ranges
	}
	type group struct {
		byteRange
		order int // index of the earliest request range in the group
	}
	sorted := make([]group, len(ranges))
	for i, r := range ranges {
		sorted[i] = group{r, i}
	}
	slices.SortFunc(sorted, func(a, b group) int { return cmp.Compare(a.start, b.start) })
	merged := sorted[:1]
	for _, g := range sorted[1:] {
		cur := &merged[len(merged)-1]
		if g.start > cur.last()+1 {
			merged = append(merged, g)
			continue
		}
		if g.last() > cur.last() {
			cur.length = g.last() - cur.start + 1
		}
		cur.order = min(cur.order, g.order)
	}
	slices.SortFunc(merged, func(a, b group) int { return cmp.Compare(a.order, b.order) })
	out := make([]byteRange, len(merged))
	for i, g := range merged {
		out[i] = g.byteRange
	}
	return out
}

// body is what a download response carries: its status, the headers describing the
// body, and the spans of the object to copy, each after its multipart header if any.
type body struct {
	status       int
	contentType  string
	contentRange string // a single 206 only
	length       int64  // the exact Content-Length
	parts        []bodyPart
	closing      string // the multipart close delimiter
}

type bodyPart struct {
	header string // multipart part header, empty unless multipart
	span   byteRange
}

// planBody lays out the response for an object of size bytes of type contentType:
// the whole object when ranges is nil, else one range or a multipart/byteranges body
// with the given boundary. The layout is that of mime/multipart, written here so that
// Content-Length is known before the first byte is sent.
func planBody(size int64, contentType string, ranges []byteRange, boundary string) body {
	switch len(ranges) {
	case 0:
		return body{
			status:      http.StatusOK,
			contentType: contentType,
			length:      size,
			parts:       []bodyPart{{span: byteRange{0, size}}},
		}
	case 1:
		return body{
			status:       http.StatusPartialContent,
			contentType:  contentType,
			contentRange: ranges[0].contentRange(size),
			length:       ranges[0].length,
			parts:        []bodyPart{{span: ranges[0]}},
		}
	}
	b := body{
		status:      http.StatusPartialContent,
		contentType: "multipart/byteranges; boundary=" + boundary,
		parts:       make([]bodyPart, len(ranges)),
		closing:     "\r\n--" + boundary + "--\r\n",
	}
	for i, r := range ranges {
		delim := "\r\n--"
		if i == 0 {
			delim = "--"
		}
		header := delim + boundary + "\r\nContent-Type: " + contentType + "\r\nContent-Range: " + r.contentRange(size) + "\r\n\r\n"
		b.parts[i] = bodyPart{header: header, span: r}
		b.length += int64(len(header)) + r.length
	}
	b.length += int64(len(b.closing))
	return b
}
