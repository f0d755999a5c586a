package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Real download clients against the real edge, each downloading a multi-megabyte
// object, resuming where they support it, and the SHA-256 must match.
func TestRealClients(t *testing.T) {
	// The edge sends each download at 8 MiB/s, so that a transfer can be interrupted
	// half-way (curl's own --limit-rate does not hold on loopback).
	s := newStack(t, stackOptions{Env: []string{"SLUICE_DOWNLOAD_RATE=8388608"}})
	s.dumpLogsOnFailure()
	data := randomBytes(12<<20+77, 21)
	s.putObject("releases/v2/app.tar.gz", data)
	s.startAll(1)
	want := sha(data)
	dir := t.TempDir()

	t.Run("curl", func(t *testing.T) {
		_, link := s.link("releases/v2/app.tar.gz")
		out := filepath.Join(dir, "curl.bin")
		if code, log := runClient(t, 60*time.Second, "curl", "-sSf", "-o", out, link); code != 0 {
			t.Fatalf("curl exit %d: %s", code, log)
		}
		if got, _ := fileSHA(t, out); got != want {
			t.Fatal("curl's file does not match the object")
		}
	})

	t.Run("curl -C - after an interrupted transfer", func(t *testing.T) {
		id, link := s.link("releases/v2/app.tar.gz")
		out := filepath.Join(dir, "curl-resume.bin")
		// Interrupted: curl gives up after 0.5s, with part of the file.
		code, log := runClient(t, 30*time.Second, "curl", "-sS", "--max-time", "0.5", "-o", out, link)
		if code != 28 { // 28: operation timed out
			t.Fatalf("interrupted curl exit %d, want 28: %s", code, log)
		}
		partial, _ := os.Stat(out)
		if partial.Size() == 0 || partial.Size() >= int64(len(data)) {
			t.Fatalf("interrupted transfer left %d bytes", partial.Size())
		}
		if tk := s.ticket(id); tk.Status != "streaming" {
			t.Fatalf("between the attempts the ticket is %q, want it still streaming (slot kept for the resume)", tk.Status)
		}
		if code, log := runClient(t, 60*time.Second, "curl", "-sSf", "-C", "-", "-o", out, link); code != 0 {
			t.Fatalf("resuming curl exit %d: %s", code, log)
		}
		if got, _ := fileSHA(t, out); got != want {
			t.Fatal("the resumed file does not match the object")
		}
		done := s.waitStatus(id, "done", 10*time.Second)
		// What the edge sent counts, bytes lost in socket buffers when curl died included.
		if done.BytesSent < int64(len(data)) || done.BytesSent > int64(len(data))+int64(len(data))/2 {
			t.Errorf("ticket counts %d bytes sent over both attempts, want %d and a little more (the resume sent only the rest)", done.BytesSent, len(data))
		}
	})

	t.Run("wget -c", func(t *testing.T) {
		id, link := s.link("releases/v2/app.tar.gz")
		wdir := filepath.Join(dir, "wget")
		// Interrupted: killed after 0.5s.
		if code, log := runClient(t, 500*time.Millisecond, "wget", "-q", "-P", wdir, link); code != -1 {
			t.Fatalf("wget finished (exit %d) before it was interrupted: %s", code, log)
		}
		out := filepath.Join(wdir, fileName(link))
		partial, err := os.Stat(out)
		if err != nil || partial.Size() == 0 || partial.Size() >= int64(len(data)) {
			t.Fatalf("interrupted wget left %v, %v", partial, err)
		}
		if code, log := runClient(t, 60*time.Second, "wget", "-q", "-c", "-P", wdir, link); code != 0 {
			t.Fatalf("wget -c exit %d: %s", code, log)
		}
		if got, _ := fileSHA(t, out); got != want {
			t.Fatal("wget -c's file does not match the object")
		}
		s.waitStatus(id, "done", 10*time.Second)
	})

	t.Run("aria2c -x8 -s8", func(t *testing.T) {
		id, link := s.link("releases/v2/app.tar.gz")
		adir := filepath.Join(dir, "aria2")
		code, log := runClient(t, 60*time.Second, "aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none",
			"--max-tries=1", "-d", adir, "-o", "app.tar.gz", link)
		if code != 0 {
			t.Fatalf("aria2c exit %d: %s", code, log)
		}
		if got, _ := fileSHA(t, filepath.Join(adir, "app.tar.gz")); got != want {
			t.Fatal("aria2c's file does not match the object")
		}
		done := s.waitStatus(id, "done", 10*time.Second)
		if done.BytesSent < int64(len(data)) {
			t.Errorf("ticket done with %d bytes sent", done.BytesSent)
		}
	})
	if n := s.heldSlots(); n != 0 {
		t.Errorf("%d slots still held after every download ended", n)
	}
}

// The object is replaced while a client is half-way: whatever the client does next,
// its file is never a mix of the two versions.
func TestResumeAcrossReplacement(t *testing.T) {
	// The ingress asks storage on every ticket (no --stat-cache), so that the new
	// ticket below names v2 at once: what is tested is the edge's side.
	s := newStack(t, stackOptions{S3: true, Env: []string{"SLUICE_DOWNLOAD_RATE=4194304", "SLUICE_STAT_CACHE=0"}})
	s.dumpLogsOnFailure()
	v1, v2 := randomBytes(8<<20, 31), randomBytes(8<<20, 32) // same size: the hardest case
	s.putObject("app.iso", v1)
	s.startAll(1)
	dir := t.TempDir()
	out := filepath.Join(dir, "app.iso")

	id, oldLink := s.link("app.iso")
	code, log := runClient(t, 30*time.Second, "curl", "-sS", "--max-time", "0.5", "-o", out, oldLink)
	if code != 28 {
		t.Fatalf("interrupted curl exit %d: %s", code, log)
	}
	_, part := fileSHA(t, out)
	if len(part) == 0 || !bytes.Equal(part, v1[:len(part)]) {
		t.Fatalf("the partial file (%d bytes) is not a prefix of v1", len(part))
	}
	head, _ := http.Head(oldLink)
	oldETag := head.Header.Get("ETag")

	s.putObject("app.iso", v2)

	// curl -C - on the old link: refused (the link names v1), the file stays v1's prefix.
	code, log = runClient(t, 30*time.Second, "curl", "-sSf", "-C", "-", "-o", out, oldLink)
	if code == 0 {
		t.Fatalf("curl resumed v1's prefix from a replaced object: %s", log)
	}
	if st, _ := getStatus(t, oldLink, "Range", "bytes="+strconv.Itoa(len(part))+"-"); st != http.StatusGone {
		t.Errorf("old link after the replacement: %d, want 410", st)
	}
	if _, got := fileSHA(t, out); !bytes.Equal(got, part) {
		t.Fatal("a refused resume changed the file")
	}

	// A new ticket, and a client that validates its resume with If-Range (as browsers
	// do): the new version comes whole (200), so curl refuses to append it.
	_, newLink := s.link("app.iso")
	code, _ = runClient(t, 30*time.Second, "curl", "-sSf", "-C", "-", "-H", "If-Range: "+oldETag, "-o", out, newLink)
	_, got := fileSHA(t, out)
	switch {
	case bytes.Equal(got, part):
		// curl saw 200 to its range request and kept the file as it was (exit 33).
		if code == 0 {
			t.Error("curl reported success without changing the file")
		}
	case bytes.Equal(got, v2):
	default:
		t.Fatalf("the client assembled a file that is neither v1's prefix nor v2 (%d bytes): corrupted", len(got))
	}
	req, _ := http.NewRequest(http.MethodGet, newLink, nil)
	req.Header.Set("Range", "bytes="+strconv.Itoa(len(part))+"-")
	req.Header.Set("If-Range", oldETag)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body.Bytes(), v2) {
		t.Fatalf("If-Range with v1's ETag on v2: %d with %d bytes, want 200 and the whole of v2", resp.StatusCode, body.Len())
	}
	_ = id
}
