package objstore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key accepted, in bytes: S3's own limit.
const MaxKeyLen = 1024

// ValidateKey reports whether key can name an object in every Store. The rules are
// the intersection of what S3 accepts and what maps safely onto a file system path:
// slash-separated, relative, no empty, "." or ".." segments, no backslashes and no
// control characters. The error wraps ErrInvalidKey and says what is wrong.
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
		return fmt.Sprintf("longer than %d bytes", MaxKeyLen)
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
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return "empty path segment ('//')"
		case ".", "..":
			return fmt.Sprintf("%q path segment", seg)
		}
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
	return key[:max] + "…"
}
