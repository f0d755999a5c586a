package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// publishConfig is the settings of `sluice publish`.
type publishConfig struct {
	Server   string
	APIKey   string
	Channel  string
	Prefix   string
	DataDir  string
	Wait     time.Duration
	Progress string
	JSON     bool

	S3Endpoint, S3Bucket, S3AccessKey, S3SecretKey, S3Region string
	S3Prefix, S3CAFile, S3SSE                                string
	S3UseSSL                                                 bool
}

func publishCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice publish", flag.ContinueOnError)
	c := &publishConfig{}
	fs.StringVar(&c.Server, "server", "http://localhost:8080", "the sluice API")
	fs.StringVar(&c.APIKey, "api-key", "", "an API key with publisher scope (SLUICE_API_KEY)")
	fs.StringVar(&c.Channel, "channel", "", "release channel, like stable: '<channel>/latest' then names the newest verified file")
	fs.StringVar(&c.Prefix, "prefix", "", "object key prefix, like releases/v1.2/ (the key is prefix + file name)")
	fs.StringVar(&c.DataDir, "data-dir", "./var", "the server's data directory, when objects are on local disk (<data-dir>/objects)")
	fs.DurationVar(&c.Wait, "wait", 2*time.Minute, "wait this long for the server to verify the files (0: do not wait)")
	fs.StringVar(&c.Progress, "progress", "auto", "progress display: bar, plain, or auto (a bar on a terminal)")
	fs.BoolVar(&c.JSON, "json", false, "print one JSON event per line on stdout (uploaded, published, verified, note, error) instead of text on stderr")
	fs.StringVar(&c.S3Endpoint, "s3-endpoint", "", "S3/MinIO endpoint host:port; empty writes to <data-dir>/objects")
	fs.StringVar(&c.S3Bucket, "s3-bucket", "sluice", "bucket holding the objects, or s3://bucket/prefix (the server's --s3-bucket)")
	fs.StringVar(&c.S3Prefix, "s3-prefix", "", "the server's --s3-prefix: where in the bucket its keys live")
	fs.StringVar(&c.S3AccessKey, "s3-access-key", "", "S3 access key; with --s3-secret-key empty too, AWS_* variables, the shared credentials file, then an IAM role")
	fs.StringVar(&c.S3SecretKey, "s3-secret-key", "", "S3 secret key (see --s3-access-key)")
	fs.BoolVar(&c.S3UseSSL, "s3-use-ssl", false, "use HTTPS to reach S3")
	fs.StringVar(&c.S3Region, "s3-region", "", "S3 region (optional)")
	fs.StringVar(&c.S3CAFile, "s3-ca-file", "", "PEM file of certificate authorities to trust for S3's HTTPS, besides the system's")
	fs.StringVar(&c.S3SSE, "s3-sse", "", "server-side encryption of the uploads: s3 (SSE-S3) or kms:<key-id> (SSE-KMS)")
	return &ffcli.Command{
		Name:       "publish",
		ShortUsage: "sluice publish FILE... [flags]",
		ShortHelp:  "upload release files to the store and announce them (SHA-256 computed while uploading)",
		LongHelp: "Uploads each FILE to the object store (multipart for big files), computing its SHA-256 on the way,\n" +
			"then publishes one release event per file to POST /api/v1/releases and waits until the server has\n" +
			"verified them. Publishing the same file again is recognised as a duplicate.",
		FlagSet: fs,
		Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return &exitError{exitUsage, errors.New("publish: name at least one FILE (run 'sluice publish --help')")}
			}
			out := &publishOutput{w: os.Stderr}
			if c.JSON {
				out.js = &jsonReporter{w: os.Stdout}
			}
			err := runPublish(ctx, c, args, out)
			if err != nil {
				out.event("error", map[string]any{"error": err.Error(), "code": client.CodeOf(err)})
			}
			return err
		},
	}
}

// uploaded is one file in the store with what the release event says about it.
type uploaded struct {
	Object  string `json:"object"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Channel string `json:"channel,omitempty"`
}

// publishOutput shows a run of sluice publish to a person (lines on stderr) or, with
// --json, to a program (one JSON event per line on stdout, as sluice get --json).
type publishOutput struct {
	w  io.Writer
	js *jsonReporter // nil: text
}

// line prints text for a person; nothing with --json.
func (o *publishOutput) line(format string, args ...any) {
	if o.js == nil {
		fmt.Fprintf(o.w, format+"\n", args...)
	}
}

// event emits a JSON event; nothing without --json.
func (o *publishOutput) event(name string, fields any) {
	if o.js != nil {
		o.js.emit(name, fields)
	}
}

func (o *publishOutput) note(msg string) {
	o.line("%s", msg)
	o.event("note", map[string]string{"message": msg})
}

func runPublish(ctx context.Context, c *publishConfig, files []string, out *publishOutput) error {
	if c.APIKey == "" {
		return errors.New("publish: set SLUICE_API_KEY (or --api-key) to an API key with publisher scope")
	}
	if c.Channel != "" {
		if err := catalog.ValidateChannel(c.Channel); err != nil {
			return fmt.Errorf("--channel: %w", err)
		}
	}
	api, err := client.New(c.Server, client.Options{APIKey: c.APIKey, Timeout: 2 * time.Minute, UserAgent: "sluice/" + version})
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	up, err := newUploader(c)
	if err != nil {
		return err
	}
	bar := out.js == nil && (c.Progress == "bar" || (c.Progress == "auto" && uploadsToTerminal(out.w)))
	var events []uploaded
	for _, f := range files {
		ev, err := uploadOne(ctx, up, c, f, out, bar)
		if err != nil {
			return err
		}
		events = append(events, ev)
	}
	if err := announce(ctx, c, api, events, out); err != nil {
		return err
	}
	if c.Wait <= 0 {
		return nil
	}
	return waitVerified(ctx, c, api, events, out)
}

func uploadsToTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// uploader puts one file into the store and returns the stored size.
type uploader func(ctx context.Context, key string, r io.Reader, size int64, contentType, channel string) error

func newUploader(c *publishConfig) (uploader, error) {
	if c.S3Endpoint == "" {
		dir := filepath.Join(c.DataDir, "objects")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("object directory: %w", err)
		}
		local, err := objstore.NewLocal(dir)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, key string, r io.Reader, size int64, ct, _ string) error {
			_, err := local.Put(ctx, key, r, size, ct)
			return err
		}, nil
	}
	bucket, prefix, err := s3Location(c.S3Bucket, c.S3Prefix)
	if err != nil {
		return nil, err
	}
	store, err := objstore.NewS3(objstore.S3Config{Endpoint: c.S3Endpoint, Bucket: bucket, Prefix: prefix,
		AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, UseSSL: c.S3UseSSL, Region: c.S3Region,
		CAFile: c.S3CAFile, SSE: c.S3SSE})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, key string, r io.Reader, size int64, ct, channel string) error {
		meta := map[string]string{}
		if channel != "" {
			meta["Sluice-Channel"] = channel // read from MinIO notifications
		}
		// Uploaded in 16 MiB parts past one part's size.
		if _, err := store.PutWithMetadata(ctx, key, r, size, ct, meta); err != nil {
			return fmt.Errorf("upload to s3://%s/%s%s: %w", bucket, store.Prefix(), key, err)
		}
		return nil
	}, nil
}

// uploadOne uploads a file, hashing the bytes as they go to the store.
func uploadOne(ctx context.Context, up uploader, c *publishConfig, file string, out *publishOutput, bar bool) (uploaded, error) {
	f, err := os.Open(file)
	if err != nil {
		return uploaded{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return uploaded{}, err
	}
	if !st.Mode().IsRegular() {
		return uploaded{}, fmt.Errorf("%s is not a regular file", file)
	}
	key := c.Prefix + filepath.Base(file)
	if err := objstore.ValidateKey(key); err != nil {
		return uploaded{}, fmt.Errorf("--prefix %q with %s: %w", c.Prefix, file, err)
	}
	ct := mime.TypeByExtension(path.Ext(key))
	h := sha256.New()
	var r io.Reader = io.TeeReader(f, h)
	start := time.Now()
	if bar {
		pb := progressbar.NewOptions64(st.Size(),
			progressbar.OptionSetWriter(out.w), progressbar.OptionSetDescription(key),
			progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionOnCompletion(func() { fmt.Fprintln(out.w) }),
			progressbar.OptionFullWidth())
		defer pb.Close()
		r = io.TeeReader(r, pb)
	} else {
		out.line("uploading %s (%d bytes)", key, st.Size())
	}
	if err := up(ctx, key, r, st.Size(), ct, c.Channel); err != nil {
		return uploaded{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if !bar {
		out.line("uploaded  %s in %s, sha256 %s", key, time.Since(start).Round(time.Millisecond), sum)
	}
	ev := uploaded{Object: key, SHA256: sum, Size: st.Size(), Channel: c.Channel}
	out.event("uploaded", ev)
	return ev, nil
}

// publishRetry is how sluice publish rides out an outage of the server: for up to
// --wait (2 minutes when --wait is 0, as the events must still go in), telling the
// user once per outage. An ingress without a release queue will not grow one.
func publishRetry(c *publishConfig, deadline time.Time, out *publishOutput) client.RetryPolicy {
	budget := c.Wait
	if budget <= 0 {
		budget = 2 * time.Minute
	}
	return client.RetryPolicy{Budget: budget, Deadline: deadline,
		Retryable: func(err error) bool {
			return client.Retryable(err) && client.CodeOf(err) != "releases_disabled"
		},
		Notify: out.note}
}

// publishError says what a failed API call means for the user of sluice publish.
func publishError(c *publishConfig, err error) error {
	if _, ok := errors.AsType[*client.Error](err); ok {
		return keyAdvice(err, "SLUICE_API_KEY or --api-key")
	}
	if !client.ConnectionFailed(err) {
		return err
	}
	return unreachable(c.Server, err)
}

// announce publishes the events, sending the batch again through an outage or while
// the server's queue is full (what was stored already comes back as a duplicate).
func announce(ctx context.Context, c *publishConfig, api *client.Client, events []uploaded, out *publishOutput) error {
	var body bytes.Buffer
	for _, ev := range events {
		j, _ := json.Marshal(ev)
		body.Write(j)
		body.WriteByte('\n')
	}
	var res client.ReleaseResult
	err := publishRetry(c, time.Time{}, out).Do(ctx, func() (err error) {
		res, err = api.PublishReleases(ctx, body.Bytes())
		return err
	})
	if err != nil {
		return publishError(c, fmt.Errorf("publish: %w", err))
	}
	for _, r := range res.Rejected {
		return fmt.Errorf("the server refused %s: %s", events[r.Line-1].Object, r.Error)
	}
	out.line("published %d release events (%d new, %d already known)", len(events), res.Accepted, res.Duplicates)
	out.event("published", map[string]int{"events": len(events), "accepted": res.Accepted, "duplicates": res.Duplicates})
	return nil
}

// waitVerified polls the catalog until every file is verified; a rejection fails.
func waitVerified(ctx context.Context, c *publishConfig, api *client.Client, events []uploaded, out *publishOutput) error {
	deadline := time.Now().Add(c.Wait)
	pending := map[string]uploaded{}
	for _, ev := range events {
		pending[ev.Object] = ev
	}
	for len(pending) > 0 {
		for key, ev := range pending {
			var e catalog.Entry
			err := publishRetry(c, deadline, out).Do(ctx, func() (err error) {
				e, err = api.Object(ctx, key)
				return err
			})
			if client.StatusOf(err) == http.StatusNotFound {
				continue // not recorded yet
			}
			if err != nil {
				return publishError(c, fmt.Errorf("read the catalog entry of %s: %w", key, err))
			}
			switch {
			case e.State == catalog.StateRejected && e.SHA256 == ev.SHA256:
				return fmt.Errorf("the server rejected %s: %s", key, e.Reason)
			case e.State == catalog.StateVerified && e.SHA256 == ev.SHA256:
				out.line("verified  %s", key)
				out.event("verified", map[string]string{"object": key, "sha256": e.SHA256, "channel": e.Channel})
				delete(pending, key)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d file(s) not verified within --wait %s; see GET /api/v1/objects/<key>", len(pending), c.Wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if c.Channel != "" {
		out.line("%s/latest now names the newest verified release of channel %s", c.Channel, c.Channel)
	}
	return nil
}
