package signer

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/edgecache"
)

// An edge reading through the disk cache: a hit goes out as a file section (with
// sendfile), ranges are cut from the cached copy, and while the store is
// unavailable the token's version is still served from disk; an object not in the
// cache is refused with 503 + Retry-After as without the cache.
func TestEdgeThroughCacheServesStaleOnError(t *testing.T) {
	var cache *edgecache.Cache
	h := newHarness(t, func(c *EdgeConfig) {
		var err error
		// Revalidate < 0: every request asks the store, so the outage is met at once.
		if cache, err = edgecache.New(edgecache.Config{Dir: t.TempDir(), Size: 1 << 20, Origin: c.Store, Revalidate: -1}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cache.Close() })
		c.Store = cache
	})
	data := patternBytes(0, testSize)
	h.store.put(testKey, testETag, data)
	h.store.put("other.bin", "etag-o", data)

	resp, body := h.do(t, "GET", h.url(t, testKey))
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
	for deadline := time.Now().Add(10 * time.Second); cache.Stats().Fills == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the copy was never cached")
		}
	}
	zeroCopy := h.edge.Stats().ZeroCopyBytes
	resp, body = h.do(t, "GET", h.url(t, testKey), "Range", "bytes=100-199")
	wantStatus(t, resp, http.StatusPartialContent)
	wantBody(t, body, data[100:200])
	if got := h.edge.Stats().ZeroCopyBytes - zeroCopy; got != 100 {
		t.Errorf("a hit sent %d bytes with sendfile, want 100", got)
	}

	stale, uncached := h.url(t, testKey), h.url(t, "other.bin") // signed while the store answers
	h.store.setUnavailable(true)
	resp, body = h.do(t, "GET", stale)
	wantStatus(t, resp, http.StatusOK)
	wantBody(t, body, data)
	wantHeader(t, resp, "ETag", `"`+testETag+`"`)

	resp, body = h.do(t, "GET", uncached)
	wantProblem(t, resp, body, http.StatusServiceUnavailable, "storage")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if s := cache.Stats(); s.StaleHits != 1 || s.Hits != 2 {
		t.Errorf("cache stats %+v, want 2 hits of which 1 stale", s)
	}
}
