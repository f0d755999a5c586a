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

	"github.com/dustin/go-humanize"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/shared/catalog"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// publishConfig is the settings of `sluice publish`.
type publishConfig struct {
	clientConfig
	Channel  string
	Prefix   string
	Wait     time.Duration
	Progress string
	JSON     bool
}

func publishCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice publish", flag.ContinueOnError)
	c := &publishConfig{}
	registerClientFlags(fs, &c.clientConfig)
	fs.StringVar(&c.Channel, "channel", "", "release channel, like stable: '<channel>/latest' then names the newest verified file")
	fs.StringVar(&c.Prefix, "prefix", "", "object key prefix, like releases/v1.2/ (the key is prefix + file name)")
	fs.DurationVar(&c.Wait, "wait", 2*time.Minute, "wait this long for the server to verify the files (0: do not wait)")
	fs.StringVar(&c.Progress, "progress", "auto", "progress display: bar, plain, or auto (a bar on a terminal)")
	fs.BoolVar(&c.JSON, "json", false, "print one JSON event per line on stdout (uploaded, published, verified, note, error) instead of text on stderr")
	return &ffcli.Command{
		Name:       "publish",
		ShortUsage: "sluice publish FILE... [flags]",
		ShortHelp:  "upload release files through the API and announce them (SHA-256 computed by the server)",
		LongHelp: "Uploads each FILE to the server (PUT /api/v1/uploads/<prefix><name>), which streams it into its\n" +
			"object store and computes its SHA-256, then publishes one release event per file to\n" +
			"POST /api/v1/releases and waits until a worker has verified them. Needs only SLUICE_SERVER and\n" +
			"a publisher key in SLUICE_API_KEY (or --api-key-file): no access to the server's disk or storage.\n" +
			"A failed upload is sent again whole; a file the server already holds verified is not sent again.\n\n" +
			"Exit codes: 0 verified (or published, with --wait 0), 1 other error, 2 usage, 4 rejected or\n" +
			"dead-lettered by the server (the reason is printed), 7 server error, 8 API key refused.",
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
			err := runPublish(ctx, c, args, out, os.Getenv)
			if err != nil {
				out.event("error", map[string]any{"error": err.Error(), "code": client.CodeOf(err)})
			}
			return err
		},
	}
}

// publishOutput shows a run of sluice publish to a person (lines on stderr) or, with
// --json, to a program (one JSON event per line on stdout, as sluice get --json).
type publishOutput struct {
	w   io.Writer
	js  *jsonReporter // nil: text
	bar bool          // a progress bar per upload
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

func runPublish(ctx context.Context, c *publishConfig, files []string, out *publishOutput, getenv func(string) string) error {
	if c.Progress != "auto" && c.Progress != "bar" && c.Progress != "plain" {
		return &exitError{exitUsage, fmt.Errorf("--progress must be auto, bar or plain, got %q", c.Progress)}
	}
	if c.Channel != "" {
		if err := catalog.ValidateChannel(c.Channel); err != nil {
			return &exitError{exitUsage, fmt.Errorf("--channel: %w", err)}
		}
	}
	api, err := c.client(getenv, "publisher")
	if err != nil {
		return err
	}
	out.bar = out.js == nil && (c.Progress == "bar" || (c.Progress == "auto" && isTerminal(out.w)))
	// Every file is checked before the first is sent: a typo in the last name does
	// not leave the others published alone.
	locals := make([]localFile, len(files))
	named := map[string]string{} // key -> the file published under it
	for i, name := range files {
		if locals[i], err = openLocal(name, c.Prefix); err != nil {
			return err
		}
		defer locals[i].f.Close()
		if other, dup := named[locals[i].key]; dup {
			return &exitError{exitUsage, fmt.Errorf("%s and %s would both be published as %s: publish them with different --prefix values", other, name, locals[i].key)}
		}
		named[locals[i].key] = name
	}
	var events []client.ReleaseEvent
	for _, lf := range locals {
		ev, err := uploadOne(ctx, c, api, lf, out)
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

// localFile is a file named on the command line with the key it is published under.
type localFile struct {
	name, key string
	f         *os.File
	size      int64
}

func openLocal(name, prefix string) (localFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return localFile{}, &exitError{exitUsage, err}
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err != nil {
		f.Close()
		return localFile{}, &exitError{exitUsage, err}
	}
	key := prefix + filepath.Base(name)
	if err := objstore.ValidateKey(key); err != nil {
		f.Close()
		return localFile{}, &exitError{exitUsage, fmt.Errorf("--prefix %q with %s: %w", prefix, name, err)}
	}
	return localFile{name: name, key: key, f: f, size: st.Size()}, nil
}

// uploadOne sends a file to the server, which stores it and computes its SHA-256.
// The local digest goes along (Content-Digest): the server refuses bytes damaged on
// the way, and does not take again a file it already holds verified.
func uploadOne(ctx context.Context, c *publishConfig, api *client.Client, lf localFile, out *publishOutput) (client.ReleaseEvent, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(lf.f, 0, lf.size)); err != nil {
		return client.ReleaseEvent{}, fmt.Errorf("read %s: %w", lf.name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	file := client.UploadFile{Key: lf.key, Body: lf.f, Size: lf.size, SHA256: sum,
		ContentType: mime.TypeByExtension(path.Ext(lf.key))}
	start := time.Now()
	var finish func()
	if out.bar {
		file.Sent, finish = progressBar(out.w, lf.key, lf.size)
	} else {
		out.line("uploading %s (%s)", lf.key, humanize.IBytes(uint64(lf.size)))
	}
	var up client.Upload
	err := uploadRetry(c, out).Do(ctx, func() (err error) {
		up, err = api.Upload(ctx, file)
		return err
	})
	if finish != nil {
		finish()
	}
	if err != nil {
		return client.ReleaseEvent{}, publishError(c, fmt.Errorf("upload %s: %w", lf.name, err))
	}
	if up.SHA256 != sum || up.Size != lf.size {
		return client.ReleaseEvent{}, fmt.Errorf("upload %s: the server stored %d bytes with sha256 %s, the file has %d bytes with %s (did it change while it was sent?)",
			lf.name, up.Size, up.SHA256, lf.size, sum)
	}
	how := "in " + time.Since(start).Round(time.Millisecond).String()
	if !up.Stored {
		how = "already on the server"
	}
	out.line("uploaded  %s %s, sha256 %s", lf.key, how, up.SHA256)
	ev := client.ReleaseEvent{Object: up.Object, SHA256: up.SHA256, Size: up.Size, Channel: c.Channel}
	out.event("uploaded", map[string]any{"object": ev.Object, "sha256": ev.SHA256, "size": ev.Size,
		"channel": ev.Channel, "stored": up.Stored})
	return ev, nil
}

// progressBar draws an upload's progress (mpb, as sluice get); sent moves it, done
// ends it.
func progressBar(w io.Writer, name string, size int64) (sent func(int64), done func()) {
	p := mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	bar := p.AddBar(size,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace)),
	)
	// A retried upload starts again at 0: the bar follows the bytes of the attempt.
	return func(n int64) { bar.SetCurrent(n) }, func() {
		if !bar.Completed() {
			bar.Abort(false)
		}
		p.Wait()
	}
}

// uploadRetry rides out an outage of the server during an upload, sending the file
// again whole, for up to --wait (2 minutes when --wait is 0).
func uploadRetry(c *publishConfig, out *publishOutput) client.RetryPolicy {
	p := publishRetry(c, time.Time{}, out)
	p.Retryable = func(err error) bool {
		return client.Retryable(err) && client.CodeOf(err) != "uploads_disabled"
	}
	return p
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

// publishError says what a failed API call means for the user of sluice publish,
// naming the setting to change, with the exit code of the client commands.
func publishError(c *publishConfig, err error) error {
	return apiExit(&c.clientConfig, err)
}

// announce publishes the events, sending the batch again through an outage or while
// the server's queue is full (what was stored already comes back as a duplicate).
func announce(ctx context.Context, c *publishConfig, api *client.Client, events []client.ReleaseEvent, out *publishOutput) error {
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
	if len(res.Rejected) > 0 { // the first refusal is the one reported
		r := res.Rejected[0]
		if r.Line < 1 || r.Line > len(events) {
			return &exitError{exitFailure, fmt.Errorf("the server refused line %d of a batch of %d release events: %s", r.Line, len(events), r.Error)}
		}
		return &exitError{exitRejected, fmt.Errorf("the server refused the release event of %s: %s", events[r.Line-1].Object, r.Error)}
	}
	out.line("published %d release events (%d new, %d already known)", len(events), res.Accepted, res.Duplicates)
	out.event("published", map[string]int{"events": len(events), "accepted": res.Accepted, "duplicates": res.Duplicates})
	return nil
}

// waitVerified polls the catalog until every file is verified; a rejection fails.
func waitVerified(ctx context.Context, c *publishConfig, api *client.Client, events []client.ReleaseEvent, out *publishOutput) error {
	deadline := time.Now().Add(c.Wait)
	pending := map[string]client.ReleaseEvent{}
	for _, ev := range events {
		pending[ev.Object] = ev
	}
	for len(pending) > 0 {
		for key, ev := range pending {
			var e client.CatalogEntry
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
			case e.State == client.StateRejected && e.SHA256 == ev.SHA256:
				return &exitError{exitRejected, fmt.Errorf("the server rejected %s: %s", key, e.Reason)}
			case e.State == client.StatePending && e.SHA256 == ev.SHA256 && e.Reason != "":
				// A pending entry with a reason: its event was dead-lettered, and nothing
				// but a replay (or a new event) moves it on. Waiting longer is pointless.
				return &exitError{exitRejected, fmt.Errorf("the server could not verify %s: %s (an operator lists it with `sluice admin releases dead` and replays it with `sluice admin releases replay ID`)", key, e.Reason)}
			case e.State == client.StateVerified && e.SHA256 == ev.SHA256:
				out.line("verified  %s", key)
				out.event("verified", map[string]string{"object": key, "sha256": e.SHA256, "channel": e.Channel})
				delete(pending, key)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d file(s) not verified within --wait %s (set a longer --wait, or see GET /api/v1/objects/<key>)", len(pending), c.Wait)
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
