package telemetry

import (
	"testing"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// TestRedisHookNamesScripts: a known Lua script is timed under its name, whether it
// ran as EVALSHA or (the first time, before Redis has it) as EVAL; the ticket rate
// limiter's as rate_limit; another script by the start of its SHA-1; other commands
// keep their own name.
func TestRedisHookNamesScripts(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	m := NewMetrics("test", "test", "")
	known := redis.NewScript(`return 1`)
	rdb.AddHook(m.RedisHook(map[string]*redis.Script{"test.one": known}))
	ctx := t.Context()
	// The first Run finds no script (EVALSHA fails with NOSCRIPT), then EVALs it; the
	// second runs it by its SHA.
	for range 2 {
		if err := known.Run(ctx, rdb, nil).Err(); err != nil {
			t.Fatal(err)
		}
	}
	other := redis.NewScript(`return 2`)
	if err := other.Run(ctx, rdb, nil).Err(); err != nil {
		t.Fatal(err)
	}
	limiter := redis_rate.NewLimiter(rdb)
	for range 2 {
		if _, err := limiter.Allow(ctx, "ip:127.0.0.1", redis_rate.PerSecond(10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Each script's first run is an EVALSHA answered NOSCRIPT, then its EVAL.
	for cmd, want := range map[string]int{"test.one": 3, "script:" + other.Hash()[:8]: 2, "rate_limit": 3, "set": 1} {
		if n := histCount(t, m, cmd); n != want {
			t.Errorf("command %q timed %d times, want %d", cmd, n, want)
		}
	}
	if n := testutil.CollectAndCount(m.RedisErrors); n != 0 {
		t.Errorf("NOSCRIPT, answered by EVAL, counted as %d errors", n)
	}
}

func histCount(t *testing.T, m *Metrics, cmd string) int {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != NameRedisDuration {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "command" && l.GetValue() == cmd {
					return int(s.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}
