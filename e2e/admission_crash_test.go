package e2e

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const crashLease = 3 * time.Second // SLUICE_STREAM_LEASE in these tests (and so the admit lease)

// A worker SIGSTOPped between a grant and the publication of its link, past its lease,
// then SIGCONTed does nothing with the lost lease: another worker was granted the
// ticket again under a new epoch, and the stale worker's late MarkReady is fenced: the
// ticket keeps the new grant's link and epoch, and no second slot exists.
func TestAdmissionStoppedWorkerIsFenced(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1, Env: []string{"SLUICE_STREAM_LEASE=" + crashLease.String()}})
	data := randomBytes(64<<10, 37)
	s.putObject("f.bin", data)
	rdb := s.redis.Client(t)
	s.start("edge")
	s.start("ingress")
	proxy := startRedisProxy(t, s.redis.Addr, scriptMarkers(t, "ready.lua")...)
	stale := s.start("worker", "SLUICE_REDIS_URL="+proxy.url())
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)

	tk := s.request("f.bin")
	select {
	case <-proxy.held: // the stale worker was granted the ticket and is about to publish its link
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never tried to publish a link")
	}
	if err := stale.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	first := ledgerTicket(t, rdb, tk.ID)
	if first["status"] != "admitting" {
		t.Fatalf("ticket held by the stopped worker is %q", first["status"])
	}
	s.start("worker")
	ready := s.waitStatus(tk.ID, "ready", 2*crashLease+2*time.Second)
	t.Logf("stopped worker's grant lapsed; the ticket was re-granted and ready %s after the SIGSTOP (lease %s)",
		time.Since(stopped).Round(10*time.Millisecond), crashLease)
	second := ledgerTicket(t, rdb, tk.ID)
	if mustMillis(t, second["epoch"]) <= mustMillis(t, first["epoch"]) {
		t.Fatalf("re-granted under epoch %s, not newer than the lost grant's %s", second["epoch"], first["epoch"])
	}

	// The stale worker wakes up and sends its MarkReady now.
	time.Sleep(time.Second)
	proxy.letGo()
	if err := stale.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	// The late call reached Redis and was refused there (the stale worker itself, its
	// read deadline long past, may only see a timeout).
	if got := proxy.answered(); !strings.Contains(got, "FENCED") {
		t.Errorf("Redis answered the stale worker's late MarkReady with %q, want FENCED", got)
	}
	after := ledgerTicket(t, rdb, tk.ID)
	if after["epoch"] != second["epoch"] || after["download_url"] != ready.DownloadURL || after["status"] != "ready" {
		t.Fatalf("after the stale worker resumed: epoch %s (new grant %s), link changed %v, status %s",
			after["epoch"], second["epoch"], after["download_url"] != ready.DownloadURL, after["status"])
	}
	if live, all := slotsHeld(t, rdb); live != 1 || all != 1 {
		t.Fatalf("%d live slots (%d entries) after the stale worker resumed, want the one grant", live, all)
	}
	log, _ := os.ReadFile(stale.Log)
	if strings.Contains(string(log), `"msg":"ticket ready"`) {
		t.Error("the stale worker published a link for a grant it had lost")
	}
	said := ""
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "grant lapsed") || strings.Contains(l, `"msg":"mark ticket ready"`) {
			said = l
		}
	}
	if said == "" {
		t.Error("the stale worker's log does not say what became of its late MarkReady")
	}
	t.Logf("the stale worker logged: %s", said)
	if sum, _, _ := download(t, ready.DownloadURL); sum != sha(data) {
		t.Fatal("the new grant's link served wrong bytes")
	}
	s.waitStatus(tk.ID, "done", 5*time.Second)
	close(stop)
	if most := mostSlots(); most > 1 {
		t.Errorf("%d slots held at once under a limit of 1", most)
	}
}

// kill -9 of a worker holding grants and of an edge holding streams: every slot they
// held is back within one lease period, the limit is never exceeded meanwhile, and
// every ticket ends in a terminal state (the re-granted ones served by the others).
func TestAdmissionKilledHoldersGiveSlotsBack(t *testing.T) {
	const limit = 4
	s := newAdmissionStack(t, stackOptions{GlobalLimit: limit, Env: []string{"SLUICE_STREAM_LEASE=" + crashLease.String()}})
	small, big := randomBytes(64<<10, 38), randomBytes(8<<20, 39)
	s.putObject("small.bin", small)
	s.putObject("big.bin", big)
	rdb := s.redis.Client(t)
	edge := s.start("edge")
	s.start("ingress")
	proxy := startRedisProxy(t, s.redis.Addr, scriptMarkers(t, "ready.lua")...)
	doomed := s.start("worker", "SLUICE_REDIS_URL="+proxy.url())
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)
	var all []string

	// 1. A worker holding three grants (it is publishing the first link) is killed.
	s.operator(http.MethodPost, "/api/v1/admin/pause", nil, nil)
	var granted []string
	for range 3 {
		granted = append(granted, s.request("small.bin").ID)
	}
	all = append(all, granted...)
	s.operator(http.MethodPost, "/api/v1/admin/resume", nil, nil)
	select {
	case <-proxy.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never tried to publish a link")
	}
	for id, st := range statuses(t, rdb, granted) {
		if st != "admitting" {
			t.Fatalf("ticket %s is %q, want admitting (granted to the worker about to die)", id, st)
		}
	}
	s.start("worker")
	s.start("worker")
	epochs := grantEpochs(t, rdb, granted)
	if err := doomed.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	back := waitSlotsGone(t, s, epochs, killed, 2*crashLease)
	t.Logf("worker kill -9: its %d grants were back %s after the kill (lease %s)", len(granted), back.Round(10*time.Millisecond), crashLease)
	if back > crashLease+500*time.Millisecond {
		t.Errorf("a dead worker's grants took %s to come back, more than one lease (%s)", back, crashLease)
	}
	for _, id := range granted {
		if sum, _, _ := download(t, s.follow(id, 10*time.Second)); sum != sha(small) {
			t.Fatalf("re-granted ticket %s served wrong bytes", id)
		}
	}

	// 2. An edge streaming to three slow clients is killed while six tickets wait.
	var streaming []string
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for range 3 {
		id := s.request("big.bin").ID
		streaming = append(streaming, id)
		link := s.follow(id, 10*time.Second)
		wg.Go(func() {
			resp, err := slowClient().Get(link)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			_, _ = readSlowly(ctx, resp.Body, 256<<10, 0)
		})
	}
	all = append(all, streaming...)
	eventually(t, 5*time.Second, "three downloads streaming with progress", func() bool {
		n := 0
		for _, id := range streaming {
			if tk := ledgerTicket(t, rdb, id); tk["status"] == "streaming" && tk["bytes_sent"] != "0" {
				n++
			}
		}
		return n == 3
	})
	var waiting []string
	for range 6 {
		waiting = append(waiting, s.request("small.bin").ID)
	}
	all = append(all, waiting...)
	epochs = grantEpochs(t, rdb, streaming)
	if err := edge.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	back = waitSlotsGone(t, s, epochs, killed, 2*crashLease)
	t.Logf("edge kill -9: its %d streams' slots were back %s after the kill (lease %s)", len(streaming), back.Round(10*time.Millisecond), crashLease)
	if back > crashLease+500*time.Millisecond {
		t.Errorf("a dead edge's slots took %s to come back, more than one lease (%s)", back, crashLease)
	}
	cancel()
	wg.Wait()
	for _, id := range streaming {
		if tk := s.ticket(id); tk.Status != "expired" || tk.Error == "" {
			t.Errorf("a download cut by the edge's death: %+v, want expired with a reason", tk)
		}
	}
	// The waiting tickets are served once an edge is back on the same address.
	s.start("edge")
	for _, id := range waiting {
		if sum, _, _ := download(t, s.follow(id, 15*time.Second)); sum != sha(small) {
			t.Fatalf("ticket %s served wrong bytes", id)
		}
	}
	eventually(t, 5*time.Second, "every ticket ended", func() bool {
		for _, st := range statuses(t, rdb, all) {
			if st != "done" && st != "expired" {
				return false
			}
		}
		return true
	})
	close(stop)
	if most := mostSlots(); most > limit {
		t.Errorf("%d slots held at once under a limit of %d", most, limit)
	}
	if live, entries := slotsHeld(t, rdb); live != 0 || entries != 0 {
		t.Errorf("%d slots (%d entries) still held after every ticket ended", live, entries)
	}
}

// waitSlotsGone waits until none of the grants in held (ticket id → the epoch the dead
// holder was granted) still holds a slot, and returns how long after since that took.
// A slot re-granted to another worker under a newer epoch is the dead holder's slot
// given back: re-granting can follow the reclaim within milliseconds, faster than a
// poll here can see the slot missing.
func waitSlotsGone(t *testing.T, s *stack, held map[string]string, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	rdb := s.redis.Client(t)
	deadline := time.Now().Add(within)
	for {
		still := 0
		for id, epoch := range held {
			// A lapsed lease still listed counts as gone: reclaim removes it before any
			// decision, so nobody can count it.
			score, err := rdb.ZScore(t.Context(), "sluice:{adm}:slots", id).Result()
			if err != nil || int64(score) <= time.Now().UnixMilli() {
				continue
			}
			if now, _ := rdb.HGet(t.Context(), "sluice:{adm}:t:"+id, "epoch").Result(); now == epoch {
				still++
			}
		}
		if still == 0 {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slots still held under the dead holder's grant %s after the kill", still, len(held), within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grantEpochs records the epoch each ticket is held under now.
func grantEpochs(t *testing.T, rdb *redis.Client, ids []string) map[string]string {
	t.Helper()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		epoch := ledgerTicket(t, rdb, id)["epoch"]
		if epoch == "" {
			t.Fatalf("ticket %s has no grant epoch", id)
		}
		out[id] = epoch
	}
	return out
}
