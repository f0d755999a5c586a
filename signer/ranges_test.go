package signer

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	r := func(start, length int64) byteRange { return byteRange{start, length} }
	for _, tc := range []struct {
		header string
		size   int64
		want   []byteRange // nil: ignored, the whole object
		unsat  bool
	}{
		{header: "bytes=0-99", size: size, want: []byteRange{r(0, 100)}},
		{header: "bytes=0-0", size: size, want: []byteRange{r(0, 1)}},
		{header: "bytes=999-999", size: size, want: []byteRange{r(999, 1)}},
		{header: "bytes=500-", size: size, want: []byteRange{r(500, 500)}},
		{header: "bytes=0-", size: size, want: []byteRange{r(0, 1000)}},
		{header: "bytes=-100", size: size, want: []byteRange{r(900, 100)}},
		{header: "bytes=-1000", size: size, want: []byteRange{r(0, 1000)}},
		{header: "bytes=-5000", size: size, want: []byteRange{r(0, 1000)}},          // suffix longer than the object
		{header: "bytes=900-5000", size: size, want: []byteRange{r(900, 100)}},      // last-pos clamped
		{header: "BYTES=1-2", size: size, want: []byteRange{r(1, 2)}},               // the unit is case-insensitive
		{header: "bytes=1-2, 4-5", size: size, want: []byteRange{r(1, 2), r(4, 2)}}, // OWS in the list
		{header: "bytes= 1-2 ,\t4-5 ", size: size, want: []byteRange{r(1, 2), r(4, 2)}},
		{header: "bytes=,1-2,,", size: size, want: []byteRange{r(1, 2)}},                      // empty elements
		{header: "bytes=1-2,3-4", size: size, want: []byteRange{r(1, 4)}},                     // touching: one range
		{header: "bytes=0-99,50-149,100-", size: size, want: []byteRange{r(0, 1000)}},         // overlapping
		{header: "bytes=500-599,0-99", size: size, want: []byteRange{r(500, 100), r(0, 100)}}, // request order kept
		{header: "bytes=800-899,0-9,850-950,5-20", size: size, want: []byteRange{r(800, 151), r(0, 21)}},
		{header: "bytes=0-1,2000-3000", size: size, want: []byteRange{r(0, 2)}}, // unsatisfiable ones dropped
		{header: "bytes=0-99999999999999999999999", size: size, want: []byteRange{r(0, 1000)}},
		{header: "bytes=-99999999999999999999999", size: size, want: []byteRange{r(0, 1000)}},
		{header: "bytes=" + strings.Repeat("0-0,", maxRanges), size: size, want: []byteRange{r(0, 1)}},

		{header: "bytes=1000-", size: size, unsat: true},
		{header: "bytes=1000-2000", size: size, unsat: true},
		{header: "bytes=-0", size: size, unsat: true},
		{header: "bytes=99999999999999999999999-", size: size, unsat: true}, // a huge number is still a number
		{header: "bytes=1000-1001,2000-", size: size, unsat: true},
		{header: "bytes=0-", size: 0, unsat: true},
		{header: "bytes=0-0", size: 0, unsat: true},
		{header: "bytes=-1", size: 0, unsat: true},

		{header: "", size: size},
		{header: "bytes", size: size},
		{header: "bytes=", size: size},
		{header: "bytes=,", size: size},
		{header: "items=0-1", size: size},
		{header: "bytes 0-1", size: size},
		{header: "bytes=abc", size: size},
		{header: "bytes=1", size: size},
		{header: "bytes=5-1", size: size}, // last before first: invalid, not unsatisfiable
		{header: "bytes=--1", size: size},
		{header: "bytes=1--2", size: size},
		{header: "bytes=+1-2", size: size},
		{header: "bytes=0x10-0x20", size: size},
		{header: "bytes=1 - 2", size: size},
		{header: "bytes=0-1,abc", size: size}, // one bad spec spoils the header
		{header: "bytes=-", size: size},
		{header: "bytes=" + strings.Repeat("0-0,", maxRanges+1), size: size}, // too many
	} {
		got, err := parseRange(tc.header, tc.size)
		if tc.unsat {
			if !errors.Is(err, errRangeUnsatisfiable) {
				t.Errorf("parseRange(%q, %d) = %v, %v; want unsatisfiable", tc.header, tc.size, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseRange(%q, %d) = %v, %v; want %v", tc.header, tc.size, got, err, tc.want)
		}
	}
}

// A multipart body laid out by planBody is exactly Content-Length bytes and reads back
// with mime/multipart as the requested parts.
func TestPlanBodyMultipart(t *testing.T) {
	const size = 5000
	data := patternBytes(0, size)
	ranges := []byteRange{{4000, 1000}, {0, 1}, {10, 90}}
	b := planBody(size, "application/x-test", ranges, "BOUNDARY")
	if b.status != http.StatusPartialContent {
		t.Fatalf("status %d", b.status)
	}

	var out bytes.Buffer
	for _, p := range b.parts {
		out.WriteString(p.header)
		out.Write(data[p.span.start : p.span.start+p.span.length])
	}
	out.WriteString(b.closing)
	if int64(out.Len()) != b.length {
		t.Fatalf("body is %d bytes, Content-Length says %d", out.Len(), b.length)
	}

	media, params, err := mime.ParseMediaType(b.contentType)
	if err != nil || media != "multipart/byteranges" {
		t.Fatalf("Content-Type %q: %v", b.contentType, err)
	}
	mr := multipart.NewReader(&out, params["boundary"])
	for i, want := range ranges {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if ct := p.Header.Get("Content-Type"); ct != "application/x-test" {
			t.Errorf("part %d Content-Type %q", i, ct)
		}
		if cr := p.Header.Get("Content-Range"); cr != want.contentRange(size) {
			t.Errorf("part %d Content-Range %q, want %q", i, cr, want.contentRange(size))
		}
		got, _ := io.ReadAll(p)
		if !bytes.Equal(got, data[want.start:want.start+want.length]) {
			t.Errorf("part %d: wrong bytes", i)
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("after the last part: %v, want EOF", err)
	}
}

func TestPlanBodySingle(t *testing.T) {
	whole := planBody(10, "text/plain", nil, "B")
	if whole.status != http.StatusOK || whole.length != 10 || whole.contentRange != "" || whole.contentType != "text/plain" {
		t.Errorf("whole object: %+v", whole)
	}
	one := planBody(10, "text/plain", []byteRange{{2, 3}}, "B")
	if one.status != http.StatusPartialContent || one.length != 3 || one.contentRange != "bytes 2-4/10" || one.contentType != "text/plain" {
		t.Errorf("one range: %+v", one)
	}
	empty := planBody(0, "text/plain", nil, "B")
	if empty.status != http.StatusOK || empty.length != 0 || len(empty.parts) != 1 {
		t.Errorf("empty object: %+v", empty)
	}
}
