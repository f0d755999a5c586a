package signer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Pacing and slow clients.
//
// Every chunk is written under a deadline of IdleTimeout, so a client that accepts
// nothing for that long is cut. The chunk size adapts to the client: it halves when a
// write took longer than chunkTarget and doubles when it took less than a tenth of it,
// between minChunk and maxChunk (or the copy buffer). A slow but steady link therefore
// writes small chunks and is never mistaken for a stalled one: only a client slower
// than minChunk per IdleTimeout (16 KiB per minute by default) meets the idle rule.
// A response starts from the size the previous one on the same connection reached
// (minChunk on a new connection), so a fast client's keep-alive ranges go out in one
// write each instead of growing from minChunk every time.
//
// The kernel's socket buffers hide a client's pace until they are full: the chunk has
// grown by then, and a client slower than that chunk per IdleTimeout (256 KiB per
// minute, about 4.4 KB/s, by default) is cut at that moment as idle. Links slower
// than that need a longer --idle-timeout.
//
// The idle rule alone would let a client that reads a byte now and then hold its slot
// for ever. The minimum-rate rule bounds it: once a stream is MinRateWindow old, the
// edge looks at the last MinRateWindow; if it spent at least half of it waiting on the
// client (blocked in a write) and the client accepted less than MinRate bytes per
// second of that waiting, the stream ends. Time spent waiting on the edge's own
// bandwidth limits or on storage is not the client's, so a throttled download is never
// cut for being slow.

const (
	minChunk    = 16 << 10
	maxChunk    = 256 << 10
	chunkTarget = time.Second
)

// errTooSlow: the client read below the minimum rate for a whole window.
var errTooSlow = errors.New("client reads below the minimum rate")

// progress is what the copy loop tells the slot holder about one stream.
type progress struct {
	sent    atomic.Int64 // bytes the client accepted
	blocked atomic.Int64 // nanoseconds spent in finished writes to the client
	writing atomic.Int64 // unix nanoseconds when the write in progress began, 0 if none
}

// clientTime is the time spent waiting on the client so far, the write in progress
// included.
func (p *progress) clientTime(now time.Time) time.Duration {
	d := time.Duration(p.blocked.Load())
	if since := p.writing.Load(); since != 0 {
		d += max(now.Sub(time.Unix(0, since)), 0)
	}
	return d
}

// pacer sizes the chunks of one copy.
type pacer struct {
	f     *flow
	chunk int
	max   int
}

func newPacer(f *flow) *pacer {
	// Small at first: the first chunk that meets a slow client must still go through
	// within the idle timeout. Fast clients double it on every write.
	return &pacer{f: f, chunk: minChunk, max: maxChunk}
}

// resume starts from the chunk size an earlier response on the same connection
// reached (0: none), within the pacer's bounds.
func (p *pacer) resume(chunk int) {
	if chunk > 0 {
		p.chunk = min(max(chunk, minChunk), p.max)
	}
}

// limit caps the chunk size (the copy buffer's length).
func (p *pacer) limit(n int) {
	p.max = min(p.max, n)
	p.chunk = min(p.chunk, p.max)
}

// run sends n bytes with send, chunk by chunk, waiting on the bandwidth limits before
// each chunk. send returns how many bytes the client accepted.
func (p *pacer) run(ctx context.Context, n int64, send func(size int) (int64, error)) error {
	for n > 0 {
		size := int(min(int64(p.chunk), n))
		if p.f.limited() {
			size = min(size, p.f.maxChunk())
			if err := p.f.wait(ctx, size); err != nil {
				return fmt.Errorf("wait for bandwidth: %w", withCause(ctx, err))
			}
		}
		start := time.Now()
		written, err := send(size)
		n -= written
		if err != nil {
			return err
		}
		switch took := time.Since(start); {
		case took > chunkTarget:
			p.chunk = max(minChunk, p.chunk/2)
		case took < chunkTarget/10:
			p.chunk = min(p.max, p.chunk*2)
		}
	}
	return nil
}

// rateWatch applies the minimum-rate rule to one stream: sample is called every
// tick with the stream's progress, and answers errTooSlow when the stream must end.
type rateWatch struct {
	minRate float64 // bytes per second
	window  time.Duration
	samples []rateSample // oldest first, spanning at most a window and a tick
}

type rateSample struct {
	at     time.Time
	sent   int64
	client time.Duration
}

func (w *rateWatch) sample(now time.Time, p *progress) error {
	s := rateSample{at: now, sent: p.sent.Load(), client: p.clientTime(now)}
	w.samples = append(w.samples, s)
	// Keep the newest sample at least a window old as the base.
	for len(w.samples) > 2 && now.Sub(w.samples[1].at) >= w.window {
		w.samples = w.samples[1:]
	}
	base := w.samples[0]
	if now.Sub(base.at) < w.window {
		return nil // warming up
	}
	span, waited := now.Sub(base.at), s.client-base.client
	if waited < span/2 {
		return nil // the client was not what held the stream back
	}
	got := float64(s.sent-base.sent) / waited.Seconds()
	if got < w.minRate {
		return fmt.Errorf("%w: %.0f bytes/s over the last %s, minimum %.0f", errTooSlow, got, span.Round(time.Millisecond), w.minRate)
	}
	return nil
}
