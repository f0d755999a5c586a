package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A ticket is done when every byte of its object was sent at least once, not when the
// bytes sent add up to its size: a download manager that re-requests ranges over a
// throttled link keeps a live link until it has everything, then the ticket ends done.
func TestDoneOnlyWhenEveryByteWasSent(t *testing.T) {
	if _, err := exec.LookPath("aria2c"); err != nil {
		t.Fatal("aria2c is not installed: run scripts/deps.sh (or apt-get install -y aria2)")
	}
	const rate = 1 << 20
	s := newStack(t, stackOptions{Env: []string{
		fmt.Sprintf("SLUICE_DOWNLOAD_RATE=%d", rate),
		"SLUICE_STREAM_LEASE=3s", // progress reported every second
	}})
	s.dumpLogsOnFailure()
	small := randomBytes(1<<20+13, 51)
	big := randomBytes(8<<20+77, 52)
	s.putObject("small.bin", small)
	s.putObject("big.bin", big)
	s.startAll(1)

	t.Run("the same ranges again", func(t *testing.T) {
		id, link := s.link("small.bin")
		size := int64(len(small))
		// The first 40 % three times: 120 % sent, 40 % covered.
		for range 3 {
			if st, n := rangeGet(t, link, fmt.Sprintf("bytes=0-%d", size*2/5-1)); st != http.StatusPartialContent || n != size*2/5 {
				t.Fatalf("range of the first 40 %%: %d, %d bytes", st, n)
			}
		}
		// A keep-alive connection's progress reaches the ledger with its next renewal
		// (every lease/3, 1 s here), not after each response.
		tk := s.ticket(id)
		for deadline := time.Now().Add(5 * time.Second); tk.BytesCovered < size*2/5 && time.Now().Before(deadline); tk = s.ticket(id) {
			time.Sleep(50 * time.Millisecond)
		}
		if tk.BytesSent < size || tk.Status != "streaming" || tk.BytesCovered != size*2/5 {
			t.Fatalf("after 120 %% sent of 40 %%: %s, %d sent, %d covered; want streaming with %d covered",
				tk.Status, tk.BytesSent, tk.BytesCovered, size*2/5)
		}
		// The link still answers, and the rest makes the ticket done.
		if st, n := rangeGet(t, link, fmt.Sprintf("bytes=%d-", size/3)); st != http.StatusPartialContent || n != size-size/3 {
			t.Fatalf("the rest: %d, %d bytes", st, n)
		}
		if done := s.waitStatus(id, "done", 10*time.Second); done.BytesCovered != size {
			t.Errorf("done with %d of %d bytes covered", done.BytesCovered, size)
		}
	})

	t.Run("aria2c -x8 with retries", func(t *testing.T) {
		id, link := s.link("big.bin")
		size := int64(len(big))
		dir := t.TempDir()
		type result struct {
			code int
			log  string
		}
		finished := make(chan result, 1)
		go func() {
			code, log := runClient(t, 120*time.Second, "aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none",
				"--max-tries=5", "--retry-wait=1", "-d", dir, "-o", "big.bin", link)
			finished <- result{code, log}
		}()
		var polls int
		var res result
	watch:
		for {
			select {
			case res = <-finished:
				break watch
			case <-time.After(200 * time.Millisecond):
			}
			tk := s.ticket(id)
			polls++
			if tk.Status == "done" || tk.Status == "expired" {
				// Only aria2c's exit may be in flight: wait for it before judging.
				res = <-finished
				if res.code != 0 {
					t.Fatalf("ticket %s (%d sent, %d covered) while aria2c was still downloading; it then exited %d: %s",
						tk.Status, tk.BytesSent, tk.BytesCovered, res.code, res.log)
				}
				break watch
			}
		}
		if res.code != 0 {
			t.Fatalf("aria2c exit %d: %s", res.code, res.log)
		}
		if sum, _ := fileSHA(t, filepath.Join(dir, "big.bin")); sum != sha(big) {
			t.Fatal("aria2c's file does not match the object")
		}
		done := s.waitStatus(id, "done", 10*time.Second)
		if done.BytesCovered != size || done.BytesSent < size {
			t.Errorf("done with %d covered, %d sent, of %d", done.BytesCovered, done.BytesSent, size)
		}
		t.Logf("aria2c -x8: %d bytes sent for %d (%.2fx), %d polls while it ran", done.BytesSent, size, float64(done.BytesSent)/float64(size), polls)
	})
	if n := s.heldSlots(); n != 0 {
		t.Errorf("%d slots still held after every download ended", n)
	}
}

// rangeGet fetches one range of link, reading the whole body, and returns the status
// and the body's length.
func rangeGet(t *testing.T, link, rng string) (int, int64) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, link, nil)
	req.Header.Set("Range", rng)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rng, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", rng, err)
	}
	return resp.StatusCode, n
}
