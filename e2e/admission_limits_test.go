package e2e

import (
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// A limit changed at runtime takes effect within a second on every worker: with three
// worker processes and tickets waiting, raising the global limit from 1 to 4 admits
// three more at once, and never a fifth; lowering it holds admissions back until the
// slots in use fall under it.
func TestAdmissionLimitsChangeAtRuntime(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.putObject("l.bin", randomBytes(4<<10, 32))
	s.start("edge")
	var workerLogs []string
	for range 3 {
		workerLogs = append(workerLogs, s.start("worker").Log)
	}
	s.start("ingress")
	rdb := s.redis.Client(t)

	var ids []string
	for range 8 {
		ids = append(ids, s.request("l.bin").ID)
	}
	s.follow(ids[0], 10*time.Second) // holds the only slot: its link is never used
	count := func() (ready, queued int) {
		for _, st := range statuses(t, rdb, ids) {
			switch st {
			case "ready", "admitting":
				ready++
			case "queued":
				queued++
			}
		}
		return
	}
	time.Sleep(500 * time.Millisecond)
	if r, q := count(); r != 1 || q != 7 {
		t.Fatalf("limit 1: %d admitted, %d queued", r, q)
	}

	var lim api.Limits
	s.operator(http.MethodPut, "/api/v1/admin/limits", map[string]int{"global": 4}, &lim)
	changed := time.Now()
	if lim.Global != 4 {
		t.Fatalf("PUT limits answered global %d", lim.Global)
	}
	for {
		if r, _ := count(); r == 4 {
			break
		}
		if time.Since(changed) > 3*time.Second {
			t.Fatal("raising the limit to 4 did not admit three more tickets within 3 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(changed)
	t.Logf("limit 1 -> 4: three more tickets admitted %s after the change", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the raised limit took %s to take effect, want within 1 s", took)
	}
	time.Sleep(time.Second)
	if r, _ := count(); r != 4 {
		t.Fatalf("%d admitted under a limit of 4", r)
	}
	if live, _ := slotsHeld(t, rdb); live != 4 {
		t.Fatalf("%d slots held under a limit of 4", live)
	}

	// Lower it to 2 while 4 are held: nothing is taken away, nothing more admitted
	// until fewer than 2 are held.
	s.operator(http.MethodPut, "/api/v1/admin/limits", map[string]int{"global": 2}, nil)
	var held []string
	for id, st := range statuses(t, rdb, ids) {
		if st == "ready" {
			held = append(held, id)
		}
	}
	cancel := func(id string) {
		if code, _, body := call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+id, "", nil); code != 200 {
			t.Fatalf("DELETE ticket: %d %s", code, body)
		}
	}
	cancel(held[0])
	cancel(held[1])
	time.Sleep(700 * time.Millisecond)
	if r, q := count(); r != 2 || q != 4 {
		t.Fatalf("limit lowered to 2 with 2 held: %d admitted, %d queued (want no admission)", r, q)
	}
	cancel(held[2])
	freed := time.Now()
	eventually(t, 2*time.Second, "a ticket admitted into the slot under the lowered limit", func() bool {
		r, q := count()
		return r == 2 && q == 3
	})
	t.Logf("lowered limit 2: the freed slot was taken %s later", time.Since(freed).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	if r, _ := count(); r != 2 {
		t.Fatalf("%d admitted under a limit of 2", r)
	}
	admitters := 0
	for _, l := range workerLogs {
		raw, _ := os.ReadFile(l)
		if strings.Contains(string(raw), `"msg":"ticket ready"`) {
			admitters++
		}
	}
	t.Logf("%d of 3 worker processes admitted tickets", admitters)
}

// Weighted fair sharing across tenants, end to end with client keys: while both wait,
// a tenant of weight 2 gets twice the admissions of a tenant of weight 1, and each
// tenant's tickets are admitted in the order they were requested.
func TestAdmissionWeightedFairnessAcrossTenants(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.putObject("w.bin", randomBytes(1<<10, 33))
	s.start("edge")
	s.start("worker")
	s.start("worker")
	s.start("ingress")
	rdb := s.redis.Client(t)
	_, alphaKey := s.createKey("client", "alpha")
	_, betaKey := s.createKey("client", "beta")
	s.operator(http.MethodPut, "/api/v1/admin/limits", map[string]any{
		"tenants": map[string]any{"alpha": map[string]float64{"weight": 2}}}, nil)

	s.operator(http.MethodPost, "/api/v1/admin/pause", nil, nil)
	const n = 12
	tenantOf := map[string]string{}
	var alpha, beta []string
	for range n {
		id := s.requestAs(alphaKey, "w.bin").ID
		alpha, tenantOf[id] = append(alpha, id), "alpha"
	}
	for range n {
		id := s.requestAs(betaKey, "w.bin").ID
		beta, tenantOf[id] = append(beta, id), "beta"
	}
	all := append(slices.Clone(alpha), beta...)
	s.operator(http.MethodPost, "/api/v1/admin/resume", nil, nil)

	// Each admitted ticket is canceled at once, which frees the one slot for the next.
	deadline := time.Now().Add(30 * time.Second)
	for ended := 0; ended < len(all); {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tickets went through in 30 s", ended, len(all))
		}
		ended = 0
		for id, st := range statuses(t, rdb, all) {
			switch st {
			case "ready": // canceled by an operator: a keyed ticket is its tenant's
				call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+id, admOperatorKey, nil)
				ended++
			case "canceled":
				ended++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The epoch of a grant orders admissions across every worker.
	order := slices.Clone(all)
	epochs := map[string]int64{}
	for _, id := range all {
		epochs[id] = epochOf(t, rdb, id)
	}
	sort.Slice(order, func(i, j int) bool { return epochs[order[i]] < epochs[order[j]] })
	seq := ""
	for _, id := range order {
		seq += tenantOf[id][:1]
	}
	t.Logf("admission order (a = alpha, weight 2; b = beta, weight 1): %s", seq)
	alphaFirst := strings.Count(seq[:n], "a")
	if alphaFirst < 7 || alphaFirst > 9 {
		t.Errorf("alpha got %d of the first %d admissions, want 8 (2:1)", alphaFirst, n)
	}
	for _, ids := range [][]string{alpha, beta} {
		for i := 1; i < len(ids); i++ {
			if epochs[ids[i]] < epochs[ids[i-1]] {
				t.Errorf("tickets of %s admitted out of order", tenantOf[ids[i]])
			}
		}
	}
}
