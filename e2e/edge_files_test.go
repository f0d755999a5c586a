package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// filesStack is a stack with one slot and a short wait on /api/v1/files, and a ticket
// holding the slot: whoever asks next waits until hold() is released.
func filesStack(t *testing.T, data []byte) (s *stack, release func()) {
	s = newStack(t, stackOptions{GlobalLimit: 1, Env: []string{"SLUICE_FILES_WAIT=1s"}})
	s.dumpLogsOnFailure()
	s.putObject("dist/sluice-1.0.tar.gz", data)
	s.putObject("holder.bin", []byte("holds the slot"))
	s.startAll(1)
	holder, _ := s.link("holder.bin") // admitted, never downloaded: holds the one slot
	return s, func() {
		req, _ := http.NewRequest(http.MethodDelete, s.ingressURL+"/api/v1/tickets/"+holder, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("cancel the holder: %v %v", err, resp)
		}
		resp.Body.Close()
	}
}

func ticketCount(t *testing.T, s *stack) int {
	keys, err := s.redis.Client(t).Keys(t.Context(), "sluice:{adm}:t:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// wget and curl -L get the file from one URL, through the queue, with no API calls.
func TestFilesURLPlainClients(t *testing.T) {
	data := randomBytes(3<<20+5, 71)
	s, release := filesStack(t, data)
	url := s.ingressURL + "/api/v1/files/dist/sluice-1.0.tar.gz"
	dir := t.TempDir()
	before := ticketCount(t, s)

	done := make(chan struct{})
	var code int
	var log string
	go func() {
		defer close(done)
		code, log = runClient(t, 60*time.Second, "wget", "-q", "-O", filepath.Join(dir, "wget.tgz"), url)
	}()
	time.Sleep(3500 * time.Millisecond) // wget waits through several redirect hops
	select {
	case <-done:
		t.Fatalf("wget finished (exit %d) while the slot was held: %s", code, log)
	default:
	}
	if n := ticketCount(t, s) - before; n != 1 {
		t.Errorf("wait hops created %d tickets, want 1", n)
	}
	release()
	<-done
	if code != 0 {
		t.Fatalf("wget exit %d: %s", code, log)
	}
	if sum, _ := fileSHA(t, filepath.Join(dir, "wget.tgz")); sum != sha(data) {
		t.Fatal("wget's file does not match")
	}

	// curl -L --retry, with the slot free now: straight to the stream.
	if code, log := runClient(t, 60*time.Second, "curl", "-sSfL", "--retry", "5", "-o", filepath.Join(dir, "curl.tgz"), url); code != 0 {
		t.Fatalf("curl exit %d: %s", code, log)
	}
	if sum, _ := fileSHA(t, filepath.Join(dir, "curl.tgz")); sum != sha(data) {
		t.Fatal("curl's file does not match")
	}

	// Bad input: a clear 4xx, nothing queued.
	n := ticketCount(t, s)
	for path, want := range map[string]int{
		"/api/v1/files/../etc/passwd":                      http.StatusBadRequest,
		"/api/v1/files/missing.bin":                        http.StatusNotFound,
		"/api/v1/files/dist/sluice-1.0.tar.gz?ticket=nope": http.StatusBadRequest,
	} {
		if st, _ := getStatus(t, s.ingressURL+path); st != want {
			t.Errorf("GET %s: %d, want %d", path, st, want)
		}
	}
	if ticketCount(t, s) != n {
		t.Error("bad requests created tickets")
	}
}

// A real browser: the page shows it is waiting, then the download starts by itself
// when the slot frees, and the saved file is the object.
func TestFilesURLInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run scripts/deps.sh (or apt-get install -y chromium)")
	}
	data := randomBytes(2<<20+3, 72)
	s, release := filesStack(t, data)
	dir := t.TempDir()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	downloads := filepath.Join(dir, "downloads")
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		eventsOn := true
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, EventsEnabled: &eventsOn,
		})
		return err
	})); err != nil {
		t.Fatalf("chromium: set the download directory: %v", err)
	}
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.ingressURL+"/api/v1/files/dist/sluice-1.0.tar.gz")); err != nil {
		t.Fatalf("chromium: open the file URL: %v", err)
	}
	heading, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS("#waiting")))
	if err != nil {
		t.Fatalf("chromium: read the page: %v", err)
	}
	if !strings.Contains(heading, "queued") {
		t.Fatalf("the page says %q, want the waiting page", heading)
	}
	// The page's Content-Security-Policy allows its own style (by hash) and nothing
	// else: the browser applied it (36em is 576px), and the header is there.
	if maxWidth, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).maxWidth`)); err != nil || maxWidth != "576px" {
		t.Errorf("the waiting page's style under its CSP: max-width %q (%v), want 576px", maxWidth, err)
	}
	page, _ := http.NewRequest(http.MethodGet, s.ingressURL+"/api/v1/files/dist/sluice-1.0.tar.gz?wait=1", nil)
	page.Header.Set("Accept", "text/html")
	if resp, err := noRedirect.Do(page); err != nil {
		t.Error(err)
	} else {
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(csp, "default-src 'none'; style-src 'sha256-") {
			t.Errorf("waiting page: %d with Content-Security-Policy %q, want 202 and a strict policy", resp.StatusCode, csp)
		}
	}
	before := ticketCount(t, s)
	time.Sleep(2500 * time.Millisecond) // the page refreshes: still waiting, still one ticket
	if n := ticketCount(t, s); n != before {
		t.Errorf("the waiting page's refreshes created %d more tickets", n-before)
	}
	release()
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("the browser's download did not complete after the slot was freed: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			break
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the browser's download was canceled")
		}
	}
	got, err := os.ReadFile(filepath.Join(downloads, "sluice-1.0.tar.gz"))
	if err != nil {
		entries, _ := os.ReadDir(downloads)
		t.Fatalf("downloaded file: %v (directory holds %v)", err, entries)
	}
	if sha(got) != sha(data) {
		t.Fatalf("the browser saved %d bytes that do not match the object", len(got))
	}
}

// README's `curl -L --retry 10 -o FILE .../tickets/<id>/download` and wget on a queued
// ticket's download URL save the object's bytes, never the ticket's JSON: the URL waits
// like /api/v1/files and sends them to wait again. A program asking for JSON still
// gets the queued ticket at once.
func TestFilesTicketDownloadPlainClients(t *testing.T) {
	data := randomBytes(1<<20+7, 73)
	s, release := filesStack(t, data)
	dir := t.TempDir()
	forCurl, forWget := s.request("dist/sluice-1.0.tar.gz"), s.request("dist/sluice-1.0.tar.gz")
	url := func(id string) string { return s.ingressURL + "/api/v1/tickets/" + id + "/download" }

	code, _ := getStatus(t, url(forCurl.ID)+"?wait=1", "Accept", "application/json")
	if code != http.StatusAccepted {
		t.Errorf("queued ticket's /download asked for JSON: %d, want 202", code)
	}
	req, _ := http.NewRequest(http.MethodGet, url(forCurl.ID), nil)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/api/v1/tickets/"+forCurl.ID+"/download?wait=1" {
		t.Errorf("queued ticket's /download to a plain client: %d to %q, want 303 to itself with wait=1", resp.StatusCode, loc)
	}
	if code, retry := getStatus(t, url(forCurl.ID)+"?wait=15"); code != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("/download after 15 hops: %d with Retry-After %q, want 503 with Retry-After", code, retry)
	}

	type result struct {
		code int
		log  string
	}
	curl, wget := make(chan result, 1), make(chan result, 1)
	go func() {
		c, l := runClient(t, 90*time.Second, "curl", "-sSL", "--retry", "10", "-o", filepath.Join(dir, "curl.tgz"), url(forCurl.ID))
		curl <- result{c, l}
	}()
	go func() {
		c, l := runClient(t, 90*time.Second, "wget", "-q", "-O", filepath.Join(dir, "wget.tgz"), url(forWget.ID))
		wget <- result{c, l}
	}()
	time.Sleep(2500 * time.Millisecond) // both wait through redirect hops
	select {
	case r := <-curl:
		t.Fatalf("curl finished (exit %d) while the slot was held: %s", r.code, r.log)
	case r := <-wget:
		t.Fatalf("wget finished (exit %d) while the slot was held: %s", r.code, r.log)
	default:
	}
	release()
	for name, ch := range map[string]chan result{"curl.tgz": curl, "wget.tgz": wget} {
		if r := <-ch; r.code != 0 {
			t.Fatalf("%s: exit %d: %s", name, r.code, r.log)
		}
		if sum, _ := fileSHA(t, filepath.Join(dir, name)); sum != sha(data) {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			t.Errorf("%s is not the object (%d bytes: %.80q)", name, len(b), b)
		}
	}
}

// A browser gets the waiting page at once even with the default 10 s
// SLUICE_FILES_WAIT (the page waits, not the request), and the page numbers the place
// in line as the API does: position 0 is "next in line", n is "n ahead of you".
func TestWaitingPageAppearsAtOnce(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 1})
	s.dumpLogsOnFailure()
	s.putObject("dist/app.tar.gz", randomBytes(64<<10, 74))
	s.putObject("holder.bin", []byte("holds the slot"))
	s.startAll(1)
	s.link("holder.bin") // holds the one slot
	ctx := opsBrowser(t)

	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil { // the browser is started
		t.Fatalf("chromium: %v", err)
	}
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(s.ingressURL+"/api/v1/files/dist/app.tar.gz")); err != nil {
		t.Fatalf("chromium: open the file URL: %v", err)
	}
	took := time.Since(start)
	// The browser's own measure of when the page's first byte came, after the request
	// was sent: what the wait would delay.
	firstByte, err := chromedp.Run(ctx, chromedp.Evaluate[float64](
		`(e => e.responseStart - e.requestStart)(performance.getEntriesByType("navigation")[0])`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the waiting page: first byte %.0f ms after the request, loaded %s after the navigation began", firstByte, took.Round(time.Millisecond))
	if firstByte > 1000 {
		t.Errorf("the waiting page's first byte came %.0f ms after the request, want under 1 s (SLUICE_FILES_WAIT is 10 s)", firstByte)
	}
	read := func(js string) string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("chromium: %s: %v", js, err)
		}
		return v
	}
	id := read(`document.getElementById("wait").dataset.ticket`)
	if tk := s.ticket(id); tk.Status != "queued" || tk.Position != 0 {
		t.Fatalf("the page's ticket: %+v, want queued at position 0", tk)
	}
	if got := read(`document.getElementById("position").textContent`); got != "next in line" {
		t.Errorf("the page shows %q for the API's position 0, want \"next in line\"", got)
	}

	// A second browser (another User-Agent: another ticket) is behind it: position 1.
	req, _ := http.NewRequest(http.MethodGet, s.ingressURL+"/api/v1/files/dist/app.tar.gz", nil)
	req.Header.Set("Accept", "text/html")
	req.Header.Set("User-Agent", "second-browser")
	began := time.Now()
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(began); resp.StatusCode != http.StatusAccepted || took > time.Second {
		t.Errorf("second browser: %d after %s, want the waiting page (202) under 1 s", resp.StatusCode, took)
	}
	second := regexp.MustCompile(`data-ticket="(t[a-z2-7]+)"`).FindSubmatch(page)
	if second == nil {
		t.Fatalf("second browser's page names no ticket: %s", page)
	}
	if tk := s.ticket(string(second[1])); tk.Position != 1 || !strings.Contains(string(page), ">1 ahead of you<") {
		t.Errorf("second browser: the API says position %d, the page: %s", tk.Position, page)
	}
	// The page keeps polling: after a few seconds it still shows the API's place.
	time.Sleep(2500 * time.Millisecond)
	if got := read(`document.getElementById("position").dataset.position + " " + document.getElementById("position").textContent`); got != "0 next in line" {
		t.Errorf("after polling, the page shows %q, want \"0 next in line\"", got)
	}
}
