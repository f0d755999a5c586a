package telemetry

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// RedisHook times every Redis command into sluice_redis_command_duration_seconds, by
// command name; a pipeline counts as one "pipeline" call. A Lua script of scripts
// (name → script, as admission.Scripts lists them) is recorded under its name, not as
// the evalsha (or, the first time, eval) that runs it, and so is a function of
// functions (the name FCALL calls → the name to record, as admission.Functions lists
// them); the ticket rate limiter's scripts (redis_rate, whose keys start with "rate:")
// as "rate_limit", any other script as "script:" and the first 8 digits of its SHA-1,
// and any other function as "function:" and its name. Add it with rdb.AddHook.
func (m *Metrics) RedisHook(functions map[string]string, scripts ...map[string]*redis.Script) redis.Hook {
	byHash := map[string]string{}
	for _, set := range scripts {
		for name, s := range set {
			byHash[s.Hash()] = name
		}
	}
	return redisHook{m: m, scripts: byHash, functions: functions}
}

type redisHook struct {
	m         *Metrics
	scripts   map[string]string // SHA-1 of the source (hex) → script name
	functions map[string]string // function → script name
}

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		failure := err
		if cmd.Name() == "fcall" && admission.Refused(err) {
			failure = nil // refused before it ran: the ledger runs the script another way
		}
		h.observe(h.command(cmd), start, failure)
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.observe("pipeline", start, err)
		return err
	}
}

// command is the label of cmd: the script's name for a known script, else the
// command's name.
func (h redisHook) command(cmd redis.Cmder) string {
	name := cmd.Name()
	args := cmd.Args()
	if len(args) < 2 {
		return name
	}
	var hash string
	switch name {
	case "evalsha", "evalsha_ro":
		hash, _ = args[1].(string)
	case "eval", "eval_ro":
		src, _ := args[1].(string)
		sum := sha1.Sum([]byte(src))
		hash = hex.EncodeToString(sum[:])
	case "fcall", "fcall_ro":
		fn, _ := args[1].(string)
		if script, ok := h.functions[fn]; ok {
			return script
		}
		return "function:" + fn
	default:
		return name
	}
	if script, ok := h.scripts[hash]; ok {
		return script
	}
	// EVAL[SHA] script numkeys key...: redis_rate keeps the limiter's scripts to itself,
	// but its keys tell them apart.
	if len(args) > 3 {
		if key, _ := args[3].(string); strings.HasPrefix(key, "rate:") {
			return "rate_limit"
		}
	}
	if len(hash) >= 8 {
		return "script:" + hash[:8]
	}
	return name
}

func (h redisHook) observe(name string, start time.Time, err error) {
	h.m.RedisDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	// A nil answer and a missing script (go-redis falls back to EVAL) are answers, not
	// failures.
	if err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		h.m.RedisErrors.WithLabelValues(name).Inc()
	}
}

// InstrumentStore times the calls to inner into sluice_storage_operation_duration_seconds.
// Open's readers are returned as they are (a local file keeps its sendfile path).
func (m *Metrics) InstrumentStore(inner objstore.Store) objstore.Store {
	return &timedStore{inner: inner, m: m}
}

type timedStore struct {
	inner objstore.Store
	m     *Metrics
}

func (s *timedStore) observe(op string, start time.Time, err error) {
	s.m.StorageDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	var ne net.Error
	if errors.Is(err, objstore.ErrUnavailable) || errors.As(err, &ne) {
		s.m.StorageErrors.WithLabelValues(op).Inc()
	}
}

func (s *timedStore) Stat(ctx context.Context, key string) (objstore.Info, error) {
	start := time.Now()
	info, err := s.inner.Stat(ctx, key)
	s.observe("stat", start, err)
	return info, err
}

func (s *timedStore) Open(ctx context.Context, key string, offset, length int64, etag string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := s.inner.Open(ctx, key, offset, length, etag)
	s.observe("open", start, err)
	return rc, err
}

func (s *timedStore) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (objstore.Info, error) {
	start := time.Now()
	info, err := s.inner.Put(ctx, key, r, size, contentType)
	s.observe("put", start, err)
	return info, err
}

func (s *timedStore) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.inner.Ping(ctx)
	s.observe("ping", start, err)
	return err
}
