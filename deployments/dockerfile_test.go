package deployments

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

type dockerStage struct {
	from  string
	lines []string // instructions after FROM, continuations joined
}

func parseDockerfile(t *testing.T, path string) []dockerStage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	var cur string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if c, ok := strings.CutSuffix(line, `\`); ok {
			cur += c + " "
			continue
		}
		line, cur = cur+line, ""
		op, rest, _ := strings.Cut(line, " ")
		if strings.EqualFold(op, "FROM") {
			stages = append(stages, dockerStage{from: rest})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %q before FROM", path, line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, strings.ToUpper(op)+" "+rest)
	}
	return stages
}

func (s dockerStage) find(op string) []string {
	var out []string
	for _, l := range s.lines {
		if rest, ok := strings.CutPrefix(l, op+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// The image: a Go build stage at go.mod's Go version making a static binary of
// ./cmd/sluice, and a final stage with no shell, running as a non-root user, exposing
// the ports the roles listen on.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("the Dockerfile has %d stages, want a build stage and a final one", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	goVersion := majorMinor(goModVersion(t, "go"))
	if !strings.HasPrefix(build.from, "golang:"+goVersion) {
		t.Errorf("build stage FROM %s; go.mod says go %s", build.from, goVersion)
	}
	var built bool
	for _, run := range build.find("RUN") {
		if strings.Contains(run, "go build") {
			built = true
			if !strings.Contains(run, "CGO_ENABLED=0") {
				t.Errorf("the build is not static (no CGO_ENABLED=0): %s", run)
			}
			if !strings.Contains(run, "./cmd/sluice") {
				t.Errorf("the build does not build ./cmd/sluice: %s", run)
			}
		}
	}
	if !built {
		t.Error("no go build in the build stage")
	}
	if f := final.from; !strings.HasPrefix(f, "gcr.io/distroless/static") && f != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static or scratch (no shell, no libc needed)", f)
	}
	users := final.find("USER")
	if len(users) == 0 {
		t.Fatal("the final stage sets no USER: it would run as root")
	}
	if u := strings.Split(users[len(users)-1], ":")[0]; u == "root" || u == "0" {
		t.Errorf("the final stage runs as %s", u)
	}
	var binary string
	for _, c := range final.find("COPY") {
		if f := strings.Fields(c); len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
			binary = f[2]
		}
	}
	entry := final.find("ENTRYPOINT")
	var argv []string
	if len(entry) == 0 || json.Unmarshal([]byte(entry[0]), &argv) != nil || len(argv) == 0 || argv[0] != binary {
		t.Errorf("ENTRYPOINT %v does not run the copied binary %s (exec form)", entry, binary)
	}
	exposed := map[int]bool{}
	for _, e := range final.find("EXPOSE") {
		for _, p := range strings.Fields(e) {
			n, _ := strconv.Atoi(strings.Split(p, "/")[0])
			exposed[n] = true
		}
	}
	for role := range listenSetting {
		if p := listenPort(t, role, nil); !exposed[p] {
			t.Errorf("the image does not EXPOSE %d, where `sluice %s` listens by default", p, role)
		}
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal("no .dockerignore: bin/ and var/ would be sent to the build")
	}
	for _, must := range []string{"bin/", "var/", ".git/"} {
		if !strings.Contains(string(ignore), must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
}
