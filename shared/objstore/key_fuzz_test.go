package objstore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzKey: ValidateKey never panics; a key it accepts is a clean relative path within
// the limits that cannot leave a root; and Local, over a directory holding links out
// of it, loops, a FIFO, a socket and folders, answers every accepted key with a
// regular file inside the directory, ErrNotFound or ErrInvalidKey — never the bytes
// outside, never another error (which the API would answer 500).
//
// The seeds are in testdata/fuzz/FuzzKey and below; `make fuzz-short` mutates them.
func FuzzKey(f *testing.F) {
	for _, seed := range []string{
		"a", "real/inside.txt", "file-link", "dir-link/secret", "relative-link", "real/up-link/secret",
		"loop", "ping", "fifo", "sock", "real", "real/folder", "folder-link", "devnull-link",
		"../secret", "real/../../secret", "/etc/passwd", "a//b", "a/./b", "dir/", `a\b`, "nul\x00",
		"\xff\xfe", strings.Repeat("s", 256), strings.Repeat("k/", 513), "real/inside.txt/more",
	} {
		f.Add(seed)
	}
	r := newRefusals(f)
	r.store.log = slog.New(slog.DiscardHandler) // warnings are TestLocalRefusesWhatIsNotARegularFileInside's
	f.Fuzz(func(t *testing.T, key string) {
		if err := ValidateKey(key); err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			// Quoting may make each byte of the 80 kept four characters long (\x7f).
			if len(err.Error()) > 512 {
				t.Fatalf("ValidateKey(%q): a %d byte error", key, len(err.Error()))
			}
			return
		}
		switch {
		case !utf8.ValidString(key), len(key) > MaxKeyLen:
			t.Fatalf("accepted %q: invalid UTF-8 or longer than %d bytes", key, MaxKeyLen)
		case path.Clean(key) != key, path.IsAbs(key), !filepath.IsLocal(key), strings.ContainsRune(key, '\\'):
			t.Fatalf("accepted %q: not a clean relative path", key)
		}
		for seg := range strings.SplitSeq(key, "/") {
			if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentLen {
				t.Fatalf("accepted %q with the segment %q", key, seg)
			}
		}
		ctx := t.Context()
		info, statErr := r.store.Stat(ctx, key)
		rc, openErr := r.store.Open(ctx, key, 0, -1, "")
		var got []byte
		if openErr == nil {
			var err error
			got, err = io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("read %q: %v", key, err)
			}
		}
		for op, err := range map[string]error{"Stat": statErr, "Open": openErr} {
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("%s(%q) = %v: neither ErrNotFound nor ErrInvalidKey", op, key, err)
			}
		}
		if statErr == nil && info.Size == int64(len(r.secret)) || bytes.Contains(got, r.secret) {
			t.Fatalf("%q reached the file outside the directory", key)
		}
	})
}
