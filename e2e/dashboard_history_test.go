package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard draws the last 15 minutes from the server on every visit: downloads
// made before the page was opened are on its admissions chart at once, a backlog gone
// before it was opened on its backlog chart, and again after a reload, with times
// under the charts. Anonymous downloads' tenant, public,
// is in the Tenants table; the key field's placeholder is what keys look like.
func TestDashboardHistoryOnEveryVisit(t *testing.T) {
	s := newStack(t, stackOptions{GlobalLimit: 4, Env: []string{"SLUICE_ADMIN_KEY=" + opsAdminKey}})
	s.dumpLogsOnFailure()
	data := randomBytes(256<<10, 9)
	s.putObject("early.bin", data)
	s.startAll(1)
	for range 6 {
		link := s.follow(s.request("early.bin").ID, 30*time.Second)
		if _, n, resp := download(t, link); resp.StatusCode != http.StatusOK || n != int64(len(data)) {
			t.Fatalf("download: %s, %d bytes", resp.Status, n)
		}
	}
	// A backlog that is gone before the visit: only the history can show it.
	s.opsCall(http.MethodPost, "/api/v1/admin/pause", nil, http.StatusOK, nil)
	var queued []string
	for range 3 {
		queued = append(queued, s.request("early.bin").ID)
	}
	var levels struct {
		Backlog int64 `json:"backlog"`
	}
	opsWait(t, 10*time.Second, "a backlog of 3 in the stats", func() bool {
		s.opsCall(http.MethodGet, "/api/v1/admin/stats", nil, http.StatusOK, &levels)
		return levels.Backlog == 3
	})
	time.Sleep(3 * time.Second) // a few heartbeats record it
	s.opsCall(http.MethodPost, "/api/v1/admin/resume", nil, http.StatusOK, nil)
	for _, id := range queued {
		if _, n, resp := download(t, s.follow(id, 30*time.Second)); resp.StatusCode != http.StatusOK || n != int64(len(data)) {
			t.Fatalf("download: %s, %d bytes", resp.Status, n)
		}
	}
	opsWait(t, 10*time.Second, "the backlog gone from the stats", func() bool {
		s.opsCall(http.MethodGet, "/api/v1/admin/stats", nil, http.StatusOK, &levels)
		return levels.Backlog == 0
	})
	// Until the live rate (last 5 s) is back to 0, so that only the history can show them.
	var stats struct {
		Activity struct {
			Rate float64 `json:"admissions_per_second"`
		} `json:"activity"`
	}
	opsWait(t, 20*time.Second, "the live admission rate to fall back to 0", func() bool {
		s.opsCall(http.MethodGet, "/api/v1/admin/stats", nil, http.StatusOK, &stats)
		return stats.Activity.Rate == 0
	})

	ctx := opsBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.ingressURL+"/dashboard"), chromedp.WaitVisible(chromedp.ID("key"))); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	if ph, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("key").placeholder`)); err != nil || !strings.HasPrefix(ph, "slk_") {
		t.Errorf("the key field's placeholder is %q (%v), want slk_…", ph, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("key"), opsAdminKey),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("main")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	for visit := range 2 {
		loaded := time.Now()
		if visit == 1 {
			if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("main"))); err != nil {
				t.Fatalf("reload the dashboard: %v", err)
			}
		}
		opsWait(t, 10*time.Second, "the admissions chart to show the downloads from before the visit", func() bool {
			a := chartMax(t, ctx, "c-admissions")
			return len(a) == 1 && a[0] > 0
		})
		oldest, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("c-admissions"), "data-oldest"))
		if err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, oldest.Value)
		if err != nil || !at.Before(loaded.Add(-5*time.Minute)) {
			t.Errorf("visit %d: the oldest point drawn is from %q (%v), want minutes before the page was loaded at %s", visit, oldest.Value, err, loaded.Format(time.TimeOnly))
		}
		// The backlog chart: the three queued tickets from before the visit, drawn
		// from the levels the ingress recorded each second.
		opsWait(t, 10*time.Second, "the backlog chart to show the backlog from before the visit", func() bool {
			b := chartMax(t, ctx, "c-backlog")
			return len(b) == 2 && b[0] >= 3
		})
		oldest, err = chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("c-slots"), "data-oldest"))
		if at, perr := time.Parse(time.RFC3339Nano, oldest.Value); err != nil || perr != nil || !at.Before(loaded.Add(-10*time.Second)) {
			t.Errorf("visit %d: the slots chart's oldest point is from %q (%v %v), want from before the page was loaded at %s", visit, oldest.Value, err, perr, loaded.Format(time.TimeOnly))
		}
		times, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#c-admissions ~ .xaxis span")).map(s => s.textContent).join(" ")`))
		if strings.Count(times, ":") < 4 {
			t.Errorf("visit %d: the times under the admissions chart are %q, want four clock times", visit, times)
		}
		var tenants string
		opsWait(t, 10*time.Second, "the Tenants table to list public", func() bool {
			tenants, _ = chromedp.Run(ctx, chromedp.Evaluate[string](
				`Array.from(document.querySelectorAll("#tenants tr")).map(r => r.cells[0].textContent).join(",")`))
			return strings.Contains(tenants, "public")
		})
	}
}
