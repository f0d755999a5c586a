package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// healthExit runs `sluice health args...` and returns its exit code and error.
func healthExit(t *testing.T, args ...string) (int, error) {
	t.Helper()
	err := Run(t.Context(), append([]string{"health"}, args...))
	return exitCode(err), err
}

// A container healthcheck passes on 2xx and fails, saying why, on anything else or on
// no answer at all.
func TestHealthExitsOnTheProbeAnswer(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	if code, err := healthExit(t, "--url", srv.URL+"/readyz"); code != 0 {
		t.Fatalf("healthy role: exit %d (%v), want 0", code, err)
	}
	ready.Store(false)
	code, err := healthExit(t, "--url", srv.URL+"/readyz")
	if code != 1 || err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("draining role: exit %d (%v), want 1 naming the status and body", code, err)
	}
	srv.Close()
	if code, err := healthExit(t, "--url", srv.URL+"/readyz"); code != 1 {
		t.Fatalf("nothing listening: exit %d (%v), want 1", code, err)
	}
}

// With a role, the probe goes to the port that role listens on, read from the same
// variable the role reads, on loopback when it listens on every interface.
func TestHealthFindsTheRolesListener(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	t.Setenv("SLUICE_EDGE_ADDR", ":"+port)
	if code, err := healthExit(t, "edge"); code != 0 {
		t.Fatalf("sluice health edge with SLUICE_EDGE_ADDR=:%s: exit %d (%v)", port, code, err)
	}
	if code, err := healthExit(t, "--path", "/nope", "edge"); code != 1 {
		t.Fatalf("--path /nope: exit %d (%v), want 1", code, err)
	}

	for _, c := range []struct{ role, env, want string }{
		{"ingress", "", "http://127.0.0.1:8080/readyz"},
		{"worker", "", "http://127.0.0.1:9090/readyz"},
		{"worker", "0.0.0.0:9191", "http://127.0.0.1:9191/readyz"},
		{"edge", "", "http://127.0.0.1:8081/readyz"},
		{"serve", "", "http://127.0.0.1:8080/readyz"},
		{"ingress", "10.1.2.3:8000", "http://10.1.2.3:8000/readyz"},
	} {
		got, err := probeURL(c.role, "/readyz", func(name string) string {
			if name == envName(healthListenFlag[roleFromName(t, c.role)]) {
				return c.env
			}
			return ""
		})
		if err != nil || got != c.want {
			t.Errorf("probeURL(%s, env %q) = %q, %v; want %q", c.role, c.env, got, err, c.want)
		}
	}
	if code, err := healthExit(t, "gateway"); code != exitUsage || err == nil {
		t.Errorf("unknown role: exit %d (%v), want %d", code, err, exitUsage)
	}
	if code, _ := healthExit(t); code != exitUsage {
		t.Errorf("no role and no --url: exit %d, want %d", code, exitUsage)
	}
}
