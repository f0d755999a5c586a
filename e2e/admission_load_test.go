package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// Proof under load: 4 worker processes and 2 edge processes against one Redis and one
// JetStream; 2,000 tickets from 5 tenants (a client key each) under a global limit of
// 8; clients that read at random rates (with small receive buffers, so the edge really
// waits on them) and sometimes hang up mid-body (then cancel, or just leave). Checked
// from the edges' own records (their "stream started"/"stream completed" log lines,
// merged by time): downloads in flight never exceeded 8. Every ticket ended in a
// terminal state (done when it was read to the end), no slot is held at the end, and
// JetStream holds no ticket message any more.
func TestAdmissionProofUnderLoad(t *testing.T) {
	const (
		tickets = 2000
		limit   = 8
		clients = 32
		tenants = 5
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newAdmissionStack(t, stackOptions{GlobalLimit: limit, Env: []string{
		"SLUICE_STREAM_LEASE=3s", "SLUICE_RESUME_GRACE=300ms", "SLUICE_LOG_LEVEL=debug",
	}})
	objects := map[string][]byte{}
	var names []string
	for i, size := range []int{256 << 10, 512 << 10, 1 << 20, 3 << 19, 2 << 20, 3 << 20} {
		name := fmt.Sprintf("load/%d.bin", i)
		objects[name] = randomBytes(size, byte(40+i))
		s.putObject(name, objects[name])
		names = append(names, name)
	}
	var edges []*testenv.Process
	var edgeURLs []string
	for i := range 2 {
		port := s.edgePort
		if i > 0 {
			port = testenv.FreePort(t)
		}
		edges = append(edges, s.startRoleOn("edge", port))
		edgeURLs = append(edgeURLs, "http://127.0.0.1:"+strconv.Itoa(port))
	}
	for range 4 {
		s.start("worker")
	}
	s.start("ingress")
	keys := make([]string, tenants)
	for i := range keys {
		_, keys[i] = s.createKey("client", "tenant-"+strconv.Itoa(i))
	}
	rdb := s.redis.Client(t)
	stop := make(chan struct{})
	mostSlots := watchSlots(t, s, stop)

	type outcome struct {
		id       string
		full     bool // read to the end, bytes checked
		aborted  bool
		canceled bool
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		problems []string
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	dl := slowClient()
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for n := range jobs {
				name := names[rng.IntN(len(names))]
				body, _ := json.Marshal(map[string]string{"object": name})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.ingressURL+"/api/v1/downloads", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keys[n%tenants])
				resp, err := hc.Do(req)
				if err != nil {
					problem("POST: %v", err)
					continue
				}
				var tk api.Ticket
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted || json.Unmarshal(raw, &tk) != nil {
					problem("POST: %d %s", resp.StatusCode, raw)
					continue
				}
				o := outcome{id: tk.ID}
				for tk.Status == "queued" && ctx.Err() == nil {
					time.Sleep(50 * time.Millisecond)
					preq, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ingressURL+"/api/v1/tickets/"+tk.ID, nil)
					preq.Header.Set("Authorization", "Bearer "+keys[n%tenants]) // the ticket is its tenant's
					r, err := hc.Do(preq)
					if err != nil {
						problem("poll: %v", err)
						break
					}
					tk = api.Ticket{}
					err = decodeJSON(r, &tk)
					r.Body.Close()
					if err != nil {
						problem("poll: %v", err)
						break
					}
				}
				if tk.Status != "ready" {
					problem("ticket %s is %q while its client waited for it (%s)", tk.ID, tk.Status, tk.Error)
					mu.Lock()
					outcomes = append(outcomes, o)
					mu.Unlock()
					continue
				}
				// Any edge will do, as behind a load balancer.
				link := edgeURLs[rng.IntN(len(edgeURLs))] + strings.TrimPrefix(tk.DownloadURL, edgeURLs[0])
				data := objects[name]
				dur := time.Duration(20+rng.IntN(180)) * time.Millisecond
				bps := int(float64(len(data)) / dur.Seconds())
				var stopAt int64
				if rng.IntN(10) == 0 { // hangs up somewhere in the body
					o.aborted = true
					stopAt = int64(len(data)) * int64(10+rng.IntN(80)) / 100
				}
				r, err := dl.Get(link)
				if err != nil {
					problem("GET link: %v", err)
				} else {
					var got bytes.Buffer
					n, err := readSlowly(ctx, io.TeeReader(r.Body, &got), bps, stopAt)
					r.Body.Close()
					switch {
					case r.StatusCode != http.StatusOK:
						problem("GET link: %d", r.StatusCode)
					case o.aborted:
					case err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data):
						problem("download of %s: %d of %d bytes, %v", name, n, len(data), err)
					default:
						o.full = true
					}
				}
				if o.aborted && rng.IntN(2) == 0 { // gives up and says so
					req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+tk.ID, nil)
					req.Header.Set("Authorization", "Bearer "+keys[n%tenants])
					if r, err := hc.Do(req); err == nil {
						r.Body.Close()
						o.canceled = r.StatusCode == http.StatusOK
					}
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}
		})
	}
	for n := range tickets {
		select {
		case jobs <- n:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	ran := time.Since(start)
	for _, p := range problems {
		t.Error(p)
	}
	if len(outcomes) != tickets {
		t.Fatalf("%d of %d tickets were taken", len(outcomes), tickets)
	}

	// Every ticket ends: done when read to the end; cut ones expire after the resume
	// grace, or were canceled, or done if the edge had sent everything already.
	ids := make([]string, len(outcomes))
	for i, o := range outcomes {
		ids[i] = o.id
	}
	var final map[string]string
	eventually(t, 10*time.Second, "every ticket in a terminal state", func() bool {
		final = statuses(t, rdb, ids)
		for _, st := range final {
			if !slices.Contains([]string{"done", "expired", "canceled", "failed"}, st) {
				return false
			}
		}
		return true
	})
	count := map[string]int{}
	aborted := 0
	for _, o := range outcomes {
		st := final[o.id]
		count[st]++
		if o.aborted {
			aborted++
		}
		switch {
		case o.full && st != "done":
			t.Errorf("ticket %s was read to the end and is %q", o.id, st)
		case o.canceled && st != "canceled":
			t.Errorf("ticket %s was canceled and is %q", o.id, st)
		case o.aborted && st == "failed":
			t.Errorf("ticket %s was cut by its client and is failed", o.id)
		}
	}
	close(stop)
	most := mostSlots()
	waitSettled(t, rdb, s.nats.URL, 10*time.Second)

	flights := edgeFlights(t, edges)
	starts, ends, mostInFlight := flights.starts, flights.ends, flights.most()
	t.Logf("%d tickets from %d tenants in %s (%.0f/s) with %d clients: %v; %d cut by their client",
		tickets, tenants, ran.Round(100*time.Millisecond), float64(tickets)/ran.Seconds(), clients, count, aborted)
	t.Logf("edges' records: %d streams, at most %d in flight at once; ledger: at most %d slots held at once (limit %d)",
		starts, mostInFlight, most, limit)
	if starts != ends || starts < tickets*8/10 {
		t.Errorf("edge logs hold %d stream starts and %d ends for %d tickets", starts, ends, tickets)
	}
	if mostInFlight > limit {
		t.Errorf("the edges had %d downloads in flight at once, over the limit of %d", mostInFlight, limit)
	}
	if most > limit {
		t.Errorf("the ledger held %d slots at once, over the limit of %d", most, limit)
	}
	if mostInFlight < limit/2 {
		t.Errorf("at most %d downloads were ever in flight: the load did not reach the limit of %d", mostInFlight, limit)
	}
}
