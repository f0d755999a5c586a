package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

const edgeObjectSize = 1 << 30

// edgeLink takes a ticket for key and returns its download link once admitted.
func edgeLink(b *testing.B, s *server, key string) string {
	b.Helper()
	resp, err := http.Post(s.ingress+"/api/v1/downloads", "application/json", bytes.NewReader([]byte(`{"object":"`+key+`"}`)))
	if err != nil {
		b.Fatal(err)
	}
	var tk struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&tk)
	resp.Body.Close()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r, err := http.Get(s.ingress + "/api/v1/tickets/" + tk.ID)
		if err != nil {
			b.Fatal(err)
		}
		var t struct {
			DownloadURL string `json:"download_url"`
		}
		json.NewDecoder(r.Body).Decode(&t)
		r.Body.Close()
		if t.DownloadURL != "" {
			return t.DownloadURL
		}
	}
	b.Fatal("ticket not admitted within 30s")
	return ""
}

// getAll downloads url and returns bytes per second.
func getAll(b *testing.B, url string, want int64) float64 {
	b.Helper()
	start := time.Now()
	r, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.CopyBuffer(io.Discard, r.Body, make([]byte, 256<<10))
	r.Body.Close()
	if err != nil || n != want {
		b.Fatalf("GET %s: %d bytes (%v), want %d", url, n, err, want)
	}
	return float64(n) / time.Since(start).Seconds()
}

// rssBytes reads the resident set of a process from /proc.
func rssBytes(pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startNginx serves root on a loopback port with sendfile, as a child process.
func startNginx(b *testing.B, root string) string {
	b.Helper()
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		b.Fatal("nginx is not installed: run scripts/deps.sh bench (or apt-get install -y nginx-light)")
	}
	dir := b.TempDir()
	port := testenv.FreePort(b)
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    root %[3]s;
    location = /healthz { return 200 "ok"; }
  }
}
`, dir, port, root)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath, "-p", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// SIGTERM, so that the master stops its worker too: a killed master leaves the
		// worker running, holding its port, after the benchmark.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		stopped := make(chan struct{})
		go func() { _ = cmd.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-stopped
		}
	})
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	testenv.WaitHTTP(b, url+"/healthz", 10*time.Second, filepath.Join(dir, "error.log"))
	return url
}

// rangeConns and rangeSize are the small-range load: wrk with rangeConns keep-alive
// connections asking for the same rangeSize bytes of the file over and over.
const (
	rangeConns = 64
	rangeSize  = 64 << 10
)

// wrkRanges runs wrk against url for d, every request asking for the first rangeSize
// bytes, and returns requests per second. Every response must be a 206.
func wrkRanges(b *testing.B, url string, d time.Duration) float64 {
	b.Helper()
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(rangeConns), "-d"+d.String(),
		"-H", "Range: bytes=0-"+strconv.Itoa(rangeSize-1), url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if strings.Contains(string(out), "Non-2xx") {
		b.Fatalf("wrk %s: some responses were not 206:\n%s", url, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Requests/sec:"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				b.Fatalf("wrk %s: %v\n%s", url, err, out)
			}
			return v
		}
	}
	b.Fatalf("wrk %s: no Requests/sec in\n%s", url, out)
	return 0
}

// BenchmarkEdgeLocal: the edge serving a 1 GiB local file (sendfile) next to nginx
// serving the same file from the same disk in the same run: 64 KiB ranges over 64
// keep-alive connections on one link (the token checked on every request), one whole
// stream, and the edge process's peak memory while eight clients download 1 GiB each.
func BenchmarkEdgeLocal(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatal("wrk is not installed: run scripts/deps.sh bench (or apt-get install -y wrk)")
	}
	// One link carries all of wrk's connections. SLUICE_BENCH_PROFILE=file writes a
	// CPU profile of the first edge round (startProfile).
	opsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(b))
	s := startServer(b, false, "SLUICE_MAX_CONNS_PER_TOKEN="+strconv.Itoa(rangeConns),
		"SLUICE_PPROF=true", "SLUICE_EDGE_METRICS_ADDR="+opsAddr)
	root := filepath.Join(s.dataDir, "objects")
	writeLocalObject(b, s, "bench/edge.bin", edgeObjectSize)
	nginx := startNginx(b, root)
	getAll(b, nginx+"/bench/edge.bin", edgeObjectSize) // page cache warm for both
	goFiles := httptest.NewServer(http.FileServer(http.Dir(root)))
	b.Cleanup(goFiles.Close)

	for b.Loop() {
		rangeLink := edgeLink(b, s, "bench/edge.bin")
		// Three rounds, the servers taking turns, so that a neighbour's load on this
		// shared machine weighs on all of them alike. The Go file server is the floor
		// of a Go server here: net/http's own (an open, a stat and sendfile per
		// request), no token, no ledger.
		var edgeRanges, peerRanges, goRanges float64
		const rounds = 3
		for round := range rounds {
			profile := func() {}
			if round == 0 {
				profile = startProfile(b, "http://"+opsAddr, "")
			}
			edgeRanges += wrkRanges(b, rangeLink, 3*time.Second) / rounds
			profile()
			peerRanges += wrkRanges(b, nginx+"/bench/edge.bin", 3*time.Second) / rounds
			goRanges += wrkRanges(b, goFiles.URL+"/bench/edge.bin", 3*time.Second) / rounds
		}
		b.ReportMetric(edgeRanges, "edge-64KiB-req/s")
		b.ReportMetric(peerRanges, "nginx-64KiB-req/s")
		b.ReportMetric(goRanges, "go-fileserver-64KiB-req/s")
		b.ReportMetric(edgeRanges/peerRanges, "ranges-ratio-to-nginx")
		fmt.Fprintf(os.Stderr, "\nedge vs nginx, 64 KiB ranges of one file, wrk -c%d, one link:\n  edge %8.0f req/s\n  nginx %7.0f req/s\n  ratio %.2f\n"+
			"  net/http FileServer, same file: %.0f req/s (edge / it: %.2f)\n",
			rangeConns, edgeRanges, peerRanges, edgeRanges/peerRanges, goRanges, edgeRanges/goRanges)

		edge := getAll(b, edgeLink(b, s, "bench/edge.bin"), edgeObjectSize)
		peer := getAll(b, nginx+"/bench/edge.bin", edgeObjectSize)

		// Eight clients at once, 1 GiB each, while the process's RSS is sampled.
		links := make([]string, 8)
		for i := range links {
			links[i] = edgeLink(b, s, "bench/edge.bin")
		}
		stop := make(chan struct{})
		var peak int64
		var sampler sync.WaitGroup
		sampler.Go(func() {
			for {
				peak = max(peak, rssBytes(s.proc.Cmd.Process.Pid))
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
		start := time.Now()
		var wg sync.WaitGroup
		for _, l := range links {
			wg.Go(func() { getAll(b, l, edgeObjectSize) })
		}
		wg.Wait()
		aggregate := float64(8*edgeObjectSize) / time.Since(start).Seconds()
		close(stop)
		sampler.Wait()

		b.ReportMetric(edge/1e6, "edge-MB/s")
		b.ReportMetric(peer/1e6, "nginx-MB/s")
		b.ReportMetric(edge/peer, "ratio-to-nginx")
		b.ReportMetric(aggregate/1e6, "edge-8clients-MB/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
		fmt.Fprintf(os.Stderr, "\nedge vs nginx, one 1 GiB local file (sendfile both), one client:\n  edge %7.0f MB/s\n  nginx %6.0f MB/s\n  ratio %.2f\n"+
			"eight clients through the edge, 1 GiB each: %.0f MB/s in all, peak RSS of the sluice process %.1f MiB\n",
			edge/1e6, peer/1e6, edge/peer, aggregate/1e6, float64(peak)/(1<<20))
		if peak > 64<<20 {
			b.Errorf("peak RSS %.1f MiB while eight clients downloaded 1 GiB each, want under 64 MiB", float64(peak)/(1<<20))
		}
	}
}
