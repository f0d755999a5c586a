package telemetry

import (
	"strings"
	"testing"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// TestRedisHookNamesScripts: a known Lua script is timed under its name, whether it
// ran as EVALSHA or (the first time, before Redis has it) as EVAL; the ticket rate
// limiter's as rate_limit; another script by the start of its SHA-1; a known function
// under its script's name, another as function:<name>; other commands keep their own
// name. A function not (yet) loaded is an answer, not an error.
func TestRedisHookNamesScripts(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	m := NewMetrics("test", "test", "")
	known := redis.NewScript(`return 1`)
	rdb.AddHook(m.RedisHook(map[string]string{"one_v1": "test.fn"}, map[string]*redis.Script{"test.one": known}))
	ctx := t.Context()
	if err := rdb.FCall(ctx, "one_v1", nil).Err(); err == nil || !strings.Contains(err.Error(), "Function not found") {
		t.Fatalf("FCALL before the load: %v, want Function not found", err)
	}
	lib := "#!lua name=test\nredis.register_function('one_v1', function() return 1 end)\nredis.register_function('two', function() return 2 end)"
	if err := rdb.FunctionLoad(ctx, lib).Err(); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"one_v1", "two"} {
		if err := rdb.FCall(ctx, fn, nil).Err(); err != nil {
			t.Fatal(err)
		}
	}
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
	for cmd, want := range map[string]int{"test.one": 3, "script:" + other.Hash()[:8]: 2, "rate_limit": 3, "set": 1,
		"test.fn": 2, "function:two": 1} {
		if n := histCount(t, m, cmd); n != want {
			t.Errorf("command %q timed %d times, want %d", cmd, n, want)
		}
	}
	if n := testutil.CollectAndCount(m.RedisErrors); n != 0 {
		t.Errorf("NOSCRIPT (answered by EVAL) and a function not loaded counted as %d errors", n)
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
