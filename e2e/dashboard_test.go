package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluice-dl/sluice/api"
)

// opsBrowser starts a headless Chromium with a fresh profile, for one test.
func opsBrowser(t *testing.T) context.Context {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run scripts/deps.sh (or apt-get install -y chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancel(); cancelBrowser(); cancelAlloc() })
	return ctx
}

// chartMax reads what a dashboard chart draws: the largest value of each series.
func chartMax(t *testing.T, ctx context.Context, id string) []float64 {
	t.Helper()
	a, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID(id), "data-max"))
	if err != nil {
		t.Fatalf("read chart %s: %v", id, err)
	}
	var v []float64
	_ = json.Unmarshal([]byte(a.Value), &v)
	return v
}

func chartPoints(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	a, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#"+id+" polyline"), "points"))
	if err != nil {
		t.Fatalf("read chart %s: %v", id, err)
	}
	return a.Value
}

// TestDashboardInBrowser opens /dashboard in headless Chromium, signs in with the
// operator key, watches the charts move while a load runs, and uses the page's
// controls: a limit changed on the page is the limit in force, and pause and resume
// work.
func TestDashboardInBrowser(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 2, Env: []string{
		"SLUICE_ADMIN_KEY=" + opsAdminKey, "SLUICE_LOG_LEVEL=info",
		"SLUICE_DOWNLOAD_RATE=" + strconv.Itoa(2<<20), // each 1 MiB download takes about half a second
	}})
	s.dumpLogsOnFailure()
	data := randomBytes(1<<20, 5)
	s.putObject("load.bin", data)
	s.startAll(2)
	ctx := opsBrowser(t)

	// The page loads and asks for the key; with it, it shows the live figures.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(s.ingressURL+"/dashboard"),
		chromedp.WaitVisible(chromedp.ID("key")),
	); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	loginVisible, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById("login").hidden && document.getElementById("main").hidden`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("key"), opsAdminKey),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("main")),
	); err != nil {
		t.Fatalf("sign in on the dashboard: %v", err)
	}
	if !loginVisible {
		t.Error("the page did not ask for the operator key first")
	}
	var slots string
	opsWait(t, 10*time.Second, "the page to list the workers and the edge", func() bool {
		roles, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
			`Array.from(document.querySelectorAll("#nodes tr")).map(r => r.cells[0].textContent).sort().join(",")`))
		slots = pageText(ctx, "t-slots")
		return roles == "edge,ingress,worker,worker"
	})
	if slots != "0 / 2" {
		t.Errorf("slots tile %q, want 0 / 2", slots)
	}
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`sessionStorage.getItem("sluice.operatorKey") === "`+opsAdminKey+`" && localStorage.length === 0`))
	if err != nil || !stored {
		t.Errorf("the key is not kept (only) in sessionStorage: %v", err)
	}
	before := chartPoints(t, ctx, "c-admissions")

	// A load: 24 downloads through 2 slots.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range 24 {
		wg.Go(func() {
			id := s.request("load.bin").ID
			link := s.follow(id, 90*time.Second)
			if _, n, resp := download(t, link); resp.StatusCode != http.StatusOK || n != int64(len(data)) {
				mu.Lock()
				failures = append(failures, strconv.Itoa(i)+": "+resp.Status)
				mu.Unlock()
			}
		})
	}
	opsWait(t, 60*time.Second, "the charts to show the backlog, admissions and throughput", func() bool {
		b, a, th := chartMax(t, ctx, "c-backlog"), chartMax(t, ctx, "c-admissions"), chartMax(t, ctx, "c-throughput")
		sl := chartMax(t, ctx, "c-slots")
		return len(b) == 2 && b[0] >= 5 && len(a) == 1 && a[0] > 0 && len(th) == 1 && th[0] > 0 && len(sl) == 2 && sl[0] == 2 && sl[1] == 2
	})
	if after := chartPoints(t, ctx, "c-admissions"); after == before {
		t.Error("the admissions chart did not move")
	}

	// A limit change made on the page is the limit in force.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("global-limit"), "7"),
		chromedp.Click(chromedp.ID("apply-limits")),
		chromedp.WaitVisible(chromedp.ID("message")),
	); err != nil {
		t.Fatalf("apply limits on the page: %v", err)
	}
	msg := pageText(ctx, "message")
	var limits api.Limits
	s.opsCall(http.MethodGet, "/api/v1/admin/limits", nil, http.StatusOK, &limits)
	if limits.Global != 7 || !strings.Contains(msg, "global 7") {
		t.Fatalf("after applying 7 on the page: the API says global %d; the page says %q", limits.Global, msg)
	}
	opsWait(t, 20*time.Second, "the slots chart to show the new limit", func() bool {
		sl := chartMax(t, ctx, "c-slots")
		return len(sl) == 2 && sl[1] == 7
	})
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("downloads failed under load: %v", failures)
	}

	// Pause and resume from the page.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("pause"))); err != nil {
		t.Fatal(err)
	}
	opsWait(t, 10*time.Second, "the page to show admission paused", func() bool {
		return pageText(ctx, "state") == "admission paused"
	})
	s.opsCall(http.MethodGet, "/api/v1/admin/limits", nil, http.StatusOK, &limits)
	if !limits.Paused {
		t.Fatal("paused on the page, but the API says admission runs")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("resume"))); err != nil {
		t.Fatal(err)
	}
	opsWait(t, 10*time.Second, "the page to show admission running", func() bool {
		return pageText(ctx, "state") == "admitting"
	})

	// A bad value is refused with the API's reason, and nothing changes.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("tenant-name"), "acme"),
		chromedp.SetValue(chromedp.ID("tenant-weight"), "5000"),
		chromedp.Click(chromedp.ID("apply-tenant")),
	); err != nil {
		t.Fatal(err)
	}
	opsWait(t, 10*time.Second, "the page to show why the weight was refused", func() bool {
		msg = pageText(ctx, "message")
		return strings.Contains(msg, "weight")
	})
	s.opsCall(http.MethodGet, "/api/v1/admin/limits", nil, http.StatusOK, &limits)
	if limits.Global != 7 {
		t.Errorf("a refused update changed the limits: %+v", limits)
	}

	if out := os.Getenv("SLUICE_DASHBOARD_SCREENSHOT"); out != "" {
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(out, png, 0o644)
		}
	}
}

// pageText is the text of the element with id, "" if it cannot be read.
func pageText(ctx context.Context, id string) string {
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("`+id+`") || {}).textContent || ""`))
	return strings.TrimSpace(v)
}
