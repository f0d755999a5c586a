package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/sluice-dl/sluice/api"
	"github.com/sluice-dl/sluice/shared/admission"
	"github.com/sluice-dl/sluice/shared/apikeys"
	"github.com/sluice-dl/sluice/shared/objstore"
	"github.com/sluice-dl/sluice/shared/queue"
)

// apiError is an error with everything a client needs: a status, a stable code, a
// message saying what happened and a hint saying what to do.
type apiError struct {
	Status     int
	Code       string
	Message    string
	Hint       string
	RetryAfter int // seconds; 0 = no header
	// Fields are added to the JSON body (for example the counts of a partly stored batch).
	Fields map[string]any
	cause  error
}

func (e *apiError) Error() string { return e.Message }
func (e *apiError) Unwrap() error { return e.cause }

func badRequest(code, msg, hint string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: msg, Hint: hint}
}

// toAPIError is the one place where errors become HTTP answers.
func toAPIError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, objstore.ErrInvalidKey):
		return &apiError{Status: http.StatusBadRequest, Code: "invalid_object_key", Message: err.Error(),
			Hint: "object keys are relative paths like releases/v1.2/app.tar.gz", cause: err}
	case errors.Is(err, objstore.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "object_not_found", Message: err.Error(),
			Hint: "check the object key; keys are case-sensitive", cause: err}
	case errors.As(err, new(*objstore.AccessError)):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "storage_access_denied",
			Message: err.Error(), Hint: "an operator must fix the storage credentials or permissions (--s3-access-key, AWS_*, the IAM role)",
			RetryAfter: 30, cause: err}
	case errors.Is(err, objstore.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "storage_unavailable",
			Message: "object storage is not answering", Hint: "retry after the indicated delay", RetryAfter: 5, cause: err}
	case errors.Is(err, admission.ErrUnavailable):
		ae := redisUnavailable("the admission ledger", err)
		ae.Hint = "retry after the indicated delay; accepted tickets are safe in JetStream and keep their place"
		return ae
	case errors.Is(err, admission.ErrRecordsUnavailable), errors.Is(err, apikeys.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "nats_unavailable",
			Message: "the records in NATS JetStream (keys, limits, tickets) cannot be reached", Hint: "retry after the indicated delay", RetryAfter: 2, cause: err}
	case errors.Is(err, queue.ErrFull):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "queue_full",
			Message: "the download queue is full", Hint: "retry after the indicated delay", RetryAfter: 30, cause: err}
	case errors.Is(err, queue.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "queue_unavailable",
			Message: "the download queue (NATS JetStream) is not answering", Hint: "retry after the indicated delay; nothing was queued", RetryAfter: 2, cause: err}
	case errors.Is(err, admission.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "ticket_not_found", Message: "no such ticket",
			Hint: "tickets are kept for a day after they end; request a new one with POST /api/v1/downloads", cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "timeout", Message: "a dependency did not answer in time",
			Hint: "retry after the indicated delay", RetryAfter: 2, cause: err}
	default:
		return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error",
			Hint: "retry later; if it persists, report it with the time of the request", cause: err}
	}
}

// redisUnavailable is the answer when what (derived state in Redis) cannot be read.
func redisUnavailable(what string, err error) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: "redis_unavailable",
		Message: what + " (Redis) is not answering", Hint: "retry after the indicated delay", RetryAfter: 2, cause: err}
}

// errorsToJSON renders the last error a handler recorded with c.Error.
func errorsToJSON(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		if len(c.Errors) == 0 || c.Writer.Written() {
			return
		}
		err := c.Errors.Last().Err
		ae := toAPIError(err)
		if ae.Status >= 500 {
			log.Warn("request failed", "method", c.Request.Method, "path", c.FullPath(), "status", ae.Status, "err", err)
		}
		writeError(c, ae)
	}
}

// problem is ae as RFC 9457 problem details for the request path instance; ae's
// Fields are extension members.
func problem(ae *apiError, instance string) api.Problem {
	p := api.NewProblem(ae.Status, ae.Code, ae.Message, ae.Hint, instance)
	p.Extensions = ae.Fields
	return p
}

// writeError answers with ae as application/problem+json and stops the chain.
func writeError(c *gin.Context, ae *apiError) {
	c.Abort()
	writeProblem(c.Writer, c.Request, ae)
}

// writeProblem answers with ae as application/problem+json. The instance is the
// request's path without its query, which may carry a ticket id.
func writeProblem(w http.ResponseWriter, r *http.Request, ae *apiError) {
	raw, err := json.Marshal(problem(ae, r.URL.EscapedPath()))
	if err != nil { // Fields hold only plain values; this is a programming mistake
		ae = &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
		raw, _ = json.Marshal(problem(ae, r.URL.EscapedPath()))
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	w.Header().Set("Content-Type", api.ProblemContentType)
	w.WriteHeader(ae.Status)
	_, _ = w.Write(raw)
}

// recovery turns a panic into a logged 500, never a dropped connection.
func recovery(log *slog.Logger) gin.HandlerFunc {
	return gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, rec any) {
		log.Error("panic in handler", "path", c.FullPath(), "panic", fmt.Sprint(rec))
		writeError(c, toAPIError(fmt.Errorf("panic: %v", rec)))
	})
}
