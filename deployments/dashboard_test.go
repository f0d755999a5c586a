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
	m := reflect.ValueOf(telemetry.NewMetrics("test", "test", "")).Elem()
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

// dashboardVariables returns the dashboard's template variables by name.
func dashboardVariables(t *testing.T, d map[string]any) map[string]map[string]any {
	t.Helper()
	vars := map[string]map[string]any{}
	list, _ := get(d, "templating", "list").([]any)
	for _, v := range list {
		if m, ok := v.(map[string]any); ok {
			vars[str(m["name"])] = m
		}
	}
	return vars
}

// dashboardDatasourceType is the plugin type of the dashboard's data source variable.
func dashboardDatasourceType(t *testing.T) string {
	t.Helper()
	v := dashboardVariables(t, loadDashboard(t))["datasource"]
	if v == nil || str(v["type"]) != "datasource" {
		t.Fatalf("the dashboard has no datasource variable: %v", v)
	}
	return str(v["query"])
}

// The dashboard works on any Grafana: every query goes to the data source the viewer
// picks (${datasource}, no fixed uid), and the per-process panels follow the job and
// instance variables, while the ledger's system-wide figures (exported by one ingress
// at a time) are never filtered by them.
func TestDashboardVariables(t *testing.T) {
	d := loadDashboard(t)
	if typ := dashboardDatasourceType(t); typ != "prometheus" {
		t.Errorf("the datasource variable lists %q data sources, want prometheus", typ)
	}
	vars := dashboardVariables(t, d)
	for _, name := range []string{"job", "instance"} {
		v := vars[name]
		if v == nil {
			t.Errorf("the dashboard has no %s variable", name)
			continue
		}
		q := str(get(v, "query", "query"))
		if str(v["type"]) != "query" || !strings.Contains(q, "label_values(") || !strings.HasSuffix(q, ", "+name+")") ||
			v["includeAll"] != true || v["multi"] != true || str(v["allValue"]) != ".*" {
			t.Errorf("variable %s: want a multi-value label_values(…, %s) query with All as .*, have %v", name, name, v)
		}
		for _, m := range metricsIn(q) {
			if _, ok := exportedName(m, telemetry.MetricNames()); !ok {
				t.Errorf("variable %s queries %s, which sluice does not export", name, m)
			}
		}
	}
	if q := str(get(vars["instance"], "query", "query")); !strings.Contains(q, `job=~"$job"`) {
		t.Errorf("the instance variable does not follow the job variable: %s", q)
	}

	var sources, panels int
	walk(d, func(m map[string]any) {
		if ds, ok := m["datasource"].(map[string]any); ok {
			sources++
			if str(ds["uid"]) != "${datasource}" {
				t.Errorf("a datasource with uid %q, want ${datasource}", ds["uid"])
			}
		}
		if targets, ok := m["targets"].([]any); ok && len(targets) > 0 {
			panels++
			if ds, ok := m["datasource"].(map[string]any); !ok || str(ds["uid"]) != "${datasource}" {
				t.Errorf("panel %q does not use ${datasource}", m["title"])
			}
		}
	})
	if sources == 0 || panels < 10 {
		t.Fatalf("%d datasources in %d panels", sources, panels)
	}

	ledger := telemetry.LedgerNames()
	selector := regexp.MustCompile(`\b(sluice_[a-z0-9_]+)(\{[^}]*\})?`)
	walk(d, func(m map[string]any) {
		expr, ok := m["expr"].(string)
		if !ok {
			return
		}
		for _, sm := range selector.FindAllStringSubmatch(expr, -1) {
			name, _ := exportedName(sm[1], telemetry.MetricNames())
			filtered := strings.Contains(sm[2], `job=~"$job"`) && strings.Contains(sm[2], `instance=~"$instance"`)
			switch {
			case slices.Contains(ledger, name) && strings.Contains(sm[2], "$"):
				t.Errorf("%s is system-wide (one ingress exports it) but is filtered by a variable: %s", name, expr)
			case !slices.Contains(ledger, name) && !filtered:
				t.Errorf("%s is per process but does not follow $job and $instance: %s", sm[1], expr)
			}
		}
	})
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
