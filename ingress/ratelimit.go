package ingress

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"
)

// TicketLimiter decides whether a client may take one more ticket now. It is shared by
// every ingress instance through Redis (redis_rate: GCRA), so a client cannot multiply
// its allowance by spreading requests over instances.
type TicketLimiter interface {
	Allow(ctx context.Context, key string, limit redis_rate.Limit) (*redis_rate.Result, error)
}

var _ TicketLimiter = (*redis_rate.Limiter)(nil)

// allowTicket refuses a new ticket with 429 when the caller has taken its share:
// TicketRate per API key, or per client address for anonymous callers. The bound
// stops one client from filling its tenant's queue (anonymous callers all share the
// tenant "public", and fairness works between tenants, not within one). If Redis
// cannot be asked, the ticket is allowed: the limit protects the queue, and refusing
// everyone while Redis blinks would do more harm than one burst.
func (s *Server) allowTicket(c *gin.Context) error {
	if s.cfg.TicketLimiter == nil || s.cfg.TicketRate.IsZero() {
		return nil
	}
	p := principal(c)
	key := "sluice:ratelimit:tickets:key:" + p.ID
	if p.ID == anonymous.ID {
		key = "sluice:ratelimit:tickets:addr:" + c.ClientIP()
	}
	res, err := s.cfg.TicketLimiter.Allow(c.Request.Context(), key, s.cfg.TicketRate)
	if err != nil {
		s.log.WarnContext(c.Request.Context(), "ticket rate limit unavailable; allowing the ticket", "err", err)
		return nil
	}
	c.Header("RateLimit-Remaining", strconv.Itoa(res.Remaining))
	if res.Allowed > 0 {
		return nil
	}
	retry := int(math.Ceil(res.RetryAfter.Seconds()))
	return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: max(retry, 1),
		Message: fmt.Sprintf("too many new tickets from this client: at most %d per %s after a burst of %d",
			s.cfg.TicketRate.Rate, periodName(s.cfg.TicketRate.Period), s.cfg.TicketRate.Burst),
		Hint: "wait for the Retry-After delay; poll the tickets you have instead of asking again"}
}

func periodName(d time.Duration) string {
	switch d {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return d.String()
}
