package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/certpool"
	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/redisbreaker"
	"github.com/sluice-dl/sluice/shared/telemetry"
	"github.com/sluice-dl/sluice/shared/token"
)

// deps is the object graph of one process, built in one place and closed in reverse.
type deps struct {
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	tickets jetstream.Consumer
	records records // the record buckets in JetStream KV; empty for the edge
	rdb     redis.UniversalClient
	rdbCB   *redisbreaker.Breaker // fails commands at once while Redis is not answering
	store   objstore.Store        // timed (metrics) around storeCB
	storeCB *objstore.Breaker     // fails calls at once while storage is not answering
	local   *objstore.Local       // set when objects are on local disk
	s3      *objstore.S3          // set when objects are in S3/MinIO
	ledger  *admission.Ledger
	keyring *token.Keyring
	metrics *telemetry.Metrics // times Redis commands and storage calls as they are made
	closers []func()
}

// records are the JetStream KV buckets that hold what must survive anything (Redis
// holds only what is rebuilt from them and the ticket stream).
type records struct {
	keys, settings, bindings, ended jetstream.KeyValue
}

func (d *deps) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// buildDeps connects to everything the role r needs, creating the streams and buckets
// it uses when they are missing (sluice init creates them ahead, init.go). Every client
// is instrumented by metrics as it is built.
func buildDeps(ctx context.Context, r role, c *serverConfig, log *slog.Logger, metrics *telemetry.Metrics) (_ *deps, err error) {
	d := &deps{log: log, metrics: metrics}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	switch {
	case r != roleEdge:
		if err := d.connectNATS(ctx, r, c); err != nil {
			return nil, err
		}
	case c.NATSURL != "" && c.EdgeCacheDir != "": // an edge reading the catalog for its cache (edgecache.go)
		if err := d.dialNATS(r, c.NATSURL, nil); err != nil {
			return nil, err
		}
	}
	if err := d.connectRedis(ctx, r, c); err != nil {
		return nil, err
	}
	if c.Retain <= 0 {
		return nil, fmt.Errorf("--retain must be positive, not %s", c.Retain)
	}
	lc := admission.Config{
		Retain:       c.Retain,
		GlobalLimit:  c.GlobalLimit,
		TenantLimit:  c.TenantLimit,
		StreamLease:  c.StreamLease,
		ResumeGrace:  c.ResumeGrace,
		AbandonAfter: c.AbandonAfter,
		MaxConns:     c.MaxConns,
		// A grant whose worker died lapses within the same period as a dead edge's stream.
		AdmitLease: min(15*time.Second, c.StreamLease),
		Records:    d.records.settings,
		Bindings:   d.records.bindings,
		Ended:      d.records.ended,
		Logger:     d.log,
	}
	if d.js != nil {
		lc.LiveTickets = queue.NewTickets(d.js).Live
	}
	d.ledger = admission.New(d.rdb, lc)
	{ // workers verify release artifacts against the store
		if err := d.openStore(ctx, r, c); err != nil {
			return nil, err
		}
	}
	if r != roleIngress {
		if err := d.loadKeyring(r, c); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *deps) connectNATS(ctx context.Context, r role, c *serverConfig) error {
	var extra []nats.Option
	url := c.NATSURL
	if url == "" {
		if r != roleServe {
			return errors.New("--nats-url (SLUICE_NATS_URL) is required for the " + r.String() + " role")
		}
		ns, err := server.NewServer(&server.Options{
			ServerName: "sluice-embedded",
			DontListen: true,
			JetStream:  true,
			StoreDir:   filepath.Join(c.DataDir, "nats"),
			SyncAlways: true, // acknowledged tickets survive a power loss
			NoSigs:     true,
			NoLog:      true,
		})
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			return errors.New("embedded nats did not start within 10s")
		}
		d.onClose(func() { ns.Shutdown(); ns.WaitForShutdown() })
		extra = append(extra, nats.InProcessServer(ns))
		d.log.Info("single-machine mode: embedded NATS JetStream", "store", filepath.Join(c.DataDir, "nats"), "sync", "always")
	}
	if err := d.dialNATS(r, url, extra); err != nil {
		return err
	}
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if d.tickets, err = queue.EnsureTickets(setup, d.js, ticketStream(c)); err != nil {
		return fmt.Errorf("%w (is JetStream enabled on %s?)", err, url)
	}
	d.records, err = ensureRecords(setup, d.js, c)
	return err
}

// dialNATS connects to NATS and JetStream, drained when the process closes.
func (d *deps) dialNATS(r role, url string, extra []nats.Option) error {
	nc, err := queue.Connect(url, "sluice-"+r.String(), d.log, extra...)
	if err != nil {
		return err
	}
	d.onClose(func() { drainNATS(nc) })
	d.nc = nc
	if d.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// ticketStream is the ticket stream's configuration.
func ticketStream(c *serverConfig) queue.StreamConfig {
	return queue.StreamConfig{Replicas: c.NATSReplicas, MaxMsgs: c.MaxTickets, AckWait: c.TicketAckWait}
}

// ensureRecords creates or updates the record buckets (retried until ctx ends).
func ensureRecords(ctx context.Context, js jetstream.JetStream, c *serverConfig) (records, error) {
	var rec records
	for _, b := range []struct {
		kv  *jetstream.KeyValue
		cfg queue.RecordConfig
	}{
		{&rec.keys, queue.RecordConfig{Bucket: queue.KeysBucket, Description: "API keys: hashes, scopes, tenants"}},
		{&rec.settings, queue.RecordConfig{Bucket: queue.SettingsBucket, Description: "the operator's limits, weights and pause"}},
		{&rec.bindings, queue.RecordConfig{Bucket: queue.IdempotencyBucket, Description: "Idempotency-Key bindings to tickets",
			TTL: 24 * time.Hour}},
		{&rec.ended, queue.RecordConfig{Bucket: queue.EndedBucket, Description: "tickets that ended, readable for --retain",
			TTL: max(c.Retain, time.Second)}},
	} {
		b.cfg.Replicas = c.NATSReplicas
		kv, err := queue.EnsureRecords(ctx, js, b.cfg)
		if err != nil {
			return records{}, err
		}
		*b.kv = kv
	}
	return rec, nil
}

func (d *deps) connectRedis(ctx context.Context, r role, c *serverConfig) error {
	opts, err := redisOptions(c)
	if err != nil {
		return err
	}
	if len(opts.Addrs) == 0 {
		if r != roleServe {
			return errors.New("--redis-url (SLUICE_REDIS_URL) or --redis-addrs is required for the " + r.String() + " role")
		}
		m := newEmbeddedRedis(expiryTick)
		if err := m.Start(c.EmbeddedRedisAddr); err != nil {
			return err
		}
		d.onClose(m.Close)
		opts.Addrs = []string{m.Addr()}
		d.log.Info("single-machine mode: embedded Redis-protocol server (in memory; tickets are rebuilt from JetStream after a restart)", "addr", m.Addr())
	}
	// Scripts are made idempotent where it matters, but a blind client-side retry of a
	// timed-out script call is never what we want: callers retry on their own terms.
	opts.MaxRetries = -1
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewUniversalClient(opts)
	d.rdbCB = redisbreaker.New("redis", redisbreaker.Options{Logger: d.log})
	rdb.AddHook(d.rdbCB)
	rdb.AddHook(d.metrics.RedisHook(admission.Functions(), admission.Scripts(), catalog.Scripts(), fleet.Scripts()))
	d.onClose(func() { _ = rdb.Close() })
	d.rdb = rdb
	ping, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ping).Err(); err != nil {
		d.log.Warn("redis is not answering yet; requests will fail until it does", "addrs", opts.Addrs, "err", err)
	}
	return nil
}

// redisOptions reads one Redis URL, or a list of addresses that go-redis' universal
// client turns into a Sentinel client (with a master name) or a Cluster client (with
// several addresses, or --redis-cluster). TLS, the ACL user and the password apply to
// every form. Every ledger key shares one hash tag, so the Lua scripts run in one
// cluster slot.
func redisOptions(c *serverConfig) (*redis.UniversalOptions, error) {
	if c.RedisURL != "" && c.RedisAddrs != "" {
		return nil, errors.New("set either --redis-url or --redis-addrs, not both")
	}
	if c.RedisCluster && c.RedisMasterName != "" {
		return nil, errors.New("--redis-cluster and --redis-master-name (Sentinel) exclude each other")
	}
	if (c.RedisSentinelUsername != "" || c.RedisSentinelPassword != "") && c.RedisMasterName == "" {
		return nil, errors.New("--redis-sentinel-username and --redis-sentinel-password need Sentinel: set --redis-addrs and --redis-master-name")
	}
	opts := &redis.UniversalOptions{MasterName: c.RedisMasterName, Username: c.RedisUsername,
		Password: c.RedisPassword, IsClusterMode: c.RedisCluster,
		SentinelUsername: c.RedisSentinelUsername, SentinelPassword: c.RedisSentinelPassword}
	if c.RedisURL != "" {
		o, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("--redis-url: %w", err)
		}
		opts.Addrs, opts.DB, opts.TLSConfig = []string{o.Addr}, o.DB, o.TLSConfig
		if o.Username != "" || o.Password != "" {
			opts.Username, opts.Password = o.Username, o.Password
		}
		if c.RedisCluster && o.DB != 0 {
			return nil, fmt.Errorf("--redis-url %s: Redis Cluster has database 0 only", redactedURL(c.RedisURL))
		}
	} else {
		for _, a := range strings.Split(c.RedisAddrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				opts.Addrs = append(opts.Addrs, a)
			}
		}
		if len(opts.Addrs) == 0 {
			return &redis.UniversalOptions{}, nil // serve embeds its own, on loopback
		}
	}
	if (c.RedisTLS || c.RedisCAFile != "") && opts.TLSConfig == nil {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} // the server name is each address' host
	}
	if c.RedisCAFile != "" {
		pool, err := certpool.FromFile(c.RedisCAFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-ca-file: %w", err)
		}
		opts.TLSConfig.RootCAs = pool
	}
	return opts, nil
}

// redactedURL is u without its password, for errors.
func redactedURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return "(unparsable URL)"
}

func (d *deps) openStore(ctx context.Context, r role, c *serverConfig) error {
	var inner objstore.Store
	if c.S3Endpoint == "" {
		dir := filepath.Join(c.DataDir, "objects")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("object directory: %w", err)
		}
		local, err := objstore.NewLocal(dir, objstore.WithLogger(d.log))
		if err != nil {
			return err
		}
		d.local, inner = local, local
		d.log.Info("objects on local disk", "dir", dir)
	} else {
		s3, err := openS3(c)
		if err != nil {
			return err
		}
		if r == roleServe {
			setup, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := s3.EnsureBucket(setup); err != nil {
				return err
			}
		}
		d.s3, inner = s3, s3
	}
	d.storeCB = objstore.NewBreaker(inner, "objects", objstore.BreakerOptions{})
	d.store = d.metrics.InstrumentStore(d.storeCB)
	return nil
}

// openS3 is the S3/MinIO client of --s3-*.
func openS3(c *serverConfig) (*objstore.S3, error) {
	bucket, prefix, err := c.s3Location()
	if err != nil {
		return nil, err
	}
	return objstore.NewS3(objstore.S3Config{
		Endpoint: c.S3Endpoint, Bucket: bucket, Prefix: prefix, AccessKey: c.S3AccessKey,
		SecretKey: c.S3SecretKey, UseSSL: c.S3UseSSL, Region: c.S3Region,
		CAFile: c.S3CAFile, SSE: c.S3SSE,
	})
}

func (d *deps) loadKeyring(r role, c *serverConfig) error {
	spec := c.SigningKeys
	if spec == "" {
		if r != roleServe {
			return errors.New("--signing-keys (SLUICE_SIGNING_KEYS) is required for the " + r.String() + " role; every worker and edge needs the same keys")
		}
		path := filepath.Join(c.DataDir, "signing.key")
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			spec = "k1:" + base64.StdEncoding.EncodeToString(token.GenerateKey())
			if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(spec+"\n"), 0o600); err != nil {
				return fmt.Errorf("store signing key: %w", err)
			}
			d.log.Info("generated a token signing key", "file", path)
		} else if err != nil {
			return fmt.Errorf("read signing key: %w", err)
		} else {
			spec = strings.TrimSpace(string(b))
		}
	}
	kr, err := token.ParseKeyring(spec)
	if err != nil {
		return fmt.Errorf("--signing-keys: %w", err)
	}
	d.keyring = kr
	return nil
}
