package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"net/http"
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
	filesPoll    = 100 * time.Millisecond
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
	p, err := s.awaitAdmission(ctx, id, s.cfg.FilesWait)
	if err != nil {
		c.Error(err)
		return
	}
	switch p.Status {
	case admission.StatusReady, admission.StatusStreaming:
		c.Redirect(http.StatusSeeOther, p.DownloadURL)
		return
	case admission.StatusQueued, admission.StatusAdmitting:
	default:
		c.Error(&apiError{Status: http.StatusGone, Code: "ticket_" + string(p.Status),
			Message: "the download ended (" + string(p.Status) + ") before it started", Hint: "request the file again"})
		return
	}
	retry := int(max(p.PollAfter(), time.Second) / time.Second)
	c.Header("Retry-After", strconv.Itoa(retry))
	hop, _ := strconv.Atoi(c.Query("wait"))
	next := "/api/v1/files/" + objstore.EscapeKey(key) + "?ticket=" + id
	switch {
	case strings.Contains(c.GetHeader("Accept"), "text/html"):
		s.waitingPage(c, key, next, retry, wireTicket(p))
	case hop >= filesMaxHops:
		c.Header("Location", next)
		writeError(c, &apiError{Status: http.StatusServiceUnavailable, Code: "still_queued", RetryAfter: retry,
			Message: "your download is still queued (position " + strconv.FormatInt(p.Ahead+1, 10) + ")",
			Hint:    "retry " + next + " after the Retry-After delay; it keeps your place"})
	default:
		c.Redirect(http.StatusSeeOther, next+"&wait="+strconv.Itoa(hop+1))
	}
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
	for {
		p, err := s.ticket(ctx, id, true)
		if err != nil && !errors.Is(err, admission.ErrNotFound) {
			return p, err
		}
		// Not found yet: the ledger records a ticket just after its publish.
		if err == nil && p.Status != admission.StatusQueued && p.Status != admission.StatusAdmitting {
			return p, nil
		}
		if !time.Now().Add(filesPoll).Before(deadline) {
			if err != nil {
				return p, err
			}
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(filesPoll):
		}
	}
}

var waitingTemplate = template.Must(template.New("waiting").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}};url={{.Next}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waiting for {{.Name}}</title>
<style>{{.Style}}</style>
</head><body>
<h1 id="waiting">Your download of {{.Name}} is queued</h1>
<p>Position in the queue: <strong id="position">{{.Position}}</strong>.
{{if .ETAKnown}}Estimated wait: about {{.ETA}}.{{else}}The wait cannot be estimated yet.{{end}}</p>
<p>This page refreshes by itself and the download starts as soon as a slot is free.
Keep it open; reloading keeps your place. <a href="{{.Next}}">Check now</a>.</p>
</body></html>
`))

// waitingStyle is the page's only style. The Content-Security-Policy allows exactly
// it, by hash: no script, no other style, nothing loaded, framed or submitted.
const waitingStyle = "body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}"

var waitingCSP = func() string {
	sum := sha256.Sum256([]byte(waitingStyle))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}()

func (s *Server) waitingPage(c *gin.Context, key, next string, retry int, v api.Ticket) {
	eta := time.Duration(v.ETASeconds) * time.Second
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Content-Security-Policy", waitingCSP)
	c.Header("X-Content-Type-Options", "nosniff")
	// The page's URL names the ticket: no link from it may carry it elsewhere.
	c.Header("Referrer-Policy", "no-referrer")
	c.Status(http.StatusAccepted)
	_ = waitingTemplate.Execute(c.Writer, map[string]any{
		"Style": template.CSS(waitingStyle),
		"Name":  key[strings.LastIndexByte(key, '/')+1:], "Next": next, "Refresh": min(retry, 5),
		"Position": v.Position + 1, "ETAKnown": v.ETAKnown, "ETA": eta.Round(time.Second).String(),
	})
}
