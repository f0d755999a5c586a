package admission

import (
	"math"
	"time"
)

// minCompletions is how many finished downloads the rate needs before a wait estimate
// is offered as known.
const minCompletions = 3

// Estimate is the expected wait of a queued ticket: the tickets ahead of it (and itself)
// need that many slots to free up, at the completion rate measured over the window.
func (p Position) Estimate() (wait time.Duration, known bool) {
	if p.Status != StatusQueued && p.Status != StatusAdmitting {
		return 0, true
	}
	if p.Status == StatusAdmitting {
		return 0, true
	}
	if p.Completions < minCompletions || p.Span < time.Second {
		return 0, false
	}
	rate := float64(p.Completions) / p.Span.Seconds()
	secs := float64(p.Ahead+1) / rate
	return time.Duration(math.Round(secs)) * time.Second, true
}

// PollAfter paces a waiting client: often near the front, rarely far back.
func (p Position) PollAfter() time.Duration {
	wait, known := p.Estimate()
	switch {
	case p.Ahead < 3:
		return time.Second
	case !known:
		return time.Duration(min(2+p.Ahead/10, 10)) * time.Second
	default:
		return min(max(wait/4, time.Second), 30*time.Second)
	}
}
