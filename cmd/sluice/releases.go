package main

import (
	"context"
	"flag"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/ingress"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/queue"
)

// releaseConfig is the settings of the release pipeline.
type releaseConfig struct {
	RequirePublished bool
	MaxEvents        int64
	Parallel         int
	Attempts         int
}

func registerReleaseFlags(fs *flag.FlagSet, r role, c *releaseConfig) {
	if r.runs(roleIngress) {
		fs.BoolVar(&c.RequirePublished, "require-published", false, "serve only objects published and verified in the release catalog (objects the catalog rejected are refused whatever this says)")
	}
	if r != roleEdge {
		fs.Int64Var(&c.MaxEvents, "max-release-events", 1_000_000, "bound of the release-event queue; past it POST /api/v1/releases answers 503 + Retry-After")
	}
	if r.runs(roleWorker) {
		fs.IntVar(&c.Parallel, "release-workers", 16, "release events a worker verifies at once")
		fs.IntVar(&c.Attempts, "release-attempts", 5, "deliveries of a failing release event before it is dead-lettered")
	}
}

// releases is the release pipeline's part of the object graph.
type releases struct {
	consumer jetstream.Consumer
	catalog  *catalog.Catalog
	dead     *queue.DeadLetters
	queue    *queue.ReleasePublisher
	cfg      releaseConfig
	bucket   string
	prefix   string
}

// buildReleases sets up the release streams, the catalog's buckets and the publisher. The edge
// has no part in it.
func buildReleases(ctx context.Context, r role, d *deps, c *serverConfig) (*releases, error) {
	if r == roleEdge {
		return nil, nil
	}
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := queue.EnsureReleases(setup, d.js, releaseStream(c))
	if err != nil {
		return nil, err
	}
	pub, err := queue.NewReleasePublisher(d.nc, 1024, 30*time.Second)
	if err != nil {
		return nil, err
	}
	cat, err := catalog.Open(setup, d.js, d.rdb, catalogConfig(c))
	if err != nil {
		return nil, err
	}
	rel := &releases{consumer: cons, catalog: cat,
		dead: queue.NewDeadLetters(d.js), queue: pub, cfg: c.Releases}
	if d.s3 != nil {
		rel.bucket, rel.prefix = d.s3.Bucket(), d.s3.Prefix()
	}
	return rel, nil
}

// releaseStream is the configuration of the release stream and its dead letters.
func releaseStream(c *serverConfig) queue.ReleaseStreamConfig {
	return queue.ReleaseStreamConfig{
		StreamConfig: queue.StreamConfig{Replicas: c.NATSReplicas, MaxMsgs: c.Releases.MaxEvents, AckWait: c.AckWait},
	}
}

// catalogConfig is the catalog's: its records are key-value buckets replicated like
// the streams.
func catalogConfig(c *serverConfig) catalog.Config { return catalog.Config{Replicas: c.NATSReplicas} }

func (rel *releases) ingressConfig() ingress.ReleasesConfig {
	if rel == nil {
		return ingress.ReleasesConfig{}
	}
	return ingress.ReleasesConfig{Queue: rel.queue, Catalog: rel.catalog, DeadLetters: rel.dead,
		RequirePublished: rel.cfg.RequirePublished}
}
