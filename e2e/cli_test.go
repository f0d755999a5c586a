package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/api"
)

// Tests of the client commands (sluice get, sluice admin), run as a user runs them:
// the built binary, in a working directory, against a running stack.

func cancelTicket(t *testing.T, s *stack, id string) {
	t.Helper()
	if code, _, body := call(t, http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+id, "", nil); code != http.StatusOK {
		t.Fatalf("DELETE ticket %s: %d %s", id, code, body)
	}
}

// With a global limit of 1 held by another download and one more ticket ahead, sluice
// get shows that it waits at position 1, then 0, then downloads once the slot frees.
func TestCLIGetWaitsInLineAndShowsPosition(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 1})
	s.startAll(1)
	data := randomBytes(1<<20, 7)
	s.putObject("cli/queued.bin", data)

	holder := s.request("cli/queued.bin")
	s.follow(holder.ID, 15*time.Second) // admitted: holds the only slot
	ahead := s.request("cli/queued.bin")

	dir := t.TempDir()
	js := s.startCLI(dir, s.cliEnv(), "get", "cli/queued.bin", "--json", "-o", "json.bin")
	js.waitEvent(15*time.Second, "queued at position 1", func(e cliEvent) bool {
		return (e.str("event") == "queued" || e.str("event") == "position") && e.str("status") == "queued" && e.num("position") == 1
	})
	// A person sees the same in plain lines (stderr is not a terminal here).
	plain := s.startCLI(dir, s.cliEnv(), "get", "cli/queued.bin", "-o", "plain.bin", "--progress-interval", "1s")
	eventually(t, 15*time.Second, "plain output shows position 2", func() bool {
		return strings.Contains(plain.stderr.String(), "position 2")
	})

	cancelTicket(t, s, holder.ID) // the ticket ahead gets the slot
	s.waitStatus(ahead.ID, "ready", 15*time.Second)
	js.waitEvent(15*time.Second, "position 0", func(e cliEvent) bool {
		return e.str("event") == "position" && e.str("status") == "queued" && e.num("position") == 0
	})
	if exists(filepath.Join(dir, "json.bin")) {
		t.Fatal("downloaded while another ticket held the only slot")
	}
	eventually(t, 15*time.Second, "plain output shows position 1", func() bool {
		return strings.Contains(plain.stderr.String(), "position 1")
	})
	cancelTicket(t, s, ahead.ID)

	js.wait(60 * time.Second)
	js.expectExit(0)
	plain.wait(60 * time.Second)
	plain.expectExit(0)
	for _, f := range []string{"json.bin", "plain.bin"} {
		if got := cliFileSHA(t, filepath.Join(dir, f)); got != sha(data) {
			t.Fatalf("%s has SHA-256 %s, want %s", f, got, sha(data))
		}
	}
	var order []string
	for _, e := range js.events() {
		if ev := e.str("event"); ev != "progress" && ev != "note" && ev != "verifying" {
			order = append(order, fmt.Sprintf("%s:%d", ev, e.num("position")))
		}
	}
	if want := []string{"queued:1", "position:0", "ready:0", "done:0"}; strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("JSON events %v, want %v", order, want)
	}
	if !strings.Contains(plain.stderr.String(), "saved plain.bin") {
		t.Fatalf("plain output lacks its progress through the queue:\n%s", plain.stderr.String())
	}
	eventually(t, 10*time.Second, "every slot given back", func() bool { return s.heldSlots() == 0 })
}

// Killed halfway (SIGKILL: no chance to clean up), sluice get leaves FILE.part and its
// state; the same command then fetches only the missing bytes on a new ticket.
func TestCLIGetResumesAfterKill(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.startAll(1)
	const size = 6 << 20
	data := randomBytes(size, 9)
	s.putObject("cli/resume.bin", data)
	dir := t.TempDir()
	dest := filepath.Join(dir, "resume.bin")

	first := s.startCLI(dir, s.cliEnv(), "get", "cli/resume.bin", "--json", "--limit-rate", "1M", "--connections", "3")
	eventually(t, 30*time.Second, "a third of the file recorded in the state file", func() bool {
		st, ok := readPartState(t, dest)
		return ok && st.doneBytes() >= size/3
	})
	first.signal(syscall.SIGKILL)
	first.wait(10 * time.Second)
	st, _ := readPartState(t, dest)
	if exists(dest) || !exists(dest+".part") || st.doneBytes() >= size {
		t.Fatalf("after the kill: dest exists %v, part exists %v, state has %d of %d bytes", exists(dest), exists(dest+".part"), st.doneBytes(), size)
	}
	kept := st.doneBytes()

	// The edge counts a write when it returns: a write blocked on the killed client's
	// full socket returns when the edge notices the reset, which can come after the
	// process is gone.
	eventually(t, 10*time.Second, "the killed client's streams ended at the edge", func() bool { return s.edgeStats().Streams == 0 })
	sentBefore := s.edgeStats().BytesSent
	second := s.runCLI(dir, s.cliEnv(), 60*time.Second, "get", "cli/resume.bin", "--json")
	second.expectExit(0)
	if got := cliFileSHA(t, dest); got != sha(data) {
		t.Fatalf("resumed file has SHA-256 %s, want %s", got, sha(data))
	}
	done := second.lastEvent("done")
	if done.num("resumed_bytes") < kept || done.num("fetched_bytes") != size-done.num("resumed_bytes") {
		t.Fatalf("done event %v: want at least the %d bytes of the state resumed and only the rest fetched", done, kept)
	}
	// The server agrees: the edge sent only the missing bytes for the second ticket.
	// (Its own count: the ticket's figure reaches the ledger when a keep-alive
	// connection ends, after the client has given the ticket back.)
	if sent := s.edgeStats().BytesSent - sentBefore; sent <= 0 || sent > size-kept {
		t.Fatalf("the edge sent %d bytes for the resumed download; the file lacked %d", sent, size-kept)
	}
	if exists(dest+".part") || exists(dest+".part.json") {
		t.Fatal("partial file or state left behind after success")
	}
	eventually(t, 10*time.Second, "the resumed ticket's slot given back", func() bool { return s.heldSlots() <= 1 }) // the killed one waits out its resume grace
}

// Ctrl-C cancels the ticket (the slot comes back at once) and keeps the partial file.
func TestCLIGetInterruptCancelsTicketAndKeepsPart(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.startAll(1)
	s.putObject("cli/interrupt.bin", randomBytes(4<<20, 3))
	dir := t.TempDir()
	r := s.startCLI(dir, s.cliEnv(), "get", "cli/interrupt.bin", "--json", "--limit-rate", "512k", "--progress-interval", "200ms")
	ready := r.waitEvent(20*time.Second, "ready", func(e cliEvent) bool { return e.str("event") == "ready" })
	r.waitEvent(20*time.Second, "bytes arriving", func(e cliEvent) bool { return e.str("event") == "progress" && e.num("bytes") > 0 })
	r.signal(os.Interrupt)
	r.wait(15 * time.Second)
	r.expectExit(130)
	if tk := s.ticket(ready.str("ticket")); tk.Status != "canceled" {
		t.Fatalf("ticket is %q after Ctrl-C, want canceled", tk.Status)
	}
	if s.heldSlots() != 0 {
		t.Fatal("the canceled ticket still holds its slot")
	}
	if !exists(filepath.Join(dir, "interrupt.bin.part")) || !exists(filepath.Join(dir, "interrupt.bin.part.json")) {
		t.Fatal("the partial file and its state were not kept")
	}
	if exists(filepath.Join(dir, "interrupt.bin")) {
		t.Fatal("an incomplete download replaced the destination")
	}
	if e := r.lastEvent("error"); e.num("exit_code") != 130 || !strings.Contains(e.str("error"), "resume") {
		t.Fatalf("error event %v should say how to resume", e)
	}
}

// The catalog's SHA-256 catches an object corrupted in storage after it was verified,
// where the server cannot see it: the bytes rot in place, size, mtime and inode (so the
// ETag) unchanged. Also: rejected objects, unknown keys, unpublished objects.
func TestCLIGetVerifiesAgainstTheCatalog(t *testing.T) {
	s := newReleaseStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.startAll(1)
	s.createPublisherKey()
	good := randomBytes(2<<20, 11)
	s.putObject("cli/release.bin", good)
	s.putObject("cli/liar.bin", randomBytes(1<<20, 12))
	s.putObject("cli/unpublished.bin", randomBytes(1<<20, 13))
	status, _, _ := s.publish(ndjson(
		releaseEvent{Object: "cli/release.bin", SHA256: sha(good), Size: int64(len(good)), EventID: "cli-1"},
		releaseEvent{Object: "cli/liar.bin", SHA256: sha([]byte("something else")), Size: 1 << 20, EventID: "cli-2"},
	))
	if status != http.StatusAccepted {
		t.Fatalf("publish: %d", status)
	}
	verified := s.waitEntry("cli/release.bin", "verified", 30*time.Second)
	s.waitEntry("cli/liar.bin", "rejected", 30*time.Second)
	dir := t.TempDir()

	ok := s.runCLI(dir, s.cliEnv(), 60*time.Second, "get", "cli/release.bin", "--json")
	ok.expectExit(0)
	if d := ok.lastEvent("done"); d.str("verification") != "verified" || d.str("sha256") != sha(good) {
		t.Fatalf("done event %v, want verified", d)
	}

	// Corrupt the stored bytes in place and put the modification time back.
	path := localObjectPath(s.stack, "cli/release.bin")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("bit rot"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.entry("cli/release.bin"); e.State != "verified" || e.ETag != verified.ETag {
		t.Fatalf("the server noticed the corruption (%+v): the test no longer shows what only the client can catch", e)
	}
	bad := s.runCLI(dir, s.cliEnv(), 60*time.Second, "get", "cli/release.bin", "-o", "corrupt.bin")
	bad.expectExit(5)
	if !strings.Contains(bad.stderr.String(), "verification failed") || !strings.Contains(bad.stderr.String(), sha(good)) {
		t.Fatalf("stderr does not explain the failed check:\n%s", bad.stderr.String())
	}
	for _, f := range []string{"corrupt.bin", "corrupt.bin.part", "corrupt.bin.part.json"} {
		if exists(filepath.Join(dir, f)) {
			t.Fatalf("%s exists after a failed verification", f)
		}
	}

	s.runCLI(dir, s.cliEnv(), 30*time.Second, "get", "cli/liar.bin").expectExit(4)
	nf := s.runCLI(dir, s.cliEnv(), 30*time.Second, "get", "cli/no-such-file.bin")
	nf.expectExit(3)
	if !strings.Contains(nf.stderr.String(), "404") {
		t.Fatalf("not-found error does not carry the server's answer:\n%s", nf.stderr.String())
	}
	un := s.runCLI(dir, s.cliEnv(), 30*time.Second, "get", "cli/unpublished.bin", "--json")
	un.expectExit(0)
	if d := un.lastEvent("done"); d.str("verification") != "not_published" {
		t.Fatalf("done event %v, want not_published", d)
	}
	s.runCLI(dir, s.cliEnv(), 30*time.Second, "get", "cli/unpublished.bin", "-o", "strict.bin", "--verify", "require").expectExit(5)
	s.runCLI(dir, s.cliEnv(), 30*time.Second, "get", "cli/unpublished.bin").expectExit(1) // exists; no --force
	s.runCLI(dir, s.cliEnv(), 30*time.Second, "get").expectExit(2)
}

// A link that allows fewer connections than asked for (429 past the cap) is used with
// fewer connections, and the download completes.
func TestCLIGetUsesFewerConnectionsWhenTheLinkAllowsFewer(t *testing.T) {
	s := newStack(t, stackOptions{Env: []string{"SLUICE_MAX_CONNS_PER_TOKEN=2"}})
	s.dumpLogsOnFailure()
	s.startAll(1)
	data := randomBytes(8<<20, 5)
	s.putObject("cli/conns.bin", data)
	dir := t.TempDir()
	r := s.runCLI(dir, s.cliEnv(), 60*time.Second, "get", "cli/conns.bin", "--json", "--connections", "6", "--limit-rate", "8M")
	r.expectExit(0)
	if got := cliFileSHA(t, filepath.Join(dir, "conns.bin")); got != sha(data) {
		t.Fatal("file differs from the object")
	}
	// The edge refused the connections past its cap, and the client stepped back
	// instead of retrying them again and again.
	refused := edgeTooMany(t, s)
	if refused < 1 || refused > 12 {
		t.Fatalf("the edge answered 429 %d times; want a few (6 connections asked, 2 allowed)", refused)
	}
	// The client's own count of streaming requests can overlap by one as a request
	// ends on the edge before its last bytes are read; far fewer than 6 in any case.
	if d := r.lastEvent("done"); d.num("connections") < 1 || d.num("connections") > 3 {
		t.Fatalf("done event %v: kept streaming on more connections than the link allows (2)", d)
	}
}

var tooManyMetric = regexp.MustCompile(`(?m)^sluice_edge_token_rejections_total\{reason="too_many"\} (\d+)`)

// edgeTooMany reads how many connections the edge refused with 429.
func edgeTooMany(t *testing.T, s *stack) int {
	t.Helper()
	code, _, body := call(t, http.MethodGet, s.edgeMetricsURL+"/metrics", "", nil)
	if code != http.StatusOK {
		t.Fatalf("edge /metrics: %d", code)
	}
	m := tooManyMetric.FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// Under a terminal, sluice get draws a progress bar with bytes, percentage, rate and
// ETA (checked in a real tmux pane).
func TestCLIGetProgressBarOnATerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal("tmux is needed for this test: apt-get install -y tmux (scripts/deps.sh installs it)")
	}
	s := newStack(t, stackOptions{})
	s.dumpLogsOnFailure()
	s.startAll(1)
	s.putObject("cli/tty.bin", randomBytes(4<<20, 4))
	dir := t.TempDir()
	socket := "sluice-e2e-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	shell := fmt.Sprintf("cd %s && env -i PATH=%s HOME=%s TERM=xterm SLUICE_SERVER=%s %s get cli/tty.bin --limit-rate 1M; echo EXIT=$?; sleep 60",
		dir, os.Getenv("PATH"), dir, s.ingressURL, sluiceBin)
	if out, err := exec.Command(tmux, "-L", socket, "new-session", "-d", "-x", "120", "-y", "30", shell).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(tmux, "-L", socket, "kill-server").Run() })
	capture := func() string {
		out, _ := exec.Command(tmux, "-L", socket, "capture-pane", "-p").Output()
		return string(out)
	}
	// e.g. "tty.bin  1.2 MiB / 4.0 MiB [=====>------]  30 % 1.0 MiB/s ETA 2s"
	bar := regexp.MustCompile(`tty\.bin\s+(\d+\.\d) MiB / 4\.0 MiB \[[=>-]+\]\s+(\d+) %\s+\d+\.\d (KiB|MiB)/s ETA \d+(ms|s|m\d+s)`)
	var midway string
	deadline := time.Now().Add(30 * time.Second)
	for midway == "" && time.Now().Before(deadline) {
		screen := capture()
		if m := bar.FindStringSubmatch(screen); m != nil {
			if pct, _ := strconv.Atoi(m[2]); pct > 0 && pct < 100 {
				midway = m[0]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if midway == "" {
		t.Fatalf("no progress bar with bytes, percentage, rate and ETA seen midway; screen:\n%s", capture())
	}
	var screen string
	eventually(t, 30*time.Second, "sluice get exits", func() bool { screen = capture(); return strings.Contains(screen, "EXIT=") })
	if !strings.Contains(screen, "EXIT=0") || !strings.Contains(screen, "Saved tty.bin") || !strings.Contains(screen, "100 %") {
		t.Fatalf("final screen:\n%s", screen)
	}
	if strings.Contains(screen, "sluice: ") {
		t.Fatalf("plain log lines on a terminal:\n%s", screen)
	}
}

// sluice admin over the admin API: human tables, --json, changes that take effect,
// and clear refusals.
func TestCLIAdmin(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{GlobalLimit: 7})
	s.startAll(1)
	dir := t.TempDir()
	op := s.cliEnv("SLUICE_API_KEY=" + admOperatorKey)
	run := func(want int, args ...string) *cliRun {
		t.Helper()
		r := s.runCLI(dir, op, 30*time.Second, append([]string{"admin"}, args...)...)
		r.expectExit(want)
		return r
	}

	table := run(0, "stats").stdout.String()
	for _, want := range []string{"admission", "running", "slots in use", "0 of 7", "backlog"} {
		if !strings.Contains(table, want) {
			t.Fatalf("stats table lacks %q:\n%s", want, table)
		}
	}
	var st api.Stats
	if err := json.Unmarshal([]byte(run(0, "--json", "stats").stdout.String()), &st); err != nil || st.GlobalLimit != 7 {
		t.Fatalf("--json stats: %+v %v", st, err)
	}
	st.GlobalLimit = 0 // flags after the subcommand too
	if err := json.Unmarshal([]byte(run(0, "stats", "--json").stdout.String()), &st); err != nil || st.GlobalLimit != 7 {
		t.Fatalf("stats --json: %+v %v", st, err)
	}

	set := run(0, "limits", "set", "global=3", "acme.limit=1", "acme.weight=2").stdout.String()
	if !regexp.MustCompile(`global\s+3`).MatchString(set) || !regexp.MustCompile(`acme\s+1\s+2`).MatchString(set) {
		t.Fatalf("limits set output:\n%s", set)
	}
	var changed struct {
		Global int `json:"global"`
	}
	if out := run(0, "limits", "set", "global=3", "--json").stdout.String(); json.Unmarshal([]byte(out), &changed) != nil || changed.Global != 3 {
		t.Fatalf("limits set global=3 --json printed:\n%s", out)
	}
	var lim api.Limits
	if err := json.Unmarshal([]byte(run(0, "--json", "limits").stdout.String()), &lim); err != nil ||
		lim.Global != 3 || lim.Tenants["acme"].Limit == nil || *lim.Tenants["acme"].Limit != 1 {
		t.Fatalf("limits after set: %+v %v", lim, err)
	}
	var paused struct {
		Paused bool `json:"paused"`
	}
	if out := run(0, "pause", "--json").stdout.String(); json.Unmarshal([]byte(out), &paused) != nil || !paused.Paused {
		t.Fatalf("pause --json printed:\n%s", out)
	}
	if !strings.Contains(run(0, "pause").stdout.String(), "paused") {
		t.Fatal("pause says nothing")
	}
	json.Unmarshal([]byte(run(0, "--json", "stats").stdout.String()), &st)
	if !st.Paused {
		t.Fatal("admission not paused after sluice admin pause")
	}
	run(0, "resume")
	json.Unmarshal([]byte(run(0, "--json", "stats").stdout.String()), &st)
	if st.Paused {
		t.Fatal("admission still paused after sluice admin resume")
	}

	var nodes api.Nodes
	if out := run(0, "workers", "--json").stdout.String(); json.Unmarshal([]byte(out), &nodes) != nil || len(nodes.Nodes) < 3 {
		t.Fatalf("workers --json printed:\n%s", out)
	}
	workers := run(0, "workers").stdout.String()
	for _, want := range []string{"ROLE", "worker", "edge", "ingress", "ago"} {
		if !strings.Contains(workers, want) {
			t.Fatalf("workers table lacks %q:\n%s", want, workers)
		}
	}

	bad := run(2, "limits", "set", "global=lots")
	if !strings.Contains(bad.stderr.String(), "not a whole number") {
		t.Fatalf("bad limit: %s", bad.stderr.String())
	}
	refused := run(2, "limits", "set", "global=-1") // the server's 400, with its reason
	if !strings.Contains(refused.stderr.String(), "400") || !strings.Contains(refused.stderr.String(), "global must be") {
		t.Fatalf("refused limit: %s", refused.stderr.String())
	}
	nokey := s.runCLI(dir, s.cliEnv(), 30*time.Second, "admin", "stats")
	nokey.expectExit(8)
	if !strings.Contains(nokey.stderr.String(), "API key") || !strings.Contains(nokey.stderr.String(), "SLUICE_API_KEY") {
		t.Fatalf("no key: %s", nokey.stderr.String())
	}
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(admOperatorKey+"\n"), 0o600)
	s.runCLI(dir, s.cliEnv(), 30*time.Second, "admin", "--api-key-file", keyFile, "stats").expectExit(0)
}

func cliFileSHA(t *testing.T, path string) string {
	t.Helper()
	sum, _ := fileSHA(t, path)
	return sum
}
