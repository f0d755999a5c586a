package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// soakRetain is how long the soak's ended tickets stay readable: short, so that the test
// sees them go. A worker that lags further behind acknowledges their messages as
// forgotten instead of bringing them back (it used to, thousands of them).
const soakRetain = 5 * time.Second

// TestServeForgetsEndedTicketsAfterRetain runs 20,000 tickets through `sluice serve`
// (embedded NATS and Redis-protocol server), each created and cancelled at once, and
// checks that once their --retain has passed the embedded server holds as many keys as
// before the soak: ended tickets do not pile up for the life of the process. The only
// keys allowed to outlast it are the fleet's per-second activity windows, kept 10 min by
// design and at most one per second whatever the load.
//
// Measured on the 2-core machine (go test -count=1 -run TestServeForgetsEndedTicketsAfterRetain -v ./e2e/):
// see docs/BENCHMARKS.md, "Embedded server memory over a soak".
func TestServeForgetsEndedTicketsAfterRetain(t *testing.T) {
	const tickets, clients = 20_000, 8
	started := time.Now()
	ingressPort, edgePort, redisPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	ingress := "http://127.0.0.1:" + strconv.Itoa(ingressPort)
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	proc := testenv.Start(t, t.TempDir(), sluiceBin, []string{
		"SLUICE_DATA_DIR=" + t.TempDir(),
		"SLUICE_INGRESS_ADDR=127.0.0.1:" + strconv.Itoa(ingressPort),
		"SLUICE_EDGE_ADDR=127.0.0.1:" + strconv.Itoa(edgePort),
		"SLUICE_PUBLIC_EDGE_URL=http://127.0.0.1:" + strconv.Itoa(edgePort),
		"SLUICE_EMBEDDED_REDIS_ADDR=" + redisAddr,
		"SLUICE_NATS_URL=", "SLUICE_REDIS_URL=", // the all-in-one embeds both
		"SLUICE_RETAIN=" + soakRetain.String(),
		"SLUICE_TICKET_RATE=0", // a handful of clients take 20,000 tickets
		"SLUICE_LOG_LEVEL=warn",
	}, "serve")
	testenv.WaitHTTP(t, ingress+"/readyz", 30*time.Second, proc.Log)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	// A first round brings every ledger-wide key into being (tenants, counters, the
	// hold estimate), so that before and after differ only by what the tickets left.
	if failed := soakTickets(client, ingress, 200, 4, nil); len(failed) > 0 {
		t.Fatalf("warm-up: %d of 200 tickets failed; first: %s", len(failed), failed[0])
	}
	before := waitForgotten(t, rdb, "the warm-up", 30*time.Second)
	heapBefore := heapInUse(t, ingress)

	var peakKeys atomic.Int64
	sampling, stopSampling := context.WithCancel(t.Context())
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sampling.Err() == nil {
			if n, err := rdb.DBSize(sampling).Result(); err == nil && n > peakKeys.Load() {
				peakKeys.Store(n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	soakStart := time.Now()
	var firstID atomic.Value
	failed := soakTickets(client, ingress, tickets, clients, func(id string) { firstID.CompareAndSwap(nil, id) })
	soakTook := time.Since(soakStart)
	heapPeak := heapInUse(t, ingress)
	soakEnd, err := census(t.Context(), rdb)
	if err != nil {
		t.Fatalf("read the embedded server's keys: %v", err)
	}
	stopSampling()
	sampler.Wait()
	peakKeys.Store(max(peakKeys.Load(), soakEnd.total))
	if len(failed) > 0 {
		t.Fatalf("%d of %d tickets were not created and cancelled; first failures: %s", len(failed), tickets, strings.Join(failed[:min(5, len(failed))], "; "))
	}
	// Every ticket stays readable for --retain after it ended, so hundreds at the least
	// (thousands on a quiet machine) were held at once: without them the test would not
	// show that they went away.
	if peak := peakKeys.Load(); peak < before.total+250 {
		t.Fatalf("at most %d keys during the soak (%d before): the tickets never reached the embedded server", peak, before.total)
	}

	after := waitForgotten(t, rdb, "the soak", soakRetain+60*time.Second)
	heapAfter := heapInUse(t, ingress)
	if code := ticketStatus(t, client, ingress, firstID.Load().(string)); code != http.StatusNotFound {
		t.Fatalf("GET a ticket that ended more than --retain ago: %d, want 404", code)
	}
	t.Logf("%d tickets created and cancelled by %d clients in %s (%.0f/s); whole test %s", tickets, clients,
		soakTook.Round(time.Millisecond), float64(tickets)/soakTook.Seconds(), time.Since(started).Round(time.Second))
	t.Logf("embedded server: %d keys (%d windows), %.1f KiB before; peak %d keys; %d keys, %.1f KiB at the end of the soak; %d keys (%d windows), %.1f KiB (%.1f KiB besides the windows, %.1f before) after %s",
		before.total, before.windows, float64(before.bytes)/1024, peakKeys.Load(), soakEnd.total, float64(soakEnd.bytes)/1024,
		after.total, after.windows, float64(after.bytes)/1024, float64(after.bytes-after.winB)/1024, float64(before.bytes-before.winB)/1024, after.others)
	t.Logf("serve heap in use: %.1f MiB before, %.1f MiB at the end of the soak, %.1f MiB after (not collected on demand: reported, not asserted)",
		float64(heapBefore)/(1<<20), float64(heapPeak)/(1<<20), float64(heapAfter)/(1<<20))

	if limit := before.total - before.windows + max(1, (before.total-before.windows)/10); after.total-after.windows > limit {
		t.Fatalf("%d keys besides the activity windows after the tickets' retain passed, %d before (at most %d allowed): %v",
			after.total-after.windows, before.total-before.windows, limit, after.others)
	}
	if b, limit := after.bytes-after.winB, (before.bytes-before.winB)*11/10+1024; b > limit {
		t.Fatalf("%d bytes in keys besides the activity windows after the tickets' retain passed, %d before (at most %d allowed)",
			b, before.bytes-before.winB, limit)
	}
	if seconds := int64(time.Since(started).Seconds()) + 2; after.windows > seconds {
		t.Fatalf("%d per-second activity windows after %d s", after.windows, seconds)
	}
}

// soakTickets creates n tickets for the demo object from several clients at once and
// cancels each one as soon as it is accepted. It returns a description of every ticket
// that was not both created (202) and cancelled (200).
func soakTickets(client *http.Client, ingress string, n, clients int, created func(id string)) []string {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failed = append(failed, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	body := []byte(`{"object":"demo/hello.txt"}`)
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				code, raw, err := soakCall(client, http.MethodPost, ingress+"/api/v1/downloads", body)
				var tk struct{ ID string }
				if err != nil || code != http.StatusAccepted || json.Unmarshal(raw, &tk) != nil || tk.ID == "" {
					fail("POST: %d %v %.200s", code, err, raw)
					continue
				}
				if created != nil {
					created(tk.ID)
				}
				if code, raw, err := soakCall(client, http.MethodDelete, ingress+"/api/v1/tickets/"+tk.ID, nil); err != nil || code != http.StatusOK {
					fail("DELETE %s: %d %v %.200s", tk.ID, code, err, raw)
				}
			}
		})
	}
	wg.Wait()
	return failed
}

func soakCall(client *http.Client, method, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

func ticketStatus(t *testing.T, client *http.Client, ingress, id string) int {
	t.Helper()
	code, _, err := soakCall(client, http.MethodGet, ingress+"/api/v1/tickets/"+id, nil)
	if err != nil {
		t.Fatalf("GET ticket %s: %v", id, err)
	}
	return code
}

// keyCensus is what the embedded server holds.
type keyCensus struct {
	total   int64    // DBSIZE
	tickets int64    // sluice:{adm}:t:<id> hashes
	windows int64    // sluice:{fleet}:win:<second> activity windows (kept 10 min)
	others  []string // every other key, sorted
	bytes   int64    // what MEMORY USAGE reports, over every key
	winB    int64    // the same, over the activity windows
}

func census(ctx context.Context, rdb *redis.Client) (keyCensus, error) {
	var c keyCensus
	var keys []string
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		keys = append(keys, k)
		switch {
		case strings.HasPrefix(k, "sluice:{adm}:t:"):
			c.tickets++
		case strings.HasPrefix(k, "sluice:{fleet}:win:"):
			c.windows++
		default:
			c.others = append(c.others, k)
		}
	}
	if err := iter.Err(); err != nil {
		return c, err
	}
	slices.Sort(c.others)
	pipe := rdb.Pipeline()
	sizes := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		sizes[i] = pipe.MemoryUsage(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // a key that expired since the scan answers nil
	for i, n := range sizes {
		c.bytes += n.Val()
		if strings.HasPrefix(keys[i], "sluice:{fleet}:win:") {
			c.winB += n.Val()
		}
	}
	var err error
	c.total, err = rdb.DBSize(ctx).Result()
	return c, err
}

// waitForgotten waits until no ticket is left in the embedded server and returns what
// it then holds.
func waitForgotten(t *testing.T, rdb *redis.Client, after string, within time.Duration) keyCensus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := census(t.Context(), rdb)
		if err != nil {
			t.Fatalf("read the embedded server's keys: %v", err)
		}
		if c.tickets == 0 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tickets still in the embedded server %s after %s (retain %s); %d keys in all; %s",
				c.tickets, within, after, soakRetain, c.total, ticketStates(t.Context(), rdb))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// heapInUse reads go_memstats_heap_inuse_bytes from the serve process's /metrics.
func heapInUse(t *testing.T, ingress string) int64 {
	t.Helper()
	m, _ := scrape(t, ingress+"/metrics")
	return int64(m["go_memstats_heap_inuse_bytes"])
}

// ticketStates tells, for the tickets left in the embedded server, how many are in each
// status and how many have a TTL.
func ticketStates(ctx context.Context, rdb *redis.Client) string {
	states := map[string]int{}
	var example map[string]string
	iter := rdb.Scan(ctx, 0, "sluice:{adm}:t:*", 1000).Iterator()
	for n := 0; n < 1000 && iter.Next(ctx); n++ {
		status := rdb.HGet(ctx, iter.Val(), "status").Val()
		if example == nil {
			example = rdb.HGetAll(ctx, iter.Val()).Val()
		}
		ttl := "no TTL"
		if rdb.PTTL(ctx, iter.Val()).Val() > 0 {
			ttl = "with a TTL"
		}
		states[status+" "+ttl]++
	}
	return fmt.Sprintf("of the first 1000: %v; one of them: %v", states, example)
}
