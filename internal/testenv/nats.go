package testenv

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is a real NATS server with JetStream, run in-process for one test.
type NATS struct {
	Server *server.Server
	URL    string
	Dir    string
	Port   int
}

// StartNATS starts a JetStream-enabled nats-server on a random loopback port with
// its store in a temporary directory, shut down at cleanup.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	dir := tb.TempDir()
	return startNATSAt(tb, FreePort(tb), dir)
}

// Restart shuts the server down and starts a new one on the same port and store,
// as a crashed-and-restarted node would come back.
func (n *NATS) Restart(tb testing.TB) {
	tb.Helper()
	n.Stop()
	n.Server = startNATSAt(tb, n.Port, n.Dir).Server
}

// Stop shuts the server down, as an outage would.
func (n *NATS) Stop() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

func startNATSAt(tb testing.TB, port int, dir string) *NATS {
	tb.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server did not become ready within 10s")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &NATS{Server: s, URL: s.ClientURL(), Dir: dir, Port: port}
}

// JetStream connects to the server, closed at cleanup.
func (n *NATS) JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	return JetStreamAt(tb, n.URL)
}

// JetStreamAt connects to the NATS server at url (reconnecting for ever), closed at
// cleanup.
func JetStreamAt(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect to nats %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}
