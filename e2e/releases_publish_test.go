package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if out, err := run(env[1:], "--channel", "stable", "--wait", "2s", smallPath); err == nil || !strings.Contains(out, "--server") || !strings.Contains(out, "retrying for up to 2s") {
		t.Fatalf("publish to a server that is not there: %v\n%s", err, out)
	}
	out, err := run(env, "--channel", "stable", "--prefix", "releases/3.0/", "--wait", "30s", smallPath, bigPath)
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

	// Publishing the same files again uploads them again but announces nothing new.
	out, err = run(env, "--channel", "stable", "--prefix", "releases/3.0/", "--wait", "30s", smallPath)
	if err != nil || !strings.Contains(out, "(0 new, 1 already known)") {
		t.Fatalf("publish again: %v\n%s", err, out)
	}
	tk := s.request("stable/latest")
	sum, n, _ := download(t, s.follow(tk.ID, 15*time.Second))
	// The later file on the command line is the newer release.
	if tk.Object != "releases/3.0/app-3.0.tar.gz" || sum != sha(big) || n != int64(len(big)) {
		t.Fatalf("stable/latest served %s (%d bytes)", tk.Object, n)
	}
}
