package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// expiryTick is how often the embedded server lets time pass for its TTLs: a key whose
// TTL ran out is gone at most this long later (a 300 ms PX lease behaves as one).
const expiryTick = 100 * time.Millisecond

// embeddedRedis is the in-process Redis-protocol server of `serve` when no Redis is
// configured. miniredis never lets time pass on its own, so without help a key's TTL
// never shrinks: ended tickets, idempotency keys and leases would stay forever. A
// goroutine owned here tells it how much time went by (FastForward, by the monotonic
// clock) every tick. miniredis's ClockTTL option would do the same on every command
// instead, and each of those advances visits every key under the server's lock: with
// 20,000 retained tickets that is about 5 ms per command. Only TTLs move; TIME, which the
// Lua scripts read, and EXPIREAT stay on the wall clock.
type embeddedRedis struct {
	srv  *miniredis.Miniredis
	tick time.Duration
	stop chan struct{}
	wg   sync.WaitGroup
}

func newEmbeddedRedis(tick time.Duration) *embeddedRedis {
	return &embeddedRedis{srv: miniredis.NewMiniRedis(), tick: tick, stop: make(chan struct{})}
}

// Start listens on addr (host:port; port 0 picks one) and starts the expiry clock.
func (e *embeddedRedis) Start(addr string) error {
	if err := e.srv.StartAddr(addr); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	e.wg.Go(e.runClock)
	return nil
}

// Addr is the address the server listens on.
func (e *embeddedRedis) Addr() string { return e.srv.Addr() }

// Close stops the expiry clock, then the server (dropping every key).
func (e *embeddedRedis) Close() {
	close(e.stop)
	e.wg.Wait()
	e.srv.Close()
}

func (e *embeddedRedis) runClock() {
	last := time.Now()
	timer := time.NewTimer(e.tick)
	defer timer.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		e.srv.FastForward(now.Sub(last))
		last = now
		// Each advance visits every key holding the server's lock (about 5 ms for
		// 20,000 keys, 40 ms for 100,000 on a small machine): past a few tens of
		// thousands of keys the tick stretches so that it holds the lock at most a
		// tenth of the time, and commands keep their speed.
		timer.Reset(max(e.tick, 9*time.Since(now)))
	}
}
