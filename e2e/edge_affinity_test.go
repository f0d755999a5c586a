package e2e

import (
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// Workers with --edge-affinity name in each link the edge chosen for its object
// among the live edges advertising a URL, always the same one for the same object;
// an edge that is killed is out of the choice once it missed two beats.
func TestLinksNameTheEdgeChosenForTheirObject(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 40}) // links never used hold their slots
	s.dumpLogsOnFailure()
	s.start("edge", "SLUICE_EDGE_ADVERTISE_URL="+s.edgeURL)
	port := testenv.FreePort(t)
	other := "http://127.0.0.1:" + strconv.Itoa(port)
	env := append(append([]string{}, s.env...), "SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(port), "SLUICE_EDGE_ADVERTISE_URL="+other)
	second := testenv.Start(t, t.TempDir(), sluiceBin, env, "edge")
	testenv.WaitHTTP(t, other+"/readyz", 20*time.Second, second.Log)
	s.start("worker", "SLUICE_EDGE_AFFINITY=true")
	s.start("ingress")

	edgeOf := func(link string) string {
		for _, e := range []string{s.edgeURL, other} {
			if strings.HasPrefix(link, e+"/d/") {
				return e
			}
		}
		t.Fatalf("link %s names neither edge", link)
		return ""
	}
	chosen := map[string]string{}
	used := map[string]bool{}
	for i := range 12 {
		key := "obj/" + strconv.Itoa(i) + ".bin"
		data := randomBytes(4096, byte(i))
		s.putObject(key, data)
		_, link := s.link(key)
		chosen[key] = edgeOf(link)
		used[chosen[key]] = true
		if got, _, resp := download(t, link); resp.StatusCode != http.StatusOK || got != sha(data) {
			t.Fatalf("%s through %s: %d", key, chosen[key], resp.StatusCode)
		}
		if _, again := s.link(key); edgeOf(again) != chosen[key] {
			t.Fatalf("%s: first %s, then %s", key, chosen[key], edgeOf(again))
		}
	}
	if len(used) != 2 {
		t.Fatalf("12 objects all on one edge: %v", chosen)
	}

	// Killed: it never leaves the registry, it only stops beating. Two missed beats,
	// and the workers' view is at most 1 s old.
	second.Stop()
	time.Sleep(3500 * time.Millisecond)
	for key, was := range chosen {
		if _, link := s.link(key); edgeOf(link) != s.edgeURL {
			t.Fatalf("%s (was on %s): link to the stopped edge", key, was)
		}
	}
}

// A download whose edge is killed midway continues from the other edge under the
// same ticket: sluice get asks for the link on a live edge (POST
// /api/v1/tickets/{id}/link) once the dead one missed its beats, and the file it
// writes has the object's SHA-256.
func TestEdgeAffinityGetMovesToALiveEdgeWhenItsEdgeDies(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 4})
	s.dumpLogsOnFailure()
	first := s.start("edge", "SLUICE_EDGE_ADVERTISE_URL="+s.edgeURL)
	port := testenv.FreePort(t)
	other := "http://127.0.0.1:" + strconv.Itoa(port)
	env := append(append([]string{}, s.env...), "SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(port), "SLUICE_EDGE_ADVERTISE_URL="+other)
	second := testenv.Start(t, t.TempDir(), sluiceBin, env, "edge")
	testenv.WaitHTTP(t, other+"/readyz", 20*time.Second, second.Log)
	s.start("worker", "SLUICE_EDGE_AFFINITY=true")
	s.start("ingress")

	const size = 4 << 20
	data := randomBytes(size, 41)
	s.putObject("relink/app.bin", data)
	_, link := s.link("relink/app.bin") // the edge every link to the object names
	chosen, survivor, kill := s.edgeURL, other, first.Stop
	if strings.HasPrefix(link, other+"/d/") {
		chosen, survivor, kill = other, s.edgeURL, second.Stop
	}

	dir := t.TempDir()
	dest := filepath.Join(dir, "app.bin")
	get := s.startCLI(dir, s.cliEnv(), "get", "relink/app.bin", "--json", "--limit-rate", "1M", "--connections", "2")
	ready := get.waitEvent(30*time.Second, "the ticket's link", func(e cliEvent) bool { return e.str("event") == "ready" })
	if tk := s.ticket(ready.str("ticket")); !strings.HasPrefix(tk.DownloadURL, chosen+"/d/") {
		t.Fatalf("sluice get's link %s is not on the edge chosen for the object (%s)", tk.DownloadURL, chosen)
	}
	eventually(t, 30*time.Second, "a quarter of the file downloaded", func() bool {
		st, ok := readPartState(t, dest)
		return ok && st.doneBytes() >= size/4
	})
	kill()

	get.wait(90 * time.Second)
	get.expectExit(0)
	if got := cliFileSHA(t, dest); got != sha(data) {
		t.Fatalf("the file has SHA-256 %s, want %s", got, sha(data))
	}
	done := get.lastEvent("done")
	if done.str("ticket") != ready.str("ticket") {
		t.Fatalf("finished under ticket %s, started under %s: the link was not moved, a new ticket was taken", done.str("ticket"), ready.str("ticket"))
	}
	moved := false
	for _, e := range get.events() {
		moved = moved || e.str("event") == "note" && strings.Contains(e.str("message"), "another edge")
	}
	if !moved {
		t.Fatalf("no note that the download moved to %s\n%s", survivor, get.stdout.String())
	}
}
