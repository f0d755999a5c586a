package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"golang.org/x/term"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/client/fetch"
	"github.com/sluice-dl/sluice/shared/catalog"
)

// Exit codes of the client commands (documented in README.md).
const (
	exitOK           = 0
	exitFailure      = 1 // anything else: local files, unexpected answers
	exitUsage        = 2
	exitNotFound     = 3 // no such object
	exitRejected     = 4 // the catalog rejected the object; it is not served
	exitVerify       = 5 // the downloaded bytes do not match the catalog
	exitQueueTimeout = 6 // --wait-max passed while queued
	exitServer       = 7 // the server failed or could not be reached
	exitAuth         = 8 // API key missing, invalid or without the scope
	exitInterrupted  = 130
)

// clientConfig is what every client command reads: where the server is and the key.
type clientConfig struct {
	Server     string
	APIKeyFile string
	Timeout    time.Duration
}

func registerClientFlags(fs *flag.FlagSet, c *clientConfig) {
	fs.StringVar(&c.Server, "server", "http://localhost:8080", "sluice API (ingress) URL")
	fs.StringVar(&c.APIKeyFile, "api-key-file", "", "file holding the API key (otherwise $SLUICE_API_KEY, if set)")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "timeout of each API call")
}

// keySource is where the client commands take the API key from, for the errors that
// say so.
const keySource = "SLUICE_API_KEY or --api-key-file"

// client builds the API client; the key comes from --api-key-file or $SLUICE_API_KEY
// (never a flag: command lines are visible to every user of the machine). A command
// that cannot work without a key names the scope it needs: without one it stops
// here (exit 8), before it does anything else.
func (c *clientConfig) client(getenv func(string) string, needScope string) (*client.Client, error) {
	key := strings.TrimSpace(getenv("SLUICE_API_KEY"))
	if c.APIKeyFile != "" {
		raw, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return nil, &exitError{exitUsage, fmt.Errorf("read --api-key-file: %w", err)}
		}
		key = strings.TrimSpace(string(raw))
	}
	if key == "" && needScope != "" {
		return nil, &exitError{exitAuth, fmt.Errorf("an API key with %s scope is needed: set %s", needScope, keySource)}
	}
	cl, err := client.New(c.Server, client.Options{APIKey: key, Timeout: c.Timeout, UserAgent: "sluice/" + version})
	if err != nil {
		return nil, &exitError{exitUsage, fmt.Errorf("--server: %w", err)}
	}
	return cl, nil
}

// getConfig is the settings of sluice get.
type getConfig struct {
	clientConfig
	Output       string
	Connections  int
	Quiet        bool
	JSON         bool
	WaitMax      time.Duration
	StallTimeout time.Duration
	LimitRate    string
	Verify       string
	Force        bool
	Interval     time.Duration

	retryFirstWait time.Duration // first wait through an outage; 0 is the policy's default (tests shorten it)
}

func getCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice get", flag.ContinueOnError)
	c := &getConfig{}
	registerClientFlags(fs, &c.clientConfig)
	fs.StringVar(&c.Output, "o", "", "write to this file, or into this directory (an existing one, or a name ending in /) under the object's name (default: the object's name in the current directory)")
	fs.StringVar(&c.Output, "output", "", "same as -o")
	fs.IntVar(&c.Connections, "connections", 4, "parallel range requests (fewer if the link allows fewer)")
	fs.BoolVar(&c.Quiet, "quiet", false, "print nothing but errors")
	fs.BoolVar(&c.JSON, "json", false, "print one JSON event per line on stdout (queued, position, ready, progress, done, error)")
	fs.DurationVar(&c.WaitMax, "wait-max", 0, "give up (exit 6) if not admitted within this long; 0 waits as long as it takes")
	fs.DurationVar(&c.StallTimeout, "stall-timeout", 60*time.Second, "retry a connection that received nothing for this long")
	fs.StringVar(&c.LimitRate, "limit-rate", "", "cap the download rate, e.g. 500k, 2M, 1MiB (per second); empty: no cap")
	fs.StringVar(&c.Verify, "verify", "auto", "SHA-256 check against the release catalog: auto (when published), require (fail if it cannot be checked), off")
	fs.BoolVar(&c.Force, "force", false, "replace the output file if it exists")
	fs.DurationVar(&c.Interval, "progress-interval", 5*time.Second, "how often progress is printed when not on a terminal (and with --json)")
	return &ffcli.Command{
		Name:       "get",
		ShortUsage: "sluice get KEY [flags]",
		ShortHelp:  "download an object: wait in line, download in parallel ranges, resume, verify",
		LongHelp: "Requests a ticket for KEY, shows the queue position and estimated wait, downloads\n" +
			"into FILE.part (resumable: run the same command again), checks the SHA-256 against\n" +
			"the release catalog, then renames it to FILE. Ctrl-C cancels the ticket and keeps\n" +
			"the partial file.\n\nExit codes: 0 done, 1 other error, 2 usage, 3 not found, 4 rejected by\n" +
			"the catalog, 5 verification failed, 6 timed out in the queue (--wait-max), 7 server\n" +
			"error, 8 API key refused, 130 interrupted.",
		FlagSet: fs,
		Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return &exitError{exitUsage, fmt.Errorf("get takes one object key, got %d arguments (sluice get -h)", len(args))}
			}
			return runGet(ctx, c, args[0], os.Stdout, os.Stderr, os.Getenv)
		},
	}
}

// getter runs one sluice get.
type getter struct {
	cfg     *getConfig
	api     *client.Client
	rep     reporter
	log     *slog.Logger
	maxRate int64
	idem    string
	start   time.Time
}

func runGet(ctx context.Context, c *getConfig, key string, stdout, stderr io.Writer, getenv func(string) string) error {
	if c.Connections < 1 || c.Connections > 64 {
		return &exitError{exitUsage, fmt.Errorf("--connections must be 1 to 64, got %d", c.Connections)}
	}
	switch c.Verify {
	case "auto", "require", "off":
	default:
		return &exitError{exitUsage, fmt.Errorf("--verify must be auto, require or off, got %q", c.Verify)}
	}
	if c.Quiet && c.JSON {
		return &exitError{exitUsage, errors.New("--quiet and --json exclude each other")}
	}
	var maxRate int64
	if c.LimitRate != "" {
		n, err := humanize.ParseBytes(c.LimitRate)
		if err != nil || n == 0 {
			return &exitError{exitUsage, fmt.Errorf("--limit-rate %q: want bytes per second like 500k or 2M", c.LimitRate)}
		}
		maxRate = int64(n)
	}
	api, err := c.client(getenv, "")
	if err != nil {
		return err
	}
	g := &getter{cfg: c, api: api, maxRate: maxRate, idem: rand.Text(), start: time.Now(),
		log: slog.New(slog.DiscardHandler)}
	g.rep = newReporter(c, stdout, stderr, isTerminal(stderr))
	err = g.run(ctx, key)
	if err != nil {
		code := exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		g.rep.failed(code, err)
	}
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (g *getter) run(ctx context.Context, key string) error {
	dest, dir, err := g.destination(ctx, key)
	if err != nil {
		return err
	}
	tk, err := g.admitted(ctx, key)
	if err != nil {
		return err
	}
	if name := path.Base(tk.Object); dir != "" && name != filepath.Base(dest) {
		// An alias named another object by the time the ticket was taken.
		dest = filepath.Join(dir, name)
		if err := g.checkDest(dest); err != nil {
			g.cancel(tk.ID)
			return err
		}
	}
	entry, err := g.catalogEntry(ctx, tk.Object)
	if err != nil {
		g.cancel(tk.ID)
		return err
	}
	part := dest + ".part"
	res, tk, err := g.download(ctx, key, tk, part)
	if err != nil {
		return err
	}
	return g.finish(tk, res, entry, part, dest)
}

// destination decides where the download goes and checks that it can go there
// before a ticket is taken: nobody should wait in line to learn that the file
// cannot be written. With -o DIR (an existing directory, or a name ending in /) the
// file goes into DIR under the object's name, as without -o into the current
// directory; dir is then that directory, else "".
func (g *getter) destination(ctx context.Context, key string) (dest, dir string, err error) {
	out := g.cfg.Output
	if out != "" && !strings.HasSuffix(out, "/") {
		if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
			return out, "", g.checkDest(out)
		}
	}
	dir = "."
	if out != "" {
		dir = out
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", "", &exitError{exitFailure, fmt.Errorf("-o %s: no such directory", out)}
		}
	}
	dest = filepath.Join(dir, path.Base(g.objectName(ctx, key)))
	return dest, dir, g.checkDest(dest)
}

// objectName is the object a key names: a channel alias (stable/latest) is asked of
// the catalog; when it cannot say, the key itself (checked again once admitted).
func (g *getter) objectName(ctx context.Context, key string) string {
	channel, ok := strings.CutSuffix(key, catalog.AliasSuffix)
	if !ok || catalog.ValidateChannel(channel) != nil {
		return key
	}
	if e, err := g.api.Object(ctx, key); err == nil && e.Object != "" {
		return e.Object
	}
	return key
}

// checkDest makes sure dest can be written: it is not a directory or a special file,
// it does not exist unless --force, and its directory exists and takes new files
// (FILE.part is made next to it).
func (g *getter) checkDest(dest string) error {
	dir := filepath.Dir(dest)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return &exitError{exitFailure, fmt.Errorf("cannot write %s: %s is not a directory", dest, dir)}
	}
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		return &exitError{exitFailure, fmt.Errorf("%s is a directory; give a file name with -o", dest)}
	case err == nil && !fi.Mode().IsRegular():
		return &exitError{exitFailure, fmt.Errorf("%s exists and is not a regular file; give another name with -o", dest)}
	case err == nil && !g.cfg.Force:
		return &exitError{exitFailure, fmt.Errorf("%s already exists; use --force to replace it, or -o to write elsewhere", dest)}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return &exitError{exitFailure, fmt.Errorf("output file: %w", err)}
	}
	probe, err := os.CreateTemp(dir, ".sluice-write-check-*")
	if err != nil {
		return &exitError{exitFailure, fmt.Errorf("cannot write %s: %w", dest, err)}
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// admitted creates a ticket and waits in line until it has a download link.
func (g *getter) admitted(ctx context.Context, key string) (client.Ticket, error) {
	var deadline time.Time
	if g.cfg.WaitMax > 0 {
		deadline = time.Now().Add(g.cfg.WaitMax)
	}
	var p client.Poll
	err := g.retry(ctx, deadline, func() (err error) {
		p, err = g.api.CreateDownload(ctx, key, g.idem)
		return err
	})
	if err != nil {
		return client.Ticket{}, err
	}
	g.idem = rand.Text() // a later ticket (new link) is a new request
	g.rep.queued(p.Ticket)
	for !p.Ready() {
		if p.Ended() {
			msg := "ticket " + p.ID + " ended while waiting (" + p.Status + ")"
			if p.Error != "" {
				msg += ": " + p.Error
			}
			return client.Ticket{}, &exitError{exitServer, errors.New(msg + "; run the command again")}
		}
		wait := min(max(p.RetryAfter, 250*time.Millisecond), 30*time.Second)
		if p.RetryAfter == 0 {
			wait = time.Second
		}
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				g.cancel(p.ID)
				return client.Ticket{}, &exitError{exitQueueTimeout, fmt.Errorf("not admitted within --wait-max %s (position %d); the ticket was canceled", g.cfg.WaitMax, p.Position)}
			}
			wait = min(wait, left)
		}
		if !sleepCtx(ctx, wait) {
			g.cancel(p.ID)
			return client.Ticket{}, g.interrupted(p.ID, "")
		}
		prev := p
		err := g.retry(ctx, deadline, func() (err error) {
			p, err = g.api.Ticket(ctx, prev.ID)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				g.cancel(prev.ID)
				return client.Ticket{}, g.interrupted(prev.ID, "")
			}
			return client.Ticket{}, err
		}
		if p.Ready() {
			break
		}
		if p.Status != prev.Status || p.Position != prev.Position || p.ETAKnown != prev.ETAKnown ||
			(p.ETAKnown && p.ETASeconds != prev.ETASeconds) {
			g.rep.position(p.Ticket)
		}
	}
	g.rep.ready(p.Ticket)
	return p.Ticket, nil
}

// retry calls f through outages (see outagePolicy) and the catalog's "still being
// verified" answer, until it succeeds, fails for good, or deadline passes. It maps
// the final error to an exit code.
func (g *getter) retry(ctx context.Context, deadline time.Time, f func() error) error {
	p := g.outagePolicy(deadline)
	p.Retryable = func(err error) bool {
		return client.Retryable(err) || client.CodeOf(err) == "object_pending"
	}
	err := p.Do(ctx, f)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return g.interrupted("", "")
	}
	return apiExit(&g.cfg.clientConfig, err)
}

// outagePolicy is how sluice get rides out an outage of the server or the edge: for
// up to --wait-max (client.DefaultRetryBudget when it is 0), never past deadline,
// telling the user once per outage.
func (g *getter) outagePolicy(deadline time.Time) client.RetryPolicy {
	return client.RetryPolicy{Budget: g.cfg.WaitMax, Deadline: deadline, FirstWait: g.cfg.retryFirstWait, Notify: g.rep.note}
}

// apiExit gives an API error the exit code that says what went wrong, naming the
// setting to change when the server cannot be reached or refuses the key.
func apiExit(c *clientConfig, err error) error {
	ae, ok := errors.AsType[*client.Error](err)
	if !ok {
		return &exitError{exitServer, unreachable(c.Server, err)}
	}
	switch {
	case ae.Code == "object_rejected":
		return &exitError{exitRejected, err}
	case ae.Status == http.StatusNotFound:
		return &exitError{exitNotFound, err}
	case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
		return &exitError{exitAuth, keyAdvice(err, keySource)}
	case ae.Status == http.StatusBadRequest:
		return &exitError{exitUsage, err}
	case ae.Status >= 500 || ae.Temporary():
		return &exitError{exitServer, err}
	}
	return &exitError{exitFailure, err}
}

// unreachable says which server could not be reached and how to name another.
func unreachable(server string, err error) error {
	return fmt.Errorf("cannot reach the sluice server at %s (set --server or SLUICE_SERVER): %w", server, err)
}

// keyAdvice says what to set when the server refuses the key (or its absence);
// source is where the key comes from.
func keyAdvice(err error, source string) error {
	switch client.CodeOf(err) {
	case "key_required":
		return fmt.Errorf("%w; set %s to an API key", err, source)
	case "invalid_key", "invalid_authorization":
		return fmt.Errorf("%w; check the key in %s", err, source)
	case "wrong_scope":
		return fmt.Errorf("%w; set %s to a key with that scope", err, source)
	}
	return err
}

// catalogEntry reads what the catalog says the object must be; nil when it cannot say.
func (g *getter) catalogEntry(ctx context.Context, object string) (*client.CatalogEntry, error) {
	if g.cfg.Verify == "off" {
		return nil, nil
	}
	var e client.CatalogEntry
	err := g.retry(ctx, time.Time{}, func() (err error) {
		e, err = g.api.Object(ctx, object)
		if client.StatusOf(err) == http.StatusNotFound {
			return nil
		}
		return err
	})
	switch {
	case err != nil && client.CodeOf(err) == "catalog_disabled":
		e = client.CatalogEntry{}
	case err != nil:
		return nil, err
	}
	if e.Object == "" {
		if g.cfg.Verify == "require" {
			return nil, &exitError{exitVerify, fmt.Errorf("%s is not in the release catalog, so it cannot be verified (--verify=require)", object)}
		}
		g.rep.note(object + " is not in the release catalog; its SHA-256 will not be verified")
		return nil, nil
	}
	switch e.State {
	case client.StateRejected:
		return nil, &exitError{exitRejected, fmt.Errorf("the release catalog rejected %s: %s", object, e.Reason)}
	case client.StateVerified:
		return &e, nil
	}
	if g.cfg.Verify == "require" {
		return nil, &exitError{exitVerify, fmt.Errorf("%s is %s in the release catalog, not verified (--verify=require)", object, e.State)}
	}
	g.rep.note(fmt.Sprintf("%s is %s in the release catalog; its SHA-256 will not be verified", object, e.State))
	return nil, nil
}

// download fetches the link into part. An outage of the edge (503 and other 5xx,
// failed connections) is ridden out on the same ticket, resuming what arrived: before
// each retry the server is asked for the link on a live edge, which moves it when the
// edge it names has gone. A link that stops working (expired, or the object changed)
// is replaced by a new ticket.
func (g *getter) download(ctx context.Context, key string, tk client.Ticket, part string) (fetch.Result, client.Ticket, error) {
	for attempt := 0; ; attempt++ {
		var res fetch.Result
		tries := 0
		err := g.outagePolicy(time.Time{}).Do(ctx, func() (err error) {
			if tries++; tries > 1 {
				tk = g.relink(ctx, tk)
			}
			d := fetch.New(fetch.Options{
				URL: tk.DownloadURL, Part: part, Object: tk.Object, Connections: g.cfg.Connections,
				MaxRate: g.maxRate, StallTimeout: g.cfg.StallTimeout, Log: g.log, Hash: true,
				HTTP: &http.Client{Transport: &http.Transport{
					Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: g.cfg.Connections,
					ResponseHeaderTimeout: g.cfg.StallTimeout, DisableCompression: true,
				}},
			})
			stop := g.rep.downloading(tk, d)
			res, err = d.Run(ctx)
			stop(err == nil)
			if res.Restarted != "" {
				g.rep.note("starting over: " + res.Restarted)
			}
			return err
		})
		if err == nil {
			return res, tk, nil
		}
		if ctx.Err() != nil {
			g.cancel(tk.ID)
			return res, tk, g.interrupted(tk.ID, part)
		}
		if (errors.Is(err, fetch.ErrGone) || errors.Is(err, fetch.ErrChanged)) && attempt < 3 {
			g.rep.note(fmt.Sprintf("%v; asking for a new ticket to continue", err))
			g.cancel(tk.ID)
			if tk, err = g.admitted(ctx, key); err != nil {
				return res, tk, err
			}
			continue
		}
		g.cancel(tk.ID)
		if he, ok := errors.AsType[*fetch.HTTPError](err); ok {
			code := exitServer
			if he.Status == http.StatusNotFound {
				code = exitNotFound
			}
			return res, tk, &exitError{code, fmt.Errorf("%w; the partial file %s is kept for a later resume", err, part)}
		}
		code := exitFailure
		if client.ConnectionFailed(err) {
			code = exitServer
		}
		return res, tk, &exitError{code, fmt.Errorf("%w; the partial file %s is kept for a later resume", err, part)}
	}
}

// finish verifies the complete partial file and moves it into place.
// relink is tk with its link on a live edge, asked of the server; tk as it is when
// the server cannot say (the retry then uses the same link).
func (g *getter) relink(ctx context.Context, tk client.Ticket) client.Ticket {
	moved, err := g.api.Relink(ctx, tk.ID)
	if err != nil || moved.DownloadURL == "" {
		g.log.Debug("ask for the link on a live edge; retrying the same link", "ticket", tk.ID, "err", err)
		return tk
	}
	if moved.DownloadURL != tk.DownloadURL {
		g.rep.note("the edge of the download link is gone; continuing from another edge")
	}
	return moved
}

func (g *getter) finish(tk client.Ticket, res fetch.Result, entry *client.CatalogEntry, part, dest string) error {
	if res.Fetched < res.Size {
		// A resumed download never sends every byte on this ticket, so the edge keeps
		// its slot for a resume; give it back now.
		g.cancel(tk.ID)
	}
	if entry != nil {
		g.rep.verifying()
	}
	sum := res.SHA256 // hashed while it downloaded
	if sum == "" {
		var err error
		if sum, err = fileSHA256(part); err != nil {
			return &exitError{exitFailure, err}
		}
	}
	verified := "not_published"
	if g.cfg.Verify == "off" {
		verified = "off"
	}
	if entry != nil {
		if entry.Size != res.Size || !strings.EqualFold(entry.SHA256, sum) {
			_ = fetch.RemoveState(part)
			return &exitError{exitVerify, fmt.Errorf("verification failed: %s has %d bytes with SHA-256 %s, the release catalog says %d bytes with SHA-256 %s; the download was deleted (report it to the operators)",
				tk.Object, res.Size, sum, entry.Size, entry.SHA256)}
		}
		verified = "verified"
	}
	if err := os.Rename(part, dest); err != nil {
		return &exitError{exitFailure, fmt.Errorf("move the download into place: %w", err)}
	}
	if err := os.Remove(fetch.StatePath(part)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		g.rep.note("could not remove the download state: " + err.Error())
	}
	g.rep.done(doneEvent{Path: dest, Object: tk.Object, Ticket: tk.ID, Size: res.Size, SHA256: sum,
		Verification: verified, Resumed: res.Resumed, Fetched: res.Fetched, Connections: res.Connections,
		Seconds: time.Since(g.start).Seconds()})
	return nil
}

// cancel gives a ticket back, even while the command is being interrupted.
func (g *getter) cancel(id string) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = g.api.Cancel(ctx, id)
}

func (g *getter) interrupted(ticket, part string) error {
	msg := "interrupted"
	if ticket != "" {
		msg += "; ticket " + ticket + " canceled"
	}
	if part != "" {
		msg += "; the partial download is kept in " + part + ": run the same command again to resume"
	}
	return &exitError{exitInterrupted, errors.New(msg)}
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
