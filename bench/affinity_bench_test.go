package bench

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/sluice-dl/sluice/shared/fleet"
)

// lruModel counts hits of an LRU cache holding up to size equal objects: a model
// of one edge's cache, to compare edge choices on the same workload.
type lruModel struct {
	size  int
	order *list.List
	at    map[int]*list.Element
}

func (c *lruModel) get(k int) bool {
	if e, ok := c.at[k]; ok {
		c.order.MoveToBack(e)
		return true
	}
	c.at[k] = c.order.PushBack(k)
	if c.order.Len() > c.size {
		delete(c.at, c.order.Remove(c.order.Front()).(int))
	}
	return false
}

// BenchmarkEdgeAffinityHitRatio: a Zipf-distributed workload (s = 1.1 over 2,000
// objects, 200,000 requests) over 4 edges, each caching 100 objects, with links
// spread evenly over the edges (one public URL behind a balancer) and with each
// object's edge chosen by fleet.ChooseEdge. Edge choice is the real code; the
// caches are an LRU model (shared/edgecache evicts the same way).
func BenchmarkEdgeAffinityHitRatio(b *testing.B) {
	const objects, requests, perEdge = 2000, 200_000, 100
	var nodes []fleet.Node
	for i := range 4 {
		nodes = append(nodes, fleet.Node{Role: fleet.RoleEdge, PublicURL: fmt.Sprintf("http://edge-%d:8081", i), CacheBytes: 1})
	}
	index := map[string]int{}
	for i, n := range nodes {
		index[n.PublicURL] = i
	}
	chosen := make([]int, objects)
	for k := range chosen {
		n, _ := fleet.ChooseEdge(nodes, fmt.Sprintf("releases/%d.tar.gz", k))
		chosen[k] = index[n.PublicURL]
	}
	for b.Loop() {
		rng := rand.New(rand.NewPCG(1, 2))
		zipf := rand.NewZipf(rng, 1.1, 1, objects-1)
		spread, affine := make([]*lruModel, 4), make([]*lruModel, 4)
		for i := range 4 {
			spread[i] = &lruModel{size: perEdge, order: list.New(), at: map[int]*list.Element{}}
			affine[i] = &lruModel{size: perEdge, order: list.New(), at: map[int]*list.Element{}}
		}
		var hitsSpread, hitsAffine int
		for r := range requests {
			k := int(zipf.Uint64())
			if spread[r%4].get(k) {
				hitsSpread++
			}
			if affine[chosen[k]].get(k) {
				hitsAffine++
			}
		}
		without, with := float64(hitsSpread)/requests, float64(hitsAffine)/requests
		b.ReportMetric(without, "hit-ratio-spread")
		b.ReportMetric(with, "hit-ratio-affinity")
		fmt.Fprintf(os.Stderr, "\nZipf 1.1 over %d objects, %d requests, 4 edges caching %d objects each:\n"+
			"  hit ratio, links spread over the edges  %.3f\n  hit ratio, edge chosen per object      %.3f\n",
			objects, requests, perEdge, without, with)
	}
}
