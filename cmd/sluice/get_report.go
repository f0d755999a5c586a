package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/sluice-dl/sluice/client"
	"github.com/sluice-dl/sluice/client/fetch"
)

// reporter shows a download's life to a person (terminal or log lines) or a program
// (JSON events). Errors are printed by main; failed only adds the JSON event.
type reporter interface {
	queued(t client.Ticket)
	position(t client.Ticket)
	ready(t client.Ticket)
	note(msg string)
	// downloading shows d's progress until the returned func is called.
	downloading(t client.Ticket, d *fetch.Download) (stop func(ok bool))
	verifying()
	done(e doneEvent)
	failed(code int, err error)
}

// doneEvent is the summary of a finished download.
type doneEvent struct {
	Path         string  `json:"path"`
	Object       string  `json:"object"`
	Ticket       string  `json:"ticket"`
	Size         int64   `json:"size"`
	SHA256       string  `json:"sha256"`
	Verification string  `json:"verification"` // verified, not_published, off
	Resumed      int64   `json:"resumed_bytes"`
	Fetched      int64   `json:"fetched_bytes"`
	Connections  int     `json:"connections"`
	Seconds      float64 `json:"seconds"`
}

func newReporter(c *getConfig, stdout, stderr io.Writer, tty bool) reporter {
	switch {
	case c.JSON:
		return &jsonReporter{w: stdout, every: c.Interval}
	case c.Quiet:
		return quietReporter{}
	case tty:
		return &ttyReporter{w: stderr}
	default:
		return &lineReporter{w: stderr, every: c.Interval}
	}
}

func waitText(t client.Ticket) string {
	s := fmt.Sprintf("position %d", t.Position)
	if t.ETAKnown {
		s += ", about " + (time.Duration(t.ETASeconds) * time.Second).String() + " to wait"
	} else {
		s += ", wait not yet known"
	}
	return s
}

func verificationText(e doneEvent) string {
	switch e.Verification {
	case "verified":
		return "SHA-256 verified against the release catalog"
	case "off":
		return "not verified (--verify=off)"
	}
	return "not verified: not in the release catalog"
}

// rateMeter turns byte counts sampled over time into a smoothed rate and an ETA.
type rateMeter struct {
	last     int64
	lastTime time.Time
	rate     float64
}

// observe samples a download's progress; until its size is known the bytes resumed
// from an earlier run are not counted yet, and must not count as this run's rate.
func (m *rateMeter) observe(done, size int64) float64 {
	if size < 0 {
		return 0
	}
	return m.sample(done, time.Now())
}

func (m *rateMeter) sample(done int64, now time.Time) float64 {
	if !m.lastTime.IsZero() {
		if dt := now.Sub(m.lastTime).Seconds(); dt > 0 {
			inst := float64(done-m.last) / dt
			if m.rate == 0 {
				m.rate = inst
			} else {
				m.rate = 0.5*m.rate + 0.5*inst
			}
		}
	}
	m.last, m.lastTime = done, now
	return m.rate
}

func etaSeconds(done, size int64, rate float64) int64 {
	if rate <= 0 || size < done {
		return -1
	}
	return int64(float64(size-done)/rate + 0.5)
}

// every runs f every interval until stop is called; stop runs f one last time.
func every(interval time.Duration, f func()) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				f()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-finished }) }
}

// jsonReporter writes one JSON object per line.
type jsonReporter struct {
	mu    sync.Mutex
	w     io.Writer
	every time.Duration
}

func (r *jsonReporter) emit(event string, fields any) {
	raw, _ := json.Marshal(fields)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if m == nil {
		m = map[string]any{}
	}
	m["event"] = event
	m["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	line, _ := json.Marshal(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w.Write(append(line, '\n'))
}

type ticketEvent struct {
	Ticket     string `json:"ticket"`
	Object     string `json:"object"`
	Status     string `json:"status"`
	Position   int64  `json:"position"`
	ETASeconds int64  `json:"eta_seconds"`
	ETAKnown   bool   `json:"eta_known"`
	Size       int64  `json:"size"`
}

func ticketFields(t client.Ticket) ticketEvent {
	return ticketEvent{t.ID, t.Object, t.Status, t.Position, t.ETASeconds, t.ETAKnown, t.Size}
}

func (r *jsonReporter) queued(t client.Ticket)   { r.emit("queued", ticketFields(t)) }
func (r *jsonReporter) position(t client.Ticket) { r.emit("position", ticketFields(t)) }
func (r *jsonReporter) ready(t client.Ticket)    { r.emit("ready", ticketFields(t)) }
func (r *jsonReporter) note(msg string)          { r.emit("note", map[string]string{"message": msg}) }
func (r *jsonReporter) verifying()               { r.emit("verifying", nil) }
func (r *jsonReporter) done(e doneEvent)         { r.emit("done", e) }
func (r *jsonReporter) failed(code int, err error) {
	r.emit("error", map[string]any{"exit_code": code, "error": err.Error(), "code": client.CodeOf(err)})
}

func (r *jsonReporter) downloading(t client.Ticket, d *fetch.Download) func(bool) {
	m := rateMeter{}
	progress := func() {
		done, size, conns := d.Progress()
		rate := m.observe(done, size)
		r.emit("progress", map[string]any{"ticket": t.ID, "bytes": done, "size": size, "rate_bps": int64(rate),
			"eta_seconds": etaSeconds(done, size, rate), "connections": conns})
	}
	stop := every(r.every, progress)
	return func(bool) { stop(); progress() }
}

// lineReporter writes plain lines for logs and pipes.
type lineReporter struct {
	w     io.Writer
	every time.Duration
}

func (r *lineReporter) printf(format string, a ...any) {
	fmt.Fprintf(r.w, "sluice: "+format+"\n", a...)
}

func (r *lineReporter) queued(t client.Ticket) {
	r.printf("ticket %s for %s: queued, %s", t.ID, t.Object, waitText(t))
}
func (r *lineReporter) position(t client.Ticket) { r.printf("queued, %s", waitText(t)) }
func (r *lineReporter) ready(t client.Ticket) {
	r.printf("admitted; downloading %s (%s)", t.Object, humanize.IBytes(uint64(t.Size)))
}
func (r *lineReporter) note(msg string) { r.printf("%s", msg) }
func (r *lineReporter) verifying()      { r.printf("verifying SHA-256") }
func (r *lineReporter) done(e doneEvent) {
	r.printf("saved %s (%s) in %.1fs; %s", e.Path, humanize.IBytes(uint64(e.Size)), e.Seconds, verificationText(e))
}
func (r *lineReporter) failed(int, error) {}

func (r *lineReporter) downloading(t client.Ticket, d *fetch.Download) func(bool) {
	m := rateMeter{}
	stop := every(r.every, func() {
		done, size, conns := d.Progress()
		rate := m.observe(done, size)
		pct := 0.0
		if size > 0 {
			pct = 100 * float64(done) / float64(size)
		}
		eta := "unknown"
		if s := etaSeconds(done, size, rate); s >= 0 {
			eta = (time.Duration(s) * time.Second).String()
		}
		r.printf("%s: %s of %s (%.0f%%), %s/s, ETA %s, %d connections", path.Base(t.Object),
			humanize.IBytes(uint64(done)), humanize.IBytes(uint64(max(size, t.Size))), pct, humanize.IBytes(uint64(rate)), eta, conns)
	})
	return func(bool) { stop() }
}

// ttyReporter rewrites one status line while waiting, then draws a progress bar.
type ttyReporter struct {
	w       io.Writer
	waiting bool
}

func (r *ttyReporter) status(s string) {
	fmt.Fprintf(r.w, "\r\033[K%s", s)
	r.waiting = true
}

func (r *ttyReporter) endStatus() {
	if r.waiting {
		fmt.Fprint(r.w, "\n")
		r.waiting = false
	}
}

func (r *ttyReporter) queued(t client.Ticket) {
	r.status(fmt.Sprintf("Waiting in line for %s: %s", t.Object, waitText(t)))
}
func (r *ttyReporter) position(t client.Ticket) { r.queued(t) }
func (r *ttyReporter) ready(t client.Ticket) {
	r.endStatus()
	fmt.Fprintf(r.w, "Admitted: downloading %s (%s)\n", t.Object, humanize.IBytes(uint64(t.Size)))
}
func (r *ttyReporter) note(msg string) { r.endStatus(); fmt.Fprintln(r.w, msg) }
func (r *ttyReporter) verifying()      { fmt.Fprint(r.w, "Verifying SHA-256…") }
func (r *ttyReporter) done(e doneEvent) {
	fmt.Fprintf(r.w, "\r\033[KSaved %s (%s) in %.1fs; %s\n", e.Path, humanize.IBytes(uint64(e.Size)), e.Seconds, verificationText(e))
}
func (r *ttyReporter) failed(int, error) { r.endStatus() }

func (r *ttyReporter) downloading(t client.Ticket, d *fetch.Download) func(bool) {
	r.endStatus()
	p := mpb.New(mpb.WithOutput(r.w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	bar := p.AddBar(t.Size,
		mpb.PrependDecorators(
			decor.Name(path.Base(t.Object), decor.WCSyncSpaceR),
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.Percentage(decor.WCSyncSpace),
			decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace),
			decor.Name(" ETA "),
			decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30), "done"),
		),
	)
	var last time.Time
	stop := every(200*time.Millisecond, func() {
		cur, size, _ := d.Progress()
		if size < 0 {
			return
		}
		now := time.Now()
		if last.IsZero() {
			bar.SetTotal(size, false)
			bar.SetCurrent(cur) // resumed bytes: not this run's speed
		} else {
			bar.EwmaSetCurrent(cur, now.Sub(last))
		}
		last = now
	})
	return func(ok bool) {
		stop()
		cur, _, _ := d.Progress()
		bar.SetCurrent(cur)
		if ok {
			bar.SetTotal(-1, true)
		} else {
			bar.Abort(false)
		}
		p.Wait()
	}
}

type quietReporter struct{}

func (quietReporter) queued(client.Ticket)   {}
func (quietReporter) position(client.Ticket) {}
func (quietReporter) ready(client.Ticket)    {}
func (quietReporter) note(string)            {}
func (quietReporter) downloading(client.Ticket, *fetch.Download) func(bool) {
	return func(bool) {}
}
func (quietReporter) verifying()        {}
func (quietReporter) done(doneEvent)    {}
func (quietReporter) failed(int, error) {}
