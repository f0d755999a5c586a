package admission

import "time"

// minCompletions is how many slots must have been given back (downloads that ended
// holding one) before the mean hold is trusted and a wait estimate offered as known.
const minCompletions = 3

// PollAfter paces a waiting client: often near the front, rarely far back.
func (p Position) PollAfter() time.Duration {
	switch {
	case p.Ahead < 3:
		return time.Second
	case !p.ETAKnown:
		return time.Duration(min(2+p.Ahead/10, 10)) * time.Second
	default:
		return min(max(p.ETA/4, time.Second), 30*time.Second)
	}
}
