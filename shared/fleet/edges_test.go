package fleet_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/fleet"
)

func edges(weights ...int64) []fleet.Node {
	var out []fleet.Node
	for i, w := range weights {
		out = append(out, fleet.Node{ID: fmt.Sprint("n", i), Role: fleet.RoleEdge,
			PublicURL: fmt.Sprintf("http://edge-%d:8081", i), CacheBytes: w})
	}
	return append(out, fleet.Node{ID: "w", Role: "worker"}, fleet.Node{ID: "x", Role: fleet.RoleEdge}) // never chosen
}

func TestChooseEdgeSpreadsKeysByWeightAndMovesOnlyALostEdgesKeys(t *testing.T) {
	nodes := edges(100, 100, 100, 300)
	const keys = 20000
	share := map[string]int{}
	before := map[string]string{}
	for i := range keys {
		key := fmt.Sprintf("releases/%d/app.tar.gz", i)
		n, ok := fleet.ChooseEdge(nodes, key)
		if !ok || n.PublicURL == "" {
			t.Fatalf("no edge for %s", key)
		}
		if again, _ := fleet.ChooseEdge(nodes, key); again.PublicURL != n.PublicURL {
			t.Fatalf("%s: %s, then %s", key, n.PublicURL, again.PublicURL)
		}
		share[n.PublicURL]++
		before[key] = n.PublicURL
	}
	// Weight 3 of 6: about half the keys; 1 of 6 each for the others.
	if got := float64(share["http://edge-3:8081"]) / keys; got < 0.45 || got > 0.55 {
		t.Errorf("the heaviest edge got %.2f of the keys, want about 0.5: %v", got, share)
	}
	for i := range 3 {
		if got := float64(share[fmt.Sprintf("http://edge-%d:8081", i)]) / keys; got < 0.13 || got > 0.20 {
			t.Errorf("edge %d got %.2f of the keys, want about 0.17: %v", i, got, share)
		}
	}
	// Edge 1 goes away: its keys move, no other key does.
	gone := append(nodes[:1:1], nodes[2:]...)
	for key, was := range before {
		now, _ := fleet.ChooseEdge(gone, key)
		if was != "http://edge-1:8081" && now.PublicURL != was {
			t.Fatalf("%s moved from %s to %s though its edge is still there", key, was, now.PublicURL)
		}
	}
	if _, ok := fleet.ChooseEdge(edges()[:0], "k"); ok {
		t.Error("an edge was chosen among none")
	}
}

// TestRepointMovesOnlyLinksToEdgesGone: a link naming a live edge stays; one naming an
// edge that left moves to the edge the live ones give its key, with the same token;
// links that are not edge links, or with no live edge to move to, stay.
func TestRepointMovesOnlyLinksToEdgesGone(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		reg := fleet.New(rdb, fleet.Config{})
		a := fleet.Node{ID: "a", Role: fleet.RoleEdge, PublicURL: "http://edge-a:8081", CacheBytes: 1, Started: time.Now()}
		b := fleet.Node{ID: "b", Role: fleet.RoleEdge, PublicURL: "http://edge-b:8081", CacheBytes: 1, Started: time.Now()}
		for _, n := range []fleet.Node{a, b} {
			if err := reg.Beat(ctx, n, fleet.Activity{}); err != nil {
				t.Fatal(err)
			}
		}
		ch := fleet.NewEdgeChooser(reg, time.Millisecond, nil)
		const tail = "/d/tok.en/app.tar.gz"
		for _, link := range []string{a.PublicURL + tail, b.PublicURL + tail, "http://minio:9000/bucket/app.tar.gz?X-Amz-Signature=x"} {
			if got, moved := ch.Repoint(ctx, link, "app.tar.gz"); moved || got != link {
				t.Fatalf("Repoint(%s) with every edge live = %s, %v; want it unchanged", link, got, moved)
			}
		}
		if err := reg.Leave(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // past the chooser's refresh
		if got, moved := ch.Repoint(ctx, a.PublicURL+tail, "app.tar.gz"); !moved || got != b.PublicURL+tail {
			t.Fatalf("Repoint of a link to the edge that left = %s, %v; want %s", got, moved, b.PublicURL+tail)
		}
		if err := reg.Leave(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		if got, moved := ch.Repoint(ctx, a.PublicURL+tail, "app.tar.gz"); moved || got != a.PublicURL+tail {
			t.Fatalf("Repoint with no live edge = %s, %v; want it unchanged", got, moved)
		}
	})
}

// An edge's cache figures travel with its beat; a node without a cache has none.
func TestBeatCarriesCacheFigures(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		reg := fleet.New(rdb, fleet.Config{})
		figures := fleet.CacheFigures{Hits: 9, Misses: 1, BytesFromCache: 9 << 20, BytesFromOrigin: 1 << 20}
		if err := reg.Beat(t.Context(), fleet.Node{ID: "e", Role: fleet.RoleEdge, Cache: &figures}, fleet.Activity{}); err != nil {
			t.Fatal(err)
		}
		if err := reg.Beat(t.Context(), fleet.Node{ID: "w", Role: "worker"}, fleet.Activity{}); err != nil {
			t.Fatal(err)
		}
		nodes, err := reg.Nodes(t.Context())
		if err != nil || len(nodes) != 2 {
			t.Fatalf("nodes %+v, %v", nodes, err)
		}
		if c := nodes[0].Cache; nodes[0].ID != "e" || c == nil || *c != figures {
			t.Errorf("edge %+v: cache %+v, want %+v", nodes[0], c, figures)
		}
		if nodes[1].Cache != nil {
			t.Errorf("a worker with cache figures: %+v", nodes[1].Cache)
		}
	})
}
