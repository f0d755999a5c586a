package signer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/health"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/token"
)

// EdgeConfig is what an Edge is built from. Keyring, Store and Slots are required.
type EdgeConfig struct {
	Keyring *token.Keyring
	Store   objstore.Store
	Slots   SlotKeeper
	Logger  *slog.Logger     // nil: discard
	Now     func() time.Time // token expiry and ledger grace; nil: time.Now

	// RenewEvery is how often a running stream renews its slot and reports progress (5s).
	// Keep it well below the ledger's stream lease.
	RenewEvery time.Duration
	// RenewGrace is how long a stream keeps flowing while the ledger cannot be reached,
	// counted from the last renewal it confirmed (20s). Keep it below the ledger's stream
	// lease: past the lease the slot may be granted again, and the edge must have stopped.
	RenewGrace time.Duration
	// HoldIdle is how long a keep-alive client connection stays registered in the
	// ledger after its last response, so that its next range request needs no ledger
	// call (1s, at most RenewEvery); negative: every response registers on its own.
	// The ticket of a download that ended this way is done that much later.
	HoldIdle time.Duration
	// BufferSize is the copy buffer of one stream, pooled (256 KiB).
	BufferSize int
	// IdleTimeout ends a stream whose client accepts no data for this long (60s).
	IdleTimeout time.Duration
	// MinRate ends a stream whose client, once MinRateWindow has passed, reads slower
	// than this many bytes per second over the last MinRateWindow while the edge waits
	// on it (see pace.go); 0 turns the rule off. MinRateWindow defaults to 60s.
	MinRate       int64
	MinRateWindow time.Duration
	// DownloadRate caps each download, all its connections on this edge together, in
	// bytes per second, unless its token carries its own rate; 0: no cap.
	DownloadRate int64
	// EgressRate caps what this edge sends in all, shared equally by the downloads it
	// serves, in bytes per second; 0: no cap.
	EgressRate int64
	// Observer is told about refusals and streams (metrics, traces, logs); nil: none.
	Observer EdgeObserver
	// Revalidate is how long the store's answer that an object is at the version a
	// token names holds: requests within it do not Stat the object again (versions.go).
	// 0: every request asks the store.
	Revalidate time.Duration
}

const (
	defaultRenewEvery  = 5 * time.Second
	defaultRenewGrace  = 20 * time.Second
	defaultBufferSize  = 256 << 10
	defaultHoldIdle    = time.Second
	defaultIdleTimeout = 60 * time.Second
	defaultRateWindow  = 60 * time.Second
	// endTimeout bounds EndStream, which runs after the client's context is gone.
	endTimeout = 5 * time.Second
	// retryAfter paces clients told 429 or 503.
	retryAfter = 5 * time.Second
)

// Edge is the streaming edge: it serves GET and HEAD /d/{token} (and /d/{token}/{name},
// the name only there for clients that save under the last path segment) from the
// object store, holding the ticket's slot in the ledger for as long as bytes flow.
//
// The http.Server running it should set ReadHeaderTimeout and IdleTimeout but no
// WriteTimeout, which would cut long downloads: the edge bounds stalled writes itself.
type Edge struct {
	keys        *token.Keyring
	store       objstore.Store
	slots       SlotKeeper
	log         *slog.Logger
	now         func() time.Time
	renewEvery  time.Duration
	renewGrace  time.Duration
	holdIdle    time.Duration // 0: no hold outlives its response
	idleTimeout time.Duration
	minRate     int64
	// minRateWindow is the span the minimum rate is measured over.
	minRateWindow time.Duration
	throttle      *throttle
	buffers       sync.Pool // *[]byte of BufferSize
	stats         edgeStats
	observer      EdgeObserver
	versions      versions

	holdsMu sync.Mutex
	holds   map[*slotHold]struct{}  // every hold not yet released
	conns   map[net.Conn]*connHolds // the client connections holding any
}

// edgeStats are the edge's running counters.
type edgeStats struct {
	streams       atomic.Int64
	bytesSent     atomic.Int64
	zeroCopyBytes atomic.Int64
}

// Stats is a snapshot of what the edge is doing.
type Stats struct {
	Streams       int64 `json:"streams"`         // responses streaming object bytes now
	Downloads     int   `json:"downloads"`       // distinct downloads among them
	BytesSent     int64 `json:"bytes_sent"`      // object bytes sent since start
	ZeroCopyBytes int64 `json:"zero_copy_bytes"` // of which with sendfile(2)
	Goroutines    int   `json:"goroutines"`      // of the whole process
}

// Stats returns the edge's counters now.
func (e *Edge) Stats() Stats {
	return Stats{
		Streams:       e.stats.streams.Load(),
		Downloads:     e.throttle.active(),
		BytesSent:     e.stats.bytesSent.Load(),
		ZeroCopyBytes: e.stats.zeroCopyBytes.Load(),
		Goroutines:    runtime.NumGoroutine(),
	}
}

// NewEdge builds an Edge. It panics when Keyring, Store or Slots is missing, as
// http.ServeMux does on a bad pattern: that is a wiring mistake, not a runtime failure.
func NewEdge(cfg EdgeConfig) *Edge {
	if cfg.Keyring == nil || cfg.Store == nil || cfg.Slots == nil {
		panic("signer: NewEdge needs a Keyring, a Store and a SlotKeeper")
	}
	e := &Edge{
		keys:          cfg.Keyring,
		store:         cfg.Store,
		slots:         cfg.Slots,
		log:           cfg.Logger,
		now:           cfg.Now,
		renewEvery:    orDefault(cfg.RenewEvery, defaultRenewEvery),
		renewGrace:    orDefault(cfg.RenewGrace, defaultRenewGrace),
		idleTimeout:   orDefault(cfg.IdleTimeout, defaultIdleTimeout),
		minRate:       max(cfg.MinRate, 0),
		minRateWindow: orDefault(cfg.MinRateWindow, defaultRateWindow),
		throttle:      newThrottle(cfg.DownloadRate, cfg.EgressRate),
		observer:      cfg.Observer,
		versions:      versions{ttl: max(cfg.Revalidate, 0)},
		holds:         make(map[*slotHold]struct{}),
		conns:         make(map[net.Conn]*connHolds),
	}
	switch {
	case cfg.HoldIdle < 0:
	case cfg.HoldIdle == 0:
		e.holdIdle = min(defaultHoldIdle, e.renewEvery)
	default:
		e.holdIdle = min(cfg.HoldIdle, e.renewEvery)
	}
	if e.observer == nil {
		e.observer = nopObserver{}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "edge")
	if e.now == nil {
		e.now = time.Now
	}
	size := orDefault(cfg.BufferSize, defaultBufferSize)
	e.buffers.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return e
}

// Handler routes the edge's endpoints: GET (and so HEAD) /d/{token},
// /d/{token}/{filename...} and /healthz. Stats are for an operations port of the
// caller's, never this one: clients reach it.
func (e *Edge) Handler() http.Handler {
	mux := http.NewServeMux()
	download := e.handle(e.serveDownload)
	mux.Handle("GET /d/{token}", download)
	mux.Handle("GET /d/{token}/{filename...}", download)
	// What ServeMux would refuse in plain text is refused as problem details too.
	wrongMethod := e.handle(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Allow", "GET, HEAD")
		return errMethodNotAllowed
	})
	mux.Handle("/d/{token}", wrongMethod)
	mux.Handle("/d/{token}/{filename...}", wrongMethod)
	mux.Handle("/", e.handle(func(http.ResponseWriter, *http.Request) error { return errNoRoute }))
	mux.HandleFunc("GET /healthz", health.Live)
	return mux
}

// abortedError is a failure after the status line went out: the only honest thing
// left is to cut the connection, so the client sees a truncated body.
type abortedError struct{ err error }

func (e *abortedError) Error() string { return "response aborted: " + e.err.Error() }
func (e *abortedError) Unwrap() error { return e.err }

// unsatisfiableError answers 416 for an object of size bytes.
type unsatisfiableError struct{ size int64 }

func (e *unsatisfiableError) Error() string { return errRangeUnsatisfiable.Error() }
func (e *unsatisfiableError) Unwrap() error { return errRangeUnsatisfiable }

var (
	errPreconditionFailed = errors.New("precondition failed")
	errObjectChanged      = errors.New("object changed since the ticket was issued")
	errLedgerUnavailable  = errors.New("admission ledger unavailable")
	errMethodNotAllowed   = errors.New("method not allowed")
	errNoRoute            = errors.New("no such endpoint")
)

// refused reports whether err is the ledger's definite answer to a stream (see
// SlotKeeper) rather than a failure to ask it.
func refused(err error) bool {
	return errors.Is(err, admission.ErrSlotNotHeld) || errors.Is(err, admission.ErrTooManyConnections)
}

// problem is an error as the client sees it: code is stable, for programs (the
// ingress's codes where the meaning is the same).
type problem struct {
	status     int
	code       string
	message    string
	hint       string
	retryAfter time.Duration
}

// redactedInstance stands for the request path in problem details: the path holds
// the token, a bearer credential that must not be echoed into bodies clients and
// proxies may log.
const redactedInstance = "/d/redacted"

// handle adapts a handler that returns errors; it is the one place errors become
// responses.
func (e *Edge) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		if _, ok := errors.AsType[*abortedError](err); ok {
			// Cutting the connection is how net/http tells a client that the body is
			// incomplete; ErrAbortHandler does it without logging a stack trace.
			panic(http.ErrAbortHandler)
		}
		if r.Context().Err() != nil {
			return // the client is gone; nobody reads an answer
		}
		p := problemFor(err)
		e.observer.Refused(r.Context(), RefusalReason(err))
		if p.status >= 500 {
			e.log.Warn("download refused", "status", p.status, "err", err)
		} else {
			e.log.Debug("download refused", "status", p.status, "err", err)
		}
		hdr := w.Header()
		for _, k := range []string{"Content-Length", "Content-Range", "Content-Disposition", "Accept-Ranges"} {
			hdr.Del(k)
		}
		if u, ok := errors.AsType[*unsatisfiableError](err); ok {
			hdr.Set("Content-Range", "bytes */"+strconv.FormatInt(u.size, 10))
		}
		if p.retryAfter > 0 {
			hdr.Set("Retry-After", strconv.Itoa(int(p.retryAfter/time.Second)))
		}
		hdr.Set("Content-Type", api.ProblemContentType)
		hdr.Set("Cache-Control", "no-store")
		hdr.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(p.status)
		_ = json.NewEncoder(w).Encode(api.NewProblem(p.status, p.code, p.message, p.hint, redactedInstance))
	})
}

// problemFor maps an error to its status, message and hint.
func problemFor(err error) problem {
	const newTicket = "request a new ticket for this file"
	var denied *objstore.AccessError
	switch {
	case errors.Is(err, token.ErrInvalid):
		return problem{http.StatusForbidden, "invalid_link", "invalid download link", "use the download_url of your ticket exactly as given, or " + newTicket, 0}
	case errors.Is(err, token.ErrExpired):
		return problem{http.StatusGone, "link_expired", "download link expired", newTicket, 0}
	case errors.Is(err, errObjectChanged), errors.Is(err, objstore.ErrChanged):
		return problem{http.StatusGone, "object_changed", errObjectChanged.Error(), newTicket + " to get the current version", 0}
	case errors.Is(err, objstore.ErrNotFound), errors.Is(err, objstore.ErrInvalidKey):
		// A token names a key the ingress accepted, but the store may still refuse it
		// (a link signed before a stricter rule, a file system with shorter names): for
		// the client that object is not there.
		return problem{http.StatusNotFound, "object_not_found", "object not found", "the file has been removed; check the catalog", 0}
	case errors.As(err, &denied):
		// The store answers but refuses this edge's credentials: say so, with S3's
		// reason, rather than "unavailable", which sends the operator to the network.
		return problem{http.StatusServiceUnavailable, "storage_access_denied", denied.Error(),
			"an operator must fix the edge's storage credentials or permissions (--s3-access-key, AWS_*, the IAM role); retry later", 30 * time.Second}
	case errors.Is(err, objstore.ErrUnavailable):
		return problem{http.StatusServiceUnavailable, "storage_unavailable", "storage unavailable", "retry after the Retry-After delay", retryAfter}
	case errors.Is(err, errPreconditionFailed):
		return problem{http.StatusPreconditionFailed, "precondition_failed", "precondition failed", "the file no longer matches If-Match or If-Unmodified-Since; download it again from the start", 0}
	case errors.Is(err, errRangeUnsatisfiable):
		return problem{http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable", "range not satisfiable", "request a range within the file's size (see Content-Range), or the whole file", 0}
	case errors.Is(err, errMethodNotAllowed):
		return problem{http.StatusMethodNotAllowed, "method_not_allowed", "only GET and HEAD download", "fetch the link with GET", 0}
	case errors.Is(err, errNoRoute):
		return problem{http.StatusNotFound, "no_route", "no such endpoint", "download links look like /d/<token>; use the download_url of your ticket", 0}
	case errors.Is(err, errLedgerUnavailable):
		return problem{http.StatusServiceUnavailable, "redis_unavailable", "admission ledger unavailable", "retry after the Retry-After delay", retryAfter}
	case errors.Is(err, admission.ErrSlotNotHeld):
		return problem{http.StatusGone, "slot_not_held", admission.ErrSlotNotHeld.Error(), newTicket, 0}
	case errors.Is(err, admission.ErrTooManyConnections):
		return problem{http.StatusTooManyRequests, "too_many_connections", admission.ErrTooManyConnections.Error(),
			"close another download on this link, then retry", retryAfter}
	}
	return problem{http.StatusInternalServerError, "internal", "internal error", "retry later", 0}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// cleanupContext is for calls that must run even when ctx is canceled (the client
// left), bounded by their own timeout.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
}
