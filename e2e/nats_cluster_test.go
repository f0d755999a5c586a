package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/testenv"
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
	waitFor(t, 60*time.Second, "tickets accepted after the node was killed", func() bool {
		return l.acceptedCount() >= acceptedBefore+20
	})
	l.waitProgress(20, 60*time.Second, "downloads after the node was killed")
	t.Logf("20 more tickets accepted within %s of the kill", time.Since(killed).Round(time.Millisecond))
	// Readiness asks JetStream for account info, which waits for the cluster's meta
	// leader: it may be a little behind the stream's own election.
	waitFor(t, 30*time.Second, "ingress /readyz 200 with two of three NATS nodes up", func() bool {
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
