package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// publishStack is a release stack whose publisher runs `sluice publish` as a user
// would: from a directory of its own, with only SLUICE_SERVER and SLUICE_API_KEY.
type publishStack struct {
	*releaseStack
	home string // the user's working directory: not the server's
}

func newPublishStack(t *testing.T, o stackOptions) *publishStack {
	t.Helper()
	s := &publishStack{releaseStack: newReleaseStack(t, o), home: t.TempDir()}
	s.dumpLogsOnFailure()
	return s
}

// publish runs sluice publish in the user's directory and waits for it to exit.
func (s *publishStack) publishCLI(key string, within time.Duration, args ...string) *cliRun {
	s.t.Helper()
	return s.runCLI(s.home, s.cliEnv("SLUICE_API_KEY="+key), within, append([]string{"publish"}, args...)...)
}

// admin runs sluice admin with the operator key.
func (s *publishStack) admin(args ...string) *cliRun {
	s.t.Helper()
	return s.runCLI(s.home, s.cliEnv("SLUICE_API_KEY="+releaseAdminKey), 30*time.Second, append([]string{"admin"}, args...)...)
}

// file writes a file into the user's directory (dist/<name>) and returns its bytes.
func (s *publishStack) file(name string, size int, seed byte) []byte {
	s.t.Helper()
	data := randomBytes(size, seed)
	path := filepath.Join(s.home, "dist", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return data
}

// README's recipe, `sluice publish dist/a dist/b --channel stable --prefix
// releases/1.2/`, from a directory that is not the server's, with nothing but
// SLUICE_SERVER and SLUICE_API_KEY: the files go up through the API (a 20 MiB one
// in parts into MinIO), the catalog records the SHA-256 the server computed, the
// channel alias downloads the newer file, and publishing again sends nothing.
func TestPublishFromAnyDirectory(t *testing.T) {
	for _, tc := range []struct {
		name string
		s3   bool
		big  int
	}{
		{"minio", true, 20<<20 + 123},
		{"local", false, 3<<20 + 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPublishStack(t, stackOptions{S3: tc.s3})
			s.start("ingress")
			s.start("worker")
			s.start("edge")
			s.createPublisherKey()
			notes, app := s.file("NOTES.txt", 1000, 32), s.file("app-1.2.tar.gz", tc.big, 31)

			run := s.publishCLI(s.publisherKey, 90*time.Second, "dist/NOTES.txt", "dist/app-1.2.tar.gz", "--channel", "stable", "--prefix", "releases/1.2/", "--wait", "60s")
			run.expectExit(0)
			out := run.stderr.String()
			for _, want := range []string{
				"uploaded  releases/1.2/app-1.2.tar.gz in ", "sha256 " + sha(app), "published 2 release events (2 new",
				"verified  releases/1.2/app-1.2.tar.gz", "verified  releases/1.2/NOTES.txt",
			} {
				if !strings.Contains(out, want) {
					t.Fatalf("sluice publish output lacks %q:\n%s", want, out)
				}
			}
			for key, data := range map[string][]byte{"releases/1.2/NOTES.txt": notes, "releases/1.2/app-1.2.tar.gz": app} {
				e, _ := s.entry(key)
				if e.State != "verified" || e.SHA256 != sha(data) || e.Size != int64(len(data)) || e.Channel != "stable" {
					t.Fatalf("catalog entry of %s: %+v", key, e)
				}
			}
			if e, _ := s.entry("releases/1.2/app-1.2.tar.gz"); e.ContentType != "application/gzip" || tc.s3 && !strings.Contains(e.ETag, "-") {
				t.Fatalf("catalog entry %+v: want application/gzip (and in MinIO, an ETag of a multipart upload)", e)
			}
			if _, err := os.Stat(filepath.Join(s.home, "var")); !os.IsNotExist(err) {
				t.Fatalf("sluice publish wrote into its working directory: %v", err)
			}

			// Again, with --json: the server already holds the verified file, so nothing
			// is sent and nothing new is announced.
			again := s.publishCLI(s.publisherKey, 60*time.Second, "dist/NOTES.txt", "--json", "--channel", "stable", "--prefix", "releases/1.2/", "--wait", "30s")
			again.expectExit(0)
			var names []string
			for _, e := range again.events() {
				names = append(names, e.str("event"))
				if e.str("event") == "uploaded" && (e.str("object") != "releases/1.2/NOTES.txt" || e.str("sha256") != sha(notes) || e["stored"] != false) ||
					e.str("event") == "published" && e.num("duplicates") != 1 {
					t.Fatalf("publish --json event %v", e)
				}
			}
			if strings.Join(names, " ") != "uploaded published verified" {
				t.Fatalf("publish --json events %v, want uploaded, published, verified\nstdout:\n%s", names, again.stdout.String())
			}

			tk := s.request("stable/latest")
			sum, n, _ := download(t, s.follow(tk.ID, 15*time.Second))
			// The later file on the command line is the newer release.
			if tk.Object != "releases/1.2/app-1.2.tar.gz" || sum != sha(app) || n != int64(len(app)) {
				t.Fatalf("stable/latest served %s (%d bytes)", tk.Object, n)
			}
		})
	}
}

// What sluice publish refuses, each naming what to set: no key, a key without
// publisher scope (the upload endpoint answers 403 and stores nothing), a file over
// the server's upload limit (413, nothing stored), a server that is not there.
func TestPublishRefusals(t *testing.T) {
	s := newPublishStack(t, stackOptions{Env: []string{"SLUICE_MAX_UPLOAD_SIZE=100000"}})
	s.start("ingress")
	s.createPublisherKey()
	s.file("small.bin", 1000, 1)
	s.file("big.bin", 100001, 2)

	run := s.runCLI(s.home, s.cliEnv(), 30*time.Second, "publish", "dist/small.bin")
	if run.expectExit(exitAuthCode); !strings.Contains(run.stderr.String(), "SLUICE_API_KEY") {
		t.Fatalf("publish without a key:\n%s", run.stderr.String())
	}

	var created struct {
		Key string `json:"key"`
	}
	status, raw := s.call(http.MethodPost, "/api/v1/admin/keys", releaseAdminKey, "application/json", []byte(`{"scope":"client","tenant":"acme"}`))
	if status != http.StatusCreated || json.Unmarshal(raw, &created) != nil {
		t.Fatalf("create a client key: %d %s", status, raw)
	}
	clientKey := created.Key
	run = s.publishCLI(clientKey, 30*time.Second, "dist/small.bin", "--wait", "0")
	if run.expectExit(exitAuthCode); !strings.Contains(run.stderr.String(), "403") || !strings.Contains(run.stderr.String(), "SLUICE_API_KEY or --api-key-file") {
		t.Fatalf("publish with a client key:\n%s", run.stderr.String())
	}
	if status, raw := s.call(http.MethodPut, "/api/v1/uploads/rel/small.bin", clientKey, "", []byte("x")); status != http.StatusForbidden {
		t.Fatalf("upload with a client key: %d %s, want 403", status, raw)
	}

	run = s.publishCLI(s.publisherKey, 30*time.Second, "dist/small.bin", "dist/big.bin", "--prefix", "rel/", "--wait", "0")
	if out := run.stderr.String(); run.code == 0 || !strings.Contains(out, "413") || !strings.Contains(out, "SLUICE_MAX_UPLOAD_SIZE") {
		t.Fatalf("publish over the upload limit: exit %d\n%s", run.code, out)
	}
	if exists(localObjectPath(s.stack, "rel/big.bin")) {
		t.Fatal("the file over the limit is in the store")
	}
	if _, ok := s.entry("rel/big.bin"); ok {
		t.Fatal("the file over the limit is in the catalog")
	}

	nobody := "SLUICE_SERVER=http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	run = s.runCLI(s.home, append(s.cliEnv("SLUICE_API_KEY="+s.publisherKey), nobody), 30*time.Second, "publish", "dist/small.bin", "--wait", "2s")
	if out := run.stderr.String(); run.code != exitServerCode || !strings.Contains(out, "SLUICE_SERVER") || !strings.Contains(out, "retrying for up to 2s") {
		t.Fatalf("publish to a server that is not there: exit %d\n%s", run.code, out)
	}
}

const (
	exitRejectedCode = 4
	exitServerCode   = 7
	exitAuthCode     = 8
)

// A worker that cannot find what was uploaded (here: it reads another directory
// than the ingress writes, the mistake the CLI once made itself) dead-letters the
// event; sluice publish reports it at once with the reason, far within its --wait.
// The operator lists the dead letter, fixes the cause and replays it: verified.
func TestPublishReportsADeadLetterAtOnce(t *testing.T) {
	s := newPublishStack(t, stackOptions{})
	workerDir := t.TempDir()
	s.start("ingress")
	s.start("worker", "SLUICE_DATA_DIR="+workerDir, "SLUICE_RELEASE_ATTEMPTS=2")
	s.createPublisherKey()
	data := s.file("tool.bin", 5000, 9)

	const wait = 3 * time.Minute
	start := time.Now()
	run := s.publishCLI(s.publisherKey, wait+30*time.Second, "dist/tool.bin", "--prefix", "rel/", "--wait", wait.String())
	took := time.Since(start)
	run.expectExit(exitRejectedCode)
	if out := run.stderr.String(); !strings.Contains(out, "rel/tool.bin") || !strings.Contains(out, "dead-lettered") || !strings.Contains(out, "sluice admin releases replay") {
		t.Fatalf("publish of a dead-lettered event:\n%s", out)
	}
	// Two attempts a second apart, then the catalog's note: seconds, not the wait.
	if took > wait/4 {
		t.Fatalf("publish took %s to report the dead letter; --wait was %s", took, wait)
	}
	t.Logf("dead letter reported after %s (--wait %s)", took.Round(time.Millisecond), wait)

	dead := s.admin("releases", "dead", "--json")
	dead.expectExit(0)
	var list struct {
		Dead []struct {
			ID     uint64          `json:"id"`
			Reason string          `json:"reason"`
			Event  json.RawMessage `json:"event"`
		} `json:"dead"`
	}
	if err := json.Unmarshal([]byte(dead.stdout.String()), &list); err != nil || len(list.Dead) != 1 || !strings.Contains(string(list.Dead[0].Event), "rel/tool.bin") {
		t.Fatalf("admin releases dead --json: %v\n%s", err, dead.stdout.String())
	}
	if table := s.admin("releases", "dead"); !strings.Contains(table.stdout.String(), "rel/tool.bin") {
		t.Fatalf("admin releases dead:\n%s", table.stdout.String())
	}

	// The fix: the object where the worker looks.
	if err := os.MkdirAll(filepath.Join(workerDir, "objects", "rel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(workerDir, "objects", "rel", "tool.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	replay := s.admin("releases", "replay", strconv.FormatUint(list.Dead[0].ID, 10))
	replay.expectExit(0)
	if !strings.Contains(replay.stdout.String(), "rel/tool.bin") {
		t.Fatalf("admin releases replay:\n%s", replay.stdout.String())
	}
	if e := s.waitEntry("rel/tool.bin", "verified", 30*time.Second); e.SHA256 != sha(data) {
		t.Fatalf("entry after the replay: %+v", e)
	}
	if again := s.admin("releases", "replay", strconv.FormatUint(list.Dead[0].ID, 10)); again.code != 3 {
		t.Fatalf("second replay: exit %d, want 3 (not found)\n%s", again.code, again.stderr.String())
	}
	if empty := s.admin("releases", "dead", "--json"); strings.TrimSpace(empty.stdout.String()) != "{\n  \"dead\": []\n}" {
		t.Fatalf("admin releases dead after the replay:\n%s", empty.stdout.String())
	}
}
