package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A Redis blip while a client waits in line: with the only slot held, sluice get
// waits for another object; redis-server dies, stays down about 5 s and comes back
// empty on the same port. The waiting get rides the outage out on its own ticket
// (the ingress answers 500 or 503 meanwhile) and finishes with the right bytes.
func TestCLIGetRidesOutARedisRestart(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.startAll(1)
	held, wanted := randomBytes(256<<10, 41), randomBytes(3<<20+17, 42)
	s.putObject("outage/held.bin", held)
	s.putObject("outage/wanted.bin", wanted)

	holder := s.request("outage/held.bin")
	s.follow(holder.ID, 15*time.Second) // admitted: its unused link holds the only slot

	dir := t.TempDir()
	get := s.startCLI(dir, s.cliEnv(), "get", "outage/wanted.bin", "--json", "-o", "wanted.bin", "--wait-max", "3m")
	queued := get.waitEvent(20*time.Second, "queued behind the held slot", func(e cliEvent) bool {
		return e.str("event") == "queued" && e.str("status") == "queued"
	})
	ticket := queued.str("ticket")
	time.Sleep(2 * time.Second) // a few polls in line

	s.redis.Stop()
	downAt := time.Now()
	// While Redis is down the ingress answers the poll with an error, not the ticket.
	eventually(t, 15*time.Second, "the ticket poll fails while Redis is down", func() bool {
		code, _, _ := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+ticket, "", nil)
		return code >= 500
	})
	time.Sleep(time.Until(downAt.Add(5 * time.Second)))
	s.redis.Restart(t)
	t.Logf("redis-server down for %s, back empty on %s", time.Since(downAt).Round(100*time.Millisecond), s.redis.Addr)

	upAt := time.Now()
	// What the ingress answers for the waiting ticket while the ledger is rebuilt.
	seen := map[int]int{}
	for time.Since(upAt) < 4*time.Second {
		code, _, _ := call(t, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+ticket, "", nil)
		seen[code]++
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("GET /api/v1/tickets/{waiting} in the 4 s after the restart answered (status: count) %v", seen)

	// The holder comes back with the ledger (re-admitted on a link nobody holds): give
	// its slot back so the waiting get is admitted without waiting out the link's TTL.
	eventually(t, 60*time.Second, "the holder's ticket canceled", func() bool {
		code, _, _ := call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+holder.ID, "", nil)
		return code == http.StatusOK || code == http.StatusConflict
	})

	code := get.wait(3 * time.Minute)
	t.Logf("sluice get ended %s after Redis came back", time.Since(upAt).Round(100*time.Millisecond))
	evs := get.events()
	var notes []string
	for _, e := range evs {
		if e.str("event") == "note" {
			notes = append(notes, e.str("message"))
		}
	}
	t.Logf("sluice get exited %d; notes: %q", code, notes)
	get.expectExit(0)
	if got := cliFileSHA(t, filepath.Join(dir, "wanted.bin")); got != sha(wanted) {
		t.Fatalf("wanted.bin has SHA-256 %s, want %s", got, sha(wanted))
	}
	done := get.lastEvent("done")
	if done.str("ticket") != ticket {
		t.Fatalf("downloaded on ticket %s, want the ticket it waited on, %s", done.str("ticket"), ticket)
	}
	tickets := 0
	for _, e := range evs {
		if e.str("event") == "queued" {
			tickets++
		}
	}
	if tickets != 1 {
		t.Fatalf("%d tickets taken, want the one it waited on", tickets)
	}
	outages := 0
	for _, n := range notes {
		if strings.Contains(n, "retrying for up to") {
			outages++
		}
	}
	if outages < 1 {
		t.Fatalf("the user was not told of the outage; notes: %q", notes)
	}
}
