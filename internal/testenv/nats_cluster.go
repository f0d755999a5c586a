package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NATSCluster is a real NATS JetStream cluster: separate nats-server processes (the
// binary scripts/deps.sh builds into bin/) routed to each other on loopback.
type NATSCluster struct {
	Nodes []*NATSNode
	bin   string
	tb    testing.TB
}

// NATSNode is one server of a cluster. Its ports and store survive Kill and Restart.
type NATSNode struct {
	Name        string
	Port        int // clients
	ClusterPort int // routes
	HTTPPort    int // monitoring: /healthz, /jsz
	Dir         string
	Config      string
	Process     *Process
}

// URL is the node's client URL.
func (n *NATSNode) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// StartNATSCluster starts size JetStream servers routed into one cluster and waits until
// every node reports JetStream healthy (a meta leader is elected), so replicated streams
// can be created at once. The servers are killed at cleanup.
func StartNATSCluster(tb testing.TB, size int) *NATSCluster {
	tb.Helper()
	c := &NATSCluster{
		bin: Binary(tb, "nats-server", "SLUICE_NATS_SERVER_BIN", "make deps  (builds nats-server into bin/)"),
		tb:  tb,
	}
	for i := range size {
		c.Nodes = append(c.Nodes, &NATSNode{
			Name: "n" + strconv.Itoa(i+1), Port: FreePort(tb), ClusterPort: FreePort(tb),
			HTTPPort: FreePort(tb), Dir: tb.TempDir(),
		})
	}
	var routes []string
	for _, n := range c.Nodes {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(n.ClusterPort))
	}
	for _, n := range c.Nodes {
		n.Config = filepath.Join(n.Dir, "nats.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: sluice-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, n.Name, n.Port, n.HTTPPort, filepath.Join(n.Dir, "js"), n.ClusterPort, strings.Join(routes, ", "))
		if err := os.WriteFile(n.Config, []byte(conf), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	// A new cluster's first meta leader election sometimes stalls: every node logs "JetStream
	// has not established contact with a meta leader" for minutes while its routes are up
	// (seen about once in thirty CI runs on a loaded two-core machine). A cluster that has
	// not formed within formWithin is started once more on empty stores; that is setup,
	// and what the tests then assert is unchanged.
	const formWithin = 30 * time.Second
	for attempt := 1; ; attempt++ {
		for _, n := range c.Nodes {
			c.start(n)
		}
		if c.formed(formWithin) {
			return c
		}
		if attempt == 2 {
			for _, n := range c.Nodes {
				c.WaitHealthy(n, time.Second) // fails the test with the node's log
			}
			return c // it formed in that last second
		}
		tb.Logf("the NATS cluster elected no meta leader within %s; starting it again on empty stores", formWithin)
		for _, n := range c.Nodes {
			n.Process.Stop()
			if err := os.RemoveAll(filepath.Join(n.Dir, "js")); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// formed reports whether every node says JetStream is healthy within the time given.
func (c *NATSCluster) formed(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for _, n := range c.Nodes {
		if !answers200(c.healthURL(n), time.Until(deadline)) {
			return false
		}
	}
	return true
}

func (c *NATSCluster) healthURL(n *NATSNode) string {
	return "http://127.0.0.1:" + strconv.Itoa(n.HTTPPort) + "/healthz"
}

func (c *NATSCluster) start(n *NATSNode) {
	c.tb.Helper()
	n.Process = startProcess(c.tb, n.Dir, c.bin, nil, "-c", n.Config)
	n.Process.Addr = n.URL()
}

// URLs is every node's client URL, comma-separated: what SLUICE_NATS_URL takes.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Kill ends a node abruptly (SIGKILL), as a crashed machine would.
func (c *NATSCluster) Kill(n *NATSNode) {
	c.tb.Helper()
	if err := n.Process.Signal(syscall.SIGKILL); err != nil {
		c.tb.Fatalf("kill %s: %v", n.Name, err)
	}
	_ = n.Process.Cmd.Wait()
}

// Restart starts a killed node again on the same ports and store and waits until it is
// healthy: it has caught up with the cluster.
func (c *NATSCluster) Restart(n *NATSNode) {
	c.tb.Helper()
	c.start(n)
	c.WaitHealthy(n, 30*time.Second)
}

// WaitHealthy waits until the node's /healthz says JetStream is current (it answers
// 503 until the node has joined the cluster and caught up).
func (c *NATSCluster) WaitHealthy(n *NATSNode, within time.Duration) {
	c.tb.Helper()
	WaitHTTP(c.tb, c.healthURL(n), within, n.Process.Log)
}

// StreamLeader asks a node's monitoring endpoint which server leads a stream
// ("" when it cannot tell).
func (c *NATSCluster) StreamLeader(via *NATSNode, stream string) string {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(
		"http://127.0.0.1:" + strconv.Itoa(via.HTTPPort) + "/jsz?accounts=true&streams=true")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var jsz struct {
		AccountDetails []struct {
			StreamDetail []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return ""
	}
	for _, a := range jsz.AccountDetails {
		for _, s := range a.StreamDetail {
			if s.Name == stream {
				return s.Cluster.Leader
			}
		}
	}
	return ""
}

// Node returns the node with the server name, nil if none.
func (c *NATSCluster) Node(name string) *NATSNode {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
