package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxFailures is how many requests in a row may fail without a byte arriving before
// the download gives up.
const maxFailures = 8

// run is one pass over the missing ranges with a pool of connections.
type run struct {
	d       *Download
	t       *tracker
	limiter *rate.Limiter
	etag    string
	ranges  bool

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []span
	active   map[*chunk]struct{} // chunks being fetched
	workers  int                 // workers alive
	failures int                 // consecutive failed requests
	err      error               // first fatal error
	peak     atomic.Int32
}

// all fetches every missing range, with up to Connections requests at once.
func (r *run) all(ctx context.Context) error {
	r.cond = sync.NewCond(&r.mu)
	r.active = map[*chunk]struct{}{}
	size := r.t.st.Size
	todo := missing(r.t.st.Done, size)
	if !r.ranges {
		todo = []span{{0, size}}
		if size == 0 {
			todo = nil
		}
	}
	conns := r.d.o.Connections
	if !r.ranges {
		conns = 1
	}
	// One long request per connection by default: a link may stop accepting new
	// connections after a while (sluice's token TTL), and an idle connection takes
	// over half of the biggest remaining range anyway (next).
	chunkSize := r.d.o.ChunkSize
	if chunkSize <= 0 {
		chunkSize = max((total(todo)+int64(conns)-1)/int64(conns), minSteal)
	}
	for _, s := range todo {
		if !r.ranges {
			r.queue = append(r.queue, s)
			continue
		}
		for at := s.Start; at < s.End; at += chunkSize {
			r.queue = append(r.queue, span{at, min(at+chunkSize, s.End)})
		}
	}
	if len(r.queue) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { r.mu.Lock(); r.cond.Broadcast(); r.mu.Unlock() })
	defer stop()

	var wg sync.WaitGroup
	saverDone := make(chan struct{})
	go func() { // the state file follows the bytes, so a kill loses at most SaveEvery of them
		defer close(saverDone)
		tick := time.NewTicker(r.d.o.SaveEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := r.t.save(); err != nil {
					r.fail(err)
					cancel()
				}
			}
		}
	}()
	n := conns // with ranges, connections without a queued range split busy ones
	if !r.ranges {
		n = 1
	}
	r.workers = n
	for i := range n {
		wg.Go(func() { r.worker(ctx, i) })
	}
	wg.Wait()
	cancel()
	<-saverDone
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if err := context.Cause(ctx); err != nil && len(r.queue) > 0 {
		return err
	}
	return nil
}

func (r *run) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

// minSteal is the smallest remaining range an idle connection splits in two.
const minSteal = 1 << 20

// next takes a range to fetch: a queued one, or the second half of the biggest range
// still being fetched. False when there is nothing left or the run is over.
func (r *run) next(ctx context.Context) (*chunk, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.err != nil || ctx.Err() != nil {
			return nil, false
		}
		if len(r.queue) > 0 {
			c := newChunk(r.queue[0])
			r.queue = r.queue[1:]
			r.active[c] = struct{}{}
			return c, true
		}
		if len(r.active) == 0 {
			return nil, false
		}
		if r.ranges {
			var big *chunk
			var left int64
			for c := range r.active {
				if l := c.end.Load() - c.start - c.written.Load(); l > left {
					big, left = c, l
				}
			}
			if left >= 2*minSteal {
				end := big.end.Load()
				mid := end - left/2
				big.end.Store(mid) // its fetch stops at mid
				c := newChunk(span{mid, end})
				r.active[c] = struct{}{}
				return c, true
			}
		}
		r.cond.Wait() // a busy range may come back
	}
}

// finish settles a chunk: what is left of it goes back to the queue.
func (r *run) finish(c *chunk) {
	w := c.written.Load()
	rest := span{c.start + w, c.end.Load()}
	r.mu.Lock()
	delete(r.active, c)
	if rest.len() > 0 {
		r.queue = append([]span{rest}, r.queue...)
	}
	if w > 0 {
		r.failures = 0
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *run) worker(ctx context.Context, id int) {
	retired := false
	defer func() {
		r.mu.Lock()
		if !retired {
			r.workers--
		}
		r.cond.Broadcast()
		r.mu.Unlock()
	}()
	for {
		c, ok := r.next(ctx)
		if !ok {
			return
		}
		r.t.begin(c)
		err := r.fetch(ctx, c)
		r.t.end(c)
		r.finish(c)
		if err == nil || ctx.Err() != nil {
			continue
		}
		var he *HTTPError
		switch {
		case errors.As(err, &he) && he.Status == http.StatusTooManyRequests:
			// The link allows fewer connections: this one steps back unless it is the last.
			r.mu.Lock()
			if r.workers > 1 {
				r.workers--
				retired = true
			}
			left := r.workers
			r.mu.Unlock()
			if retired {
				r.d.log.Info("the server allows fewer connections; using fewer", "connections", left)
				return
			}
			sleep(ctx, max(he.RetryAfter, time.Second))
		case errors.As(err, &he) && !temporary(he.Status):
			r.fail(err) // 403, 404, 410, 412, 416: retrying will not help
			return
		case errors.Is(err, ErrChanged):
			r.fail(err)
			return
		default:
			r.mu.Lock()
			r.failures++
			n := r.failures
			r.mu.Unlock()
			if n >= maxFailures {
				r.fail(fmt.Errorf("download failed %d times in a row: %w", n, err))
				return
			}
			r.d.log.Info("range request failed; retrying", "worker", id, "err", err)
			wait := backoff(n)
			if errors.As(err, &he) {
				wait = max(wait, he.RetryAfter)
			}
			sleep(ctx, wait)
		}
	}
}

// fetch requests c's range and writes what arrives into the partial file.
func (r *run) fetch(ctx context.Context, c *chunk) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stallErr := fmt.Errorf("nothing received for %s", r.d.o.StallTimeout)
	stall := time.AfterFunc(r.d.o.StallTimeout, func() { cancel(stallErr) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.d.o.URL, nil)
	if err != nil {
		return err
	}
	want := span{c.start, c.end.Load()}
	whole := want.Start == 0 && want.End == r.t.st.Size
	if r.ranges {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", want.Start, want.End-1))
		req.Header.Set("If-Range", r.etag) // a changed object answers 200, never mixed bytes
	}
	resp, err := r.d.o.HTTP.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause == stallErr {
			return cause
		}
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && r.ranges:
		if err := checkContentRange(resp.Header.Get("Content-Range"), want, r.t.st.Size); err != nil {
			return err
		}
	case resp.StatusCode == http.StatusOK && (whole || !r.ranges):
	case resp.StatusCode == http.StatusOK:
		return fmt.Errorf("%w: the server sent the whole object for a range request (If-Range no longer matches)", ErrChanged)
	default:
		return httpError(resp, resp.Body)
	}
	if et := resp.Header.Get("ETag"); r.ranges && et != r.etag {
		return fmt.Errorf("%w: version %s, expected %s", ErrChanged, et, r.etag)
	}

	n := r.d.conn.Add(1)
	defer r.d.conn.Add(-1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			break
		}
	}
	buf := make([]byte, 64<<10)
	if r.limiter != nil {
		buf = buf[:min(len(buf), r.limiter.Burst())]
	}
	off := want.Start
	for {
		end := c.end.Load() // moves down when another connection takes the tail
		if off >= end {
			return nil
		}
		k, rerr := resp.Body.Read(buf[:min(int64(len(buf)), end-off)])
		if k > 0 {
			stall.Reset(r.d.o.StallTimeout)
			// The tail may have been taken while this read ran; those bytes are the
			// other connection's to write.
			k = int(min(int64(k), max(c.end.Load()-off, 0)))
			if _, werr := r.t.file.WriteAt(buf[:k], off); werr != nil {
				err := fmt.Errorf("write partial file: %w", werr)
				r.fail(err)
				return err
			}
			off += int64(k)
			c.written.Add(int64(k))
			r.d.done.Add(int64(k))
			if r.limiter != nil {
				if err := r.limiter.WaitN(ctx, k); err != nil {
					return context.Cause(ctx)
				}
			}
		}
		if rerr == io.EOF {
			if off < c.end.Load() {
				return fmt.Errorf("connection closed after %d of %d bytes: %w", off-want.Start, want.len(), io.ErrUnexpectedEOF)
			}
			return nil
		}
		if rerr != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return rerr
		}
	}
}

// checkContentRange makes sure a 206 carries exactly the range asked for.
func checkContentRange(h string, want span, size int64) error {
	var a, b, n int64
	if _, err := fmt.Sscanf(strings.TrimSpace(h), "bytes %d-%d/%d", &a, &b, &n); err != nil {
		return fmt.Errorf("206 with Content-Range %q: %w", h, err)
	}
	if n != size {
		return fmt.Errorf("%w: size is now %s bytes", ErrChanged, strconv.FormatInt(n, 10))
	}
	if a != want.Start || b != want.End-1 {
		return fmt.Errorf("asked for bytes %d-%d, got %d-%d", want.Start, want.End-1, a, b)
	}
	return nil
}
