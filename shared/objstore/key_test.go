package objstore

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key    string
		reason string // part of the error; empty: the key is valid
	}{
		{key: "a"},
		{key: "releases/v1.2.3/sluice_linux_amd64.tar.gz"},
		{key: "spaces are fine/and (parens) & +plus"},
		{key: "ünïcödé/名前.txt"},
		{key: ".hidden/..dots.../a.b"},
		{key: strings.TrimSuffix(strings.Repeat(strings.Repeat("k", 204)+"/", 5), "/")}, // 1,024 bytes
		{key: strings.Repeat("s", MaxSegmentLen) + "/" + strings.Repeat("s", MaxSegmentLen)},
		{key: "", reason: "empty"},
		{key: strings.Repeat("k/", MaxKeyLen/2) + "k", reason: "1025 bytes long, longer than 1024 bytes"},
		{key: strings.Repeat("s", MaxSegmentLen+1), reason: "path segment at byte 0 is 256 bytes long, longer than 255 bytes"},
		{key: "dir/" + strings.Repeat("s", 300) + "/file", reason: "path segment at byte 4 is 300 bytes long, longer than 255 bytes"},
		{key: "bad\xffutf8", reason: "not valid UTF-8"},
		{key: "/etc/passwd", reason: "absolute"},
		{key: "dir/", reason: "ends with '/'"},
		{key: "nul\x00byte", reason: "control character U+0000"},
		{key: "new\nline", reason: "control character U+000A"},
		{key: "tab\there", reason: "control character U+0009"},
		{key: "del\x7f", reason: "control character U+007F"},
		{key: "c1\u0085control", reason: "control character U+0085"},
		{key: `windows\path`, reason: "backslash"},
		{key: "a//b", reason: "empty path segment"},
		{key: "./a", reason: `"." path segment`},
		{key: "a/./b", reason: `"." path segment`},
		{key: "..", reason: `".." path segment`},
		{key: "a/../../etc/passwd", reason: `".." path segment`},
		{key: "a/..", reason: `".." path segment`},
	}
	for _, tt := range tests {
		name := tt.key
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			err := ValidateKey(tt.key)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("ValidateKey(%q) = %v, want nil", tt.key, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, want an error wrapping ErrInvalidKey", tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("ValidateKey(%q) = %q, want the reason %q", tt.key, err, tt.reason)
			}
		})
	}
}

func TestValidateKeyShortensHugeKeysInErrors(t *testing.T) {
	err := ValidateKey(strings.Repeat("k", 10*MaxKeyLen))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a 10 KiB key should be short, got %d bytes: %v", len(err.Error()), err)
	}
}
