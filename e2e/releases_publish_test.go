package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// `sluice publish` uploads files to MinIO (multipart past 16 MiB), computes their
// SHA-256 while uploading, publishes the events and waits until they are verified;
// the channel alias then downloads the newest file.
func TestPublishCommandUploadsAndPublishes(t *testing.T) {
	s := newReleaseStack(t, stackOptions{S3: true})
	s.dumpLogsOnFailure()
	s.start("ingress")
	s.start("worker")
	s.start("edge")
	s.createPublisherKey()

	dir := t.TempDir()
	big, small := randomBytes(20<<20+123, 31), randomBytes(1000, 32)
	bigPath, smallPath := filepath.Join(dir, "app-3.0.tar.gz"), filepath.Join(dir, "NOTES.txt")
	if err := os.WriteFile(bigPath, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(smallPath, small, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(sluiceBin, append([]string{"publish"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	env := []string{
		"SLUICE_SERVER=" + s.ingressURL,
		"SLUICE_API_KEY=" + s.publisherKey,
		"SLUICE_S3_ENDPOINT=" + s.minio.Endpoint,
		"SLUICE_S3_BUCKET=" + s.bucket,
		"SLUICE_S3_ACCESS_KEY=" + s.minio.AccessKey,
		"SLUICE_S3_SECRET_KEY=" + s.minio.SecretKey,
	}
	// A server that is not there is retried for --wait, then named.
	nobody := "SLUICE_SERVER=http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	if out, err := run(append(env[1:], nobody), "--channel", "stable", "--wait", "2s", smallPath); err == nil || !strings.Contains(out, "--server") || !strings.Contains(out, "retrying for up to 2s") {
		t.Fatalf("publish to a server that is not there: %v\n%s", err, out)
	}
	// As README.md writes it: files first, then the flags.
	out, err := run(env, smallPath, bigPath, "--channel", "stable", "--prefix", "releases/3.0/", "--wait", "30s")
	if err != nil {
		t.Fatalf("sluice publish: %v\n%s", err, out)
	}
	for _, want := range []string{
		"uploaded  releases/3.0/app-3.0.tar.gz", "sha256 " + sha(big), "published 2 release events (2 new",
		"verified  releases/3.0/app-3.0.tar.gz", "verified  releases/3.0/NOTES.txt",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("sluice publish output lacks %q:\n%s", want, out)
		}
	}
	e, _ := s.entry("releases/3.0/app-3.0.tar.gz")
	if e.State != "verified" || e.SHA256 != sha(big) || e.Size != int64(len(big)) || e.Channel != "stable" || e.ContentType != "application/gzip" {
		t.Fatalf("catalog entry: %+v", e)
	}
	if e.ETag == "" || !strings.Contains(e.ETag, "-") {
		t.Fatalf("ETag %q: a 20 MiB file must have gone up in parts", e.ETag)
	}

	// Publishing the same files again uploads them again but announces nothing new;
	// --json says so in events on stdout, one per line, and nothing else there.
	cmd := exec.Command(sluiceBin, "publish", "--channel", "stable", smallPath, "--json", "--prefix", "releases/3.0/", "--wait", "30s")
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("publish --json: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var events []string
	for line := range strings.Lines(stdout.String()) {
		var e struct {
			Event      string `json:"event"`
			Object     string `json:"object"`
			SHA256     string `json:"sha256"`
			Duplicates int    `json:"duplicates"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("publish --json printed a line that is not JSON: %q", line)
		}
		if e.Event == "uploaded" && (e.Object != "releases/3.0/NOTES.txt" || e.SHA256 != sha(small)) ||
			e.Event == "published" && e.Duplicates != 1 {
			t.Fatalf("publish --json event %+v", e)
		}
		events = append(events, e.Event)
	}
	if strings.Join(events, " ") != "uploaded published verified" {
		t.Fatalf("publish --json events %v, want uploaded, published, verified", events)
	}
	tk := s.request("stable/latest")
	sum, n, _ := download(t, s.follow(tk.ID, 15*time.Second))
	// The later file on the command line is the newer release.
	if tk.Object != "releases/3.0/app-3.0.tar.gz" || sum != sha(big) || n != int64(len(big)) {
		t.Fatalf("stable/latest served %s (%d bytes)", tk.Object, n)
	}
}
