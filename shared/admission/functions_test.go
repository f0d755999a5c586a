package admission_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/admission"
)

// On a server with functions, the ledger's scripts run as the functions of one library
// it loads itself: no EVALSHA. A server that lost the library (FUNCTION FLUSH here; a
// restart without persistence alike) is given it again by the next call, which answers
// as if nothing had happened.
func TestScriptsRunAsFunctionsAndComeBackWhenRedisLosesThem(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	l := newLedger(t, rdb, admission.Config{})
	var seq uint64
	ids := enqueue(t, l, "a", 3, &seq)
	poll := func(id string, want int64) {
		t.Helper()
		p, err := l.Poll(t.Context(), id)
		if err != nil {
			t.Fatalf("poll %s: %v", id, err)
		}
		if p.Status != admission.StatusQueued || p.Ahead != want {
			t.Fatalf("poll %s: %s with %d ahead, want queued with %d", id, p.Status, p.Ahead, want)
		}
	}
	poll(ids[2], 2)
	if calls := commandCalls(t, rdb); calls["fcall"] == 0 || calls["evalsha"]+calls["eval"] != 0 {
		t.Fatalf("commands run: %v; want the scripts as FCALLs only", calls)
	}
	libraries := func() []string {
		t.Helper()
		libs, err := rdb.FunctionList(t.Context(), redis.FunctionListQuery{}).Result()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, lib := range libs {
			names = append(names, lib.Name)
		}
		return names
	}
	if libs := libraries(); len(libs) != 1 || !strings.HasPrefix(libs[0], "sluice_admission_") {
		t.Fatalf("libraries loaded: %v, want the ledger's one", libs)
	}

	if err := rdb.FunctionFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	poll(ids[1], 1)
	if libs := libraries(); len(libs) != 1 {
		t.Fatalf("libraries after the flush and a poll: %v, want the ledger's one again", libs)
	}
	if calls := commandCalls(t, rdb); calls["evalsha"]+calls["eval"] != 0 {
		t.Fatalf("commands run: %v; the lost library should have been loaded again, not replaced by EVAL", calls)
	}
}

// A client that may not use functions (here an ACL that denies FCALL and FUNCTION, as
// some managed services do; an older or the embedded server answers "unknown command"
// alike) runs the same scripts by EVALSHA.
func TestScriptsRunByEvalWhereFunctionsAreRefused(t *testing.T) {
	r := testenv.StartRedis(t)
	admin := r.Client(t)
	if err := admin.Do(t.Context(), "ACL", "SETUSER", "ledger", "on", ">pw", "~*", "&*", "+@all", "-fcall", "-function").Err(); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "ledger", Password: "pw"})
	t.Cleanup(func() { rdb.Close() })
	l := newLedger(t, rdb, admission.Config{})
	var seq uint64
	ids := enqueue(t, l, "a", 2, &seq)
	for range 3 {
		if p, err := l.Poll(t.Context(), ids[1]); err != nil || p.Ahead != 1 {
			t.Fatalf("poll: %+v, %v; want queued with 1 ahead", p, err)
		}
	}
	if calls := commandCalls(t, admin); calls["evalsha"] == 0 {
		t.Fatalf("commands run: %v; want the scripts by EVALSHA", calls)
	}
}

// Where Redis refuses writes (out of memory, too few replicas; a failed save alike), it
// refuses a function whole but a script only at its first write: a read that writes
// nothing, such as another caller's look at a ticket, still answers, also when the
// library was lost and cannot be loaded for the same reason; a poll that would write
// is refused with Redis's reason.
func TestReadsAnswerWhileRedisRefusesWrites(t *testing.T) {
	for _, c := range []struct {
		name, setting, refuse, allow, reply string
	}{
		{"out of memory", "maxmemory", "1", "0", "OOM"},
		{"too few replicas", "min-replicas-to-write", "1", "0", "NOREPLICAS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rdb := testenv.StartRedis(t).Client(t)
			l := newLedger(t, rdb, admission.Config{})
			var seq uint64
			ids := enqueue(t, l, "a", 2, &seq)
			refuse := func(v string) {
				t.Helper()
				if err := rdb.ConfigSet(context.Background(), c.setting, v).Err(); err != nil {
					t.Fatal(err)
				}
			}
			read := func(when string) {
				t.Helper()
				if p, err := l.Get(t.Context(), ids[1]); err != nil || p.Status != admission.StatusQueued || p.Ahead != 1 {
					t.Fatalf("read %s: %+v, %v; want the queued ticket with 1 ahead", when, p, err)
				}
			}
			if _, err := l.Poll(t.Context(), ids[1]); err != nil { // the library loaded
				t.Fatal(err)
			}
			refuse(c.refuse)
			t.Cleanup(func() { refuse(c.allow) })
			read("with the library loaded")
			if _, err := l.Poll(t.Context(), ids[1]); err == nil || !strings.Contains(err.Error(), c.reply) {
				t.Fatalf("poll (it writes): %v, want Redis's %s refusal", err, c.reply)
			}
			refuse(c.allow)
			if err := rdb.FunctionFlush(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
			refuse(c.refuse)
			read("with the library lost")
		})
	}
}

// commandCalls reads how often the server ran each command (INFO commandstats).
func commandCalls(t *testing.T, rdb redis.UniversalClient) map[string]int {
	t.Helper()
	calls := map[string]int{}
	for name, st := range testenv.CommandStats(t, rdb) {
		calls[name] = int(st.Calls)
	}
	return calls
}
