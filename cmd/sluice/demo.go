package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"

	"github.com/sluice-dl/sluice/shared/objstore"
)

// demoObjects are stored at start by the all-in-one so the first download works at once.
var demoObjects = []struct {
	key  string
	size int64
}{
	{"demo/hello.txt", -1},
	{"demo/sluice-demo-64MiB.bin", 64 << 20},
}

func seedDemo(ctx context.Context, store *objstore.Local, log *slog.Logger) error {
	for _, o := range demoObjects {
		if _, err := store.Stat(ctx, o.key); err == nil {
			continue
		} else if !errors.Is(err, objstore.ErrNotFound) {
			return err
		}
		var r io.Reader
		size := o.size
		if size < 0 {
			text := []byte("Hello from sluice. If you can read this, the whole pipeline works:\n" +
				"ticket -> JetStream -> admission -> signed link -> streaming edge.\n")
			r, size = bytes.NewReader(text), int64(len(text))
		} else {
			// Deterministic bytes, so the demo file has the same SHA-256 everywhere.
			r = io.LimitReader(rand.NewChaCha8([32]byte{'s', 'l', 'u', 'i', 'c', 'e'}), size)
		}
		if _, err := store.Put(ctx, o.key, r, size, ""); err != nil {
			return err
		}
		log.Info("stored demo object", "key", o.key, "bytes", size)
	}
	return nil
}
