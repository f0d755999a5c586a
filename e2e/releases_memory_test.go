package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// procMemory reads a process's resident set now and its peak (VmRSS, VmHWM), bytes.
func procMemory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// Eight 20 MiB release batches at once cost the ingress less than 64 MiB more than
// its peak before: NDJSON is decoded line by line, a line longer than an event can be
// is skipped as it arrives, and large bodies are read a few at a time (the others are
// told to come back, and do).
func TestReleasesLargeBodiesBoundedMemory(t *testing.T) {
	s := newAdmissionStack(t, stackOptions{})
	ingress := s.start("ingress")
	_, publisher := s.createKey("publisher", "ci")
	pid := ingress.Cmd.Process.Pid

	const size = 20 << 20
	sum := strings.Repeat("ab", 32)
	// One line of 20 MiB: what cost ~100 MiB of RSS when a line was buffered whole.
	oneLine := []byte(`{"object":"rel/huge.bin","sha256":"` + sum + `","size":1,"event_id":"` + strings.Repeat("x", size) + "\"}\n")
	// 10,000 valid events padded with JSON whitespace to 20 MiB.
	var many bytes.Buffer
	for i := range 10_000 {
		ev := fmt.Sprintf(`{"object":"rel/mem-%05d.bin","sha256":"%s","size":%d,"event_id":"mem-%05d"`, i, sum, i+1, i)
		many.WriteString(ev + strings.Repeat(" ", size/10_000-len(ev)-2) + "}\n")
	}

	_, before := procMemory(t, pid)
	var wg sync.WaitGroup
	statuses := make([]string, 8)
	for i := range 8 {
		body := oneLine
		if i%2 == 1 {
			body = many.Bytes()
		}
		wg.Go(func() {
			for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
				req, _ := http.NewRequest(http.MethodPost, s.ingressURL+"/api/v1/releases", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/x-ndjson")
				req.Header.Set("Authorization", "Bearer "+publisher)
				resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
				if err != nil {
					statuses[i] += "error " + err.Error() + "; "
					return
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				statuses[i] += strconv.Itoa(resp.StatusCode) + " "
				if resp.StatusCode != http.StatusServiceUnavailable {
					if i%2 == 0 && !bytes.Contains(answer, []byte("longer than")) {
						statuses[i] += "(the long line not named: " + string(answer[:min(len(answer), 300)]) + ")"
					}
					return
				}
				retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
				time.Sleep(time.Duration(max(retry, 1)) * time.Second)
			}
		})
	}
	wg.Wait()
	rss, peak := procMemory(t, pid)
	t.Logf("ingress peak RSS %d MiB before, %d MiB after 8 parallel 20 MiB batches (+%d MiB); RSS now %d MiB; answers %q",
		before>>20, peak>>20, (peak-before)>>20, rss>>20, statuses)
	for i, st := range statuses {
		want := "400"
		if i%2 == 1 {
			want = "202"
		}
		if !strings.HasSuffix(strings.TrimSpace(st), want) {
			t.Errorf("batch %d: answers %q, want %s at the end", i, st, want)
		}
	}
	if grew := peak - before; grew > 64<<20 {
		t.Errorf("the ingress's peak RSS grew by %d MiB, want under 64 MiB", grew>>20)
	}
}
