package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cliRun is one run of the sluice binary as a user would start it.
type cliRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	code   int
}

// cliEnv is what a user's shell would hold: no server settings, only the client's.
func (s *stack) cliEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.t.TempDir(), "SLUICE_SERVER=" + s.ingressURL}, extra...)
}

// startCLI runs sluice with args in dir and returns at once.
func (s *stack) startCLI(dir string, env []string, args ...string) *cliRun {
	s.t.Helper()
	r := &cliRun{t: s.t, done: make(chan struct{})}
	r.cmd = exec.Command(sluiceBin, args...)
	r.cmd.Dir = dir
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		s.t.Fatalf("start sluice %v: %v", args, err)
	}
	go func() {
		err := r.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
			if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
				r.code = 128 + int(st.Signal())
			}
		default:
			r.code = -1
		}
		close(r.done)
	}()
	s.t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// runCLI runs sluice to the end and returns it.
func (s *stack) runCLI(dir string, env []string, within time.Duration, args ...string) *cliRun {
	s.t.Helper()
	r := s.startCLI(dir, env, args...)
	r.wait(within)
	return r
}

// wait waits for the process to exit and returns its exit code.
func (r *cliRun) wait(within time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(within):
		r.cmd.Process.Kill()
		<-r.done
		r.t.Fatalf("sluice %v still running after %s\nstdout:\n%s\nstderr:\n%s", r.cmd.Args[1:], within, r.stdout.String(), r.stderr.String())
		return -1
	}
}

func (r *cliRun) signal(sig os.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal sluice: %v", err)
	}
}

// expectExit fails the test unless the run ended with the code.
func (r *cliRun) expectExit(code int) {
	r.t.Helper()
	if r.code != code {
		r.t.Fatalf("sluice %v exited %d, want %d\nstdout:\n%s\nstderr:\n%s", r.cmd.Args[1:], r.code, code, r.stdout.String(), r.stderr.String())
	}
}

// cliEvent is one --json line of sluice get.
type cliEvent map[string]any

func (e cliEvent) str(k string) string { s, _ := e[k].(string); return s }
func (e cliEvent) num(k string) int64  { f, _ := e[k].(float64); return int64(f) }

// events parses the JSON lines printed so far.
func (r *cliRun) events() []cliEvent {
	r.t.Helper()
	var out []cliEvent
	sc := bufio.NewScanner(strings.NewReader(r.stdout.String()))
	for sc.Scan() {
		line := sc.Text()
		var e cliEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			// a line still being written is completed later
			continue
		}
		out = append(out, e)
	}
	return out
}

// waitEvent waits until an event satisfies ok and returns it.
func (r *cliRun) waitEvent(within time.Duration, what string, ok func(cliEvent) bool) cliEvent {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, e := range r.events() {
			if ok(e) {
				return e
			}
		}
		select {
		case <-r.done:
			for _, e := range r.events() {
				if ok(e) {
					return e
				}
			}
			r.t.Fatalf("sluice exited (%d) before %s\nstdout:\n%s\nstderr:\n%s", r.code, what, r.stdout.String(), r.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no %s within %s\nstdout:\n%s\nstderr:\n%s", what, within, r.stdout.String(), r.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *cliRun) lastEvent(name string) cliEvent {
	r.t.Helper()
	evs := r.events()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].str("event") == name {
			return evs[i]
		}
	}
	r.t.Fatalf("no %q event\nstdout:\n%s\nstderr:\n%s", name, r.stdout.String(), r.stderr.String())
	return nil
}

// partState reads the state file sluice get keeps next to FILE.part.
type partState struct {
	Size int64  `json:"size"`
	ETag string `json:"etag"`
	Done []struct {
		Start int64 `json:"start"`
		End   int64 `json:"end"`
	} `json:"done"`
}

func readPartState(t *testing.T, dest string) (partState, bool) {
	t.Helper()
	raw, err := os.ReadFile(dest + ".part.json")
	if err != nil {
		return partState{}, false
	}
	var st partState
	if json.Unmarshal(raw, &st) != nil {
		return partState{}, false
	}
	return st, true
}

func (p partState) doneBytes() int64 {
	var n int64
	for _, d := range p.Done {
		n += d.End - d.Start
	}
	return n
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func localObjectPath(s *stack, key string) string {
	return filepath.Join(s.dataDir, "objects", filepath.FromSlash(key))
}
