package ingress

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// What one slow or greedy client can cost the ingress (docs/ARCHITECTURE.md, Security
// and bounds). Headers and idle connections are bounded by the http.Server (cmd);
// bodies here: every body must arrive at a minimum pace, and large bodies are read
// a few at a time.

const (
	// smallBody is what every route accepts (limitBody); a larger body is a release
	// batch, read under the large-body semaphore.
	smallBody = 64 << 10
	// largeBodyWait is how long a large request waits for its turn before it is told
	// to come back.
	largeBodyWait = 2 * time.Second
	// Defaults of Config.BodyTimeout, BodyMinRate and MaxLargeBodies.
	defaultBodyTimeout    = 10 * time.Second
	defaultBodyMinRate    = 32 << 10
	defaultMaxLargeBodies = 4
)

// bodyDeadline bounds how long a request's body may take to arrive: BodyTimeout, plus
// one second per BodyMinRate bytes received. A client that trickles a byte now and
// then is cut after BodyTimeout (its read fails, the answer is 408 and the connection
// closes); an upload that keeps the pace may be as large as its route allows.
//
// It sets the connection's read deadline (http.ResponseController) while the body is
// read, and clears it at the body's end: net/http watches an idle connection after the
// body for the client hanging up, and a deadline firing then would cancel the handler.
// So the server needs no ReadTimeout, which would bound the whole request, long polls
// (GET /api/v1/files waits up to --files-wait) included.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	timeout, rate := s.cfg.BodyTimeout, s.cfg.BodyMinRate
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || timeout <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now() // a deadline is the kernel's clock, never a test's
		if err := rc.SetReadDeadline(start.Add(timeout)); err != nil {
			next.ServeHTTP(w, r) // not a connection (a test recorder): nothing to bound
			return
		}
		r.Body = &pacedBody{ReadCloser: r.Body, rc: rc, start: start, timeout: timeout, rate: rate}
		next.ServeHTTP(w, r)
	})
}

// pacedBody moves the read deadline on as bytes arrive.
type pacedBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	start    time.Time
	timeout  time.Duration
	rate     int64
	received int64
	ended    bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.received += int64(n)
	switch {
	case b.ended:
	case errors.Is(err, io.EOF):
		// The whole body: what the connection reads next is net/http's watch for the
		// client hanging up. After a failure the deadline stays, so that net/http's
		// drain of an unread body cannot be trickled either.
		b.ended = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		b.ended = true
	case n > 0 && b.rate > 0:
		earned := time.Duration(float64(b.received) / float64(b.rate) * float64(time.Second))
		_ = b.rc.SetReadDeadline(b.start.Add(b.timeout + earned))
	}
	return n, err
}

// boundLargeBodies lets at most MaxLargeBodies requests whose body may be larger than
// smallBody (declared so, or of unknown length) be read at once; the others wait up to
// largeBodyWait for a turn, then get 503 + Retry-After. It runs after the key check,
// so only publishers can take a turn.
func (s *Server) boundLargeBodies(c *gin.Context) {
	if n := c.Request.ContentLength; n >= 0 && n <= smallBody {
		c.Next()
		return
	}
	wait := time.NewTimer(largeBodyWait)
	defer wait.Stop()
	select {
	case s.largeBodies <- struct{}{}:
	case <-wait.C:
		writeError(c, &apiError{Status: http.StatusServiceUnavailable, Code: "too_many_large_requests",
			Message: fmt.Sprintf("%d large requests are being read; this one was not", cap(s.largeBodies)),
			Hint:    "send it again after Retry-After: nothing of it was read", RetryAfter: 2})
		return
	case <-c.Request.Context().Done():
		c.Abort()
		return
	}
	defer func() { <-s.largeBodies }()
	c.Next()
}

// isBodyTimeout reports whether reading a body failed on bodyDeadline's deadline.
func isBodyTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
