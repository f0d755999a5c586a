package deployments

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-dl/sluice/shared/telemetry"
)

// alertRule is one rule of prometheus/alerts.yml.
type alertRule struct {
	name, expr  string
	annotations map[string]any
}

func loadAlerts(t *testing.T) []alertRule {
	t.Helper()
	var out []alertRule
	for _, g := range list(readYAML(t, "prometheus/alerts.yml")[0]["groups"]) {
		for _, r := range list(get(g, "rules")) {
			out = append(out, alertRule{name: str(get(r, "alert")), expr: str(get(r, "expr")), annotations: mapOf(get(r, "annotations"))})
		}
	}
	return out
}

// The alerts cover what an operator is paged for, each says what to do, and each
// queries only metrics sluice exports (or Prometheus's own up).
func TestAlertRulesCoverTheSLOs(t *testing.T) {
	rules := loadAlerts(t)
	used := map[string]bool{}
	var allExprs string
	for _, r := range rules {
		allExprs += r.expr + "\n"
		if r.name == "" {
			t.Errorf("a rule of alerts.yml is not an alert: %s", r.expr)
			continue
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if len(strings.Fields(str(r.annotations[a]))) < 3 {
				t.Errorf("alert %s has no %s annotation an operator can act on", r.name, a)
			}
		}
		for _, series := range metricsIn(r.expr) {
			name, ok := exportedName(series, telemetry.MetricNames())
			if !ok {
				t.Errorf("alert %s queries %s, which sluice does not export (shared/telemetry/names.go)", r.name, series)
				continue
			}
			used[name] = true
		}
	}
	// The signals operators are alerted on, by the metric that carries each.
	for what, metric := range map[string]string{
		"ledger unreachable":         telemetry.NameLedgerUp,
		"queue unreachable":          telemetry.NameNATSPublishErrors,
		"backlog not draining":       telemetry.NameQueueAdmissibleBacklog,
		"slots held with no streams": telemetry.NameEdgeActiveStreams,
		"wait p90 over target":       telemetry.NameTicketWait,
		"breaker open":               telemetry.NameBreakerState,
		"5xx ratio":                  telemetry.NameHTTPRequests,
		"dead letters growing":       telemetry.NameReleaseEvents + `{outcome="` + telemetry.ReleaseDeadLettered + `"}`,
		"admission paused too long":  telemetry.NameAdmissionPaused,
	} {
		name, _, _ := strings.Cut(metric, "{")
		if !used[name] || !strings.Contains(allExprs, strings.TrimPrefix(metric, name)) {
			t.Errorf("no alert for %s (on %s)", what, metric)
		}
	}

	// Every alert has a promtool case in which it fires.
	fires := map[string]bool{}
	for _, tc := range list(readYAML(t, "prometheus/alerts_test.yml")[0]["tests"]) {
		for _, a := range list(get(tc, "alert_rule_test")) {
			if len(list(get(a, "exp_alerts"))) > 0 {
				fires[str(get(a, "alertname"))] = true
			}
		}
	}
	for _, r := range rules {
		if !fires[r.name] {
			t.Errorf("alert %s has no case in alerts_test.yml where it fires", r.name)
		}
	}
}

// promtool checks alerts.yml (syntax, PromQL, annotation templates) and runs its unit
// tests. promtool compares annotations too, so the cases run against the rules with
// their annotations left out: the cases state the labels an alert fires with, and
// TestAlertRulesCoverTheSLOs checks the annotations are there.
func TestAlertRules(t *testing.T) {
	promtool := promtoolBinary(t)
	if out, err := exec.Command(promtool, "check", "rules", "prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules prometheus/alerts.yml: %v\n%s", err, out)
	}
	var doc map[string]any
	raw, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, g := range list(doc["groups"]) {
		for _, r := range list(get(g, "rules")) {
			delete(mapOf(r), "annotations")
		}
	}
	stripped, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"alerts.yml": stripped, "alerts_test.yml": cases} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules prometheus/alerts_test.yml: %v\n%s", err, out)
	}
}

// promtoolBinary finds promtool ($SLUICE_PROMTOOL_BIN, bin/, $PATH). Missing, the test
// is skipped on a workstation and fails in CI, where scripts/deps.sh installs it.
func promtoolBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_PROMTOOL_BIN"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../bin/promtool"); err == nil {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	const install = "make deps (or: sudo apt-get install -y prometheus, which ships /usr/bin/promtool)"
	// make test installs it (scripts/deps.sh): a missing promtool is a failure, never a skip.
	t.Fatalf("promtool not found in $SLUICE_PROMTOOL_BIN, bin/ or $PATH; install it with: %s", install)
	return ""
}

// Compose's Prometheus loads alerts.yml: prometheus.yml names it under rule_files, and
// the prometheus service mounts it where that name resolves.
func TestComposePrometheusLoadsTheAlerts(t *testing.T) {
	services := loadCompose(t)
	p := services["prometheus"]
	if p == nil {
		t.Fatal("no prometheus service")
	}
	mounts := map[string]string{}
	for _, v := range list(p.raw["volumes"]) {
		parts := strings.Split(str(v), ":")
		if len(parts) >= 2 {
			mounts[parts[1]] = parts[0]
		}
	}
	config := "/etc/prometheus/prometheus.yml"
	if mounts[config] != "./deployments/prometheus/prometheus.yml" {
		t.Fatalf("prometheus does not mount deployments/prometheus/prometheus.yml at %s", config)
	}
	files := strAll(list(readYAML(t, "prometheus/prometheus.yml")[0]["rule_files"]))
	var loaded bool
	for _, f := range files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(config), f)
		}
		if mounts[f] == "./deployments/prometheus/alerts.yml" {
			loaded = true
		}
	}
	if !loaded {
		t.Errorf("prometheus.yml rule_files %v: none is where the prometheus service mounts deployments/prometheus/alerts.yml (mounts %v)", files, mounts)
	}
	if !slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, "alerts.yml") }) {
		t.Error("prometheus.yml does not load alerts.yml")
	}
}
