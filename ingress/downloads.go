package ingress

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

const publicTenant = "public"

var ticketEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newTicketID returns an unguessable ticket id: 128 random bits.
func newTicketID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "t" + strings.ToLower(ticketEncoding.EncodeToString(b[:]))
}

var ticketIDPattern = regexp.MustCompile(`^t[a-z2-7]{26}$`)

type downloadRequest struct {
	Object string `json:"object"`
}

// createDownload accepts a ticket. The answer is 202 only after JetStream has stored
// the ticket's message, so an accepted ticket is never lost.
func (s *Server) createDownload(c *gin.Context) {
	var req downloadRequest
	if !bindDownloadRequest(c, &req) {
		return
	}
	idemKey := c.GetHeader("Idempotency-Key")
	if err := validateIdempotencyKey(idemKey); err != nil {
		c.Error(err)
		return
	}
	if err := objstore.ValidateKey(req.Object); err != nil {
		c.Error(err)
		return
	}
	ctx := c.Request.Context()
	info, err := s.statPublished(ctx, req.Object) // catalog check and channel aliases (releases.go)
	if err != nil {
		c.Error(err)
		return
	}
	if err := s.allowTicket(c); err != nil {
		c.Error(err)
		return
	}
	id := newTicketID()
	if idemKey != "" {
		prev, err := s.cfg.Ledger.ClaimIdempotencyKey(ctx, idempotencyScope(c), idemKey, id, req.Object, s.cfg.IdempotencyTTL)
		if err != nil {
			c.Error(err) // 503 naming NATS JetStream, where the binding is kept
			return
		}
		if err := sameRequest(prev, req.Object); err != nil {
			c.Error(err)
			return
		}
		// A retry of an earlier request gets the same ticket, published again in case
		// the first attempt never reached JetStream (the message id dedups it).
		id = prev.Ticket
	}
	p, err := s.accept(ctx, principal(c), id, info)
	if err != nil {
		c.Error(err)
		return
	}
	c.Header("Location", "/api/v1/tickets/"+id)
	c.Header("Retry-After", "1")
	c.JSON(http.StatusAccepted, wireTicket(p))
}

// accept publishes a ticket for the object and records it in the ledger, which
// answers with the ticket's place in line in the same round trip. Only JetStream's
// acknowledgement makes a ticket accepted: the ledger entry is best effort, because
// if Redis is down the ticket is still safe in JetStream and the worker that receives
// it records it; the answer then describes the ticket as the ledger will record it.
func (s *Server) accept(ctx context.Context, who apikeys.Key, id string, info objstore.Info) (admission.Position, error) {
	tenant := who.Tenant
	msg := queue.Ticket{
		ID: id, Object: info.Key, ETag: info.ETag, Size: info.Size, ContentType: info.ContentType,
		Tenant: tenant, Owner: ownerOf(who), Created: s.cfg.Now().UTC(), TraceParent: telemetry.TraceParent(ctx),
	}
	seq, err := s.cfg.Publisher.Publish(ctx, msg)
	if err != nil {
		return admission.Position{}, err
	}
	msg.Seq = seq
	s.log.DebugContext(ctx, "ticket accepted", "ticket", id, "tenant", tenant, "seq", seq)
	p, err := s.cfg.Ledger.Accept(ctx, msg.Ledger())
	if err != nil {
		s.log.WarnContext(ctx, "record accepted ticket; a worker will record it", "ticket", id, "err", err)
		p = admission.Position{Ticket: msg.Ledger()}
		p.Created = p.Created.Truncate(time.Millisecond)
		p.Status = admission.StatusQueued
	}
	return p, nil
}

// bindDownloadRequest reads the body. encoding/json would quietly turn invalid UTF-8
// into U+FFFD, so the raw bytes are checked first.
func bindDownloadRequest(c *gin.Context, req *downloadRequest) bool {
	raw, err := io.ReadAll(c.Request.Body)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		c.Error(&apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: "request body too large", Hint: `send {"object": "<key>"}`})
		return false
	case err != nil:
		c.Error(bodyError(err)) // 408 when it arrived too slowly
		return false
	case !utf8.Valid(raw):
		c.Error(badRequest("invalid_body", "the body is not valid UTF-8", "object keys are UTF-8 text"))
		return false
	}
	if err := json.Unmarshal(raw, req); err != nil {
		c.Error(badRequest("invalid_body", "the body is not valid JSON: "+err.Error(), `send {"object": "<key>"} with Content-Type: application/json`))
		return false
	}
	return true
}

// idempotencyScope is whose Idempotency-Keys a request's is among: its API key's, or,
// without one, its client address's, so that two callers never share a key by chance.
func idempotencyScope(c *gin.Context) string {
	if who := principal(c); who.ID != anonymous.ID {
		return "key:" + who.ID
	}
	return "addr:" + c.ClientIP()
}

// sameRequest refuses an Idempotency-Key reused for another object: the retry of a
// request must be the same request, as payment APIs have it.
func sameRequest(prev admission.Binding, object string) error {
	if prev.Object == "" || prev.Object == object {
		return nil
	}
	return &apiError{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused",
		Message: fmt.Sprintf("this Idempotency-Key was used for %q, not %q", prev.Object, object),
		Hint:    "use a new Idempotency-Key for each logical request; retries send the same body",
		Fields:  map[string]any{"ticket": prev.Ticket, "object": prev.Object}}
}

func validateIdempotencyKey(k string) error {
	if k == "" {
		return nil
	}
	if len(k) > 128 || !utf8.ValidString(k) || strings.ContainsFunc(k, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return badRequest("invalid_idempotency_key", "the Idempotency-Key header must be 1 to 128 printable characters without spaces",
			"use a UUID or another unique token per logical request")
	}
	return nil
}
