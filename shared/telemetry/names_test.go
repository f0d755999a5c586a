package telemetry

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-dl/sluice/shared/admission"
)

type fixedStats struct {
	s   admission.Stats
	err error
}

func (f *fixedStats) Stats(context.Context) (admission.Stats, error) { return f.s, f.err }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestMetricNamesMatchRegistry: MetricNames, which dashboards are checked against, is
// exactly what the collectors describe (apart from the Go runtime's own).
func TestMetricNamesMatchRegistry(t *testing.T) {
	m := NewMetrics("serve", "test", "")
	m.Registry.MustRegister(
		NewLedgerCollector(&fixedStats{}, LedgerCollectorOptions{}),
		NewEdgeCollector(func() EdgeStats { return EdgeStats{} }),
		NewBreakerCollector(map[string]func() string{"objects": func() string { return "closed" }}),
		NewHeldTickets(func() int { return 0 }),
	)
	descs := make(chan *prometheus.Desc, 1000)
	for _, c := range []prometheus.Collector{m.HTTPRequests, m.HTTPRequestDuration, m.HTTPOpenConnections,
		m.RedisDuration, m.RedisErrors, m.NATSPublish, m.NATSErrors, m.StorageDuration, m.StorageErrors,
		m.Admissions, m.TicketWait, m.ReleaseEvents, m.TokenRejections,
		NewLedgerCollector(&fixedStats{}, LedgerCollectorOptions{}),
		NewEdgeCollector(func() EdgeStats { return EdgeStats{} }),
		NewEdgeCacheCollector(func() EdgeCacheStats { return EdgeCacheStats{} }),
		NewBreakerCollector(nil), NewHeldTickets(func() int { return 0 })} {
		c.Describe(descs)
	}
	close(descs)
	got := []string{NameBuildInfo}
	for d := range descs {
		got = append(got, fqName.FindStringSubmatch(d.String())[1])
	}
	slices.Sort(got)
	want := slices.Clone(MetricNames())
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("collectors describe\n%v\nbut MetricNames lists\n%v", got, want)
	}
	for _, n := range want {
		if !strings.HasPrefix(n, "sluice_") {
			t.Errorf("%s: every sluice metric starts with sluice_", n)
		}
	}
	// The whole registry gathers without a clash.
	if _, err := m.Registry.Gather(); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerCollectorCapsTenantsAndReportsDown(t *testing.T) {
	src := &fixedStats{s: admission.Stats{Limit: 10, InUse: 7, Backlog: 30, Tenants: map[string]admission.TenantStats{},
		Tickets: map[admission.Status]int64{"queued": 30, "streaming": 7}}}
	for i := range 30 {
		src.s.Tenants[fmt.Sprintf("t%02d", i)] = admission.TenantStats{Queued: 1, InUse: int64(i % 2), Limit: 1}
	}
	c := NewLedgerCollector(src, LedgerCollectorOptions{MaxTenants: 5})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if n := testutil.CollectAndCount(c, NameTenantQueued); n != 6 {
		t.Errorf("tenants exported: %d series, want 5 by name + (other)", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP sluice_tenant_slots_limit A tenant's own slot limit, 0 for none (for (other): the sum of their limits).
# TYPE sluice_tenant_slots_limit gauge
sluice_tenant_slots_limit{tenant="(other)"} 25
sluice_tenant_slots_limit{tenant="t01"} 1
sluice_tenant_slots_limit{tenant="t03"} 1
sluice_tenant_slots_limit{tenant="t05"} 1
sluice_tenant_slots_limit{tenant="t07"} 1
sluice_tenant_slots_limit{tenant="t09"} 1
`), NameTenantSlotsLimit); err != nil {
		t.Error(err)
	}
	if v := testutil.ToFloat64(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		for m := range collectOne(c, NameSlotsInUse) {
			ch <- m
		}
	})); v != 7 {
		t.Errorf("slots in use = %v, want 7", v)
	}

	down := NewLedgerCollector(&fixedStats{err: errors.New("redis down")}, LedgerCollectorOptions{})
	if err := testutil.CollectAndCompare(down, strings.NewReader(`
# HELP sluice_ledger_up 1 if this process's last read of the admission ledger worked.
# TYPE sluice_ledger_up gauge
sluice_ledger_up 0
`)); err != nil {
		t.Errorf("with the ledger down, only sluice_ledger_up 0 is exported: %v", err)
	}
}

// TestLedgerCollectorOnlyOnTheLeader: the system-wide figures come from the leading
// process alone; the others export only whether they reach the ledger, and a failed
// leader check counts as the ledger being down.
func TestLedgerCollectorOnlyOnTheLeader(t *testing.T) {
	src := &fixedStats{s: admission.Stats{Limit: 10, InUse: 7, Tickets: map[admission.Status]int64{"queued": 0}}}
	leads, leaderErr := false, error(nil)
	clock := time.Unix(0, 0)
	c := NewLedgerCollector(src, LedgerCollectorOptions{
		Leader: func(context.Context) (bool, error) { return leads, leaderErr },
		Now:    func() time.Time { return clock },
	})
	up := func(v int) string {
		return fmt.Sprintf("# HELP sluice_ledger_up 1 if this process's last read of the admission ledger worked.\n"+
			"# TYPE sluice_ledger_up gauge\nsluice_ledger_up %d\n", v)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(up(1))); err != nil {
		t.Errorf("a process that does not lead exports only sluice_ledger_up: %v", err)
	}
	leads = true
	clock = clock.Add(time.Second)
	if n := testutil.CollectAndCount(c); n < 7 {
		t.Errorf("the leader exports %d series, want the ledger's figures", n)
	}
	for _, name := range LedgerNames() {
		if name == NameTenantSlotsInUse || name == NameTenantSlotsLimit || name == NameTenantQueued || name == NameTicketsEnded {
			continue // no tenants and no ended tickets in this snapshot
		}
		if testutil.CollectAndCount(c, name) == 0 {
			t.Errorf("the leader does not export %s", name)
		}
	}
	leaderErr = errors.New("redis down")
	clock = clock.Add(time.Second)
	if err := testutil.CollectAndCompare(c, strings.NewReader(up(0))); err != nil {
		t.Errorf("a failed leader check: %v", err)
	}
}

func collectOne(c prometheus.Collector, name string) chan prometheus.Metric {
	all := make(chan prometheus.Metric, 1000)
	c.Collect(all)
	close(all)
	out := make(chan prometheus.Metric, 1000)
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+name+`"`) {
			out <- m
		}
	}
	close(out)
	return out
}
