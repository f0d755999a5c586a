package signer

import (
	"context"
	"strconv"
	"sync"

	"golang.org/x/time/rate"

	"github.com/sluice-dl/sluice/shared/token"
)

// Bandwidth limits. Two token buckets (golang.org/x/time/rate) may stand between the
// object and the client, and every chunk a stream sends waits on both:
//
//   - one per download (ticket and grant), shared by all of its connections on this
//     edge, so that eight parallel ranges go no faster than one stream. Its rate is
//     the token's Claims.RateBps (set per tenant by the worker) or else the edge's
//     default. With several edges serving one download each holds its own bucket, so
//     the download may get up to one full rate per edge it reaches;
//   - one per edge node (EgressRate), shared by every download on the node. Its
//     reservations are served first come, first served, each connection holding at
//     most one, and each asks for the node quantum divided by the number of
//     connections its download has open here: every download gets one quantum per
//     round, an equal share of the node however many connections it opens.

// limitChunk is the most one wait asks of a bucket: at most an eighth of a second of
// the rate (so the rate holds over short spans), at least minChunk.
func limitChunk(bps int64) int {
	return int(max(minChunk, min(bps/8, maxChunk)))
}

// nodeQuantum is what one download may send per round of the node's bucket. It is
// below the smallest copy buffer, so that every download can use its whole share.
const nodeQuantum = 128 << 10

// throttle holds the edge's buckets.
type throttle struct {
	defaultBps int64
	node       *rate.Limiter // nil: no node cap
	nodeChunk  int           // the node quantum

	mu        sync.Mutex
	downloads map[string]*downloadFlow
}

func newThrottle(defaultBps, nodeBps int64) *throttle {
	t := &throttle{defaultBps: max(defaultBps, 0), downloads: make(map[string]*downloadFlow)}
	if nodeBps > 0 {
		burst := limitChunk(nodeBps)
		t.nodeChunk = min(burst, nodeQuantum)
		t.node = rate.NewLimiter(rate.Limit(nodeBps), burst)
	}
	return t
}

// downloadFlow is one download's bucket and the connections sharing it on this edge.
type downloadFlow struct {
	key   string
	lim   *rate.Limiter // nil: no per-download limit
	chunk int
	conns int // guarded by throttle.mu
}

// flow is one connection's view of the limits.
type flow struct {
	t  *throttle
	dl *downloadFlow
}

// open registers a connection of the download claims names; close must follow.
func (t *throttle) open(c token.Claims) *flow {
	key := c.Ticket + "/" + strconv.FormatInt(c.Epoch, 10)
	t.mu.Lock()
	defer t.mu.Unlock()
	dl, ok := t.downloads[key]
	if !ok {
		dl = &downloadFlow{key: key}
		bps := c.RateBps
		if bps <= 0 {
			bps = t.defaultBps
		}
		if bps > 0 {
			dl.chunk = limitChunk(bps)
			dl.lim = rate.NewLimiter(rate.Limit(bps), dl.chunk)
		}
		t.downloads[key] = dl
	}
	dl.conns++
	return &flow{t: t, dl: dl}
}

func (f *flow) close() {
	f.t.mu.Lock()
	defer f.t.mu.Unlock()
	if f.dl.conns--; f.dl.conns == 0 {
		delete(f.t.downloads, f.dl.key)
	}
}

// limited reports whether any bucket applies to this connection.
func (f *flow) limited() bool { return f.dl.lim != nil || f.t.node != nil }

// maxChunk is the largest chunk a wait may ask for now.
func (f *flow) maxChunk() int {
	n := maxChunk
	if f.dl.lim != nil {
		n = min(n, f.dl.chunk)
	}
	if f.t.node != nil {
		f.t.mu.Lock()
		conns := f.dl.conns
		f.t.mu.Unlock()
		n = min(n, max(4<<10, f.t.nodeChunk/max(conns, 1)))
	}
	return n
}

// wait blocks until n bytes may be sent, n at most maxChunk().
func (f *flow) wait(ctx context.Context, n int) error {
	if f.dl.lim != nil {
		if err := f.dl.lim.WaitN(ctx, min(n, f.dl.chunk)); err != nil {
			return err
		}
	}
	if f.t.node != nil {
		if err := f.t.node.WaitN(ctx, min(n, f.t.nodeChunk)); err != nil {
			return err
		}
	}
	return nil
}

// active returns how many downloads have a connection on this edge.
func (t *throttle) active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.downloads)
}
