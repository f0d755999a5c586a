package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// How a role stops on SIGTERM (see runServer):
//
//  1. It goes unready at once: every component with a probe (drainer) answers 503 on
//     /readyz.
//  2. It keeps serving for --drain-delay, so load balancers and Kubernetes endpoints
//     notice before the listener closes and no client meets a refused connection.
//  3. It shuts its components down in the reverse of their start order, under one
//     deadline of --shutdown-wait: listeners close, requests and streams already
//     running continue; workers stop fetching, let what they process finish and hand
//     the messages they hold back to the stream.
//  4. Whatever still runs at the deadline is cut; handlers get cutGrace to finish
//     their cleanup (a stream's last ledger call gives its slot back).
//  5. Dependencies close last: NATS, Redis, the embedded servers.
//
// So a role exits within --drain-delay + --shutdown-wait + cutGrace of the signal (a
// cutGrace per listener still running at the deadline, at most).

// cutGrace bounds how long cut requests may take to run their cleanup.
const cutGrace = 3 * time.Second

// requestTracker counts requests in their handlers. http.Server.Shutdown waits for
// connections, not handlers, and Close returns before handlers notice: waiting here
// lets a cut stream end its lease before the Redis client closes.
type requestTracker struct{ wg sync.WaitGroup }

func (t *requestTracker) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.wg.Add(1)
		defer t.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// wait returns true when every handler returned within d.
func (t *requestTracker) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// stopListener closes l's listener and lets running requests finish until deadline;
// then it cuts the rest and waits up to cutGrace for their handlers.
func stopListener(deadline context.Context, l *listener, log *slog.Logger) {
	err := l.srv.Shutdown(deadline)
	if err == nil {
		l.reqs.wait(cutGrace)
		return
	}
	log.Warn("requests still running at the shutdown deadline were cut", "server", l.name, "err", err)
	_ = l.srv.Close()
	if !l.reqs.wait(cutGrace) {
		log.Warn("some cut requests did not finish their cleanup", "server", l.name)
	}
}

// drainPause keeps serving while unready for delay, so load balancers see the 503 on
// /readyz before the listeners close. It returns early on a fatal serve error.
func drainPause(delay time.Duration, log *slog.Logger, fatal <-chan error) error {
	if delay <= 0 {
		return nil
	}
	log.Info("unready; still serving while load balancers notice", "drain_delay", delay)
	select {
	case <-time.After(delay):
		return nil
	case err := <-fatal:
		return err
	}
}

// drainNATS drains the connection and waits until it has closed: Drain only starts it,
// and a process that exits at once loses what is still buffered (a worker's hand-back
// NAKs among it).
func drainNATS(nc *nats.Conn) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		nc.Close()
	}
}
