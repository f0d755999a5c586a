package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Direct mode: the worker hands out presigned MinIO URLs; MinIO serves the bytes. What
// is lost is documented: the slot is not released when the download ends but lapses
// with the link (--token-ttl), and the ticket ends expired, not done.
func TestDirectMode(t *testing.T) {
	s := newStack(t, stackOptions{S3: true, GlobalLimit: 1, Env: []string{
		"SLUICE_DIRECT_DOWNLOADS=true",
		"SLUICE_TOKEN_TTL=3s",
	}})
	s.dumpLogsOnFailure()
	data := randomBytes(5<<20+9, 61)
	s.putObject("tools/cli.tar.gz", data)
	s.startAll(1)

	first, link := s.link("tools/cli.tar.gz")
	if !strings.HasPrefix(link, "http://"+s.minio.Endpoint+"/"+s.bucket+"/tools/cli.tar.gz?") || !strings.Contains(link, "X-Amz-Signature=") {
		t.Fatalf("direct link %q is not a presigned URL of the object on MinIO", link)
	}
	second := s.request("tools/cli.tar.gz")

	out := filepath.Join(t.TempDir(), "cli.tar.gz")
	start := time.Now()
	if code, log := runClient(t, 30*time.Second, "curl", "-sSf", "-D", out+".h", "-o", out, link); code != 0 {
		t.Fatalf("curl exit %d: %s", code, log)
	}
	if sum, _ := fileSHA(t, out); sum != sha(data) {
		t.Fatal("the direct download does not match the object")
	}
	_, headers := fileSHA(t, out+".h")
	if !strings.Contains(strings.ToLower(string(headers)), `content-disposition: attachment; filename=cli.tar.gz`) {
		t.Errorf("MinIO's answer lacks the file name: %s", headers)
	}
	if !strings.Contains(strings.ToLower(string(headers)), "cache-control: private, no-store") {
		t.Errorf("MinIO's answer lacks Cache-Control: private, no-store: %s", headers)
	}
	// Nothing tells the ledger the download ended: the slot is held until the link
	// lapses, and only then does the next ticket get it.
	if tk := s.ticket(second.ID); tk.Status != "queued" {
		t.Fatalf("second ticket %q right after the first download, want queued until the link lapses", tk.Status)
	}
	s.follow(second.ID, 15*time.Second)
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("second ticket admitted %s after the download; the slot should lapse with the 3s link", waited)
	}
	if tk := s.ticket(first); tk.Status != "expired" {
		t.Errorf("first ticket %q, want expired (direct mode cannot know the download finished)", tk.Status)
	}
	// The presigned URL itself lapses with the link.
	eventually(t, 10*time.Second, "the presigned URL expires", func() bool {
		st, _ := getStatus(t, link)
		return st == http.StatusForbidden
	})
}

// sluice get in direct mode: the presigned URL is signed for GET, so MinIO refuses HEAD;
// the client learns the size from a one-byte range instead and downloads in ranges.
func TestDirectModeSluiceGet(t *testing.T) {
	s := newStack(t, stackOptions{S3: true, GlobalLimit: 2, Env: []string{"SLUICE_DIRECT_DOWNLOADS=true"}})
	s.dumpLogsOnFailure()
	data := randomBytes(3<<20+11, 62)
	s.putObject("tools/cli.tar.gz", data)
	s.startAll(1)

	_, link := s.link("tools/cli.tar.gz")
	req, _ := http.NewRequest(http.MethodHead, link, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		t.Logf("HEAD on the presigned URL: %d (signed for GET)", resp.StatusCode)
	}

	dir := t.TempDir()
	r := s.runCLI(dir, s.cliEnv(), 60*time.Second, "get", "tools/cli.tar.gz", "--connections", "4")
	r.expectExit(0)
	if sum, _ := fileSHA(t, filepath.Join(dir, "cli.tar.gz")); sum != sha(data) {
		t.Fatal("sluice get's file in direct mode does not match the object")
	}
}
