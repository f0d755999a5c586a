package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/sluice-dl/sluice/shared/connlimit"
)

// serve is every role in one process: it runs each component some role runs, and
// every server command runs at least one.
func TestServeRunsEveryRolesComponents(t *testing.T) {
	name := func(f newComponent) string { return runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name() }
	var serve []string
	for _, f := range roleComponents[roleServe] {
		serve = append(serve, name(f))
	}
	for _, r := range serverRoles {
		if len(roleComponents[r]) == 0 {
			t.Errorf("sluice %s runs no component", r)
		}
		for _, f := range roleComponents[r] {
			if !slices.Contains(serve, name(f)) {
				t.Errorf("sluice %s runs %s, which serve does not", r, name(f))
			}
		}
	}
}

// portComponent is a component that only holds a port, as every real one does once built.
type portComponent struct {
	p *process
	l *listener
}

func (c *portComponent) Start(context.Context) { c.l.start(c.p) }

func (c *portComponent) Shutdown(ctx context.Context) error { c.l.stop(ctx, c.p.log); return nil }

// A component whose build fails stops the process before anything runs, and the ports
// of the components built before it are closed, not left listening until exit.
func TestFailedBuildClosesThePortsAlreadyOpened(t *testing.T) {
	p := &process{log: slog.New(slog.DiscardHandler), conns: connlimit.New(0), fatal: make(chan error, 1)}
	var addr string
	opens := func(p *process) (component, error) {
		l, err := p.listen("first", "127.0.0.1:0", http.NotFoundHandler(), listenConfig{})
		if err != nil {
			return nil, err
		}
		addr = l.ln.Addr().String()
		return &portComponent{p: p, l: l}, nil
	}
	refused := errors.New("second: listen: address already in use") // an error, no port bound
	fails := func(*process) (component, error) { return nil, refused }
	if _, err := buildComponents(p, []newComponent{opens, fails}); !errors.Is(err, refused) {
		t.Fatalf("err %v, want the second build's", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the first component's port %s is still open: %v", addr, err)
	}
	_ = ln.Close()
}
