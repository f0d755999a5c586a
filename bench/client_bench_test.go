package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

const clientObjectSize = 1 << 30

// BenchmarkClientGet: `sluice get` (ticket, wait, 4 parallel ranges, SHA-256 computed
// while downloading, .part renamed into place) downloading a 1 GiB object through the
// edge, next to aria2c with the same four connections, and `sluice get --connections 1`
// next to curl (alone, and followed by sha256sum as a user who checks the file would),
// each peer on its own ticket's link, in the same run. Every
// client writes its file to the same disk; times are wall clock of the whole command.
// Writing 1 GiB is dominated by the page cache's writeback, which varies a lot from
// one command to the next: each command starts after a sync, the three take turns
// for three rounds, and each one's best round is reported.
func BenchmarkClientGet(b *testing.B) {
	aria2c := testenv.Binary(b, "aria2c", "SLUICE_ARIA2C_BIN", "apt-get install -y aria2")
	curl := testenv.Binary(b, "curl", "SLUICE_CURL_BIN", "apt-get install -y curl")
	sha256sum := testenv.Binary(b, "sha256sum", "SLUICE_SHA256SUM_BIN", "apt-get install -y coreutils")
	s := startServer(b, false)
	writeLocalObject(b, s, "bench/client.bin", clientObjectSize)
	out := b.TempDir()

	// run times one command that writes dest, checks the size, and removes the file.
	run := func(name, dest string, cmds ...*exec.Cmd) float64 {
		b.Helper()
		syscall.Sync()
		start := time.Now()
		for _, cmd := range cmds {
			if raw, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s: %v\n%s", name, err, raw)
			}
		}
		elapsed := time.Since(start)
		st, err := os.Stat(dest)
		if err != nil || st.Size() != clientObjectSize {
			b.Fatalf("%s wrote %v (%v), want %d bytes", name, st, err, clientObjectSize)
		}
		os.Remove(dest)
		return clientObjectSize / elapsed.Seconds()
	}

	for b.Loop() {
		dest := filepath.Join(out, "client.bin")
		var sluice, sluice1, aria, single, checked float64
		for range 3 {
			get := exec.Command(sluiceBin, "get", "--server", s.ingress, "--connections", "4", "--quiet", "-o", dest, "bench/client.bin")
			sluice = max(sluice, run("sluice get", dest, get))
			get = exec.Command(sluiceBin, "get", "--server", s.ingress, "--connections", "1", "--quiet", "-o", dest, "bench/client.bin")
			sluice1 = max(sluice1, run("sluice get --connections 1", dest, get))

			link := edgeLink(b, s, "bench/client.bin")
			aria = max(aria, run("aria2c", dest, exec.Command(aria2c, "-q", "-x4", "-s4", "-k1M", "--file-allocation=none",
				"--allow-overwrite=true", "-d", out, "-o", "client.bin", link)))

			link = edgeLink(b, s, "bench/client.bin")
			single = max(single, run("curl", dest, exec.Command(curl, "-sSf", "-o", dest, link)))

			link = edgeLink(b, s, "bench/client.bin")
			checked = max(checked, run("curl && sha256sum", dest, exec.Command(curl, "-sSf", "-o", dest, link),
				exec.Command(sha256sum, dest)))
		}

		b.ReportMetric(sluice/1e6, "sluice-get-MB/s")
		b.ReportMetric(sluice1/1e6, "sluice-get-1conn-MB/s")
		b.ReportMetric(aria/1e6, "aria2c-MB/s")
		b.ReportMetric(single/1e6, "curl-MB/s")
		b.ReportMetric(checked/1e6, "curl+sha256sum-MB/s")
		b.ReportMetric(sluice/aria, "ratio-to-aria2c")
		fmt.Fprintf(os.Stderr, "\nclients, one 1 GiB object through the edge, written to disk (best of 3 each):\n"+
			"  sluice get (4 connections, incl. ticket and SHA-256)  %5.0f MB/s\n"+
			"  aria2c -x4 -s4 (link already issued)                 %5.0f MB/s\n"+
			"  sluice get --connections 1                           %5.0f MB/s\n"+
			"  curl (one connection)                                %5.0f MB/s\n"+
			"  curl, then sha256sum of the file                     %5.0f MB/s\n"+
			"  sluice get / aria2c %.2f; sluice get --connections 1 / curl %.2f, / curl+sha256sum %.2f\n",
			sluice/1e6, aria/1e6, sluice1/1e6, single/1e6, checked/1e6, sluice/aria, sluice1/single, sluice1/checked)
	}
}
