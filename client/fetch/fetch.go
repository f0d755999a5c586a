// Package fetch downloads one URL into a partial file with parallel HTTP range
// requests, and resumes it: a small state file next to the partial file records which
// byte ranges of which version (ETag) are already there. A version change is caught
// (ETag, If-Range) and starts the file over rather than mixing two versions. Too many
// connections (429) make it use fewer.
package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Errors callers branch on.
var (
	// ErrGone means the link no longer works (410): expired, or its ticket ended.
	// What is in the partial file stays valid; a new link continues it.
	ErrGone = errors.New("download link no longer valid")
	// ErrChanged means the object changed during the download; the partial file will
	// start over with the next attempt.
	ErrChanged = errors.New("the object changed during the download")
)

// HTTPError is a refusal from the server that serves the bytes.
type HTTPError struct {
	Status     int
	Message    string
	Hint       string
	RetryAfter time.Duration
	sentinel   error
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("download link answered %d %s", e.Status, e.Message)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *HTTPError) Unwrap() error { return e.sentinel }

// HTTPStatus is the refusal's status, for callers that retry by status.
func (e *HTTPError) HTTPStatus() int { return e.Status }

// RetryAfterHint is the refusal's Retry-After; 0 when absent.
func (e *HTTPError) RetryAfterHint() time.Duration { return e.RetryAfter }

// Options describe one download.
type Options struct {
	URL string
	// Part is the partial file; its state is kept in StatePath(Part).
	Part string
	// Object names what is downloaded; a state recorded for another object is ignored.
	Object string
	// Connections is how many range requests run at once (default 4); fewer are used
	// when the server answers 429.
	Connections int
	// ChunkSize is the largest range one request asks for; 0 picks one from the size.
	ChunkSize int64
	// MaxRate caps all connections together, in bytes per second; 0 is no cap.
	MaxRate int64
	// StallTimeout ends a request that received nothing for this long (it is retried);
	// default 60s.
	StallTimeout time.Duration
	// SaveEvery is how often the state file is written while bytes flow (default 1s).
	SaveEvery time.Duration
	// Hash computes the SHA-256 of the complete file (Result.SHA256) while it
	// downloads, following the complete prefix of the partial file.
	Hash bool
	HTTP *http.Client
	Log  *slog.Logger
}

// Result says what a finished download did.
type Result struct {
	Size        int64
	ETag        string
	Resumed     int64 // bytes already in the partial file at the start
	Fetched     int64 // bytes received by this run
	Connections int   // the most requests that streamed at once
	// Restarted is why an existing partial file was discarded ("" if it was not).
	Restarted string
	// SHA256 is the complete file's digest (hex) with Options.Hash; "" if it could not
	// be computed (the file is complete all the same: hash it afresh).
	SHA256 string
}

// Download is one download in progress; Progress may be read while Run runs.
type Download struct {
	o    Options
	log  *slog.Logger
	done atomic.Int64 // bytes in the partial file (resumed + fetched)
	size atomic.Int64
	conn atomic.Int32 // requests streaming now
}

// New prepares a download.
func New(o Options) *Download {
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = time.Second
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	d := &Download{o: o, log: o.Log.With("component", "fetch")}
	d.size.Store(-1)
	return d
}

// Progress returns the bytes in the partial file, the object's size (-1 until known;
// once known, done includes the bytes resumed from an earlier run) and the
// connections streaming now.
func (d *Download) Progress() (done, size int64, conns int) {
	return d.done.Load(), d.size.Load(), int(d.conn.Load())
}

// Run downloads until the partial file is complete, ctx ends or an error that
// retrying cannot fix. The state file is saved on every exit, so what arrived is kept.
func (d *Download) Run(ctx context.Context) (Result, error) {
	head, err := d.head(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{Size: head.size, ETag: head.etag}

	st, err := loadState(d.o.Part)
	if err != nil {
		return res, err
	}
	_, partErr := os.Stat(d.o.Part)
	switch {
	case st == nil && partErr == nil:
		res.Restarted = "the partial file has no state file"
	case st == nil:
	case st.ETag != head.etag || st.Size != head.size:
		res.Restarted = fmt.Sprintf("the object changed since the partial download (version %s, now %s)", st.ETag, head.etag)
	case st.Object != d.o.Object:
		res.Restarted = fmt.Sprintf("the partial file holds %q", st.Object)
	case partErr != nil:
		res.Restarted = "the partial file is gone"
	}
	if st == nil || res.Restarted != "" || !head.ranges {
		st = &state{Version: stateVersion, Object: d.o.Object, Size: head.size, ETag: head.etag}
		if err := RemoveState(d.o.Part); err != nil {
			return res, fmt.Errorf("discard partial file: %w", err)
		}
	}
	if res.Restarted != "" {
		d.log.Info("starting over", "reason", res.Restarted)
	}
	f, err := os.OpenFile(d.o.Part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return res, fmt.Errorf("open partial file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(head.size); err != nil {
		return res, fmt.Errorf("size partial file: %w", err)
	}
	res.Resumed = total(st.Done)
	d.done.Store(res.Resumed)
	d.size.Store(head.size) // after done: a known size means done counts the resumed bytes

	t := &tracker{st: st, file: f, part: d.o.Part, inflight: map[*chunk]struct{}{}}
	if err := t.save(); err != nil {
		return res, err
	}
	var limiter *rate.Limiter
	if d.o.MaxRate > 0 {
		limiter = rate.NewLimiter(rate.Limit(d.o.MaxRate), int(min(max(d.o.MaxRate/8, 16<<10), 256<<10)))
	}
	r := &run{d: d, t: t, limiter: limiter, etag: head.etag, ranges: head.ranges}
	var hasher *prefixHasher
	var stopHashing context.CancelFunc
	if d.o.Hash {
		var hctx context.Context
		hctx, stopHashing = context.WithCancel(ctx)
		hasher = newPrefixHasher(t, f)
		go hasher.follow(hctx)
		defer func() { stopHashing(); <-hasher.done }() // before f is closed
	}
	err = r.all(ctx)
	if serr := t.save(); serr != nil && err == nil {
		err = serr
	}
	res.Fetched = d.done.Load() - res.Resumed
	res.Connections = int(r.peak.Load())
	if err != nil {
		return res, err
	}
	if got := total(t.st.Done); got != head.size {
		return res, fmt.Errorf("download incomplete: %d of %d bytes", got, head.size)
	}
	if hasher != nil {
		if res.SHA256, err = hasher.finish(stopHashing, head.size); err != nil {
			d.log.Warn("hash while downloading", "err", err)
		}
	}
	return res, nil
}

type headInfo struct {
	size   int64
	etag   string
	ranges bool
}

// head learns the size, version and range support. HEAD takes no slot on sluice's edge.
// A link that refuses HEAD (a presigned S3 URL in direct mode is signed for GET only)
// is asked for its first byte instead, and the size read from Content-Range.
func (d *Download) head(ctx context.Context) (headInfo, error) {
	method := http.MethodHead
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, d.o.URL, nil)
		if err != nil {
			return headInfo{}, fmt.Errorf("download link: %w", err)
		}
		if method == http.MethodGet {
			req.Header.Set("Range", "bytes=0-0")
		}
		resp, err := d.o.HTTP.Do(req)
		if err != nil {
			if ctx.Err() != nil || attempt >= 4 {
				return headInfo{}, fmt.Errorf("reach download link: %w", err)
			}
			sleep(ctx, backoff(attempt))
			continue
		}
		resp.Body.Close()
		if method == http.MethodHead && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed) {
			method = http.MethodGet
			continue
		}
		size, ranged := resp.ContentLength, false
		if resp.StatusCode == http.StatusPartialContent && method == http.MethodGet {
			size, ranged = rangeTotal(resp.Header.Get("Content-Range")), true
		}
		if resp.StatusCode != http.StatusOK && !ranged {
			herr := httpError(resp, nil)
			if temporary(resp.StatusCode) && attempt < 4 {
				sleep(ctx, max(herr.RetryAfter, backoff(attempt)))
				continue
			}
			return headInfo{}, herr
		}
		if size < 0 {
			return headInfo{}, errors.New("download link gives no Content-Length; cannot download in ranges")
		}
		etag := resp.Header.Get("ETag")
		return headInfo{
			size:   size,
			etag:   etag,
			ranges: (ranged || resp.Header.Get("Accept-Ranges") == "bytes") && etag != "" && !strings.HasPrefix(etag, "W/"),
		}, nil
	}
}

// rangeTotal is the complete length in a Content-Range header ("bytes 0-0/1234"), or
// -1 when it does not say.
func rangeTotal(h string) int64 {
	_, total, ok := strings.Cut(h, "/")
	if !ok || !strings.HasPrefix(h, "bytes ") {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// httpError reads the server's JSON {error, hint} if it sent one.
func httpError(resp *http.Response, body io.Reader) *HTTPError {
	e := &HTTPError{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	if body != nil {
		var j struct {
			Error string `json:"error"`
			Hint  string `json:"hint"`
		}
		if json.NewDecoder(io.LimitReader(body, 64<<10)).Decode(&j) == nil && j.Error != "" {
			e.Message, e.Hint = j.Error, j.Hint
		}
	}
	if resp.StatusCode == http.StatusGone {
		e.sentinel = ErrGone
	}
	return e
}

func temporary(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusBadGateway ||
		status == http.StatusGatewayTimeout || status == http.StatusInternalServerError ||
		status == http.StatusTooManyRequests
}

func backoff(attempt int) time.Duration {
	return min(250*time.Millisecond<<min(attempt, 5), 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// tracker knows which bytes are in the partial file and writes the state file.
type tracker struct {
	mu       sync.Mutex
	st       *state
	inflight map[*chunk]struct{}
	file     *os.File
	part     string
	saveMu   sync.Mutex
}

// chunk is one range being fetched: written bytes from start are in the file. Its end
// may move down while it is fetched, when an idle connection takes over its tail.
type chunk struct {
	start   int64
	end     atomic.Int64
	written atomic.Int64
}

func newChunk(s span) *chunk {
	c := &chunk{start: s.Start}
	c.end.Store(s.End)
	return c
}

func (t *tracker) begin(c *chunk) {
	t.mu.Lock()
	t.inflight[c] = struct{}{}
	t.mu.Unlock()
}

// end records what c wrote as done and forgets c.
func (t *tracker) end(c *chunk) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, c)
	if w := c.written.Load(); w > 0 {
		t.st.Done = merge(append(t.st.Done, span{c.start, c.start + w}))
	}
}

// save makes the written bytes durable (fsync), then records them in the state file,
// so the state never claims bytes the file does not hold.
func (t *tracker) save() error {
	t.saveMu.Lock()
	defer t.saveMu.Unlock()
	t.mu.Lock()
	snap := *t.st
	snap.Done = append([]span(nil), t.st.Done...)
	for c := range t.inflight {
		if w := c.written.Load(); w > 0 {
			snap.Done = append(snap.Done, span{c.start, c.start + w})
		}
	}
	t.mu.Unlock()
	snap.Done = merge(snap.Done)
	if err := t.file.Sync(); err != nil {
		return fmt.Errorf("sync partial file: %w", err)
	}
	return saveState(t.part, &snap)
}
