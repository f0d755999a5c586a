package fleet

import (
	"math"
	"time"

	"github.com/sluice-dl/sluice/shared/telemetry"
)

// Summary is the fleet's recent activity: rates over the last RateSeconds and wait
// percentiles over the whole window.
type Summary struct {
	RateSeconds         int     `json:"rate_window_seconds"`
	AdmissionsPerSecond float64 `json:"admissions_per_second"`
	BytesPerSecond      float64 `json:"bytes_per_second"`
	WaitSeconds         int     `json:"wait_window_seconds"`
	Admissions          int64   `json:"admissions"` // within the wait window
	// WaitP50/P90/P99 are wait-time percentiles (seconds) of the admissions in the
	// window, interpolated within histogram buckets; 0 when there were none.
	WaitP50 float64 `json:"wait_p50_seconds"`
	WaitP90 float64 `json:"wait_p90_seconds"`
	WaitP99 float64 `json:"wait_p99_seconds"`
}

// Summarize computes a Summary from per-second activity, oldest first: rates over the
// last rateSeconds of it, percentiles over all of it.
func Summarize(secs []Second, rateSeconds int) Summary {
	s := Summary{RateSeconds: rateSeconds, WaitSeconds: len(secs)}
	waits := make([]int64, len(telemetry.WaitBuckets)+1)
	for i, sec := range secs {
		if i >= len(secs)-rateSeconds {
			s.AdmissionsPerSecond += float64(sec.Admissions)
			s.BytesPerSecond += float64(sec.Bytes)
		}
		for b, n := range sec.Waits {
			if b < len(waits) {
				waits[b] += n
				s.Admissions += n
			}
		}
	}
	if rateSeconds > 0 {
		s.AdmissionsPerSecond /= float64(min(rateSeconds, max(len(secs), 1)))
		s.BytesPerSecond /= float64(min(rateSeconds, max(len(secs), 1)))
	}
	s.WaitP50 = quantile(0.50, waits, s.Admissions)
	s.WaitP90 = quantile(0.90, waits, s.Admissions)
	s.WaitP99 = quantile(0.99, waits, s.Admissions)
	return s
}

// quantile interpolates linearly within the bucket holding the q-th observation, as
// Prometheus' histogram_quantile does; the overflow bucket answers its lower bound.
func quantile(q float64, buckets []int64, total int64) float64 {
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for i, n := range buckets {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			bounds := telemetry.WaitBuckets
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			lower := 0.0
			if i > 0 {
				lower = bounds[i-1]
			}
			v := lower + (bounds[i]-lower)*(rank-cum)/float64(n)
			return math.Round(v*1000) / 1000
		}
		cum += float64(n)
	}
	return telemetry.WaitBuckets[len(telemetry.WaitBuckets)-1]
}

// Point is the fleet's activity as the admin stats would have summarized it at At,
// with the admission levels at that moment (nil when no ingress recorded them then).
type Point struct {
	At time.Time `json:"at"`
	Summary
	Levels *Levels `json:"levels,omitempty"`
}

// levelsAge is how many seconds back a point looks for levels: an ingress beats once a
// second, but its beats drift against the clock's seconds and skip one now and then.
const levelsAge = 3

// History summarizes every second of secs (oldest first) as the admin stats do at
// that second: rates over the rateSeconds before it, percentiles over the
// waitSeconds before it. The first waitSeconds-1 seconds only lead in: the answer has
// len(secs)-waitSeconds+1 points.
func History(secs []Second, waitSeconds, rateSeconds int) []Point {
	if waitSeconds < 1 || len(secs) < waitSeconds {
		return []Point{}
	}
	out := make([]Point, 0, len(secs)-waitSeconds+1)
	for end := waitSeconds; end <= len(secs); end++ {
		p := Point{At: secs[end-1].At, Summary: Summarize(secs[end-waitSeconds:end], rateSeconds)}
		for i := end - 1; i >= max(end-levelsAge, 0) && p.Levels == nil; i-- {
			p.Levels = secs[i].Levels
		}
		out = append(out, p)
	}
	return out
}
