package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// minioStartTimeout bounds how long a MinIO server may take to answer its liveness
// probe; a cold start on a loaded CI machine takes a few seconds.
const minioStartTimeout = 60 * time.Second

// MinIO is a real single-drive MinIO server started for one test.
type MinIO struct {
	Process   *Process
	Endpoint  string // host:port, no scheme
	AccessKey string
	SecretKey string
	Dir       string // the drive; survives Stop and Start
	// Env is extra environment of the server (minio_notify.go), kept across restarts.
	Env []string

	bin         string
	consoleAddr string
	logDir      string
	owner       testing.TB // the test the server lives as long as
}

// MinIOBucket is what a store needs to reach one bucket of a test's MinIO. It holds
// plain strings so that testenv does not import the packages it helps test.
type MinIOBucket struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	Bucket    string
	Region    string
}

// StartMinIO starts the MinIO binary (bin/minio, built by `make deps`) on random
// loopback ports with a fresh drive and random root credentials, and stops it at
// cleanup.
func StartMinIO(tb testing.TB) *MinIO {
	tb.Helper()
	return startMinIO(tb, nil)
}

// startMinIO starts MinIO with extra environment (its configuration) env.
func startMinIO(tb testing.TB, env []string) *MinIO {
	tb.Helper()
	m := &MinIO{
		Endpoint:    "127.0.0.1:" + strconv.Itoa(FreePort(tb)),
		consoleAddr: "127.0.0.1:" + strconv.Itoa(FreePort(tb)),
		AccessKey:   "sluice-" + rand.Text()[:10],
		SecretKey:   rand.Text(),
		Dir:         tb.TempDir(),
		// Logs live outside the drive: MinIO owns every entry of its drive directory.
		logDir: tb.TempDir(),
		bin:    Binary(tb, "minio", "SLUICE_MINIO_BIN", "make deps  (builds MinIO into bin/)"),
		owner:  tb,
		Env:    env,
	}
	m.Start(tb)
	return m
}

// Start (re)starts the server on the same ports, drive and credentials, as a node
// coming back after an outage would, and waits until it is live. tb may be a
// subtest: the server still runs until the test that started it first ends.
func (m *MinIO) Start(tb testing.TB) {
	tb.Helper()
	if m.Process != nil && m.Process.Cmd.ProcessState == nil {
		tb.Fatalf("minio %s is already running", describe(m.Process))
	}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_UPDATE=off",
		"MINIO_BROWSER=off",
	}
	env = append(env, m.Env...)
	p := startProcess(cleanupOn{TB: tb, owner: m.owner}, m.logDir, m.bin, env,
		"server", m.Dir, "--address", m.Endpoint, "--console-address", m.consoleAddr, "--quiet")
	p.Addr = m.Endpoint
	m.Process = p
	// The cluster check, not liveness: MinIO answers live before its object layer is up
	// (requests then fail "Server not initialized yet"), seen under load.
	waitLive(tb, "http://"+m.Endpoint+"/minio/health/cluster", minioStartTimeout, p)
}

// Stop kills the server at once (no graceful shutdown), as an outage would.
// The drive is kept, so Start brings the same objects back.
func (m *MinIO) Stop() {
	if m.Process != nil {
		m.Process.Stop()
	}
}

// Client returns a minio-go client with the root credentials.
func (m *MinIO) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
	})
	if err != nil {
		tb.Fatalf("minio client for %s: %v", m.Endpoint, err)
	}
	return c
}

// Bucket creates the bucket name (a valid S3 bucket name) and returns how to reach it.
func (m *MinIO) Bucket(tb testing.TB, name string) MinIOBucket {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Client(tb).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		tb.Fatalf("create bucket %q on minio %s: %v", name, describe(m.Process), err)
	}
	return MinIOBucket{
		Endpoint:  m.Endpoint,
		AccessKey: m.AccessKey,
		SecretKey: m.SecretKey,
		Bucket:    name,
		Region:    "us-east-1",
	}
}

// cleanupOn reports failures to the test at hand but ties cleanups to owner.
type cleanupOn struct {
	testing.TB
	owner testing.TB
}

func (c cleanupOn) Cleanup(f func()) { c.owner.Cleanup(f) }

// waitLive waits until url answers 200, failing the test with the server's log
// otherwise.
func waitLive(tb testing.TB, url string, within time.Duration, p *Process) {
	tb.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(p.Log)
	tb.Fatalf("minio %s did not answer %s with 200 within %s; its log:\n%s", p.Addr, url, within, log)
}

// MinIOKMSKey is the key id of the KMS StartMinIOWithKMS configures.
const MinIOKMSKey = "sluice-test-key"

// StartMinIOWithKMS starts MinIO (as StartMinIO) with its built-in single-key KMS,
// which server-side encryption (SSE-S3 and SSE-KMS with key MinIOKMSKey) needs.
func StartMinIOWithKMS(tb testing.TB) *MinIO {
	tb.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return startMinIO(tb, []string{"MINIO_KMS_SECRET_KEY=" + MinIOKMSKey + ":" + base64.StdEncoding.EncodeToString(key)})
}
