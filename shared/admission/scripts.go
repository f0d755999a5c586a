package admission

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lua/prelude.lua
	prelude string
	//go:embed lua/enqueue.lua
	enqueueLua string
	//go:embed lua/admit.lua
	admitLua string
	//go:embed lua/ready.lua
	readyLua string
	//go:embed lua/stream.lua
	streamLua string
	//go:embed lua/check.lua
	checkLua string
	//go:embed lua/cancel.lua
	cancelLua string
	//go:embed lua/poll.lua
	pollLua string
	//go:embed lua/rebuild.lua
	rebuildLua string
	//go:embed lua/stats.lua
	statsLua string
)

// script is one of the ledger's Lua scripts. It runs as the function of its name in the
// ledger's library where Redis has functions (7.0 and later): the prelude's closures
// and key names are then built once, when the library is loaded, instead of on every
// call, which was a fifth of a poll's cost in Redis. Elsewhere (older servers, the
// embedded one of `sluice serve`) it runs as EVALSHA of the prelude and its body.
type script struct {
	name string // for the metrics: admission.poll
	body string
	fn   string // its function in the library
	eval *redis.Script
}

var (
	enqueueScript = newScript("enqueue", enqueueLua)
	admitScript   = newScript("admit", admitLua)
	readyScript   = newScript("ready", readyLua)
	streamScript  = newScript("stream", streamLua)
	cancelScript  = newScript("cancel", cancelLua)
	checkScript   = newScript("check", checkLua)
	pollScript    = newScript("poll", pollLua)
	rebuildScript = newScript("rebuild", rebuildLua)
	statsScript   = newScript("stats", statsLua)

	allScripts = []*script{enqueueScript, admitScript, readyScript, streamScript, cancelScript,
		checkScript, pollScript, rebuildScript, statsScript}

	library = buildLibrary(allScripts)
)

func newScript(name, body string) *script {
	return &script{name: "admission." + name, body: body, eval: redis.NewScript(prelude + "begin()\n" + body)}
}

// buildLibrary makes the one function library of every script and names the
// functions after its version (a digest of the sources): function names are global
// in Redis, and during a rolling upgrade two versions of sluice share one server,
// each calling its own.
func buildLibrary(scripts []*script) string {
	sum := sha1.New()
	sum.Write([]byte(prelude))
	for _, s := range scripts {
		sum.Write([]byte(s.body))
	}
	version := hex.EncodeToString(sum.Sum(nil))[:12]
	var lib strings.Builder
	fmt.Fprintf(&lib, "#!lua name=sluice_admission_%s\n", version)
	// what EVAL gives a script as globals, the library's calls get as arguments
	lib.WriteString("local KEYS, ARGV\n")
	lib.WriteString(prelude)
	for _, s := range scripts {
		s.fn = strings.ReplaceAll(s.name, ".", "_") + "_" + version
		fmt.Fprintf(&lib, "\nredis.register_function(%q, function(keys, args)\nKEYS, ARGV = keys, args\nbegin()\n%s\nend)\n", s.fn, s.body)
	}
	return lib.String()
}

// Scripts names the ledger's Lua scripts, so that the Redis metrics
// (telemetry.Metrics.RedisHook) record which one ran instead of evalsha.
func Scripts() map[string]*redis.Script {
	names := make(map[string]*redis.Script, len(allScripts))
	for _, s := range allScripts {
		names[s.name] = s.eval
	}
	return names
}

// Functions names the functions the ledger calls with FCALL (function → script name),
// for the same metrics.
func Functions() map[string]string {
	names := make(map[string]string, len(allScripts))
	for _, s := range allScripts {
		names[s.fn] = s.name
	}
	return names
}

// functions is how a ledger runs its scripts on its Redis: as functions until the
// server says it has none (or the caller may not use them), then by EVALSHA.
type functions struct {
	evalOnly atomic.Bool
	loading  sync.Mutex
	loads    atomic.Int64 // libraries loaded: calls that failed before a load need not load again
}

// run runs s with keys and args: FCALL of its function, loading the library first
// where the server lacks it (the first call, or after Redis lost it in a restart or a
// FUNCTION FLUSH), else EVALSHA.
func (f *functions) run(ctx context.Context, rdb redis.UniversalClient, s *script, keys []string, args ...any) *redis.Cmd {
	if !f.evalOnly.Load() {
		loads := f.loads.Load()
		cmd := rdb.FCall(ctx, s.fn, keys, args...)
		switch err := cmd.Err(); {
		case noFunctions(err):
			f.evalOnly.Store(true)
		case isServerError(err, "oom command not allowed"):
			// Redis out of memory refuses a function whole, but runs a script up to its
			// first write: what only reads (a link's check, a poll that touches
			// nothing) still answers, as it did before functions.
		case isServerError(err, "function not found"):
			if err := f.load(ctx, rdb, loads); err != nil {
				cmd.SetErr(err)
				return cmd
			}
			if !f.evalOnly.Load() {
				return rdb.FCall(ctx, s.fn, keys, args...)
			}
		default:
			return cmd
		}
	}
	return s.eval.Run(ctx, rdb, keys, args...)
}

// load loads the library into every primary (a cluster's too), unless another call
// has loaded it since loads were counted. A server that turns out to have no
// functions makes the ledger use EVALSHA from then on.
func (f *functions) load(ctx context.Context, rdb redis.UniversalClient, loads int64) error {
	f.loading.Lock()
	defer f.loading.Unlock()
	if f.loads.Load() != loads {
		return nil
	}
	loadOne := func(ctx context.Context, c *redis.Client) error {
		err := c.FunctionLoadReplace(ctx, library).Err()
		if noFunctions(err) {
			f.evalOnly.Store(true)
			return nil
		}
		return err
	}
	var err error
	if cluster, ok := rdb.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, loadOne)
	} else if c, ok := rdb.(*redis.Client); ok {
		err = loadOne(ctx, c)
	} else {
		f.evalOnly.Store(true) // no way to reach every server: scripts travel with their calls
	}
	if err != nil {
		return fmt.Errorf("load the admission scripts into Redis: %w", err)
	}
	f.loads.Add(1)
	return nil
}

// noFunctions reports whether err says the server has no functions (before Redis 7,
// the embedded server, a service that disabled the commands) or that this client may
// not use them (an ACL that allows EVALSHA only).
func noFunctions(err error) bool {
	return isServerError(err, "unknown command") || isServerError(err, "noperm")
}

// isServerError reports whether err is an error reply of the server containing what
// (in lower case).
func isServerError(err error, what string) bool {
	var re redis.Error
	if err == nil || !errors.As(err, &re) {
		return false
	}
	return strings.Contains(strings.ToLower(err.Error()), what)
}
