package signer

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// A token names an object the ingress accepted, but the store may still refuse it:
// a link out of the object directory, a FIFO or a folder planted under the key since,
// or a key the store finds too long (a link signed before a stricter rule). The
// client gets 404 "object not found", never 500, on GET and HEAD alike, and the
// ledger is not touched.
func TestStoreRefusalsAre404(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret")
	for _, err := range []error{
		os.WriteFile(secret, []byte("outside"), 0o644),
		os.Symlink(secret, filepath.Join(dir, "escape")),
		os.Symlink(outside, filepath.Join(dir, "escape-dir")),
		os.Symlink("loop", filepath.Join(dir, "loop")),
		syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644),
		os.Mkdir(filepath.Join(dir, "folder"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	local, err := objstore.NewLocal(dir, objstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *EdgeConfig) { c.Store = local })
	for _, key := range []string{"escape", "escape-dir/secret", "loop", "fifo", "folder",
		strings.Repeat("s", objstore.MaxSegmentLen+1), "a//b"} {
		t.Run(key[:min(len(key), 20)], func(t *testing.T) {
			url := h.url(t, key, func(c *token.Claims) { c.ETag = "whatever-was-signed" })
			resp, body := h.do(t, http.MethodGet, url, "Range", "bytes=0-")
			wantProblem(t, resp, body, http.StatusNotFound, "object not found")
			head, _ := h.do(t, http.MethodHead, url)
			wantStatus(t, head, http.StatusNotFound)
		})
	}
	if calls := h.slots.snapshot(); len(calls) != 0 {
		t.Errorf("refused requests touched the ledger: %v", calls)
	}
}
