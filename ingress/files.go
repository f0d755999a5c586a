package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/objstore"
)

// GET /api/v1/files/{key...}: one URL for plain clients and browsers.
//
// The request takes a ticket (or finds the caller's, below) and waits up to
// FilesWait for admission, then answers 303 to the download link. A ticket still
// queued after that is answered according to the client:
//
//   - a browser (Accept names text/html) gets a small waiting page, 202 with
//     Retry-After, that refreshes itself to ?ticket=<id>, so a refresh never takes a
//     second ticket;
//   - any other client (wget, curl -L) is sent 303 to ?ticket=<id>&wait=<n>, where it
//     waits again: a redirect loop that plain clients follow by default (wget up to
//     20 hops, curl -L up to 50). After filesMaxHops hops the answer is 503 with
//     Retry-After, which `curl --retry` retries.
//
// Which ticket: ?ticket=<id> when given and still alive; else the Idempotency-Key
// header as for POST /api/v1/downloads; else a key derived from the client (its API
// key, or its address without one, and its User-Agent) and the object, bound for filesKeyTTL, because `curl --retry`
// starts over from the original URL and must find its ticket again. Two people behind
// one address with the same client share a ticket (and its connection cap) for a while:
// the price of working without cookies.
const (
	filesMaxHops = 15
	filesKeyTTL  = 10 * time.Minute
	// The wait polls the ticket after filesFirstPoll, then twice as long each time up to
	// filesPoll: a ticket is admitted within milliseconds when slots are free, and a
	// queued one costs a poll per filesPoll.
	filesFirstPoll = 2 * time.Millisecond
	filesPoll      = 100 * time.Millisecond
	// browserWait is all a browser's request waits: a ticket admitted at once goes
	// straight to its download, any other gets the waiting page without delay.
	browserWait = 300 * time.Millisecond
)

func (s *Server) getFile(c *gin.Context) {
	key := strings.TrimPrefix(c.Param("key"), "/")
	if err := objstore.ValidateKey(key); err != nil {
		c.Error(err)
		return
	}
	ctx := c.Request.Context()
	object, err := s.resolveName(ctx, key) // a channel alias names its current artifact
	if err != nil {
		c.Error(err)
		return
	}
	id, err := s.fileTicket(c, key, object)
	if err != nil {
		c.Error(err)
		return
	}
	again := url.URL{Path: "/api/v1/files/" + key, RawQuery: url.Values{"ticket": {id}}.Encode()}
	s.sendWhenAdmitted(c, id, key, again, "open the file's URL again for a new ticket")
}

// GET /api/v1/tickets/{id}/download: the same answers as /api/v1/files for a ticket
// taken with POST /api/v1/downloads, so `curl -L --retry` and wget on it save the
// file, never the ticket. A program that asks for JSON gets the queued ticket (202)
// at once instead of the wait.
func (s *Server) followTicket(c *gin.Context) {
	p, ok := s.callerTicket(c, true)
	if !ok {
		return
	}
	id := c.Param("id")
	queued := p.Status == admission.StatusQueued || p.Status == admission.StatusAdmitting
	if queued && strings.Contains(c.GetHeader("Accept"), "application/json") {
		c.Header("Retry-After", strconv.Itoa(retryAfter(p)))
		c.JSON(http.StatusAccepted, wireTicket(p))
		return
	}
	again := url.URL{Path: "/api/v1/tickets/" + id + "/download"}
	s.sendWhenAdmitted(c, id, p.Object, again, "request a new ticket with POST /api/v1/downloads")
}

// sendWhenAdmitted is what both URLs for plain clients answer: it waits up to
// FilesWait for ticket id to be admitted and answers 303 to its link. Still queued,
// a browser gets the waiting page at once (the page waits, not the request); other
// clients are sent to again with wait=<hop> to wait once more, and after filesMaxHops
// hops get 503 with Retry-After. name is the object as the URL names it; endedHint
// says what to do when the ticket ended before its download started.
func (s *Server) sendWhenAdmitted(c *gin.Context, id, name string, again url.URL, endedHint string) {
	browser := strings.Contains(c.GetHeader("Accept"), "text/html")
	wait := s.cfg.FilesWait
	if browser {
		wait = browserWait
	}
	p, err := s.awaitAdmission(c.Request.Context(), id, wait)
	if err != nil {
		c.Error(err)
		return
	}
	switch p.Status {
	case admission.StatusReady, admission.StatusStreaming:
		// A client back here after its link failed gets it on a live edge.
		c.Redirect(http.StatusSeeOther, s.liveLink(c.Request.Context(), p))
		return
	case admission.StatusQueued, admission.StatusAdmitting:
	default:
		msg := "the download ended (" + string(p.Status) + ") before it started"
		if p.Error != "" {
			msg += ": " + p.Error
		}
		c.Error(&apiError{Status: http.StatusGone, Code: "ticket_" + string(p.Status), Message: msg, Hint: endedHint})
		return
	}
	retry := retryAfter(p)
	c.Header("Retry-After", strconv.Itoa(retry))
	hop, _ := strconv.Atoi(c.Query("wait"))
	next := again
	q := next.Query()
	switch {
	case browser:
		s.waitingPage(c, id, name, again.RequestURI(), retry, wireTicket(p))
	case hop >= filesMaxHops:
		c.Header("Location", again.RequestURI())
		writeError(c, &apiError{Status: http.StatusServiceUnavailable, Code: "still_queued", RetryAfter: retry,
			Message: "your download is still queued (" + queuePlace(wireTicket(p).Position) + ")",
			Hint:    "retry " + again.RequestURI() + " after the Retry-After delay; it keeps your place"})
	default:
		q.Set("wait", strconv.Itoa(hop+1))
		next.RawQuery = q.Encode()
		c.Redirect(http.StatusSeeOther, next.RequestURI())
	}
}

// retryAfter is a queued ticket's polling pace in whole seconds, at least one.
func retryAfter(p admission.Position) int {
	return int(max(p.PollAfter(), time.Second) / time.Second)
}

// queuePlace says a queued ticket's place as the waiting page shows it, from the
// API's position (the number of tickets ahead): 0 is "next in line".
func queuePlace(position int64) string {
	if position <= 0 {
		return "next in line"
	}
	return strconv.FormatInt(position, 10) + " ahead of you"
}

// fileTicket finds the caller's ticket for object (named key in the URL, which may be
// an alias of it) or creates one. A hop with a live ?ticket costs no look at the
// catalog or the store, so a client waiting through hops does not depend on storage.
func (s *Server) fileTicket(c *gin.Context, key, object string) (string, error) {
	ctx := c.Request.Context()
	if id := c.Query("ticket"); id != "" {
		if !ticketIDPattern.MatchString(id) {
			return "", badRequest("invalid_ticket", "the ticket parameter is not a ticket id", "open /api/v1/files/"+key+" without it")
		}
		p, err := s.ownTicket(c, id, false)
		switch {
		case err == nil && p.Object != object:
			return "", badRequest("ticket_mismatch", "this ticket is for another file", "open /api/v1/files/"+key+" without ?ticket")
		case err == nil && !p.Status.Terminal():
			return id, nil
		case err != nil && !errors.Is(err, admission.ErrNotFound):
			return "", err
		}
		// Ended or forgotten: start again, as the page was reloaded.
	}
	// The same catalog check as POST /api/v1/downloads, before anything is recorded:
	// rejected, unpublished or unknown artifacts are refused here too.
	info, err := s.statPublished(ctx, object)
	if err != nil {
		return "", err
	}
	idemKey := c.GetHeader("Idempotency-Key")
	if err := validateIdempotencyKey(idemKey); err != nil {
		return "", err
	}
	if idemKey == "" {
		h := sha256.Sum256([]byte(c.GetHeader("User-Agent") + "\x00" + key))
		idemKey = "files:" + hex.EncodeToString(h[:16])
	}
	scope := idempotencyScope(c)
	id := newTicketID()
	prev, err := s.cfg.Ledger.ClaimIdempotencyKey(ctx, scope, idemKey, id, key, filesKeyTTL)
	if err != nil {
		return "", err
	}
	if err := sameRequest(prev, key); err != nil {
		return "", err
	}
	if prev.Ticket != id {
		p, err := s.ticket(ctx, prev.Ticket, false)
		if err == nil && !p.Status.Terminal() && p.Object == object {
			return prev.Ticket, nil
		}
		// The earlier ticket ended (or its file was republished under the alias): this
		// request starts a new one.
		if err := s.cfg.Ledger.RebindIdempotencyKey(ctx, scope, idemKey, id, key, filesKeyTTL); err != nil {
			return "", err
		}
	}
	if err := s.allowTicket(c); err != nil {
		return "", err
	}
	_, err = s.accept(ctx, principal(c), id, info)
	return id, err
}

// awaitAdmission polls the ticket (as its owner: it stays alive) until it is ready or
// has ended, for at most wait.
func (s *Server) awaitAdmission(ctx context.Context, id string, wait time.Duration) (admission.Position, error) {
	deadline := time.Now().Add(wait)
	for interval := filesFirstPoll; ; interval = min(2*interval, filesPoll) {
		p, err := s.ticket(ctx, id, true)
		if err != nil && !errors.Is(err, admission.ErrNotFound) {
			return p, err
		}
		// Not found yet: the ledger records a ticket just after its publish.
		if err == nil && p.Status != admission.StatusQueued && p.Status != admission.StatusAdmitting {
			return p, nil
		}
		if !time.Now().Add(interval).Before(deadline) {
			if err != nil {
				return p, err
			}
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(interval):
		}
	}
}

var waitingTemplate = template.Must(template.New("waiting").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<noscript><meta http-equiv="refresh" content="{{.Refresh}};url={{.Next}}"></noscript>
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waiting for {{.Name}}</title>
<style>{{.Style}}</style>
</head><body>
<h1 id="waiting">Your download of {{.Name}} is queued</h1>
<p id="wait" data-ticket="{{.Ticket}}" data-next="{{.Next}}" data-retry="{{.Refresh}}">You are
<strong id="position" data-position="{{.Position}}">{{.Place}}</strong>.
<span id="eta">{{if .ETAKnown}}Estimated wait: about {{.ETA}}.{{else}}The wait cannot be estimated yet.{{end}}</span></p>
<p>The download starts by itself as soon as a slot is free.
Keep this page open; reloading keeps your place. <a href="{{.Next}}">Check now</a>.</p>
<script>{{.Script}}</script>
</body></html>
`))

// waitingStyle and waitingScript are the page's only style and script. The
// Content-Security-Policy allows exactly them, by hash, and requests to this origin
// only: nothing else is loaded, framed or submitted. The script polls the ticket at
// the server's Retry-After (at most every 5 s) and updates the place in line with the
// same words as queuePlace; once the ticket is no longer queued it opens the page's
// own URL again, which answers 303 to the download (or says why it ended). Without
// JavaScript the page refreshes itself instead.
const (
	waitingStyle  = "body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}"
	waitingScript = `(function () {
  var box = document.getElementById("wait"), next = box.dataset.next;
  var pace = Math.max(1, Math.min(5, +box.dataset.retry || 1));
  function place(n) { return n <= 0 ? "next in line" : n + " ahead of you"; }
  function again() { location.replace(next); }
  function poll() {
    fetch("/api/v1/tickets/" + box.dataset.ticket, {cache: "no-store", headers: {Accept: "application/json"}})
      .then(function (r) {
        if (!r.ok) { again(); return; }
        var ra = parseInt(r.headers.get("Retry-After"), 10);
        if (ra > 0) { pace = Math.min(5, ra); }
        return r.json().then(function (t) {
          if (t.status !== "queued") { document.getElementById("waiting").textContent = "Your download is starting"; again(); return; }
          var pos = document.getElementById("position");
          pos.dataset.position = t.position;
          pos.textContent = place(t.position);
          document.getElementById("eta").textContent = t.eta_known ?
            "Estimated wait: about " + t.eta_seconds + "s." : "The wait cannot be estimated yet.";
          setTimeout(poll, pace * 1000);
        });
      })
      .catch(function () { setTimeout(poll, pace * 1000); });
  }
  setTimeout(poll, pace * 1000);
})();`
)

var waitingCSP = func() string {
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; style-src " + hash(waitingStyle) + "; script-src " + hash(waitingScript) +
		"; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}()

func (s *Server) waitingPage(c *gin.Context, id, name, next string, retry int, v api.Ticket) {
	eta := time.Duration(v.ETASeconds) * time.Second
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Content-Security-Policy", waitingCSP)
	c.Header("X-Content-Type-Options", "nosniff")
	// The page's URL names the ticket: no link from it may carry it elsewhere.
	c.Header("Referrer-Policy", "no-referrer")
	c.Status(http.StatusAccepted)
	_ = waitingTemplate.Execute(c.Writer, map[string]any{
		"Style": template.CSS(waitingStyle), "Script": template.JS(waitingScript),
		"Name": name[strings.LastIndexByte(name, '/')+1:], "Next": next, "Refresh": min(retry, 5), "Ticket": id,
		"Position": v.Position, "Place": queuePlace(v.Position), "ETAKnown": v.ETAKnown, "ETA": eta.Round(time.Second).String(),
	})
}
