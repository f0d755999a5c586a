package signer

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// HEAD answers what GET would, status and headers, for every branch of the matrix:
// whole, single range, several ranges, range past the end, 304, 412, If-Range miss.
func TestHeadParityAcrossTheMatrix(t *testing.T) {
	before := testModTime.Add(-time.Hour).Format(http.TimeFormat)
	for name, header := range map[string][]string{
		"whole":               nil,
		"range past the end":  {"Range", "bytes=9990-20000"},
		"unsatisfiable":       {"Range", "bytes=10000-"},
		"multipart":           {"Range", "bytes=0-9,100-199"},
		"If-None-Match":       {"If-None-Match", `"` + testETag + `"`},
		"If-Modified-Since":   {"If-Modified-Since", lastModified},
		"If-Unmodified-Since": {"If-Unmodified-Since", before},
		"If-Match other":      {"If-Match", `"other"`},
		"If-Range stale":      {"Range", "bytes=0-9", "If-Range", `"etag-v0"`},
		"too many ranges":     {"Range", "bytes=" + strings.Repeat("0-0,", maxRanges+1)},
	} {
		t.Run(name, func(t *testing.T) {
			h, _ := newTestEdge(t)
			url := h.url(t, testKey)
			head, body := h.do(t, "HEAD", url, header...)
			if len(body) != 0 {
				t.Errorf("HEAD with a %d byte body", len(body))
			}
			get, _ := h.do(t, "GET", url, header...)
			if head.StatusCode != get.StatusCode {
				t.Fatalf("HEAD %d, GET %d", head.StatusCode, get.StatusCode)
			}
			for _, r := range []*http.Response{head, get} {
				r.Header.Del("Date")
				if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/byteranges; boundary=") {
					r.Header.Set("Content-Type", "multipart/byteranges") // the boundary is random per response
				}
			}
			if !maps.EqualFunc(head.Header, get.Header, slices.Equal) {
				t.Errorf("HEAD headers %v\nGET headers  %v", head.Header, get.Header)
			}
		})
	}
}
