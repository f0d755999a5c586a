package e2e

import (
	"net/http"
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
