package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// sluice init against a fresh NATS and a MinIO that is not up yet: it waits for MinIO,
// creates every stream, record bucket and the object bucket, and exits 0. Run again,
// it changes nothing: what the first run made, and what was written since, stays.
func TestInitCreatesStreamsAndBucketsIdempotently(t *testing.T) {
	nats := testenv.StartNATS(t)
	m := testenv.StartMinIO(t)
	env := []string{
		"SLUICE_NATS_URL=" + nats.URL,
		"SLUICE_S3_ENDPOINT=" + m.Endpoint,
		"SLUICE_S3_BUCKET=fresh-bucket",
		"SLUICE_S3_ACCESS_KEY=" + m.AccessKey,
		"SLUICE_S3_SECRET_KEY=" + m.SecretKey,
		"SLUICE_RETAIN=1h",
	}

	// First run: storage is down when it starts and comes back a moment later.
	m.Stop()
	var out, errOut bytes.Buffer
	cmd := exec.Command(sluiceBin, "init", "--timeout", "90s")
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, t.TempDir(), &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("init ended while storage was down (%v)\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	case <-time.After(1500 * time.Millisecond):
	}
	m.Start(t)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("init: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("init still running a while after storage came back\nstdout:\n%s\nstderr:\n%s", &out, &errOut)
	}
	if !strings.Contains(errOut.String(), "storage is not answering yet") {
		t.Errorf("init did not say it was waiting for storage; stderr:\n%s", &errOut)
	}

	js := nats.JetStream(t)
	ctx := t.Context()
	streams := []string{"SLUICE_TICKETS", "SLUICE_RELEASES", "SLUICE_RELEASES_DEAD"}
	buckets := []string{"SLUICE_KEYS", "SLUICE_SETTINGS", "SLUICE_IDEMPOTENCY", "SLUICE_TICKETS_ENDED",
		"SLUICE_CATALOG", "SLUICE_RELEASE_EVENTS"}
	check := func(run string) {
		t.Helper()
		for _, name := range streams {
			if _, err := js.Stream(ctx, name); err != nil {
				t.Errorf("after the %s run: stream %s: %v", run, name, err)
			}
		}
		for _, name := range buckets {
			if _, err := js.KeyValue(ctx, name); err != nil {
				t.Errorf("after the %s run: record bucket %s: %v", run, name, err)
			}
		}
		if ok, err := m.Client(t).BucketExists(ctx, "fresh-bucket"); err != nil || !ok {
			t.Errorf("after the %s run: bucket fresh-bucket exists %v (%v)", run, ok, err)
		}
		for _, name := range []string{"admission", "releases"} {
			stream := map[string]string{"admission": "SLUICE_TICKETS", "releases": "SLUICE_RELEASES"}[name]
			if _, err := js.Consumer(ctx, stream, name); err != nil {
				t.Errorf("after the %s run: consumer %s of %s: %v", run, name, stream, err)
			}
		}
	}
	check("first")

	// A record written between the runs survives the second one.
	settings, err := js.KeyValue(ctx, "SLUICE_SETTINGS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := settings.Put(ctx, "probe", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	second, stderr, code := sluiceRun(t, sluiceBin, env, "init")
	if code != 0 {
		t.Fatalf("second init: exit %d\nstdout:\n%s\nstderr:\n%s", code, second, stderr)
	}
	if second != out.String() {
		t.Errorf("the second run reported otherwise than the first:\nfirst:\n%s\nsecond:\n%s", &out, second)
	}
	check("second")
	if e, err := settings.Get(ctx, "probe"); err != nil {
		t.Errorf("a record written before the second run is gone: %v", err)
	} else if string(e.Value()) != "kept" {
		t.Errorf("a record written before the second run reads %q", e.Value())
	}

	// Without NATS there is nothing to create: a usage error saying what to set.
	_, stderr, code = sluiceRun(t, sluiceBin, nil, "init")
	if code != 2 || !strings.Contains(stderr, "SLUICE_NATS_URL") {
		t.Errorf("init without --nats-url: exit %d, %q; want 2 naming SLUICE_NATS_URL", code, stderr)
	}
}
