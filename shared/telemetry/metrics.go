package telemetry

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dl/sluice/api"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// WaitBuckets are the bounds (seconds) of the ticket wait histogram: from an instant
// admission to half an hour in a queue. The admin stats' wait percentiles use the same.
var WaitBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// latencyBuckets are for calls to NATS, Redis and the object store.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Metrics are the metrics one process reports directly. Figures read at scrape time
// (ledger, edge counters, breakers) are collectors registered next to them; see
// collectors.go. Every field is safe for concurrent use.
type Metrics struct {
	// Registry holds this process's metrics; Handler serves it.
	Registry *prometheus.Registry

	HTTPRequests        *prometheus.CounterVec   // {server, route, code}
	HTTPRequestDuration *prometheus.HistogramVec // {server, route}
	HTTPOpenConnections *prometheus.GaugeVec     // {server}

	RedisDuration   *prometheus.HistogramVec // {command}: a command, or a script's name (RedisHook)
	RedisErrors     *prometheus.CounterVec   // {command}
	NATSPublish     *prometheus.HistogramVec // {stream}
	NATSErrors      *prometheus.CounterVec   // {stream}
	StorageDuration *prometheus.HistogramVec // {operation}
	StorageErrors   *prometheus.CounterVec   // {operation}

	Admissions prometheus.Counter
	TicketWait prometheus.Histogram
	// ReleaseEvents counts release events by outcome (Release* constants), as the
	// release worker reports them (workers.ReleasesConfig.OnOutcome, wired in cmd).
	ReleaseEvents *prometheus.CounterVec

	TokenRejections *prometheus.CounterVec // {reason}: Reject* constants

	// token, when set, is the bearer token /metrics requires (a Prometheus scrape
	// config's authorization.credentials); empty: /metrics is open to whoever reaches
	// the port.
	token string
}

// NewMetrics builds the metrics of one process running role (serve, ingress, worker,
// edge) at version, in a registry of its own that also holds the Go runtime and
// process collectors. With token set, Handler requires it as a bearer token.
func NewMetrics(role, version, token string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		token:    token,
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameHTTPRequests, Help: "HTTP requests answered, by server (ingress, edge), route pattern and status code.",
		}, []string{"server", "route", "code"}),
		HTTPRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: NameHTTPRequestDuration, Help: "Time to answer an HTTP request (for downloads: the whole stream), by server and route pattern.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600},
		}, []string{"server", "route"}),
		HTTPOpenConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameHTTPOpenConnections, Help: "Client connections open now, by server.",
		}, []string{"server"}),
		RedisDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: NameRedisDuration, Help: "Latency of Redis commands, by command (a Lua script: by its name, such as admission.admit).", Buckets: latencyBuckets,
		}, []string{"command"}),
		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRedisErrors, Help: "Redis commands that failed (not counting nil answers), by command.",
		}, []string{"command"}),
		NATSPublish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: NameNATSPublishDuration, Help: "Time from JetStream publish to its acknowledgement, by stream.", Buckets: latencyBuckets,
		}, []string{"stream"}),
		NATSErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameNATSPublishErrors, Help: "JetStream publishes that failed or were refused, by stream.",
		}, []string{"stream"}),
		StorageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: NameStorageDuration, Help: "Latency of object store calls (open: until the first byte is available), by operation.", Buckets: latencyBuckets,
		}, []string{"operation"}),
		StorageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameStorageErrors, Help: "Object store calls that failed with unavailability, by operation.",
		}, []string{"operation"}),
		Admissions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameAdmissions, Help: "Tickets admitted and given a download link by this worker.",
		}),
		TicketWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: NameTicketWait, Help: "Time from a ticket's creation to its download link being ready.", Buckets: WaitBuckets,
		}),
		ReleaseEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameReleaseEvents, Help: "Release events processed, by outcome (verified, rejected, superseded, duplicate, dead_lettered).",
		}, []string{"outcome"}),
		TokenRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameTokenRejections, Help: "Download requests refused at the edge, by reason (invalid, expired, slot_not_held, too_many, object_changed).",
		}, []string{"reason"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: NameBuildInfo, Help: "Always 1; the labels say which role and version runs.",
		ConstLabels: prometheus.Labels{"role": role, "version": version},
	})
	build.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build,
		m.HTTPRequests, m.HTTPRequestDuration, m.HTTPOpenConnections,
		m.RedisDuration, m.RedisErrors, m.NATSPublish, m.NATSErrors, m.StorageDuration, m.StorageErrors,
		m.Admissions, m.TicketWait, m.ReleaseEvents, m.TokenRejections,
	)
	// Known label values start at zero, so rate() works from the first scrape.
	for _, r := range []string{RejectInvalid, RejectExpired, RejectSlotNotHeld, RejectTooMany, RejectObjectChanged} {
		m.TokenRejections.WithLabelValues(r)
	}
	for _, o := range []string{ReleaseVerified, ReleaseRejected, ReleaseSuperseded, ReleaseDuplicate, ReleaseDeadLettered} {
		m.ReleaseEvents.WithLabelValues(o)
	}
	return m
}

// Handler serves the registry in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry, Timeout: 10 * time.Second})
	if m.token == "" {
		return h
	}
	want := []byte(m.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in
		// constant time.
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice metrics"`)
			w.Header().Set("Content-Type", api.ProblemContentType)
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(api.NewProblem(http.StatusUnauthorized, "metrics_token_required",
				"metrics need the bearer token set by SLUICE_METRICS_TOKEN", "send Authorization: Bearer <token> (a Prometheus scrape config's authorization.credentials)", r.URL.Path))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ObserveRequest records one answered HTTP request. route must be a pattern (never a
// raw path: paths hold tokens and object keys).
func (m *Metrics) ObserveRequest(server, route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.HTTPRequests.WithLabelValues(server, route, strconv.Itoa(code)).Inc()
	m.HTTPRequestDuration.WithLabelValues(server, route).Observe(d.Seconds())
}

// Admitted records a ticket whose link was published after waiting wait.
func (m *Metrics) Admitted(wait time.Duration) {
	m.Admissions.Inc()
	m.TicketWait.Observe(max(wait, 0).Seconds())
}

// Rejected records a download refused at the edge for reason (a Reject* constant).
func (m *Metrics) Rejected(reason string) { m.TokenRejections.WithLabelValues(reason).Inc() }
