package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/internal/testenv"
)

// noAWSFiles keeps the roles from finding this machine's AWS files.
func noAWSFiles(t *testing.T) []string {
	dir := t.TempDir()
	return []string{"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"), "AWS_CONFIG_FILE=" + filepath.Join(dir, "none"),
		"AWS_PROFILE=", "AWS_SESSION_TOKEN=", "AWS_WEB_IDENTITY_TOKEN_FILE="}
}

// TestS3FromAWSVariablesUnderAPrefix: with no SLUICE_S3_*_KEY, every role finds
// MinIO's keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and with
// SLUICE_S3_BUCKET=s3://bucket/prefix serves the objects under the prefix.
func TestS3FromAWSVariablesUnderAPrefix(t *testing.T) {
	s := newStack(t, stackOptions{S3: true})
	s.env = append(s.env, noAWSFiles(t)...)
	s.env = append(s.env,
		"SLUICE_S3_ACCESS_KEY=", "SLUICE_S3_SECRET_KEY=",
		"SLUICE_S3_BUCKET=s3://"+s.bucket+"/sluice/eu",
		"AWS_ACCESS_KEY_ID="+s.minio.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.minio.SecretKey,
	)
	s.dumpLogsOnFailure()
	content := bytes.Repeat([]byte("prefixed release "), 4096)
	s.putObject("sluice/eu/rel/app.bin", content) // the bucket's key: prefix + the API's key
	s.putObject("rel/app.bin", []byte("the bucket's root is not sluice's"))
	s.startAll(1)

	tk := s.request("rel/app.bin")
	link := s.follow(tk.ID, 20*time.Second)
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("download answered %d with %d bytes, want the %d bytes under the prefix", resp.StatusCode, len(got), len(content))
	}
}

// TestS3RefusedCredentialsAnswer503WithTheReason: a wrong secret is an operator's
// problem, not a server bug: POST answers 503 naming S3's refusal, not 500.
func TestS3RefusedCredentialsAnswer503WithTheReason(t *testing.T) {
	s := newStack(t, stackOptions{S3: true})
	s.env = append(s.env, noAWSFiles(t)...)
	s.env = append(s.env, "SLUICE_S3_SECRET_KEY=not-the-secret")
	s.dumpLogsOnFailure()
	s.putObject("rel/app.bin", []byte("x"))
	port := testenv.FreePort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	// Not ready (storage refuses it), so wait for liveness only.
	p := testenv.Start(t, t.TempDir(), sluiceBin, append(append([]string{}, s.env...), "SLUICE_INGRESS_ADDR=127.0.0.1:"+strconv.Itoa(port)), "ingress")
	s.roles = append(s.roles, p)
	testenv.WaitHTTP(t, url+"/healthz", 20*time.Second, p.Log)

	for range 8 { // more than the breaker's consecutive failures: the reason stays
		body, _ := json.Marshal(map[string]string{"object": "rel/app.bin"})
		resp, err := http.Post(url+"/api/v1/downloads", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.Problem
		_ = json.Unmarshal(raw, &e)
		if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "storage_access_denied" ||
			!strings.Contains(string(raw), "SignatureDoesNotMatch") {
			t.Fatalf("POST with a wrong S3 secret: %d %s; want 503 storage_access_denied naming SignatureDoesNotMatch", resp.StatusCode, raw)
		}
	}
}

// TestPublishUnderAnS3Prefix: every role given the same s3://bucket/prefix and only
// AWS_* credentials, `sluice publish` only the server and a key: the upload through
// the ingress lands under the prefix,
// the worker verifies it there and the edge serves it by its key.
func TestPublishUnderAnS3Prefix(t *testing.T) {
	s := newReleaseStack(t, stackOptions{S3: true})
	aws := append(noAWSFiles(t),
		"SLUICE_S3_ACCESS_KEY=", "SLUICE_S3_SECRET_KEY=",
		"SLUICE_S3_BUCKET=s3://"+s.bucket+"/sluice/eu",
		"AWS_ACCESS_KEY_ID="+s.minio.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.minio.SecretKey)
	s.env = append(s.env, aws...)
	s.dumpLogsOnFailure()
	s.start("ingress")
	s.start("worker")
	s.start("edge")
	s.createPublisherKey()

	content := randomBytes(5000, 41)
	file := filepath.Join(t.TempDir(), "tool.bin")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBin, "publish", file, "--prefix", "releases/1.0/", "--wait", "30s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "SLUICE_SERVER=" + s.ingressURL, "SLUICE_API_KEY=" + s.publisherKey}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "verified  releases/1.0/tool.bin") {
		t.Fatalf("sluice publish: %v\n%s", err, out)
	}
	if _, err := s.minio.Client(t).StatObject(t.Context(), s.bucket, "sluice/eu/releases/1.0/tool.bin", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the upload is not under the prefix: %v", err)
	}
	if e, _ := s.entry("releases/1.0/tool.bin"); e.State != "verified" || e.SHA256 != sha(content) {
		t.Fatalf("catalog entry %+v, want verified with the file's SHA-256", e)
	}
	tk := s.request("releases/1.0/tool.bin")
	if sum, n, _ := download(t, s.follow(tk.ID, 15*time.Second)); sum != sha(content) || n != int64(len(content)) {
		t.Fatalf("downloaded %d bytes that differ from the published %d", n, len(content))
	}
}
