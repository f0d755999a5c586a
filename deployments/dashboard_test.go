package deployments

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dl/sluice/shared/telemetry"
)

func loadDashboard(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("grafana/dashboards/sluice.json")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana/dashboards/sluice.json: %v", err)
	}
	return d
}

// walk calls fn for every map inside v.
func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, c := range x {
			walk(c, fn)
		}
	case []any:
		for _, c := range x {
			walk(c, fn)
		}
	}
}

var metricRE = regexp.MustCompile(`\bsluice_[a-z0-9_]+`)

// exportedName maps a series name in PromQL to its metric family: a histogram's
// _bucket, _sum and _count series belong to the histogram.
func exportedName(series string, known []string) (string, bool) {
	if slices.Contains(known, series) {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && slices.Contains(known, base) && histograms()[base] {
			return base, true
		}
	}
	return "", false
}

// histograms names the histogram families of telemetry.Metrics (the only kind with
// _bucket, _sum and _count series), found by the type of its fields.
func histograms() map[string]bool {
	out := map[string]bool{}
	m := reflect.ValueOf(telemetry.NewMetrics("test", "test")).Elem()
	for i := range m.NumField() {
		f := m.Field(i)
		if !f.CanInterface() || f.IsZero() {
			continue
		}
		var h prometheus.Collector
		switch v := f.Interface().(type) {
		case *prometheus.HistogramVec:
			h = v
		case prometheus.Histogram:
			h = v
		default:
			continue
		}
		descs := make(chan *prometheus.Desc, 4)
		h.Describe(descs)
		close(descs)
		for d := range descs {
			if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
				out[m[1]] = true
			}
		}
	}
	return out
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// metricsIn returns every sluice metric a PromQL expression uses.
func metricsIn(expr string) []string { return metricRE.FindAllString(expr, -1) }

// Every metric the dashboard queries is one the code registers (telemetry.MetricNames
// is checked against the collectors' descriptions in shared/telemetry), and the
// figures an operator graphs are all on it.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	known := telemetry.MetricNames()
	used := map[string]bool{}
	var exprs int
	walk(d, func(m map[string]any) {
		expr, ok := m["expr"].(string)
		if !ok {
			return
		}
		exprs++
		for _, series := range metricsIn(expr) {
			name, ok := exportedName(series, known)
			if !ok {
				t.Errorf("the dashboard queries %s, which sluice does not export (shared/telemetry/names.go): %s", series, expr)
				continue
			}
			used[name] = true
		}
	})
	if exprs < 10 {
		t.Fatalf("only %d queries in the dashboard", exprs)
	}
	for _, must := range []string{
		telemetry.NameQueueBacklog, telemetry.NameQueueAdmissibleBacklog, telemetry.NameAdmissions,
		telemetry.NameTicketWait, telemetry.NameSlotsInUse, telemetry.NameSlotsLimit,
		telemetry.NameTenantSlotsInUse, telemetry.NameEdgeSentBytes, telemetry.NameEdgeActiveStreams,
		telemetry.NameTokenRejections, telemetry.NameReleaseEvents, telemetry.NameBreakerState,
		telemetry.NameRedisDuration, telemetry.NameNATSPublishDuration, telemetry.NameStorageDuration,
		telemetry.NameHTTPRequests, telemetry.NameHTTPOpenConnections, telemetry.NameTickets,
	} {
		if !used[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}

func dashboardDatasourceUID(t *testing.T) string {
	t.Helper()
	uids := map[string]bool{}
	walk(loadDashboard(t), func(m map[string]any) {
		if ds, ok := m["datasource"].(map[string]any); ok {
			uids[str(ds["uid"])] = true
		}
	})
	if len(uids) != 1 {
		t.Fatalf("the dashboard uses datasources %v, want one", uids)
	}
	for uid := range uids {
		return uid
	}
	return ""
}

// The recommended KEDA alternative scales on a metric sluice exports.
func TestKEDAPrometheusTriggerUsesAnExportedMetric(t *testing.T) {
	doc := readYAML(t, "k8s/keda-scaledobject-prometheus.yaml")[0]
	query := str(get(doc, "spec", "triggers", 0, "metadata", "query"))
	names := metricsIn(query)
	if len(names) == 0 {
		t.Fatalf("the Prometheus trigger query %q uses no sluice metric", query)
	}
	for _, n := range names {
		if _, ok := exportedName(n, telemetry.MetricNames()); !ok {
			t.Errorf("the Prometheus trigger queries %s, which sluice does not export", n)
		}
	}
	if !slices.Contains(names, telemetry.NameQueueAdmissibleBacklog) {
		t.Errorf("the Prometheus trigger should scale on %s, not %v", telemetry.NameQueueAdmissibleBacklog, names)
	}
}
