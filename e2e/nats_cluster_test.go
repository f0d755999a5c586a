package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/queue"
)

// The production shape on one machine: three nats-server processes in a cluster, the
// ticket stream replicated three times, the roles as separate processes given all three
// URLs. The node leading the ticket stream is killed (SIGKILL) under load: every ticket
// that got its 202 is still downloaded and ends done, and new tickets keep being
// accepted and served on the two remaining nodes.
func TestNATSClusterNodeKilledUnderLoad(t *testing.T) {
	cluster := testenv.StartNATSCluster(t, 3)
	s := newStack(t, stackOptions{GlobalLimit: 4, Env: []string{
		"SLUICE_NATS_URL=" + cluster.URLs(),
		"SLUICE_NATS_REPLICAS=3",
		"SLUICE_LOG_LEVEL=info",
	}})
	s.dumpLogsOnFailure()
	objects := map[string][]byte{"a.bin": randomBytes(128<<10, 11), "b.bin": randomBytes(512<<10, 12)}
	for k, v := range objects {
		s.putObject(k, v)
	}
	s.startRoleOn("edge", s.edgePort)
	s.startRoleOn("worker", 0)
	s.startRoleOn("worker", 0)
	s.startRoleOn("ingress", testenv.FreePort(t))

	if r := streamReplicas(t, cluster.URLs()); r != 3 {
		t.Fatalf("the ticket stream has %d replicas, want 3", r)
	}
	l := startLoad(t, s.ingressURL, 5, objects)
	l.waitProgress(10, 60*time.Second, "downloads on the healthy cluster")

	leader := cluster.Node(cluster.StreamLeader(cluster.Nodes[0], queue.TicketStream))
	if leader == nil {
		t.Fatal("could not find the ticket stream's leader through /jsz")
	}
	cluster.Kill(leader)
	killed, acceptedBefore := time.Now(), l.acceptedCount()
	t.Logf("killed %s, the ticket stream's leader, after %d tickets were accepted", leader.Name, acceptedBefore)

	// Service continues on two nodes: new tickets accepted and downloaded.
	eventually(t, 60*time.Second, "tickets accepted after the node was killed", func() bool {
		return l.acceptedCount() >= acceptedBefore+20
	})
	l.waitProgress(20, 60*time.Second, "downloads after the node was killed")
	t.Logf("20 more tickets accepted within %s of the kill", time.Since(killed).Round(time.Millisecond))
	// Readiness asks JetStream for account info, which waits for the cluster's meta
	// leader: it may be a little behind the stream's own election.
	eventually(t, 30*time.Second, "ingress /readyz 200 with two of three NATS nodes up", func() bool {
		return httpStatus(s.ingressURL+"/readyz") == http.StatusOK
	})
	if r := streamReplicas(t, cluster.URLs()); r != 3 {
		t.Errorf("the ticket stream has %d replicas after the kill, want 3", r)
	}

	// Every accepted ticket, before, during and after the kill, ends done.
	l.finish(s)

	// The node comes back and catches up with the stream it lost.
	cluster.Restart(leader)
}

// streamReplicas reads the ticket stream's replica count through the cluster.
func streamReplicas(t *testing.T, urls string) int {
	t.Helper()
	js, done := connectJetStream(t, urls)
	defer done()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, queue.TicketStream)
	if err != nil {
		t.Fatalf("ticket stream: %v", err)
	}
	return st.CachedInfo().Config.Replicas
}

// Compose starts every role at once: four workers, two ingresses and an edge against a
// fresh three-node cluster with replicated streams race to create the same streams,
// consumers and buckets while the cluster settles. Each retries until NATS answers, so
// all of them come up (none exits on a timeout), and a ticket taken on either ingress
// is admitted and downloaded.
func TestNATSClusterRolesStartTogether(t *testing.T) {
	cluster := testenv.StartNATSCluster(t, 3)
	s := newStack(t, stackOptions{Env: []string{
		"SLUICE_NATS_URL=" + cluster.URLs(),
		"SLUICE_NATS_REPLICAS=3",
		"SLUICE_LOG_LEVEL=info",
	}})
	s.dumpLogsOnFailure()
	data := randomBytes(256<<10, 13)
	s.putObject("together.bin", data)

	type role struct {
		p     *testenv.Process
		ready string
	}
	var roles []role
	start := func(name, listen string, port int) {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		env := append(append([]string{}, s.env...), listen+"="+addr)
		p := testenv.Start(t, t.TempDir(), sluiceBin, env, name)
		s.roles = append(s.roles, p)
		roles = append(roles, role{p, "http://" + addr + "/readyz"})
	}
	start("edge", "SLUICE_EDGE_ADDR", s.edgePort)
	for range 4 {
		start("worker", "SLUICE_METRICS_ADDR", testenv.FreePort(t))
	}
	var ingresses []string
	for range 2 {
		port := testenv.FreePort(t)
		start("ingress", "SLUICE_INGRESS_ADDR", port)
		ingresses = append(ingresses, "http://127.0.0.1:"+strconv.Itoa(port))
	}
	began := time.Now()
	// Generous: on a loaded machine a cluster can take a while to place 12 replicated
	// assets, and every role's own deadline is 30 s.
	for _, r := range roles {
		testenv.WaitHTTP(t, r.ready, 90*time.Second, r.p.Log)
	}
	t.Logf("%d roles ready within %s of starting together", len(roles), time.Since(began).Round(time.Millisecond))
	for _, r := range roles {
		if r.p.Cmd.ProcessState != nil {
			t.Fatalf("%s exited: %s", r.p.Log, r.p.Cmd.ProcessState)
		}
	}

	for _, url := range ingresses {
		s.ingressURL = url
		_, link := s.link("together.bin")
		sum, n, resp := download(t, link)
		if resp.StatusCode != http.StatusOK || sum != sha(data) {
			t.Errorf("ticket through %s: %d, %d bytes, SHA-256 matches: %v", url, resp.StatusCode, n, sum == sha(data))
		}
	}
}
