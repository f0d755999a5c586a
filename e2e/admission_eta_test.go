package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// etaPoll is one answer a waiting client got.
type etaPoll struct {
	at         time.Time
	status     string
	position   int64
	eta        int64
	known      bool
	retryAfter int
}

// Honest waiting against a real run: a steady completion rate (global limit 2, every
// download paced by the edge to the same duration, every client downloading as soon
// as it is admitted), 24 tickets queued at once. Each ticket's first known estimate is
// compared with the time it then actually waited; positions count down to the front
// and Retry-After paces polling, more often near the front.
func TestAdmissionETAMatchesARealRun(t *testing.T) {
	const (
		tickets = 24
		size    = 512 << 10
		rate    = 384 << 10 // bytes/s per download: about a second each
	)
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 2, Env: []string{"SLUICE_DOWNLOAD_RATE=" + strconv.Itoa(rate)}})
	data := randomBytes(size, 36)
	s.putObject("eta.bin", data)
	s.startAll(2)

	// Queued while paused, the positions are exactly the order of the requests.
	s.operator(http.MethodPost, "/api/v1/admin/pause", nil, nil)
	ids := make([]string, tickets)
	for i := range ids {
		ids[i] = s.request("eta.bin").ID
	}
	for i, id := range ids {
		if tk := s.ticket(id); tk.Position != int64(i) || tk.Status != "queued" {
			t.Fatalf("ticket %d of %d queued at once: %+v, want position %d", i, tickets, tk, i)
		}
	}

	polls := make([][]etaPoll, tickets)
	errs := make(chan error, tickets)
	var wg sync.WaitGroup
	start := time.Now()
	s.operator(http.MethodPost, "/api/v1/admin/resume", nil, nil)
	for i, id := range ids {
		wg.Go(func() {
			for time.Since(start) < 60*time.Second {
				p, link, err := pollOnce(s.ingressURL, id)
				if err != nil {
					errs <- err
					return
				}
				polls[i] = append(polls[i], p)
				if p.status == "ready" {
					resp, err := http.Get(link)
					if err != nil {
						errs <- err
						return
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || n != size {
						errs <- fmt.Errorf("ticket %d: downloaded %d bytes: %v", i, n, err)
					}
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			errs <- fmt.Errorf("ticket %d not ready within a minute", i)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The first known estimate of each ticket against its actual wait from then.
	type sample struct {
		ticket, position int
		eta, actual      float64
	}
	var samples []sample
	for i, ps := range polls {
		readyAt := ps[len(ps)-1].at
		for _, p := range ps {
			if p.status == "queued" && p.known {
				samples = append(samples, sample{i, int(p.position), float64(p.eta), readyAt.Sub(p.at).Seconds()})
				break
			}
		}
	}
	var errsPct []float64
	bad := 0
	for _, sm := range samples {
		e := (sm.eta - sm.actual) / sm.actual * 100
		t.Logf("ticket %2d: position %2d, estimate %2.0f s, waited %5.2f s (%+.0f%%)", sm.ticket, sm.position, sm.eta, sm.actual, e)
		// Estimates are whole seconds: a short wait is judged to the second.
		if sm.actual >= 4 {
			errsPct = append(errsPct, math.Abs(e))
			if math.Abs(e) > 25 {
				bad++
			}
		} else if math.Abs(sm.eta-sm.actual) > 1 {
			bad++
		}
	}
	if len(samples) < tickets/2 {
		t.Fatalf("only %d tickets got a known estimate while queued", len(samples))
	}
	sort.Float64s(errsPct)
	if len(errsPct) > 0 {
		t.Logf("estimate error over %d waits of 4 s or more: median %.0f%%, max %.0f%%",
			len(errsPct), errsPct[len(errsPct)/2], errsPct[len(errsPct)-1])
	}
	if bad > 0 {
		t.Errorf("%d of %d estimates were off by more than 25%% (or a second, for waits under 4 s)", bad, len(samples))
	}

	// Smooth: the moment each answer promises (poll time + estimate) moves little from
	// one poll to the next.
	var jump time.Duration
	for _, ps := range polls {
		var prev time.Time
		for _, p := range ps {
			if p.status != "queued" || !p.known {
				continue
			}
			promised := p.at.Add(time.Duration(p.eta) * time.Second)
			if !prev.IsZero() {
				jump = max(jump, promised.Sub(prev), prev.Sub(promised))
			}
			prev = promised
		}
	}
	t.Logf("largest move of the promised time between two polls: %s", jump.Round(10*time.Millisecond))
	if jump > 2*time.Second {
		t.Errorf("the estimate jumped by %s between two polls", jump)
	}

	// Positions only count down, and reach the front; Retry-After is 1 s at the front
	// and longer far back.
	sawFront, farRetry := 0, 0
	for i, ps := range polls {
		var queued []etaPoll
		for _, p := range ps {
			if p.status == "queued" {
				queued = append(queued, p)
			}
		}
		for j := 1; j < len(queued); j++ {
			if queued[j].position > queued[j-1].position {
				t.Errorf("ticket %d: position went up from %d to %d", i, queued[j-1].position, queued[j].position)
			}
		}
		for _, p := range queued {
			if p.position == 0 {
				sawFront++
				if p.retryAfter != 1 {
					t.Errorf("ticket %d at the front: Retry-After %d, want 1", i, p.retryAfter)
				}
				break
			}
		}
		if len(queued) > 0 && queued[len(queued)-1].position > 1 {
			t.Errorf("ticket %d was admitted while its last answer said %d ahead", i, queued[len(queued)-1].position)
		}
		for _, p := range queued {
			farRetry = max(farRetry, p.retryAfter)
		}
	}
	if sawFront < tickets/3 {
		t.Errorf("only %d tickets were ever told they were at the front", sawFront)
	}
	if farRetry < 2 {
		t.Errorf("Retry-After was never more than 1 s, even %d places back", tickets-1)
	}
	t.Logf("%d tickets saw position 0; longest Retry-After %d s; run took %s", sawFront, farRetry, time.Since(start).Round(100*time.Millisecond))
}

// pollOnce reads a ticket as its client does and returns the answer and the link.
func pollOnce(base, id string) (etaPoll, string, error) {
	resp, err := http.Get(base + "/api/v1/tickets/" + id)
	if err != nil {
		return etaPoll{}, "", err
	}
	defer resp.Body.Close()
	var tk api.Ticket
	if err := decodeJSON(resp, &tk); err != nil {
		return etaPoll{}, "", err
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return etaPoll{at: time.Now(), status: tk.Status, position: tk.Position, eta: tk.ETASeconds, known: tk.ETAKnown, retryAfter: ra}, tk.DownloadURL, nil
}
