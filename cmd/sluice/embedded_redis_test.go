package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func startEmbeddedRedis(t *testing.T) (*embeddedRedis, *redis.Client) {
	t.Helper()
	e := newEmbeddedRedis(expiryTick)
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.Addr()})
	t.Cleanup(func() {
		_ = rdb.Close()
		e.Close()
	})
	return e, rdb
}

// waitGone polls until key no longer exists; the deadline is generous because the
// machine may be busy, and expiry time is asserted elsewhere only as "not early".
func waitGone(t *testing.T, rdb *redis.Client, key string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := rdb.Exists(t.Context(), key).Result()
		if err != nil {
			t.Fatalf("EXISTS %s: %v", key, err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			ttl, _ := rdb.PTTL(t.Context(), key).Result()
			t.Fatalf("%s still exists after 15 s (PTTL %s): the embedded server does not expire keys", key, ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEmbeddedRedisExpiresKeysInRealTime(t *testing.T) {
	_, rdb := startEmbeddedRedis(t)
	ctx := t.Context()
	set := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rdb.Set(ctx, "lease", "w1", 300*time.Millisecond).Err()) // SET lease w1 PX 300
	must(rdb.Set(ctx, "mid", "v", 5*time.Second).Err())
	must(rdb.Set(ctx, "long", "v", time.Minute).Err())
	must(rdb.Set(ctx, "kept", "v", 0).Err())
	must(rdb.HSet(ctx, "ticket", "status", "canceled").Err())
	must(rdb.PExpire(ctx, "ticket", 300*time.Millisecond).Err())
	must(rdb.ZAdd(ctx, "conns", redis.Z{Score: 1, Member: "c1"}).Err())
	must(rdb.Expire(ctx, "conns", time.Second).Err())
	// An absolute expiry is read against the wall clock, the relative ones count down.
	must(rdb.Set(ctx, "at", "v", 0).Err())
	must(rdb.PExpireAt(ctx, "at", time.Now().Add(500*time.Millisecond)).Err())

	for _, k := range []string{"lease", "ticket", "conns", "at"} {
		waitGone(t, rdb, k)
	}
	if time.Since(set) < 4*time.Second { // otherwise the machine was too slow to tell
		if n := rdb.Exists(ctx, "mid").Val(); n != 1 {
			t.Fatalf("a key with 5 s to live is gone after %s", time.Since(set))
		}
	}
	if n := rdb.Exists(ctx, "long", "kept").Val(); n != 2 {
		t.Fatalf("%d of the long-lived and persistent keys left, want 2", n)
	}
	// "conns" lapsed after a full second of TTL, so "long" has counted down as much.
	if ttl := rdb.PTTL(ctx, "long").Val(); ttl <= 0 || ttl > 59*time.Second {
		t.Fatalf("PTTL of a 60 s key after more than 1 s: %s", ttl)
	}
	if ttl := rdb.PTTL(ctx, "kept").Val(); ttl != -1 {
		t.Fatalf("PTTL of a key without expiry: %s, want -1", ttl)
	}
	waitGone(t, rdb, "mid")
}

func TestEmbeddedRedisTimeIsTheWallClock(t *testing.T) {
	_, rdb := startEmbeddedRedis(t)
	ctx := t.Context()
	// Let the expiry clock run a few ticks first: it must move TTLs only.
	if err := rdb.Set(ctx, "tick", "v", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, rdb, "tick")

	check := func(how string, got time.Time) {
		t.Helper()
		if d := time.Since(got).Abs(); d > 2*time.Second {
			t.Fatalf("%s says %s, %s away from the wall clock", how, got, d)
		}
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	check("TIME", now)
	// The admission scripts read TIME from Lua.
	v, err := rdb.Eval(ctx, "return redis.call('TIME')", nil).Int64Slice()
	if err != nil || len(v) != 2 {
		t.Fatalf("Lua TIME: %v %v", v, err)
	}
	check("Lua TIME", time.Unix(v[0], v[1]*1000))
}

func TestEmbeddedRedisCloseStopsItsClock(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEmbeddedRedis(expiryTick)
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.Addr()})
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	_ = rdb.Close()
	e.Close()
}
