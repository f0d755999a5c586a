package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NATSProcess is one nats-server process with JetStream (the binary scripts/deps.sh
// builds into bin/), for a measurement that needs the server's CPU time apart from the
// test's own: an in-process server (StartNATS) shares the test's.
type NATSProcess struct {
	*Process
	URL string
	// ProfileURL is the server's /debug/pprof (NATSProcessOptions.Profile), else empty.
	ProfileURL string
}

// NATSProcessOptions choose how the server stores messages.
type NATSProcessOptions struct {
	// SyncAlways fsyncs every write before it is acknowledged (sync_interval: always),
	// as StartNATS and `sluice serve` do; false is nats-server's default (acknowledged
	// once written, synced every 2 minutes).
	SyncAlways bool
	// Profile serves the server's Go profiles (prof_port) on a port of its own.
	Profile bool
}

// StartNATSProcess starts the server on random loopback ports with its store in a
// temporary directory and waits until JetStream is healthy; it is killed at cleanup.
func StartNATSProcess(tb testing.TB, o NATSProcessOptions) *NATSProcess {
	tb.Helper()
	bin := Binary(tb, "nats-server", "SLUICE_NATS_SERVER_BIN", "make deps  (builds nats-server into bin/)")
	dir := tb.TempDir()
	port, httpPort := FreePort(tb), FreePort(tb)
	sync := ""
	if o.SyncAlways {
		sync = "  sync_interval: always\n"
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n%s}\n",
		port, httpPort, filepath.Join(dir, "js"), sync)
	profileURL := ""
	if o.Profile {
		profPort := FreePort(tb)
		conf += fmt.Sprintf("prof_port: %d\n", profPort)
		profileURL = "http://127.0.0.1:" + strconv.Itoa(profPort) + "/debug/pprof"
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	p := startProcess(tb, dir, bin, nil, "-c", confPath)
	p.Addr = "127.0.0.1:" + strconv.Itoa(port)
	WaitHTTP(tb, "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/healthz?js-enabled-only=true", 30*time.Second, p.Log)
	return &NATSProcess{Process: p, URL: "nats://" + p.Addr, ProfileURL: profileURL}
}
