package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// docs/CONFIG.md is exactly what `sluice config-reference` prints: a flag added,
// removed or changed without regenerating it fails here.
func TestConfigReferenceIsCurrent(t *testing.T) {
	var want bytes.Buffer
	if err := runConfigReference(&want, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatalf("read docs/CONFIG.md: %v; create it with: make docs", err)
	}
	if bytes.Equal(got, want.Bytes()) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(want.String(), "\n")
	for i := range max(len(gl), len(wl)) {
		g, w := lineAt(gl, i), lineAt(wl, i)
		if g != w {
			t.Fatalf("docs/CONFIG.md is out of date with the flags in cmd/sluice; regenerate it with: make docs\n"+
				"first difference at line %d:\n  file:      %s\n  generated: %s", i+1, g, w)
		}
	}
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "<end of file>"
}

// Every documented variable really sets its flag, in every command that has it.
func TestDocumentedVariablesSetTheirFlags(t *testing.T) {
	settings := configSettings()
	if len(settings) < 20 {
		t.Fatalf("only %d settings found; the reference is not walking the flags", len(settings))
	}
	want := map[string]string{}
	for _, s := range settings {
		if !strings.HasPrefix(s.Env, "SLUICE_") || s.Env != strings.ToUpper(s.Env) || strings.Contains(s.Env, "-") {
			t.Errorf("--%s: variable %q is not SLUICE_<FLAG>", s.Flag, s.Env)
		}
		ref := flag.NewFlagSet("", flag.ContinueOnError)
		registerServerFlags(ref, roleFromName(t, s.Roles[0]))
		v := changedValue(t, ref.Lookup(s.Flag))
		want[s.Flag] = v
		t.Setenv(s.Env, v)
	}
	for _, r := range serverRoles {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		registerServerFlags(fs, r)
		if err := ff.Parse(fs, nil, ff.WithEnvVarPrefix("SLUICE")); err != nil {
			t.Fatalf("%s: parse with every variable set: %v", r, err)
		}
		fs.VisitAll(func(f *flag.Flag) {
			if got := f.Value.String(); got != want[f.Name] {
				t.Errorf("%s: %s=%q left --%s at %q", r, envName(f.Name), want[f.Name], f.Name, got)
			}
		})
	}
}

func roleFromName(t *testing.T, name string) role {
	for _, r := range serverRoles {
		if r.String() == name {
			return r
		}
	}
	t.Fatalf("unknown role %q", name)
	return 0
}

// changedValue returns a valid value for f that differs from its default, in the
// form f.Value.String() prints.
func changedValue(t *testing.T, f *flag.Flag) string {
	t.Helper()
	g, ok := f.Value.(flag.Getter)
	if !ok {
		t.Fatalf("--%s: value has no Get", f.Name)
	}
	var v string
	switch d := g.Get().(type) {
	case bool:
		v = fmt.Sprint(!d)
	case time.Duration:
		v = (d + 7*time.Second).String()
	case int:
		v = fmt.Sprint(d + 7)
	case int64:
		v = fmt.Sprint(d + 7)
	case uint:
		v = fmt.Sprint(d + 7)
	case uint64:
		v = fmt.Sprint(d + 7)
	case float64:
		v = fmt.Sprint(d + 7)
	case string:
		v = "x-" + f.Name
	default:
		t.Fatalf("--%s: no test value for type %T", f.Name, d)
	}
	probe := flag.NewFlagSet("", flag.ContinueOnError)
	probe.Var(f.Value, f.Name, "")
	if err := probe.Set(f.Name, v); err != nil {
		t.Fatalf("--%s: test value %q: %v", f.Name, v, err)
	}
	return f.Value.String()
}

func TestConfigReferenceJSON(t *testing.T) {
	var out bytes.Buffer
	if err := runConfigReference(&out, []string{"--format", "json"}); err != nil {
		t.Fatal(err)
	}
	var settings []configSetting
	if err := json.Unmarshal(out.Bytes(), &settings); err != nil {
		t.Fatal(err)
	}
	byFlag := map[string]configSetting{}
	for _, s := range settings {
		byFlag[s.Flag] = s
	}
	// Spot checks a reader would notice: the edge reads NATS (the catalog, for its
	// cache) but creates no streams, the worker has no listener.
	if s := byFlag["nats-url"]; strings.Join(s.Roles, ",") != "serve,ingress,worker,edge" || s.Env != "SLUICE_NATS_URL" {
		t.Errorf("nats-url: %+v", s)
	}
	if s := byFlag["nats-replicas"]; strings.Join(s.Roles, ",") != "serve,ingress,worker" {
		t.Errorf("nats-replicas: %+v", s)
	}
	if s := byFlag["global-limit"]; s.Defaults["worker"] != "10" {
		t.Errorf("global-limit default: %+v", s.Defaults)
	}
	if err := runConfigReference(&out, []string{"--format", "yaml"}); err == nil {
		t.Error("unknown format accepted")
	}
}
