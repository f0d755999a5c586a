// Package deployments holds no code: its tests check that the deployment files in this
// directory and docker-compose.yml agree with the code they deploy (roles, flags and
// their SLUICE_* variables, ports, probe paths, stream and consumer names, metric
// names). No Docker engine or Kubernetes runs here; the files are parsed, and the
// binary they run is built and asked.
package deployments

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-dl/sluice/internal/testenv"
)

var (
	sluiceBin string
	settings  map[string]setting // by variable name
)

// setting is one entry of `sluice config-reference --format json`.
type setting struct {
	Flag     string            `json:"flag"`
	Env      string            `json:"env"`
	Roles    []string          `json:"roles"`
	Defaults map[string]string `json:"defaults"`
}

func TestMain(m *testing.M) {
	var remove func()
	sluiceBin, remove = testenv.BuildSluice("deployments")
	out, err := exec.Command(sluiceBin, "config-reference", "--format", "json").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice config-reference: %v\n", err)
		os.Exit(1)
	}
	var list []setting
	if err := json.Unmarshal(out, &list); err != nil {
		fmt.Fprintf(os.Stderr, "config reference JSON: %v\n", err)
		os.Exit(1)
	}
	settings = map[string]setting{}
	for _, s := range list {
		settings[s.Env] = s
	}
	code := m.Run()
	remove()
	os.Exit(code)
}

// roles the deployments run, and the setting holding each one's listen address.
var listenSetting = map[string]string{
	"ingress": "SLUICE_INGRESS_ADDR",
	"edge":    "SLUICE_EDGE_ADDR",
	"worker":  "SLUICE_METRICS_ADDR",
}

// metricsSetting is the setting holding the address each role serves /metrics on: the
// edge's is its operations port, never the public one.
var metricsSetting = map[string]string{
	"ingress": "SLUICE_INGRESS_ADDR",
	"edge":    "SLUICE_EDGE_METRICS_ADDR",
	"worker":  "SLUICE_METRICS_ADDR",
}

// metricsPort is the port a role serves /metrics on as deployed.
func metricsPort(t *testing.T, role string, env map[string]string) int {
	t.Helper()
	return portOf(t, role, value(t, role, env, metricsSetting[role]))
}

// initSettings are the variables `sluice init` reads (from its help: init is no
// server role, so the configuration reference does not list it).
func initSettings(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(sluiceBin, "init", "--help").Output()
	if err != nil {
		t.Fatalf("sluice init --help: %v", err)
	}
	vars := map[string]bool{}
	for _, m := range helpFlagRE.FindAllStringSubmatch(string(out), -1) {
		vars["SLUICE_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
	}
	if !vars["SLUICE_NATS_URL"] {
		t.Fatalf("sluice init --help lists no --nats-url:\n%s", out)
	}
	return vars
}

var helpFlagRE = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`)

// cutGrace is what a role may take after --shutdown-wait for cut requests to clean up
// (cmd/sluice/lifecycle.go).
const cutGrace = 3 * time.Second

// checkEnv checks that every SLUICE_* variable a deployment sets is read by its role.
func checkEnv(t *testing.T, where, role string, env map[string]string) {
	t.Helper()
	for name := range env {
		if !strings.HasPrefix(name, "SLUICE_") {
			continue
		}
		s, ok := settings[name]
		if !ok {
			t.Errorf("%s sets %s, which no sluice command reads (see docs/CONFIG.md)", where, name)
			continue
		}
		if !slices.Contains(s.Roles, role) {
			t.Errorf("%s sets %s, but `sluice %s` does not read it (only %v)", where, name, role, s.Roles)
		}
	}
}

// value is a role's setting as deployed: the variable if set, else the flag default.
func value(t *testing.T, role string, env map[string]string, name string) string {
	t.Helper()
	if v, ok := env[name]; ok {
		return v
	}
	s, ok := settings[name]
	if !ok || !slices.Contains(s.Roles, role) {
		t.Fatalf("`sluice %s` has no %s", role, name)
	}
	return s.Defaults[role]
}

// listenPort is the port a role listens on as deployed.
func listenPort(t *testing.T, role string, env map[string]string) int {
	t.Helper()
	return portOf(t, role, value(t, role, env, listenSetting[role]))
}

func portOf(t *testing.T, role, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s listen address %q: %v", role, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s listen port %q", role, port)
	}
	return n
}

// shutdownBudget is how long a role may take from SIGTERM to exit as deployed.
func shutdownBudget(t *testing.T, role string, env map[string]string) time.Duration {
	t.Helper()
	total := cutGrace + duration(t, value(t, role, env, "SLUICE_SHUTDOWN_WAIT"))
	if s, ok := settings["SLUICE_DRAIN_DELAY"]; ok && slices.Contains(s.Roles, role) {
		total += duration(t, value(t, role, env, "SLUICE_DRAIN_DELAY"))
	}
	return total
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// readYAML decodes every document of a YAML file.
func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// get walks nested maps and lists: get(doc, "spec", "template", "spec").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// repoFile resolves a path relative to the repository root and checks it exists.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", filepath.FromSlash(strings.TrimPrefix(rel, "./")))
	if _, err := os.Stat(p); err != nil {
		t.Errorf("%s is referenced but missing: %v", rel, err)
	}
	return p
}

// goModVersion returns the version go.mod requires for a module, or the go directive
// for "go".
func goModVersion(t *testing.T, module string) string {
	t.Helper()
	raw, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if module == "go" && len(f) == 2 && f[0] == "go" {
			return f[1]
		}
		if len(f) >= 2 && f[0] == module {
			return f[1]
		}
	}
	t.Fatalf("go.mod has no %s", module)
	return ""
}

// majorMinor turns v2.15.2 or 1.26.8 into "2.15" / "1.26".
func majorMinor(v string) string {
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}
