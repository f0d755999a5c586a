package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// Helpers for tests that stop, kill and restart roles under load (lifecycle_test.go,
// nats_cluster_test.go). Roles started here keep their ports across restarts, so
// clients keep one address, as behind a load balancer.

// startRoleOn runs a role on a fixed port (ingress, edge; 0 for a worker, which gets a
// free port for its /metrics) and waits until it answers.
func (s *stack) startRoleOn(role string, port int, env ...string) *testenv.Process {
	s.t.Helper()
	env = append(append([]string{}, s.env...), env...)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	probe := "/readyz"
	switch role {
	case "ingress":
		env = append(env, "SLUICE_INGRESS_ADDR="+addr)
		s.ingressURL = "http://" + addr
	case "edge":
		env = append(env, "SLUICE_EDGE_ADDR="+addr)
		if port == s.edgePort {
			env = append(env, "SLUICE_EDGE_METRICS_ADDR=127.0.0.1:"+strconv.Itoa(s.edgeMetricsPort))
		}
	case "worker": // its own /metrics listener: one port per worker
		addr, probe = "127.0.0.1:"+strconv.Itoa(testenv.FreePort(s.t)), "/healthz"
		env = append(env, "SLUICE_METRICS_ADDR="+addr)
	}
	p := testenv.Start(s.t, s.t.TempDir(), sluiceBin, env, role)
	s.roles = append(s.roles, p)
	testenv.WaitHTTP(s.t, "http://"+addr+probe, 30*time.Second, p.Log)
	if role == "worker" {
		time.Sleep(200 * time.Millisecond) // its first fetch
	}
	return p
}

// exiting is a process that was sent SIGTERM.
type exiting struct {
	t     *testing.T
	p     *testenv.Process
	start time.Time
	done  chan struct{}
}

// sigterm sends SIGTERM; wait then waits for the exit.
func sigterm(t *testing.T, p *testenv.Process) *exiting {
	t.Helper()
	e := &exiting{t: t, p: p, start: time.Now(), done: make(chan struct{})}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	go func() { _ = p.Cmd.Wait(); close(e.done) }()
	return e
}

// wait fails the test if the process has not exited within limit of the signal; it
// returns the exit code and how long the exit took.
func (e *exiting) wait(limit time.Duration) (int, time.Duration) {
	e.t.Helper()
	select {
	case <-e.done:
	case <-time.After(time.Until(e.start.Add(limit))):
		_ = e.p.Cmd.Process.Kill()
		<-e.done
		out, _ := os.ReadFile(e.p.Log)
		e.t.Fatalf("pid %d still running %s after SIGTERM; its log:\n%s", e.p.Cmd.Process.Pid, limit, tail(out, 4000))
	}
	code := e.p.Cmd.ProcessState.ExitCode()
	if code != 0 {
		out, _ := os.ReadFile(e.p.Log)
		e.t.Logf("pid %d exited with %d after SIGTERM; its log ends:\n%s", e.p.Cmd.Process.Pid, code, tail(out, 2000))
	}
	return code, time.Since(e.start)
}

// terminate sends SIGTERM and waits for the exit (see exiting.wait).
func terminate(t *testing.T, p *testenv.Process, limit time.Duration) (int, time.Duration) {
	t.Helper()
	return sigterm(t, p).wait(limit)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// httpStatus is the status of a GET, or -1 when the connection failed (refused).
func httpStatus(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// load is a set of clients that, until stopped, create tickets and download them as a
// patient client would: retrying refused connections and 503s, following the ticket,
// fetching the link again when a stream was cut. It records every accepted ticket.
type load struct {
	t       *testing.T
	ingress string // base URL, fixed for the test
	objects map[string][]byte

	mu        sync.Mutex
	accepted  []string       // every ticket that got a 202
	finished  map[string]int // ticket → bytes downloaded and verified
	refused   int            // ticket requests not accepted (ingress or queue down)
	problems  []string       // what a client would call a bug
	stop      chan struct{}
	wg        sync.WaitGroup
	stoppedAt time.Time
}

func startLoad(t *testing.T, ingressURL string, clients int, objects map[string][]byte) *load {
	l := &load{t: t, ingress: ingressURL, objects: objects, finished: map[string]int{}, stop: make(chan struct{})}
	keys := make([]string, 0, len(objects))
	for k := range objects {
		keys = append(keys, k)
	}
	for i := range clients {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(keys[(i+n)%len(keys)])
			}
		})
	}
	return l
}

var loadClient = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (l *load) problem(format string, args ...any) {
	l.mu.Lock()
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// one creates a ticket (until one is accepted or the load stops), then sees it through
// to a verified download, whatever is restarted meanwhile (up to two minutes).
func (l *load) one(object string) {
	var id string
	for id == "" {
		select {
		case <-l.stop:
			return
		default:
		}
		body, _ := json.Marshal(map[string]string{"object": object})
		resp, err := loadClient.Post(l.ingress+"/api/v1/downloads", "application/json", bytes.NewReader(body))
		if err != nil {
			l.refusedOnce()
			continue
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			var tk api.Ticket
			if err := json.Unmarshal(raw, &tk); err != nil || tk.ID == "" {
				l.problem("202 without a ticket: %s", raw)
				return
			}
			id = tk.ID
			l.mu.Lock()
			l.accepted = append(l.accepted, id)
			l.mu.Unlock()
		case http.StatusServiceUnavailable:
			if resp.Header.Get("Retry-After") == "" {
				l.problem("503 without Retry-After: %s", raw)
			}
			l.refusedOnce()
		default:
			l.problem("POST /api/v1/downloads: %d %s", resp.StatusCode, raw)
			return
		}
	}
	l.see(id, object)
}

// adopt sees through a ticket the test created itself, as part of the load.
func (l *load) adopt(id, object string) {
	l.mu.Lock()
	l.accepted = append(l.accepted, id)
	l.mu.Unlock()
	l.wg.Go(func() { l.see(id, object) })
}

// see follows an accepted ticket to its link and downloads it, verifying the bytes.
func (l *load) see(id, object string) {
	deadline := time.Now().Add(2 * time.Minute)
	var link string
	for link == "" {
		if time.Now().After(deadline) {
			l.problem("ticket %s: no link within 2 minutes", id)
			return
		}
		req, _ := http.NewRequest(http.MethodGet, l.ingress+"/api/v1/tickets/"+id+"/download", nil)
		req.Header.Set("Accept", "application/json") // the ticket at once while queued, not the wait
		resp, err := loadClient.Do(req)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusSeeOther:
			link = resp.Header.Get("Location")
		case http.StatusAccepted, http.StatusServiceUnavailable:
			time.Sleep(50 * time.Millisecond)
		default:
			l.problem("ticket %s: /download answered %d", id, resp.StatusCode)
			return
		}
	}
	want := l.objects[object]
	for {
		if time.Now().After(deadline) {
			l.problem("ticket %s: not downloaded within 2 minutes", id)
			return
		}
		resp, err := loadClient.Get(link)
		if err != nil {
			time.Sleep(100 * time.Millisecond) // edge restarting
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable || err != nil {
			time.Sleep(100 * time.Millisecond) // cut or refused: fetch again
			continue
		}
		if resp.StatusCode != http.StatusOK {
			l.problem("ticket %s: link answered %d", id, resp.StatusCode)
			return
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sha(want) || n != int64(len(want)) {
			l.problem("ticket %s: downloaded %d bytes with the wrong content", id, n)
			return
		}
		l.mu.Lock()
		l.finished[id] = int(n)
		l.mu.Unlock()
		return
	}
}

func (l *load) refusedOnce() {
	l.mu.Lock()
	l.refused++
	l.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
}

// acceptedCount is how many tickets were accepted so far.
func (l *load) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// finishedCount is how many tickets were downloaded and verified so far.
func (l *load) finishedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.finished)
}

// waitProgress waits until n more tickets than now have been downloaded.
func (l *load) waitProgress(n int, within time.Duration, what string) {
	l.t.Helper()
	target := l.finishedCount() + n
	eventually(l.t, within, what, func() bool { return l.finishedCount() >= target })
}

// finish stops creating tickets, lets every client see its ticket through, and checks
// that every accepted ticket was downloaded intact and is done.
func (l *load) finish(s *stack) {
	l.t.Helper()
	close(l.stop)
	l.stoppedAt = time.Now()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		l.t.Fatal("load clients did not finish within 3 minutes")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		l.t.Error(p)
	}
	for _, id := range l.accepted {
		if _, ok := l.finished[id]; !ok {
			l.t.Errorf("accepted ticket %s was never downloaded", id)
			continue
		}
		if tk := s.ticket(id); tk.Status != "done" {
			l.t.Errorf("accepted ticket %s is %q, want done (%s)", id, tk.Status, tk.Error)
		}
	}
	l.t.Logf("load: %d tickets accepted, %d downloaded and done, %d ticket requests refused (503 or no connection) along the way",
		len(l.accepted), len(l.finished), l.refused)
}

// consumerInfo reads the ticket consumer's counters through the test's NATS server.
func consumerInfo(ctx context.Context, t *testing.T, natsURL string) *jetstream.ConsumerInfo {
	t.Helper()
	js, done := connectJetStream(t, natsURL)
	defer done()
	c, err := js.Consumer(ctx, queue.TicketStream, queue.AdmissionConsumer)
	if err != nil {
		t.Fatalf("ticket consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("ticket consumer info: %v", err)
	}
	return info
}

// connectJetStream connects to the NATS servers at urls; done closes the connection.
func connectJetStream(t *testing.T, urls string) (js jetstream.JetStream, done func()) {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return js, nc.Close
}
