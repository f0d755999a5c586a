package redisbreaker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/redisbreaker"
)

// Redis goes away: after a few failures every command fails at once with ErrOpen;
// Redis's own answers (redis.Nil) never count; once Redis is back (restarted on its
// port) the breaker closes by itself.
func TestBreakerOpensFailsFastAndRecovers(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	b := redisbreaker.New("redis", redisbreaker.Options{OpenTimeout: 200 * time.Millisecond})
	rdb.AddHook(b)
	ctx := context.Background()
	for range 20 {
		if err := rdb.Get(ctx, "missing").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("get: %v", err)
		}
	}
	if b.State() != "closed" {
		t.Fatalf("redis.Nil answers opened the breaker: %s", b.State())
	}
	srv.Stop()
	for range 10 {
		_ = rdb.Ping(ctx).Err()
	}
	if b.State() != "open" {
		t.Fatalf("after 10 failures the breaker is %s, want open", b.State())
	}
	start := time.Now()
	if err := rdb.Ping(ctx).Err(); !errors.Is(err, redisbreaker.ErrOpen) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("open breaker: %v after %s, want ErrOpen at once", err, time.Since(start))
	}
	srv.Restart(t)
	deadline := time.Now().Add(15 * time.Second)
	for rdb.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still failing 15s after Redis came back: %v (breaker %s)", rdb.Ping(ctx).Err(), b.State())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.State() != "closed" {
		t.Fatalf("breaker %s after recovery", b.State())
	}
}
