package admission

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
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

// buildLibrary makes the one function library of every script and names it and its
// functions after its version (a digest of the library's whole text): function names
// are global in Redis, and during a rolling upgrade two versions of sluice share one
// server, each calling its own. Older versions' libraries stay loaded (a few tens of
// KB each) until an operator deletes them (FUNCTION DELETE).
func buildLibrary(scripts []*script) string {
	const version = "@VERSION@" // replaced by the digest once the text is complete
	var lib strings.Builder
	fmt.Fprintf(&lib, "#!lua name=sluice_admission_%s\n", version)
	// what EVAL gives a script as globals, the library's calls get as arguments
	lib.WriteString("local KEYS, ARGV\n")
	lib.WriteString(prelude)
	for _, s := range scripts {
		fmt.Fprintf(&lib, "\nredis.register_function(%q, function(keys, args)\nKEYS, ARGV = keys, args\nbegin()\n%s\nend)\n",
			functionName(s, version), s.body)
	}
	sum := sha1.Sum([]byte(lib.String()))
	digest := hex.EncodeToString(sum[:])[:12]
	for _, s := range scripts {
		s.fn = functionName(s, digest)
	}
	return strings.ReplaceAll(lib.String(), version, digest)
}

func functionName(s *script, version string) string {
	return strings.ReplaceAll(s.name, ".", "_") + "_" + version
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
// FUNCTION FLUSH), else EVALSHA. Every case that turns to EVALSHA is one where Redis
// refused the FCALL (or the load) before running anything, so no script runs twice.
func (f *functions) run(ctx context.Context, rdb redis.UniversalClient, s *script, keys []string, args ...any) *redis.Cmd {
	if f.evalOnly.Load() {
		return s.eval.Run(ctx, rdb, keys, args...)
	}
	loads := f.loads.Load()
	cmd := rdb.FCall(ctx, s.fn, keys, args...)
	if redis.HasErrorPrefix(cmd.Err(), "Function not found") {
		switch err := f.load(ctx, rdb, loads); {
		case writeRefused(err) || err == nil && f.evalOnly.Load():
			return s.eval.Run(ctx, rdb, keys, args...)
		case err != nil:
			cmd.SetErr(err)
			return cmd
		}
		cmd = rdb.FCall(ctx, s.fn, keys, args...)
	}
	switch err := cmd.Err(); {
	case noFunctions(err):
		f.evalOnly.Store(true)
	case writeRefused(err):
		// refused whole as a possible write, where a script runs up to its first
		// write: what only reads (a link's check, a look at another's ticket) still
		// answers, as it did before functions
	default:
		return cmd
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

// noFunctions reports whether err is a refusal of FCALL (or FUNCTION LOAD) because the
// server has no functions (before Redis 7, the embedded server, a service that
// disabled the commands) or this client may not use them (an ACL that allows EVALSHA
// only): the ledger then runs its scripts by EVALSHA.
func noFunctions(err error) bool {
	return redis.HasErrorPrefix(err, "NOPERM") || redis.HasErrorPrefix(err, "unknown command")
}

// Refused reports whether err is Redis refusing an FCALL of the ledger before it ran,
// which the ledger answers by loading its library or running the script by EVALSHA:
// for the metrics, not a failure.
func Refused(err error) bool {
	return redis.HasErrorPrefix(err, "Function not found") || noFunctions(err) || writeRefused(err)
}

// writeRefused reports whether err is Redis refusing, before running it, a command
// that may write: out of memory (OOM), a failed save (MISCONF), too few replicas
// (NOREPLICAS), a replica (READONLY). A function counts as a write whatever it does;
// the ledger runs that call again as a script, which Redis refuses only at its first
// write.
func writeRefused(err error) bool {
	for _, prefix := range []string{"OOM", "MISCONF", "NOREPLICAS", "READONLY"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}
