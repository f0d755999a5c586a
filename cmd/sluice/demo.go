package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// demoObjects are stored at start by the all-in-one so the first download works at
// once, and published to the release catalog so that it is verified (size and SHA-256)
// like a real release.
var demoObjects = []struct {
	key     string
	content func() (io.Reader, int64)
}{
	{"demo/hello.txt", func() (io.Reader, int64) {
		text := []byte("Hello from sluice. If you can read this, the whole pipeline works:\n" +
			"ticket -> JetStream -> admission -> signed link -> streaming edge.\n")
		return bytes.NewReader(text), int64(len(text))
	}},
	{"demo/sluice-demo-64MiB.bin", func() (io.Reader, int64) {
		// Deterministic bytes, so the demo file has the same SHA-256 everywhere.
		const size = 64 << 20
		return io.LimitReader(rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'}), size), size
	}},
}

// releaseQueue is where the demo objects' release events go (queue.ReleasePublisher).
type releaseQueue interface {
	PublishBatch(ctx context.Context, events []queue.ReleaseEvent) (queue.BatchResult, error)
}

// seedDemo stores the demo objects that are missing and publishes a release event for
// each; a worker verifies them into the catalog. Published again at every start, an
// event for the same bytes is the same event (its identity is object and SHA-256), so
// the catalog keeps its entry.
func seedDemo(ctx context.Context, store *objstore.Local, releases releaseQueue, log *slog.Logger) error {
	events := make([]queue.ReleaseEvent, 0, len(demoObjects))
	for _, o := range demoObjects {
		r, size := o.content()
		h := sha256.New()
		r = io.TeeReader(r, h)
		if _, err := store.Stat(ctx, o.key); err == nil {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
		} else if !errors.Is(err, objstore.ErrNotFound) {
			return err
		} else {
			if _, err := store.Put(ctx, o.key, r, size, ""); err != nil {
				return err
			}
			log.Info("stored demo object", "key", o.key, "bytes", size)
		}
		sum := hex.EncodeToString(h.Sum(nil))
		events = append(events, queue.ReleaseEvent{Identity: "obj:" + o.key + "@" + sum,
			ReleaseEvent: api.ReleaseEvent{Object: o.key, SHA256: sum, Size: size}, AcceptedAt: time.Now().UTC()})
	}
	if releases == nil {
		return nil
	}
	if _, err := releases.PublishBatch(ctx, events); err != nil {
		return fmt.Errorf("publish the demo objects to the release catalog: %w", err)
	}
	return nil
}
