package signer

import (
	"net/http"
	"strings"
	"time"
)

// Conditional requests (RFC 9110 §13). The edge's validators are the object's ETag,
// always strong, and its modification time when the store knows it.

// precondition is the outcome of a request's preconditions.
type precondition int

const (
	proceed            precondition = iota
	notModified                     // 304
	preconditionFailed              // 412
)

// validators are what a representation is compared with: etag quoted ("..."), modTime
// zero when unknown.
type validators struct {
	etag    string
	modTime time.Time
}

// evaluate applies If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since
// in the order of RFC 9110 §13.2.2, for a GET or HEAD of an existing representation.
// If-Range is left to rangeApplies.
func (v validators) evaluate(h http.Header) precondition {
	if im, ok := h["If-Match"]; ok {
		if !v.matchAny(strings.Join(im, ","), false) {
			return preconditionFailed
		}
	} else if t, ok := singleDate(h, "If-Unmodified-Since"); ok && !v.modTime.IsZero() {
		if v.modTime.Truncate(time.Second).After(t) {
			return preconditionFailed
		}
	}
	if inm, ok := h["If-None-Match"]; ok {
		if v.matchAny(strings.Join(inm, ","), true) {
			return notModified
		}
	} else if t, ok := singleDate(h, "If-Modified-Since"); ok && !v.modTime.IsZero() {
		if !v.modTime.Truncate(time.Second).After(t) {
			return notModified
		}
	}
	return proceed
}

// rangeApplies reports whether a Range header is to be honoured under If-Range: true
// without If-Range; with one, only when it is the current strong ETag or exactly the
// modification time. Anything else, a malformed value included, means "send it all".
func (v validators) rangeApplies(h http.Header) bool {
	values := h["If-Range"]
	if len(values) == 0 {
		return true
	}
	if len(values) > 1 {
		return false
	}
	ir := strings.TrimSpace(values[0])
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		etag, weak, rest, ok := scanETag(ir)
		return ok && !weak && strings.TrimSpace(rest) == "" && etag == v.etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && !v.modTime.IsZero() && v.modTime.Unix() == t.Unix()
}

// matchAny reports whether list (a comma-separated list of entity-tags, or "*")
// contains the current ETag, comparing weakly (If-None-Match) or strongly (If-Match).
// "*" matches any current representation, and there always is one here.
func (v validators) matchAny(list string, weakCompare bool) bool {
	for {
		list = strings.TrimLeft(list, " \t")
		switch {
		case list == "":
			return false
		case list[0] == ',':
			list = list[1:]
			continue
		case list[0] == '*':
			return true
		}
		etag, weak, rest, ok := scanETag(list)
		if !ok {
			return false
		}
		if etag == v.etag && (weakCompare || !weak) {
			return true
		}
		list = rest
	}
}

// scanETag reads one entity-tag (RFC 9110 §8.8.3) from the start of s: the quoted
// opaque tag, whether it carried W/, and what follows it.
func scanETag(s string) (etag string, weak bool, rest string, ok bool) {
	if strings.HasPrefix(s, "W/") {
		weak, s = true, s[2:]
	}
	if len(s) < 2 || s[0] != '"' {
		return "", false, "", false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[:i+1], weak, s[i+1:], true
		case c == 0x21 || c >= 0x23 && c != 0x7f: // etagc, obs-text included
		default:
			return "", false, "", false
		}
	}
	return "", false, "", false
}

// singleDate is the HTTP-date of header name, ignored (false) when absent, repeated or
// malformed, as RFC 9110 §13.1.3 and §13.1.4 ask.
func singleDate(h http.Header, name string) (time.Time, bool) {
	values := h[name]
	if len(values) != 1 {
		return time.Time{}, false
	}
	t, err := http.ParseTime(values[0])
	return t, err == nil
}
