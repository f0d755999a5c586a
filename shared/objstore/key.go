package objstore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on keys, in bytes. MaxKeyLen is S3's own limit on an object key. S3 has no
// limit per segment, but a segment is a file or directory name on local disk (and in
// MinIO, which stores objects as files): MaxSegmentLen is NAME_MAX of Linux file
// systems, so a key accepted here can be stored by every Store.
const (
	MaxKeyLen     = 1024
	MaxSegmentLen = 255
)

// ValidateKey reports whether key can name an object in every Store. The rules are
// the intersection of what S3 accepts and what maps safely onto a file system path:
// slash-separated, relative, at most MaxKeyLen bytes with segments of at most
// MaxSegmentLen bytes, no empty, "." or ".." segments, no backslashes and no control
// characters. The error wraps ErrInvalidKey and says what is wrong, with the limit
// when the key is too long.
func ValidateKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, truncateKey(key), reason)
	}
	return nil
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("%d bytes long, longer than %d bytes (the limit of a key)", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return "not valid UTF-8"
	case strings.HasPrefix(key, "/"):
		return "absolute (starts with '/')"
	case strings.HasSuffix(key, "/"):
		return "ends with '/' (names a folder, not an object)"
	}
	for i, r := range key {
		switch {
		case unicode.IsControl(r):
			return fmt.Sprintf("control character %U at byte %d", r, i)
		case r == '\\':
			return fmt.Sprintf("backslash at byte %d", i)
		}
	}
	start := 0
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return "empty path segment ('//')"
		case seg == "." || seg == "..":
			return fmt.Sprintf("%q path segment", seg)
		case len(seg) > MaxSegmentLen:
			return fmt.Sprintf("path segment at byte %d is %d bytes long, longer than %d bytes (the limit of one segment between slashes)",
				start, len(seg), MaxSegmentLen)
		}
		start += len(seg) + 1
	}
	return ""
}

// truncateKey keeps error messages (and the logs they end up in) short when a
// client sends a huge key.
func truncateKey(key string) string {
	const max = 80
	if len(key) <= max {
		return key
	}
	cut := max
	for cut > max-utf8.UTFMax && !utf8.RuneStart(key[cut]) {
		cut--
	}
	return key[:cut] + "…"
}
