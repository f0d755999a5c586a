package fleet_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/fleet"
)

func backends(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient)) {
	t.Run("redis-server", func(t *testing.T) { fn(t, testenv.StartRedis(t).Client(t)) })
	t.Run("embedded", func(t *testing.T) {
		m := miniredis.RunT(t)
		// miniredis' clock stands still unless told otherwise; the fleet reads TIME.
		m.SetTime(time.Now())
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
					m.SetTime(time.Now())
					m.FastForward(0)
				}
			}
		}()
		t.Cleanup(func() { close(stop) })
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		fn(t, rdb)
	})
}

// TestFleetRegistersBeatsAndForgets: running nodes are listed with their role, address
// and in-flight work; a node that leaves disappears at once, one that stops beating
// after the TTL.
func TestFleetRegistersBeatsAndForgets(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		reg := fleet.New(rdb, fleet.Config{TTL: 1500 * time.Millisecond})
		var inflight atomic.Int64
		inflight.Store(3)
		w := reg.Join(fleet.MemberConfig{Role: "worker", Version: "v1", Address: "host:9090", InFlight: inflight.Load, Every: 100 * time.Millisecond})
		e := reg.Join(fleet.MemberConfig{Role: "edge", Version: "v1", Address: "host:8081", Every: 100 * time.Millisecond})
		ctxW, stopW := context.WithCancel(t.Context())
		ctxE, stopE := context.WithCancel(t.Context())
		doneW, doneE := make(chan struct{}), make(chan struct{})
		go func() { w.Run(ctxW); close(doneW) }()
		go func() { e.Run(ctxE); close(doneE) }()
		defer func() { stopW(); stopE(); <-doneW; <-doneE }()

		nodes := waitNodes(t, reg, 2)
		if nodes[0].Role != "edge" || nodes[1].Role != "worker" || nodes[1].Address != "host:9090" || nodes[1].InFlight != 3 || nodes[1].Version != "v1" {
			t.Fatalf("nodes: %+v", nodes)
		}
		if age := time.Since(nodes[1].LastBeat); age < -time.Second || age > 2*time.Second {
			t.Errorf("last beat %v ago", age)
		}
		inflight.Store(7)
		time.Sleep(300 * time.Millisecond)
		if n := waitNodes(t, reg, 2); n[1].InFlight != 7 {
			t.Errorf("in-flight not refreshed by the beats: %d", n[1].InFlight)
		}
		stopE()
		<-doneE
		if n := waitNodes(t, reg, 1); n[0].ID != w.ID() {
			t.Fatalf("after the edge left: %+v", n)
		}
		// A node that dies without leaving: its beats stop, it is forgotten after the TTL.
		if err := reg.Beat(t.Context(), fleet.Node{ID: "crashed", Role: "worker"}, fleet.Activity{}); err != nil {
			t.Fatal(err)
		}
		waitNodes(t, reg, 2)
		time.Sleep(2 * time.Second)
		if n := waitNodes(t, reg, 1); n[0].ID != w.ID() {
			t.Fatalf("the crashed node was not forgotten: %+v", n)
		}
	})
}

func waitNodes(t *testing.T, reg *fleet.Registry, want int) []fleet.Node {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes, err := reg.Nodes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) == want {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d nodes, have %+v", want, nodes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFleetWindowRatesAndPercentiles: admissions and bytes reported by the beats come
// back as per-second figures, rates and wait percentiles.
func TestFleetWindowRatesAndPercentiles(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		reg := fleet.New(rdb, fleet.Config{})
		var sent atomic.Int64
		m := reg.Join(fleet.MemberConfig{Role: "worker", BytesSent: sent.Load, Every: 100 * time.Millisecond})
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		defer func() { stop(); <-done }()
		for range 90 {
			m.Admitted(300 * time.Millisecond) // bucket (0.25, 0.5]
		}
		for range 10 {
			m.Admitted(20 * time.Second) // bucket (10, 30]
		}
		sent.Store(5 << 20)
		var s fleet.Summary
		deadline := time.Now().Add(5 * time.Second)
		for {
			secs, err := reg.Window(t.Context(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(secs) != 10 {
				t.Fatalf("window of %d seconds", len(secs))
			}
			if s = fleet.Summarize(secs, 5); s.Admissions == 100 && s.BytesPerSecond > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the window never showed the activity: %+v", s)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if s.AdmissionsPerSecond != 20 || s.BytesPerSecond != float64(5<<20)/5 {
			t.Errorf("rates over 5s: %v admissions/s, %v B/s; want 20 and %v", s.AdmissionsPerSecond, s.BytesPerSecond, float64(5<<20)/5)
		}
		if s.WaitP50 <= 0.25 || s.WaitP50 > 0.5 || s.WaitP99 <= 10 || s.WaitP99 > 30 {
			t.Errorf("percentiles: p50 %v (want within 0.25-0.5), p99 %v (want within 10-30)", s.WaitP50, s.WaitP99)
		}
	})
}

// TestFleetWindowLevels: the admission levels a member reads at its beat come back
// in the window's seconds, and a member that reads none leaves them out.
func TestFleetWindowLevels(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		reg := fleet.New(rdb, fleet.Config{})
		want := fleet.Levels{Backlog: 40, Admissible: 12, SlotsInUse: 8, Limit: 20}
		levels := func(context.Context) (fleet.Levels, error) { return want, nil }
		for _, cfg := range []fleet.MemberConfig{
			{Role: "ingress", Levels: levels, Every: 100 * time.Millisecond},
			{Role: "worker", Every: 100 * time.Millisecond}, // beats the same seconds without levels
		} {
			m := reg.Join(cfg)
			ctx, stop := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()
			defer func() { stop(); <-done }()
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			secs, err := reg.Window(t.Context(), 3)
			if err != nil {
				t.Fatal(err)
			}
			if l := secs[len(secs)-1].Levels; l != nil {
				if *l != want {
					t.Fatalf("levels in the window: %+v, want %+v", *l, want)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the window never showed the levels: %+v", secs)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestFleetOneLeaderPerRole: of the live nodes of a role, exactly one leads (the
// smallest id); when it leaves, another takes over; a node of another role does not
// count.
func TestFleetOneLeaderPerRole(t *testing.T) {
	backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		reg := fleet.New(rdb, fleet.Config{TTL: 1500 * time.Millisecond})
		var members []*fleet.Member
		stops := map[*fleet.Member]func(){}
		for _, role := range []string{"ingress", "ingress", "ingress", "edge"} {
			m := reg.Join(fleet.MemberConfig{Role: role, Every: 100 * time.Millisecond})
			ctx, stop := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()
			stops[m] = func() { stop(); <-done }
			members = append(members, m)
		}
		defer func() {
			for _, stop := range stops {
				stop()
			}
		}()
		waitNodes(t, reg, 4)
		leaders := func() []*fleet.Member {
			var out []*fleet.Member
			for _, m := range members[:3] {
				if _, stopped := stops[m]; !stopped {
					continue
				}
				ok, err := m.Leads(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					out = append(out, m)
				}
			}
			return out
		}
		first := leaders()
		if len(first) != 1 {
			t.Fatalf("%d ingress leaders, want 1", len(first))
		}
		if ok, _ := members[3].Leads(t.Context()); !ok {
			t.Error("the only edge does not lead its role")
		}
		stops[first[0]]()
		delete(stops, first[0])
		waitNodes(t, reg, 3)
		if next := leaders(); len(next) != 1 || next[0] == first[0] {
			t.Fatalf("after the leader left: %d leaders", len(next))
		}
	})
}
