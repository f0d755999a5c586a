package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// Redis can be wiped at any instant. 4 workers and 2 edges serve a
// global limit of 4, set by an operator (the flag says 10) with a tenant weight, to
// clients of 3 tenants that read their downloads slowly; mid-load the ledger is lost,
// by FLUSHALL or by redis-server restarting empty on the same port. The limit is never
// exceeded per the edges' own records, including while the ledger is rebuilt; every
// accepted ticket ends (no 404 at any time); no slot and no ticket message is left;
// API keys and limits answer as before, from JetStream.
func TestRedisWipedUnderLoad(t *testing.T) {
	t.Run("FLUSHALL", func(t *testing.T) {
		wipedUnderLoad(t, func(s *stack) {
			if err := s.redis.Client(t).FlushAll(t.Context()).Err(); err != nil {
				t.Fatalf("FLUSHALL: %v", err)
			}
		})
	})
	t.Run("restarted without persistence", func(t *testing.T) {
		wipedUnderLoad(t, func(s *stack) { s.redis.Restart(t) })
	})
}

const (
	wipeTickets = 160
	wipeLimit   = 4
	wipeTenants = 3
	wipeClients = 12
)

// wipeOutcome is what one client saw of its ticket.
type wipeOutcome struct {
	id       string
	object   string
	accepted time.Time
	full     bool      // every byte read and checked
	fullAt   time.Time // when the last byte arrived
	cuts     int       // streams cut before the end, resumed with Range
	gone     int       // 410 on a link: re-read the ticket, followed its new link
	final    api.Ticket
}

type wipeLoad struct {
	t        *testing.T
	s        *stack
	keys     []string
	objects  map[string][]byte
	names    []string
	edgeURLs []string
	api      *http.Client
	dl       *http.Client
	reading  atomic.Int32 // clients reading a body right now

	mu       sync.Mutex
	outcomes []*wipeOutcome
	problems []string
	codes    map[string]int // ticket polls answered other than 200, by status
}

func (w *wipeLoad) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	}
}

func (w *wipeLoad) saw(code string) {
	w.mu.Lock()
	w.codes[code]++
	w.mu.Unlock()
}

func wipedUnderLoad(t *testing.T, wipe func(*stack)) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 10, Env: []string{
		"SLUICE_STREAM_LEASE=3s", "SLUICE_RESUME_GRACE=300ms", "SLUICE_ACK_WAIT=3s", "SLUICE_TICKET_ACK_WAIT=3s",
		"SLUICE_TOKEN_TTL=6s", "SLUICE_ABANDON_AFTER=5s",
	}})
	w := &wipeLoad{t: t, s: s, objects: map[string][]byte{}, codes: map[string]int{},
		api: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: wipeClients * 2},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		dl: slowClient()}
	for i, size := range []int{256 << 10, 384 << 10, 512 << 10, 640 << 10} {
		name := fmt.Sprintf("wipe/%d.bin", i)
		w.objects[name] = randomBytes(size, byte(60+i))
		s.putObject(name, w.objects[name])
		w.names = append(w.names, name)
	}
	var edges []*testenv.Process
	for i := range 2 {
		port := s.edgePort
		if i > 0 {
			port = testenv.FreePort(t)
		}
		edges = append(edges, s.startRoleOn("edge", port))
		w.edgeURLs = append(w.edgeURLs, "http://127.0.0.1:"+strconv.Itoa(port))
	}
	var workers []*testenv.Process
	for range 4 {
		workers = append(workers, s.startRoleOn("worker", 0))
	}
	s.startRoleOn("ingress", testenv.FreePort(t))

	// The operator's records: keys of three tenants, an operator key of their own, and
	// limits that differ from the flags.
	for i := range wipeTenants {
		_, key := s.createKey("client", "tenant-"+strconv.Itoa(i))
		w.keys = append(w.keys, key)
	}
	_, opKey := s.createKey("operator", "")
	weight := 2.0
	s.operator(http.MethodPut, "/api/v1/admin/limits", map[string]any{
		"global": wipeLimit, "tenants": map[string]any{"tenant-0": map[string]any{"weight": weight}},
	}, nil)
	limitsBefore, keysBefore := adminJSON(t, s, opKey, "/api/v1/admin/limits"), adminJSON(t, s, opKey, "/api/v1/admin/keys")
	if st := s.admissionStats(); st.GlobalLimit != wipeLimit {
		t.Fatalf("global limit %d after the PUT, want %d", st.GlobalLimit, wipeLimit)
	}

	rdb := s.redis.Client(t)
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range wipeClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for n := range jobs {
				w.one(ctx, rng, n)
			}
		})
	}
	var wipedAt time.Time
	var inFlightAtWipe int32
	for n := range wipeTickets {
		if n == wipeTickets/3 {
			// Wipe while downloads are being read, as soon as a few are.
			waitUntil := time.Now().Add(5 * time.Second)
			for w.reading.Load() < 2 && time.Now().Before(waitUntil) {
				time.Sleep(5 * time.Millisecond)
			}
			inFlightAtWipe = w.reading.Load()
			wipedAt = time.Now()
			wipe(s)
			t.Logf("ledger wiped %s in, with %d tickets taken, %d clients reading a body",
				time.Since(start).Round(100*time.Millisecond), n, inFlightAtWipe)
		}
		select {
		case jobs <- n:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	ran := time.Since(start)
	for _, p := range w.problems {
		t.Error(p)
	}
	if len(w.outcomes) != wipeTickets {
		t.Fatalf("%d of %d tickets were seen through", len(w.outcomes), wipeTickets)
	}

	// Every ticket ends. Read as an operator would, from the ledger, since a poll is
	// its client asking for it; a ticket the ledger does not hold (it ended before
	// the wipe) through the API, which answers from its JetStream record. A ticket that
	// had ended in the lost ledger comes back from its message and is dropped as
	// abandoned (SLUICE_ABANDON_AFTER) when nobody asks for it.
	eventually(t, 30*time.Second, "every ticket in a terminal state", func() bool {
		for _, o := range w.outcomes {
			if !terminal(o.final.Status) {
				h := ledgerTicket(t, rdb, o.id)
				o.final = api.Ticket{ID: o.id, Status: h["status"], Error: h["error"]}
				if h["status"] == "" {
					o.final = w.ticket(o.id)
				}
			}
			if !terminal(o.final.Status) {
				return false
			}
		}
		return true
	})
	close(stop)
	most := mostSlots()
	waitSettled(t, rdb, s.nats.URL, 15*time.Second)

	// The rebuild, from the workers' logs: when a worker found the ledger empty and
	// rebuilt it, how long the refill from the stream took, the first admission after.
	rebuiltAt, firstAdmission := time.Time{}, time.Time{}
	refill := ""
	readyAfterWipe := map[string]bool{}
	for _, p := range workers {
		for _, l := range logLines(t, p.Log) {
			at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
			if at.Before(wipedAt) {
				continue
			}
			switch msg := fmt.Sprint(l["msg"]); {
			case strings.HasPrefix(msg, "the admission ledger was empty") && (rebuiltAt.IsZero() || at.Before(rebuiltAt)):
				rebuiltAt = at
			case msg == "ledger refilled from the ticket stream":
				refill += fmt.Sprintf(" %v tickets in %v;", l["tickets"], l["took"])
			case msg == "ticket ready":
				readyAfterWipe[fmt.Sprint(l["ticket"])] = true
				if firstAdmission.IsZero() || at.Before(firstAdmission) {
					firstAdmission = at
				}
			}
		}
	}
	if rebuiltAt.IsZero() || firstAdmission.IsZero() {
		t.Fatalf("no worker logged the rebuild (%v) or an admission (%v) after the wipe", rebuiltAt, firstAdmission)
	}
	t.Logf("rebuilt %s after the wipe; refilled:%s first admission %s after the wipe (paused %s after the rebuild; stream lease 3s)",
		rebuiltAt.Sub(wipedAt).Round(time.Millisecond), refill, firstAdmission.Sub(wipedAt).Round(time.Millisecond),
		firstAdmission.Sub(rebuiltAt).Round(time.Millisecond))

	// When each stream ended, per the edges: a ticket whose whole object was sent before
	// the wipe ended in the lost ledger.
	// An end whose call was cut by redis-server dying ("end stream failed": EOF) may
	// have run, so the edge does not repeat it (its bytes would count twice): it is
	// lost with the ledger too.
	servedAt, endLost := map[string]time.Time{}, map[string]bool{}
	for _, e := range edges {
		for _, l := range logLines(t, e.Log) {
			switch l["msg"] {
			case "stream completed":
				at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["stopped"]))
				servedAt[fmt.Sprint(l["ticket"])] = at
			case "end stream failed":
				endLost[fmt.Sprint(l["ticket"])] = true
			}
		}
	}

	// Outcomes. A ticket read to the end is done, unless the edge had sent it all
	// before the wipe: it ended in the lost ledger, its message not yet acknowledged
	// (the sweep does that every 2 s), so it came back from the stream; its client
	// never asks for it again and it is dropped as abandoned, expired, without being
	// admitted again (a new link nobody holds would keep a slot for the token TTL).
	// Anything else not done is unaccounted for.
	count := map[string]int{}
	var servedBeforeWipe, endsCut, readmitted, cuts, gone, afterWipe int
	for _, o := range w.outcomes {
		st := o.final.Status
		count[st]++
		cuts += o.cuts
		gone += o.gone
		if o.accepted.After(wipedAt) {
			afterWipe++
		}
		served, ok := servedAt[o.id]
		early := ok && served.Before(wipedAt)
		if early && readyAfterWipe[o.id] {
			readmitted++
			t.Errorf("ticket %s, all sent at %s before the wipe, was admitted again after it (%q)",
				o.id, served.Format(time.StampMicro), st)
		}
		switch {
		case o.full && st == "done":
		case o.full && st == "expired" && early:
			servedBeforeWipe++
		case o.full && st == "expired" && endLost[o.id]:
			endsCut++
		default:
			t.Errorf("ticket %s (read to the end %v at %s, %d cuts, %d links gone; accepted %s) is %q: %s; what the roles logged of it:\n%s",
				o.id, o.full, o.fullAt.Format(time.StampMilli), o.cuts, o.gone, o.accepted.Format(time.StampMilli), st, o.final.Error,
				linesNaming(t, s.roles, o.id))
		}
	}
	flights := edgeFlights(t, edges)
	t.Logf("%d tickets of %d tenants in %s with %d clients: %v (expired: %d served before the wipe, %d whose end the dying Redis cut; never admitted again: %d were); "+
		"%d accepted after the wipe; %d streams cut and resumed, %d links answered 410; ticket polls not 200: %v",
		wipeTickets, wipeTenants, ran.Round(100*time.Millisecond), wipeClients, count, servedBeforeWipe, endsCut, readmitted, afterWipe, cuts, gone, w.codes)
	t.Logf("edges' records: %d streams, at most %d in flight at once, %d at the wipe; ledger: at most %d slots held at once (limit %d)",
		flights.starts, flights.most(), flights.at(wipedAt), most, wipeLimit)
	if flights.starts != flights.ends {
		t.Errorf("edge logs hold %d stream starts and %d ends", flights.starts, flights.ends)
	}
	if m := flights.most(); m > wipeLimit {
		t.Errorf("the edges had %d downloads in flight at once, over the limit of %d", m, wipeLimit)
	}
	if most > wipeLimit {
		t.Errorf("the ledger held %d slots at once, over the limit of %d", most, wipeLimit)
	}
	if flights.most() < wipeLimit/2 {
		t.Errorf("at most %d downloads were ever in flight: the load did not reach the limit of %d", flights.most(), wipeLimit)
	}
	if flights.at(wipedAt) == 0 {
		t.Errorf("no download was in flight at the wipe (%d clients reading): nothing had to re-register", inFlightAtWipe)
	}
	if afterWipe == 0 {
		t.Error("no ticket was accepted after the wipe: the client keys were not tried")
	}

	// The records came back from JetStream, not from the flags.
	if got := adminJSON(t, s, opKey, "/api/v1/admin/limits"); !reflect.DeepEqual(got, limitsBefore) {
		t.Errorf("limits after the wipe %v, before %v", got, limitsBefore)
	}
	if got := adminJSON(t, s, opKey, "/api/v1/admin/keys"); !reflect.DeepEqual(got, keysBefore) {
		t.Errorf("API keys after the wipe %v, before %v", got, keysBefore)
	}
	if st := s.admissionStats(); st.GlobalLimit != wipeLimit {
		t.Errorf("the ledger's global limit is %d after the wipe, want the operator's %d", st.GlobalLimit, wipeLimit)
	}
	tk := s.requestAs(w.keys[0], w.names[0])
	if got := w.ticket(tk.ID); got.ID != tk.ID {
		t.Errorf("a client key's new ticket %s reads back as %+v", tk.ID, got)
	}
}

// linesNaming is every log line of the roles that names the ticket.
func linesNaming(t *testing.T, roles []*testenv.Process, id string) string {
	var b strings.Builder
	for _, p := range roles {
		raw, err := os.ReadFile(p.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.Contains(line, id) {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

func terminal(status string) bool {
	return slices.Contains([]string{"done", "expired", "canceled", "failed"}, status)
}

// adminJSON reads an admin endpoint with an operator key.
func adminJSON(t *testing.T, s *stack, key, path string) any {
	t.Helper()
	code, _, raw := call(t, http.MethodGet, s.ingressURL+path, key, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, raw)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}

// ticket reads a ticket as its client would, riding out 503s and refused connections;
// a 404 is a lost ticket. It answers an empty ticket if ctx ends first.
func (w *wipeLoad) ticket(id string) api.Ticket {
	for range 600 {
		req, _ := http.NewRequest(http.MethodGet, w.s.ingressURL+"/api/v1/tickets/"+id, nil)
		if k, ok := w.s.owners.Load(id); ok {
			req.Header.Set("Authorization", "Bearer "+k.(string))
		}
		resp, err := w.api.Do(req)
		if err != nil {
			w.saw("connection error")
			time.Sleep(50 * time.Millisecond)
			continue
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var tk api.Ticket
			if err := json.Unmarshal(raw, &tk); err != nil {
				w.problem("ticket %s: %v: %s", id, err, raw)
				return api.Ticket{}
			}
			return tk
		case http.StatusServiceUnavailable:
			w.saw("503")
			time.Sleep(50 * time.Millisecond)
		default:
			w.saw(strconv.Itoa(resp.StatusCode))
			w.problem("ticket %s: GET answered %d %s", id, resp.StatusCode, raw)
			return api.Ticket{}
		}
	}
	w.problem("ticket %s: no answer but 503 for 30 s", id)
	return api.Ticket{}
}

// one takes ticket n and sees it through: waits in line, downloads at a random rate
// (so that streams are in flight when the ledger goes), resumes a cut stream with
// Range, and follows a new link when the old one answers 410.
func (w *wipeLoad) one(ctx context.Context, rng *rand.Rand, n int) {
	name := w.names[rng.IntN(len(w.names))]
	data := w.objects[name]
	dur := time.Duration(100+rng.IntN(300)) * time.Millisecond
	bps := int(float64(len(data)) / dur.Seconds())
	edge := rng.IntN(len(w.edgeURLs))

	var id string
	for id == "" && ctx.Err() == nil {
		body, _ := json.Marshal(map[string]string{"object": name})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.s.ingressURL+"/api/v1/downloads", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+w.keys[n%wipeTenants])
		resp, err := w.api.Do(req)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var tk api.Ticket
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable:
			time.Sleep(50 * time.Millisecond)
		case resp.StatusCode != http.StatusAccepted || json.Unmarshal(raw, &tk) != nil:
			w.problem("POST: %d %s", resp.StatusCode, raw)
			return
		default:
			id = tk.ID
			w.s.owners.Store(id, w.keys[n%wipeTenants]) // the ticket is its tenant's
		}
	}
	o := &wipeOutcome{id: id, object: name, accepted: time.Now()}
	defer func() {
		w.mu.Lock()
		w.outcomes = append(w.outcomes, o)
		w.mu.Unlock()
	}()
	var got bytes.Buffer
	for ctx.Err() == nil {
		tk := w.ticket(id)
		switch tk.Status {
		case "":
			return // lost: reported by ticket
		case "queued", "admitting":
			time.Sleep(50 * time.Millisecond)
			continue
		case "ready", "streaming":
		default:
			o.final = tk
			return
		}
		link := w.edgeURLs[edge] + strings.TrimPrefix(tk.DownloadURL, w.edgeURLs[0])
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
		if got.Len() > 0 {
			req.Header.Set("Range", "bytes="+strconv.Itoa(got.Len())+"-")
		}
		resp, err := w.dl.Do(req)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
			if got.Len() > 0 && resp.StatusCode != http.StatusPartialContent {
				resp.Body.Close()
				w.problem("ticket %s: resume from %d answered %d", id, got.Len(), resp.StatusCode)
				return
			}
			w.reading.Add(1)
			_, err := readSlowly(ctx, io.TeeReader(resp.Body, &got), bps, 0)
			w.reading.Add(-1)
			resp.Body.Close()
			switch {
			case err == nil && got.Len() == len(data):
				if !bytes.Equal(got.Bytes(), data) {
					w.problem("ticket %s: %s downloaded with the wrong content", id, name)
					return
				}
				// Done, as sluice get is: it asks nothing more of a complete download.
				o.full, o.fullAt = true, time.Now()
				return
			case err == nil:
				w.problem("ticket %s: body of %s ended at %d of %d bytes", id, name, got.Len(), len(data))
				return
			default:
				o.cuts++
			}
		case http.StatusGone:
			resp.Body.Close()
			o.gone++
			time.Sleep(50 * time.Millisecond)
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			resp.Body.Close()
			time.Sleep(50 * time.Millisecond)
		default:
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			w.problem("ticket %s: link answered %d %s", id, resp.StatusCode, raw)
			return
		}
	}
}
