package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// `sluice serve` publishes its demo objects to the release catalog at start, so a
// first user's `sluice get demo/hello.txt` is verified by size and SHA-256.
func TestDemoObjectsAreInTheCatalog(t *testing.T) {
	a := newAllInOne(t)
	a.start()
	for _, key := range []string{"demo/hello.txt", "demo/sluice-demo-64MiB.bin"} {
		var entry api.CatalogEntry
		eventually(t, 30*time.Second, key+" verified in the catalog", func() bool {
			code, raw := a.call(http.MethodGet, "/api/v1/objects/"+key, "", nil)
			return code == http.StatusOK && json.Unmarshal(raw, &entry) == nil && entry.State == "verified"
		})
		if len(entry.SHA256) != 64 || entry.Size <= 0 {
			t.Errorf("%s: catalog entry %+v, want its size and SHA-256", key, entry)
		}
	}

	dir := t.TempDir()
	r := (&stack{t: t, ingressURL: a.api}).runCLI(dir, []string{"HOME=" + t.TempDir(), "SLUICE_SERVER=" + a.api},
		60*time.Second, "get", "demo/hello.txt", "--json")
	r.expectExit(0)
	if done := r.lastEvent("done"); done.str("verification") != "verified" {
		t.Errorf("sluice get demo/hello.txt: done event %v, want verification verified", done)
	}
}
