package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"time"
)

// prefixHasher computes the SHA-256 of the partial file while it is downloaded: it
// follows the prefix of the file that is complete (from byte 0, without a gap) and
// reads each byte back once it is there, so when the last byte arrives little is left
// to hash. Bytes once in the prefix are never written again within a run.
type prefixHasher struct {
	t    *tracker
	file *os.File
	h    hash.Hash
	n    int64 // bytes hashed: [0, n)
	buf  []byte
	err  error
	done chan struct{}
}

func newPrefixHasher(t *tracker, f *os.File) *prefixHasher {
	return &prefixHasher{t: t, file: f, h: sha256.New(), buf: make([]byte, 1<<20), done: make(chan struct{})}
}

// follow hashes the growing prefix until ctx ends or a read fails.
func (p *prefixHasher) follow(ctx context.Context) {
	defer close(p.done)
	for ctx.Err() == nil && p.err == nil {
		if end := p.t.prefix(); end > p.n {
			p.hashTo(ctx, end)
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hashTo hashes [n, end) a block at a time, stopping early if ctx ends.
func (p *prefixHasher) hashTo(ctx context.Context, end int64) {
	for p.n < end && ctx.Err() == nil {
		k, err := p.file.ReadAt(p.buf[:min(int64(len(p.buf)), end-p.n)], p.n)
		p.h.Write(p.buf[:k])
		p.n += int64(k)
		if err != nil && p.n < end {
			p.err = fmt.Errorf("hash partial file: %w", err)
			return
		}
	}
}

// finish stops following and hashes what is left of a complete file of size bytes.
func (p *prefixHasher) finish(stop context.CancelFunc, size int64) (string, error) {
	stop()
	<-p.done
	if p.err == nil {
		p.hashTo(context.Background(), size)
	}
	if p.err != nil {
		return "", p.err
	}
	return hex.EncodeToString(p.h.Sum(nil)), nil
}

// prefix returns how many bytes from the start of the file are in it without a gap.
func (t *tracker) prefix() int64 {
	t.mu.Lock()
	spans := append([]span(nil), t.st.Done...)
	for c := range t.inflight {
		if w := c.written.Load(); w > 0 {
			spans = append(spans, span{c.start, c.start + w})
		}
	}
	t.mu.Unlock()
	spans = merge(spans)
	if len(spans) == 0 || spans[0].Start != 0 {
		return 0
	}
	return spans[0].End
}
