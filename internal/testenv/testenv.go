// Package testenv starts the real services sluice's tests run against — redis-server,
// NATS JetStream and MinIO — on random loopback ports, one set per test, and stops
// them when the test ends. Nothing here is a fake: a missing binary fails the test with
// the command that installs it.
package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RepoRoot returns the directory holding go.mod.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Binary finds a program the tests need: $envVar, then <repo>/bin/name, then $PATH.
// It fails the test with the install command when the program is missing.
func Binary(tb testing.TB, name, envVar, install string) string {
	tb.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	if p := filepath.Join(RepoRoot(tb), "bin", name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	tb.Fatalf("%s is needed by this test and was not found in $%s, bin/ or $PATH; install it with: %s", name, envVar, install)
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// waitTCP waits until addr accepts connections or the deadline passes.
func waitTCP(tb testing.TB, addr string, within time.Duration, logFile string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _ := os.ReadFile(logFile)
	tb.Fatalf("%s did not start accepting connections within %s; its log:\n%s", addr, within, out)
}

// Process is a server started for a test.
type Process struct {
	Cmd  *exec.Cmd
	Addr string
	Log  string
}

// startProcess runs bin with args, logging to a file in dir, and stops it at cleanup.
func startProcess(tb testing.TB, dir, bin string, env []string, args ...string) *Process {
	tb.Helper()
	logPath := filepath.Join(dir, filepath.Base(bin)+"-"+strconv.Itoa(time.Now().Nanosecond())+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start %s: %v", bin, err)
	}
	p := &Process{Cmd: cmd, Log: logPath}
	tb.Cleanup(func() {
		p.Stop()
		logf.Close()
	})
	return p
}

// Stop kills the process (if still running) and waits for it.
func (p *Process) Stop() {
	if p.Cmd.ProcessState != nil {
		return
	}
	_ = p.Cmd.Process.Kill()
	_ = p.Cmd.Wait()
}

func describe(p *Process) string { return fmt.Sprintf("%s (pid %d)", p.Addr, p.Cmd.Process.Pid) }

// Start runs bin with args and env as a test's child process (logging into dir), killed
// at cleanup.
func Start(tb testing.TB, dir, bin string, env []string, args ...string) *Process {
	tb.Helper()
	return startProcess(tb, dir, bin, env, args...)
}

// WaitHTTP waits until url answers 200, failing the test (with the log) otherwise.
func WaitHTTP(tb testing.TB, url string, within time.Duration, logFile string) {
	tb.Helper()
	if answers200(url, within) {
		return
	}
	out, _ := os.ReadFile(logFile)
	tb.Fatalf("%s did not answer 200 within %s; log:\n%s", url, within, out)
}

// answers200 polls url until it answers 200 (true) or within has passed (false).
func answers200(url string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Signal sends sig to the process (SIGKILL, SIGSTOP, SIGCONT, SIGTERM in tests).
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// GoBuild is the command that builds ../cmd/sluice into bin, with the compile flags
// of the Makefile's `build` (CGO_ENABLED=0, -trimpath) so that every build of the
// suite, `make run` in the README test included, reuses one set of compiled packages:
// with other flags each is a whole rebuild of every dependency (minutes on a busy
// two-core machine). ldflags, set at link time only, may differ.
func GoBuild(bin, ldflags string) *exec.Cmd {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "../cmd/sluice")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}

// BuildSluice builds the sluice binary for a test package's TestMain (the package
// lives one folder below the repository root, as e2e/ and bench/ do) and returns its
// path and a function that removes it. On failure it prints the compiler's output
// and exits, as there is nothing a test could run without it.
func BuildSluice(name string) (bin string, remove func()) {
	dir, err := os.MkdirTemp("", "sluice-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "sluice")
	if out, err := GoBuild(bin, "").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build sluice: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	return bin, func() { os.RemoveAll(dir) }
}
