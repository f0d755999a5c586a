package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/queue"
)

// `sluice init` creates what the roles keep their records and work in: the JetStream
// streams and consumers, the record buckets, the catalog's buckets and the object
// bucket. The roles create what they need too (a missing init breaks nothing), but a
// fleet started together then races a settling cluster from every process at once;
// init does it once, first, and waits for NATS and S3 to answer.

// initFlags are the server flags init reads, defined once, where the roles define them.
var initFlags = []string{
	"nats-url", "nats-replicas", "max-tickets", "ack-wait", "ticket-ack-wait", "max-release-events", "retain",
	"s3-endpoint", "s3-bucket", "s3-prefix", "s3-access-key", "s3-secret-key", "s3-use-ssl",
	"s3-region", "s3-ca-file", "s3-sse",
}

func initCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice init", flag.ContinueOnError)
	cfg := initConfig(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to keep trying until NATS and S3 answer and accept the configuration")
	return &ffcli.Command{
		Name:       "init",
		ShortUsage: "sluice init [flags]",
		ShortHelp:  "create the JetStream streams, the record buckets and the object bucket (idempotent; the first step of a deployment)",
		LongHelp: "Creates or updates, as the roles would: the ticket and release streams with their\n" +
			"consumers and the dead-letter stream, the record buckets (API keys, settings,\n" +
			"idempotency, ended tickets, the release catalog) and, with --s3-endpoint, the\n" +
			"bucket. It retries until NATS and S3 answer, up to --timeout, and exits 0 when\n" +
			"everything exists. Running it again changes nothing. Give it the same\n" +
			"SLUICE_NATS_*, SLUICE_S3_* and SLUICE_RETAIN as the roles.",
		FlagSet: fs,
		Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return &exitError{exitUsage, fmt.Errorf("init takes no arguments, got %q (run 'sluice init --help')", args)}
			}
			if cfg.NATSURL == "" {
				return &exitError{exitUsage, errors.New("init: set --nats-url (SLUICE_NATS_URL): serve embeds its NATS and creates everything itself")}
			}
			return runInit(ctx, cfg, *timeout, os.Stdout)
		},
	}
}

// initConfig defines initFlags on fs with the worker's definitions (the worker has
// every one of them), so that their names, defaults and meaning cannot drift.
func initConfig(fs *flag.FlagSet) *serverConfig {
	roleFlags := flag.NewFlagSet("", flag.ContinueOnError)
	c := registerServerFlags(roleFlags, roleWorker)
	for _, name := range initFlags {
		f := roleFlags.Lookup(name)
		usage := f.Usage
		if name == "s3-endpoint" {
			usage = "S3/MinIO endpoint host:port whose bucket (--s3-bucket) init creates; empty: no bucket (objects on local disk)"
		}
		fs.Var(f.Value, name, usage)
	}
	return c
}

// runInit creates everything, each step retried until it succeeds or timeout passes,
// and prints one line per thing it made sure of.
func runInit(ctx context.Context, c *serverConfig, timeout time.Duration, out io.Writer) error {
	if c.Retain <= 0 {
		return fmt.Errorf("--retain must be positive, not %s", c.Retain)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Connect returns at once and keeps trying in the background; each creation below
	// is retried until the connection works (queue.Ensure).
	nc, err := queue.Connect(c.NATSURL, "sluice-init", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	done := func(what string) { fmt.Fprintf(out, "ok  %s\n", what) }
	if _, err := queue.EnsureTickets(ctx, js, ticketStream(c)); err != nil {
		return fmt.Errorf("%w (is JetStream enabled on %s?)", err, c.NATSURL)
	}
	done("stream " + queue.TicketStream + ", consumer " + queue.AdmissionConsumer)
	if _, err := ensureRecords(ctx, js, c); err != nil {
		return err
	}
	done("record buckets " + queue.KeysBucket + ", " + queue.SettingsBucket + ", " + queue.IdempotencyBucket + ", " + queue.EndedBucket)
	if _, err := queue.EnsureReleases(ctx, js, releaseStream(c)); err != nil {
		return err
	}
	done("streams " + queue.ReleaseStream + ", " + queue.DeadReleaseStream + ", consumer " + queue.ReleaseConsumer)
	// Only the buckets are wanted here: the catalog's derived state in Redis is the
	// roles' business.
	if _, err := catalog.Open(ctx, js, nil, catalogConfig(c)); err != nil {
		return err
	}
	done("catalog buckets " + catalog.EntryBucket + ", " + catalog.EventBucket)
	if c.S3Endpoint == "" {
		fmt.Fprintln(out, "--s3-endpoint is empty: no bucket to create")
		return nil
	}
	s3, err := openS3(c)
	if err != nil {
		return err
	}
	// S3 may still be starting: retried with backoff (the last failure is returned).
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return struct{}{}, s3.EnsureBucket(attempt)
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(timeout),
		backoff.WithNotify(func(err error, wait time.Duration) {
			log.Warn("storage is not answering yet; trying again", "err", err, "in", wait.Round(time.Millisecond))
		}))
	if err != nil {
		return fmt.Errorf("%w (is S3/MinIO up at %s, and may these credentials create buckets?)", err, c.S3Endpoint)
	}
	done("bucket " + s3.Bucket() + " at " + c.S3Endpoint)
	return nil
}
