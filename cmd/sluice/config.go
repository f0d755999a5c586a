package main

import (
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// serverConfig is every setting of the server roles. Each is a flag, and through ff an
// environment variable SLUICE_<FLAG>.
type serverConfig struct {
	IngressAddr   string
	EdgeAddr      string
	PublicEdgeURL string
	DataDir       string
	LogFormat     string
	LogLevel      string

	NATSURL      string
	NATSReplicas int
	// PublishBatches is how concurrent new tickets are published: auto, on, off.
	PublishBatches string
	MaxTickets     int64
	AckWait        time.Duration
	// TicketAckWait is the ticket consumer's: long, since a waiting ticket's message
	// is only renewed (docs/ARCHITECTURE.md, "Admission").
	TicketAckWait time.Duration

	RedisURL        string
	RedisAddrs      string
	RedisMasterName string
	// the Sentinel nodes' own credentials (their requirepass or ACL), when they have them
	RedisSentinelUsername, RedisSentinelPassword string
	RedisPassword                                string
	RedisUsername                                string
	RedisTLS                                     bool
	RedisCAFile                                  string
	RedisCluster                                 bool
	// EmbeddedRedisAddr is where serve's in-process Redis listens when none is set.
	EmbeddedRedisAddr string

	S3Endpoint  string
	S3Bucket    string
	S3AccessKey string
	S3SecretKey string
	S3UseSSL    bool
	S3Region    string
	S3Prefix    string
	S3CAFile    string
	S3SSE       string

	SigningKeys string

	AdminKey         string
	RequireClientKey bool
	TicketRate       int
	TicketBurst      int
	TrustedProxies   string
	CORSOrigins      string

	GlobalLimit  int
	TenantLimit  int
	TokenTTL     time.Duration
	StreamLease  time.Duration
	ResumeGrace  time.Duration
	AbandonAfter time.Duration
	Retain       time.Duration
	MaxConns     int
	Demo         bool
	ShutdownWait time.Duration
	// Operations (shared/telemetry, shared/fleet).
	OTLPEndpoint string
	MetricsAddr  string
	// EdgeMetricsAddr is the edge's operations port: /metrics and /debug/edge stay off
	// the port clients reach.
	EdgeMetricsAddr string
	MetricsToken    string
	Pprof           bool
	DrainDelay      time.Duration

	// The streaming edge.
	DownloadRate    int64
	EgressRate      int64
	IdleTimeout     time.Duration
	MinRate         int64
	MinRateWindow   time.Duration
	DirectDownloads bool
	FilesWait       time.Duration
	StatCache       time.Duration
	EdgeCacheDir    string
	EdgeCacheSize   int64
	EdgeRevalidate  time.Duration
	EdgeAdvertise   string
	EdgeAffinity    bool

	Releases releaseConfig // the release pipeline (releases.go)

	// What one client can hold (bounds.go, docs/ARCHITECTURE.md Security and bounds).
	MaxConnsPerIP  int
	BodyTimeout    time.Duration
	BodyMinRate    int64
	MaxLargeBodies int
	MaxUploadSize  int64
}

func registerServerFlags(fs *flag.FlagSet, r role) *serverConfig {
	c := &serverConfig{}
	// serve is for one machine: it listens on loopback unless told otherwise. The
	// roles run in containers, where only every interface is reachable.
	switch r {
	case roleServe:
		fs.StringVar(&c.IngressAddr, "ingress-addr", "127.0.0.1:8080", "listen address of the public API; on 127.0.0.1 only this machine reaches it, :8080 listens on every interface")
		fs.StringVar(&c.EdgeAddr, "edge-addr", "127.0.0.1:8081", "listen address of the streaming edge; on 127.0.0.1 only this machine reaches it, :8081 listens on every interface")
	case roleIngress:
		fs.StringVar(&c.IngressAddr, "ingress-addr", ":8080", "listen address of the public API")
	case roleEdge:
		fs.StringVar(&c.EdgeAddr, "edge-addr", ":8081", "listen address of the streaming edge")
	}
	if r.runs(roleWorker) {
		fs.StringVar(&c.PublicEdgeURL, "public-edge-url", "http://localhost:8081", "what download links start with: the edge as clients reach it")
	}
	fs.StringVar(&c.DataDir, "data-dir", "./var", "directory for local state: objects/ (local store), nats/ (embedded JetStream), signing.key")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: text, json, or auto (text for serve, json for the roles)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "OpenTelemetry collector for traces (http://collector:4318, or :4317 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc); empty: OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, and without either no traces are exported")
	fs.StringVar(&c.MetricsToken, "metrics-token", "", "bearer token /metrics requires (Prometheus: authorization.credentials); empty: /metrics is open to whoever reaches the port")
	if r == roleWorker || r == roleEdge || r == roleServe {
		fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's profiles (/debug/pprof/) on the operations port (--metrics-addr, --edge-metrics-addr), never on a public one; for profiling, not for a port others reach")
	}
	if r == roleWorker {
		fs.StringVar(&c.MetricsAddr, "metrics-addr", ":9090", "listen address of the worker's /metrics (Prometheus); empty: none")
	}
	switch r {
	case roleEdge:
		fs.StringVar(&c.EdgeMetricsAddr, "edge-metrics-addr", "127.0.0.1:9091", "listen address of the edge's operations port: /metrics (Prometheus), /debug/edge, /healthz, /readyz, never on the public --edge-addr; :9091 lets Prometheus reach it from other hosts; empty: none")
	case roleServe:
		fs.StringVar(&c.EdgeMetricsAddr, "edge-metrics-addr", "", "listen address of the edge's operations port: /debug/edge, and /metrics as the ingress serves it; empty: none")
	}

	natsHelp := "NATS server URL(s), comma-separated"
	if r == roleServe {
		natsHelp += "; empty embeds a NATS server with JetStream in <data-dir>/nats"
	}
	if r == roleEdge {
		fs.StringVar(&c.NATSURL, "nats-url", "", natsHelp+": with --edge-cache-dir, cached copies are checked against the release catalog's SHA-256 (without it, against the digest measured while filling)")
	}
	if r != roleEdge {
		fs.StringVar(&c.NATSURL, "nats-url", "", natsHelp)
		fs.IntVar(&c.NATSReplicas, "nats-replicas", 1, "replicas of the JetStream streams (3 in a cluster)")
		fs.Int64Var(&c.MaxTickets, "max-tickets", 1_000_000, "bound of the ticket queue; past it new tickets get 503")
		fs.DurationVar(&c.AckWait, "ack-wait", 30*time.Second, "JetStream AckWait of the release-event consumer: a crashed worker's events move to others after it")
		fs.DurationVar(&c.TicketAckWait, "ticket-ack-wait", 10*time.Minute, "JetStream AckWait of the ticket consumer: a crashed worker's ticket messages move to others after it (its waiting tickets are admitted meanwhile; only their acknowledgement waits)")
	}
	if r.runs(roleIngress) {
		fs.StringVar(&c.PublishBatches, "publish-batches", "auto", "how new tickets that arrive together are published: on, in JetStream atomic batches (for NATS servers that sync every message, sync_interval: always); off, each its own publish, pipelined (for servers that sync later, nats-server's default); auto, on with the embedded NATS server (it syncs every message) and off with any other")
	}
	redisHelp := "Redis URL, redis:// or rediss:// (Redis must run with maxmemory-policy noeviction)"
	if r == roleServe {
		redisHelp += "; empty embeds an in-process Redis-protocol server"
	}
	fs.StringVar(&c.RedisURL, "redis-url", "", redisHelp)
	fs.StringVar(&c.RedisAddrs, "redis-addrs", "", "Redis Sentinel or Cluster addresses host:port,... (instead of --redis-url)")
	fs.StringVar(&c.RedisMasterName, "redis-master-name", "", "Sentinel master name; with --redis-addrs selects Sentinel")
	fs.StringVar(&c.RedisSentinelUsername, "redis-sentinel-username", "", "ACL user on the Sentinel nodes themselves, when they require one (--redis-username is the master's)")
	fs.StringVar(&c.RedisSentinelPassword, "redis-sentinel-password", "", "password of the Sentinel nodes themselves (their requirepass), when they have one (--redis-password is the master's)")
	fs.StringVar(&c.RedisPassword, "redis-password", "", "Redis password (with --redis-url, when the URL has none)")
	fs.StringVar(&c.RedisUsername, "redis-username", "", "Redis ACL user (with --redis-url, when the URL has none); empty: the default user")
	fs.BoolVar(&c.RedisTLS, "redis-tls", false, "reach Redis over TLS (what rediss:// says for --redis-url)")
	fs.StringVar(&c.RedisCAFile, "redis-ca-file", "", "PEM file of certificate authorities to trust for Redis' TLS, besides the system's; implies --redis-tls")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "speak Redis Cluster even to one address (a cluster's configuration endpoint); several --redis-addrs without --redis-master-name are a cluster anyway")
	if r == roleServe {
		fs.StringVar(&c.EmbeddedRedisAddr, "embedded-redis-addr", "127.0.0.1:0", "listen address of the embedded Redis-protocol server, used when --redis-url and --redis-addrs are empty (it has no password: keep it on loopback; port 0 picks one, logged at start)")
	}

	{ // workers use S3 only with --direct-downloads
		fs.StringVar(&c.S3Endpoint, "s3-endpoint", "", "S3/MinIO endpoint host:port; empty serves objects from <data-dir>/objects")
		fs.StringVar(&c.S3Bucket, "s3-bucket", "sluice", "bucket holding the objects, or s3://bucket/prefix (bucket and --s3-prefix in one)")
		fs.StringVar(&c.S3Prefix, "s3-prefix", "", "key prefix in the bucket: every object key is stored under <prefix>/; empty: the bucket's root")
		fs.StringVar(&c.S3AccessKey, "s3-access-key", "", "S3 access key; with --s3-secret-key empty too, credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), then an IAM role (IRSA, ECS, EC2)")
		fs.StringVar(&c.S3SecretKey, "s3-secret-key", "", "S3 secret key (see --s3-access-key)")
		fs.BoolVar(&c.S3UseSSL, "s3-use-ssl", false, "use HTTPS to reach S3")
		fs.StringVar(&c.S3Region, "s3-region", "", "S3 region (optional)")
		fs.StringVar(&c.S3CAFile, "s3-ca-file", "", "PEM file of certificate authorities to trust for S3's HTTPS, besides the system's")
		fs.StringVar(&c.S3SSE, "s3-sse", "", "server-side encryption of the objects sluice writes: s3 (SSE-S3) or kms:<key-id> (SSE-KMS); empty: the bucket's default")
	}
	if r != roleIngress {
		keysHelp := "token signing keys 'kid:base64key,...' (first signs, all verify: rotate by prepending)"
		if r == roleServe {
			keysHelp += "; empty uses <data-dir>/signing.key, generated on first start"
		}
		fs.StringVar(&c.SigningKeys, "signing-keys", "", keysHelp)
	}

	if r.runs(roleIngress) {
		adminHelp := "bootstrap operator API key (creates the other keys)"
		if r == roleServe {
			adminHelp += "; empty generates one and prints it at start"
		}
		fs.StringVar(&c.AdminKey, "admin-key", "", adminHelp)
		fs.BoolVar(&c.RequireClientKey, "require-client-key", false, "refuse downloads without a client API key (otherwise they run as tenant 'public')")
		fs.IntVar(&c.TicketRate, "ticket-rate", 60, "new tickets per minute one client may take (per API key; per address without one), across all ingresses; past it 429 + Retry-After; 0: no limit")
		fs.IntVar(&c.TicketBurst, "ticket-burst", 20, "new tickets one client may take at once before --ticket-rate paces it")
		fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated IPs or CIDRs of proxies in front of the ingress whose X-Forwarded-For names the client; empty: the connection's address is the client's")
		fs.StringVar(&c.CORSOrigins, "cors-origins", "", "comma-separated origins (https://app.example.com) whose browser code may call the API, or * for any; empty: no CORS")
	}
	fs.IntVar(&c.GlobalLimit, "global-limit", 10, "downloads admitted at once across the whole system (until an operator changes it at runtime); give every role the same value")
	fs.IntVar(&c.TenantLimit, "tenant-limit", 0, "default downloads admitted at once per tenant, 0 for none")
	fs.DurationVar(&c.TokenTTL, "token-ttl", 2*time.Minute, "how long a download link accepts new connections; an unused link's slot comes back after it")
	fs.DurationVar(&c.StreamLease, "stream-lease", 30*time.Second, "lease of a streaming slot, renewed while bytes flow; a crashed edge's slots come back after it")
	fs.DurationVar(&c.ResumeGrace, "resume-grace", 30*time.Second, "how long a slot waits for a client to resume an interrupted download")
	fs.DurationVar(&c.AbandonAfter, "abandon-after", 5*time.Minute, "queued tickets not polled for this long are dropped (0: never)")
	fs.DurationVar(&c.Retain, "retain", 24*time.Hour, "how long an ended ticket stays readable (GET /api/v1/tickets/{id}) before Redis forgets it; give every role the same value")
	fs.IntVar(&c.MaxConns, "max-conns-per-token", 8, "concurrent connections one download link may open (parallel ranges)")
	if r.runs(roleEdge) {
		fs.Int64Var(&c.DownloadRate, "download-rate", 0, "bytes/s per download, all its connections together, unless its tenant has its own rate (admin limits rate_bps); 0: no limit")
		fs.Int64Var(&c.EgressRate, "egress-rate", 0, "bytes/s this edge sends in all, shared equally by its downloads; 0: no limit")
		fs.DurationVar(&c.IdleTimeout, "idle-timeout", 60*time.Second, "a download whose client accepts nothing for this long is ended")
		fs.Int64Var(&c.MinRate, "min-rate", 1024, "bytes/s a client must read at, over --min-rate-window, while the edge waits on it; 0: no minimum")
		fs.DurationVar(&c.MinRateWindow, "min-rate-window", 60*time.Second, "the span --min-rate is measured over (and the warm-up before it applies)")
		fs.StringVar(&c.EdgeCacheDir, "edge-cache-dir", "", "directory where the edge keeps verified copies of the objects it serves, served from disk and through storage outages; empty: no cache")
		fs.Int64Var(&c.EdgeCacheSize, "edge-cache-size", 10<<30, "bytes --edge-cache-dir may hold; least recently used copies are evicted beyond it")
		fs.DurationVar(&c.EdgeRevalidate, "edge-revalidate", time.Second, "how long the store's answer that an object is at the version a link names holds on the edge (and for its cached copy): requests within it cost no round trip to the store; a replaced object is noticed within it, and its links never get bytes of another version; 0: ask on every request")
		fs.StringVar(&c.EdgeAdvertise, "edge-advertise-url", "", "this edge's own URL as clients reach it, advertised in the fleet registry for workers with --edge-affinity; empty: not advertised")
	}
	if r.runs(roleWorker) {
		fs.BoolVar(&c.EdgeAffinity, "edge-affinity", false, "each link names the edge chosen for its object among live edges advertising --edge-advertise-url (rendezvous hashing weighted by cache size); none live: --public-edge-url")
		fs.BoolVar(&c.DirectDownloads, "direct-downloads", false, "links are presigned S3/MinIO URLs instead of edge links: storage serves the bytes, with no throttling, and a slot lapses only at --token-ttl")
	}
	if r.runs(roleIngress) {
		fs.DurationVar(&c.FilesWait, "files-wait", 10*time.Second, "how long GET /api/v1/files/{key} and /api/v1/tickets/{id}/download wait for admission before answering with a waiting page or a redirect to wait again")
		fs.DurationVar(&c.StatCache, "stat-cache", time.Second, "how long the store's answer for an object's version (a HEAD at S3) serves new tickets for it: a burst for one release costs one Stat; an object replaced in storage is named by new tickets within it, as by tickets that waited (edge links then fail before the first byte; --direct-downloads links, which name only the key, get the new bytes), unless the catalog or an upload through this ingress knows it changed; 0: ask on every ticket")
	}
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 256, "connections one client address (an IPv6 /64) may hold open at once on this process's listeners, counted at accept; past it 429 and closed; --trusted-proxies are not counted; 0: no cap")
	if r.runs(roleIngress) {
		fs.DurationVar(&c.BodyTimeout, "body-timeout", 10*time.Second, "a request body must arrive within this, plus a second per --body-min-rate bytes received; else 408 and the connection is closed; 0: no bound")
		fs.Int64Var(&c.BodyMinRate, "body-min-rate", 32<<10, "bytes/s a request body must arrive at, on average, after --body-timeout")
		fs.IntVar(&c.MaxLargeBodies, "max-large-bodies", 4, "requests with a body over 64 KiB (release batches) read at once; the others wait 2 s for a turn, then get 503 + Retry-After")
		fs.Int64Var(&c.MaxUploadSize, "max-upload-size", ingress.DefaultMaxUpload, "largest file PUT /api/v1/uploads (sluice publish) takes, in bytes; past it 413 before the body is read")
	}
	if r == roleServe {
		fs.BoolVar(&c.Demo, "demo", true, "store demo objects under demo/ in the local object store at start")
	}
	registerReleaseFlags(fs, r, &c.Releases)
	fs.DurationVar(&c.ShutdownWait, "shutdown-wait", 15*time.Second, "how long running work may take to finish on SIGTERM")
	if r != roleWorker {
		// Unready first, then this long still serving: load balancers notice the 503 on
		// /readyz before the listener closes. At a terminal (serve) nobody balances.
		drain := 5 * time.Second
		if r == roleServe {
			drain = 0
		}
		fs.DurationVar(&c.DrainDelay, "drain-delay", drain, "on SIGTERM, how long /readyz answers 503 while requests are still served, before the listener closes and --shutdown-wait starts")
	}
	return c
}

// publishMode reads --publish-batches: whether concurrent tickets leave in atomic
// batches, given whether the NATS server is the embedded one.
func (c *serverConfig) publishMode(embeddedNATS bool) (queue.PublishMode, error) {
	switch c.PublishBatches {
	case "on":
		return queue.AtomicBatches, nil
	case "off":
		return queue.Pipelined, nil
	case "auto", "":
		if embeddedNATS {
			return queue.AtomicBatches, nil
		}
		return queue.Pipelined, nil
	}
	return 0, fmt.Errorf("--publish-batches: %q is not one of auto, on, off", c.PublishBatches)
}

// ticketLimits reads --ticket-rate, --ticket-burst and --trusted-proxies.
func (c *serverConfig) ticketLimits() (redis_rate.Limit, []string, error) {
	var limit redis_rate.Limit
	switch {
	case c.TicketRate < 0 || c.TicketBurst < 0:
		return limit, nil, fmt.Errorf("--ticket-rate and --ticket-burst must be 0 or more, not %d and %d", c.TicketRate, c.TicketBurst)
	case c.TicketRate > 0:
		limit = redis_rate.Limit{Rate: c.TicketRate, Burst: max(c.TicketBurst, 1), Period: time.Minute}
	}
	var proxies []string
	for p := range strings.SplitSeq(c.TrustedProxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(p); err != nil && net.ParseIP(p) == nil {
			return limit, nil, fmt.Errorf("--trusted-proxies: %q is neither an IP address nor a CIDR (like 10.0.0.0/8)", p)
		}
		proxies = append(proxies, p)
	}
	return limit, proxies, nil
}

// tracingConfig reads --otlp-endpoint and the OpenTelemetry variables that decide
// whether to export and over which protocol; the SDK reads the others itself (see
// telemetry.TracingConfig). A set flag wins over OTEL_EXPORTER_OTLP_ENDPOINT.
func tracingConfig(c *serverConfig, r role, getenv func(string) string) (telemetry.TracingConfig, error) {
	tc := telemetry.TracingConfig{Endpoint: c.OTLPEndpoint, Role: r.String(), Version: version}
	tc.Export = c.OTLPEndpoint != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		tc.Export = false
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "", "otlp":
	case "none":
		tc.Export = false
	default:
		return tc, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: sluice exports otlp or none", e)
	}
	tc.Protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if tc.Protocol == "" {
		tc.Protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch tc.Protocol {
	case "":
		tc.Protocol = telemetry.ProtocolHTTP
	case telemetry.ProtocolHTTP, telemetry.ProtocolGRPC:
	default:
		return tc, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: sluice exports %s or %s", tc.Protocol, telemetry.ProtocolHTTP, telemetry.ProtocolGRPC)
	}
	return tc, nil
}

// s3Location reads --s3-bucket, which may be s3://bucket/prefix, and --s3-prefix.
func (c *serverConfig) s3Location() (bucket, prefix string, err error) {
	return s3Location(c.S3Bucket, c.S3Prefix)
}

func s3Location(bucketFlag, prefixFlag string) (bucket, prefix string, err error) {
	bucket, prefix = bucketFlag, prefixFlag
	rest, ok := strings.CutPrefix(bucket, "s3://")
	if !ok {
		return bucket, prefix, nil
	}
	bucket, urlPrefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("--s3-bucket %s: want s3://bucket or s3://bucket/prefix", bucketFlag)
	}
	urlPrefix = strings.Trim(urlPrefix, "/")
	if urlPrefix != "" && prefix != "" && strings.Trim(prefix, "/") != urlPrefix {
		return "", "", fmt.Errorf("--s3-bucket %s and --s3-prefix %s name different prefixes", bucketFlag, prefixFlag)
	}
	if urlPrefix != "" {
		prefix = urlPrefix
	}
	return bucket, prefix, nil
}
