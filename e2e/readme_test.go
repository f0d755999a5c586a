package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// readmeBlock is one ```sh block of README.md: its commands, one a line, and the
// marker comment right above it, if any.
type readmeBlock struct {
	line     int // of the opening fence
	marker   string
	commands []string
}

// readmeMarker, on the line above a block, says another test runs it:
// <!-- readme-test: run by TestName in e2e/file_test.go -->
var readmeMarker = regexp.MustCompile(`^<!-- readme-test: run by (Test\w+) in (e2e/\w+\.go) -->$`)

func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	prev := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh"):
			cur = &readmeBlock{line: n, marker: strings.TrimSpace(prev)}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			if cmd := strings.TrimSpace(line); cmd != "" && !strings.HasPrefix(cmd, "#") {
				cur.commands = append(cur.commands, cmd)
			}
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	return blocks
}

// readmeShell runs README commands as a user would in one terminal: the exports of
// earlier commands hold for later ones, each block in a fresh directory, the
// addresses and keys of the README replaced by the test's.
type readmeShell struct {
	t       *testing.T
	env     []string
	exports []string
	subs    *strings.Replacer
	lastID  string
	dir     string
}

var readmeTicketID = regexp.MustCompile(`"id":\s*"(t[a-z2-7]{26})"`)

func (sh *readmeShell) expand(cmd string) string {
	return strings.ReplaceAll(sh.subs.Replace(cmd), "<id>", sh.lastID)
}

// run runs one command to its end and fails the test unless it exits 0.
func (sh *readmeShell) run(block readmeBlock, cmd string) string {
	sh.t.Helper()
	script := strings.Join(append(append([]string{"set -e"}, sh.exports...), sh.expand(cmd)), "\n")
	ctx, cancel := context.WithTimeout(sh.t.Context(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-c", script)
	c.Dir, c.Env = sh.dir, sh.env
	out, err := c.CombinedOutput()
	sh.t.Logf("README.md:%d $ %s\n%s", block.line, cmd, truncate(out, 800))
	if err != nil {
		sh.t.Fatalf("README.md:%d: `%s` failed: %v\n%s", block.line, cmd, err, out)
	}
	if m := readmeTicketID.FindSubmatch(out); m != nil {
		sh.lastID = string(m[1])
	}
	if strings.HasPrefix(cmd, "export ") {
		sh.exports = append(sh.exports, sh.expand(strings.SplitN(cmd, "#", 2)[0]))
	}
	return string(out)
}

// background starts a command that runs until stopped (a server), waits until ready
// answers 200 and stops it (its whole process group: `make run` starts sluice).
func (sh *readmeShell) background(block readmeBlock, cmd, dir, ready string, env ...string) {
	sh.t.Helper()
	log := filepath.Join(sh.t.TempDir(), "out.log")
	f, err := os.Create(log)
	if err != nil {
		sh.t.Fatal(err)
	}
	defer f.Close()
	c := exec.Command("bash", "-c", strings.Join(append(append([]string{}, sh.exports...), "exec "+sh.expand(cmd)), "\n"))
	c.Dir, c.Env, c.Stdout, c.Stderr = dir, append(append([]string{}, sh.env...), env...), f, f
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		sh.t.Fatal(err)
	}
	stop := func() { _ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM); _ = c.Wait() }
	defer stop()
	sh.t.Logf("README.md:%d $ %s (until %s answers 200)", block.line, cmd, ready)
	testenv.WaitHTTP(sh.t, ready, 5*time.Minute, log)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(b[:n:n], "…"...)
	}
	return b
}

// Every shell command in README.md runs as written (with this test's addresses and
// keys) against a real `sluice serve`, and does what the README says. A block another
// test runs carries a marker naming that test, which must exist.
func TestReadmeCommandsWork(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks) < 6 {
		t.Fatalf("README.md has %d shell blocks; the extractor is broken", len(blocks))
	}
	a := newAllInOne(t)
	a.start()
	api, edge := strings.TrimPrefix(a.api, "http://"), strings.TrimPrefix(a.dl, "http://")

	// What the README's later sections have made by then: a publisher key and a
	// release on the channel stable (releases/1.2/app.tar.gz).
	var pub struct{ Key string }
	a.mustJSON(http.MethodPost, "/api/v1/admin/keys", serveOperatorKey, map[string]string{"scope": "publisher"}, &pub, http.StatusCreated)
	release := randomBytes(300<<10, 81)
	putLocal(t, filepath.Join(a.dataDir, "objects", "releases/1.2/app.tar.gz"), release)
	a.mustJSON(http.MethodPost, "/api/v1/releases", pub.Key, map[string]any{
		"object": "releases/1.2/app.tar.gz", "sha256": sha(release), "size": len(release), "channel": "stable"}, nil, http.StatusAccepted)
	eventually(t, 30*time.Second, "the fixture release verified", func() bool {
		code, raw := a.call(http.MethodGet, "/api/v1/objects/stable/latest", "", nil)
		return code == http.StatusOK && strings.Contains(string(raw), `"verified"`)
	})

	sh := &readmeShell{t: t,
		env: append(goEnv(t), "PATH="+filepath.Dir(sluiceBin)+":"+os.Getenv("PATH"), "HOME="+t.TempDir(), "TERM=dumb"),
		subs: strings.NewReplacer("http://localhost:8080", a.api, "localhost:8080", api,
			"http://localhost:8081", a.dl, "localhost:8081", edge, "<publisher key>", pub.Key),
	}
	root, _ := filepath.Abs("..")
	for _, b := range blocks {
		if m := readmeMarker.FindStringSubmatch(b.marker); m != nil {
			src, err := os.ReadFile(filepath.Join(root, m[2]))
			if err != nil || !bytes.Contains(src, []byte("func "+m[1]+"(t *testing.T)")) {
				t.Errorf("README.md:%d says %s in %s runs it; there is no such test", b.line, m[1], m[2])
			}
			continue
		}
		sh.dir = t.TempDir()
		if strings.Contains(strings.Join(b.commands, "\n"), " dist/") {
			// Run where the server runs (its ./var), with the files to publish.
			if err := os.Symlink(a.dataDir, filepath.Join(sh.dir, "var")); err != nil {
				t.Fatal(err)
			}
			putLocal(t, filepath.Join(sh.dir, "dist/app-1.2.tar.gz"), randomBytes(200<<10, 82))
			putLocal(t, filepath.Join(sh.dir, "dist/app-1.2.zip"), randomBytes(100<<10, 83))
		}
		if strings.Contains(strings.Join(b.commands, "\n"), "sluice admin") {
			// "Operators use sluice admin with an operator key in SLUICE_API_KEY".
			sh.exports = append(sh.exports, "export SLUICE_API_KEY="+serveOperatorKey)
		}
		for _, cmd := range b.commands {
			name := strings.Fields(cmd)
			switch {
			case cmd == "" || len(name) == 0:
			case strings.HasPrefix(cmd, "make run"):
				port, edgePort := testenv.FreePort(t), testenv.FreePort(t)
				sh.background(b, "make run", root, "http://127.0.0.1:"+strconv.Itoa(port)+"/readyz",
					"SLUICE_DATA_DIR="+t.TempDir(), "SLUICE_INGRESS_ADDR=127.0.0.1:"+strconv.Itoa(port),
					"SLUICE_EDGE_ADDR=127.0.0.1:"+strconv.Itoa(edgePort))
			case strings.HasPrefix(cmd, "make test"):
				// This test is part of it: check the target and what it runs resolve.
				sh.dir = root
				sh.run(b, "make -n test")
			case name[0] == "sluice" && len(name) > 1 && (name[1] == "ingress" || name[1] == "worker" || name[1] == "edge"):
				sh.deployRole(b, cmd, name[1])
			case name[0] == "sluice" && len(name) > 1 && name[1] == "init":
				// Against a real NATS, as the deployment's first step: it must exit 0.
				s := newStack(sh.t, stackOptions{})
				vars := ""
				for _, e := range s.env {
					if strings.HasPrefix(e, "SLUICE_NATS_") {
						vars += "'" + e + "' "
					}
				}
				sh.run(b, "env "+vars+cmd)
			case strings.HasSuffix(strings.TrimSpace(strings.SplitN(cmd, "#", 2)[0]), "| source"):
				// fish's syntax: without fish, check what it would source.
				line := strings.TrimSpace(strings.SplitN(cmd, "#", 2)[0])
				if _, err := exec.LookPath("fish"); err == nil {
					sh.run(b, "fish -c "+strconv.Quote(line))
				} else if out := sh.run(b, strings.TrimSuffix(line, "| source")); !strings.Contains(out, "complete -c sluice") {
					t.Errorf("README.md:%d: `%s` prints no fish completions: %s", b.line, cmd, out)
				}
			default:
				out := sh.run(b, cmd)
				sh.check(b, cmd, out)
			}
		}
	}
}

// check holds what the README says a command does to what it did.
func (sh *readmeShell) check(b readmeBlock, cmd, out string) {
	t := sh.t
	t.Helper()
	file := func(name string) []byte {
		got, err := os.ReadFile(filepath.Join(sh.dir, name))
		if err != nil {
			t.Errorf("README.md:%d: `%s` saved no %s: %v", b.line, cmd, name, err)
		}
		return got
	}
	switch {
	case strings.Contains(cmd, "-o hello.txt"), cmd == "sluice get demo/hello.txt" || strings.HasPrefix(cmd, "sluice get demo/hello.txt "):
		if got := file("hello.txt"); !bytes.HasPrefix(got, []byte("Hello from sluice.")) {
			t.Errorf("README.md:%d: `%s` saved %.100q, want the demo file", b.line, cmd, got)
		}
	case strings.Contains(cmd, "-o app.tgz"):
		if got := file("app.tgz"); len(got) != 300<<10 {
			t.Errorf("README.md:%d: `%s` saved %d bytes, want the release", b.line, cmd, len(got))
		}
	case strings.HasSuffix(cmd, "--json"):
		lines := 0
		for _, l := range strings.Split(out, "\n") {
			if json.Valid([]byte(strings.TrimSpace(l))) {
				lines++
			}
		}
		if lines == 0 {
			t.Errorf("README.md:%d: `%s` printed no JSON: %s", b.line, cmd, out)
		}
	}
}

// deployRole starts one of the Deploying section's roles against real NATS and Redis
// (like the other tests' stacks) and waits until it is ready.
func (sh *readmeShell) deployRole(b readmeBlock, cmd, role string) {
	sh.t.Helper()
	s := newStack(sh.t, stackOptions{})
	port := testenv.FreePort(sh.t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := append([]string{}, s.env...)
	switch role {
	case "ingress":
		env = append(env, "SLUICE_INGRESS_ADDR="+addr)
	case "edge":
		env = append(env, "SLUICE_EDGE_ADDR="+addr)
	case "worker":
		env = append(env, "SLUICE_METRICS_ADDR="+addr)
	}
	sh.background(b, cmd, sh.dir, "http://"+addr+"/readyz", env...)
}

// goEnv is the Go toolchain's caches and proxy, so that `make run` under a fresh HOME
// builds from the same module and build caches instead of downloading everything.
func goEnv(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPATH", "GOCACHE", "GOMODCACHE", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	v := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	names := []string{"GOPATH", "GOCACHE", "GOMODCACHE", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"}
	env := make([]string, 0, len(names))
	for i, n := range names {
		if i < len(v) {
			env = append(env, n+"="+v[i])
		}
	}
	return env
}

func putLocal(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
