package fleet_test

import (
	"testing"
	"time"

	"github.com/sluice-dl/sluice/shared/fleet"
	"github.com/sluice-dl/sluice/shared/telemetry"
)

// Every point of the history is the summary the stats would have given at its second.
func TestHistoryIsTheStatsAtEachSecond(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	secs := make([]fleet.Second, 20)
	for i := range secs {
		secs[i] = fleet.Second{At: start.Add(time.Duration(i) * time.Second),
			Activity: fleet.Activity{Waits: make([]int64, len(telemetry.WaitBuckets)+1)}}
	}
	secs[12].Admissions, secs[12].Bytes, secs[12].Waits[0] = 5, 1000, 5
	points := fleet.History(secs, 10, 5)
	if len(points) != 11 {
		t.Fatalf("%d points from 20 seconds with a 10-second window, want 11", len(points))
	}
	for i, p := range points {
		want := fleet.Summarize(secs[i:i+10], 5)
		if p.At != secs[i+9].At || p.Summary != want {
			t.Errorf("point %d: %+v at %s, want %+v at %s", i, p.Summary, p.At, want, secs[i+9].At)
		}
	}
	if p := points[3]; p.AdmissionsPerSecond != 1 || p.BytesPerSecond != 200 {
		t.Errorf("the point just after the admissions: %+v, want 1 admission/s and 200 B/s over 5 s", p.Summary)
	}
	if got := fleet.History(secs[:5], 10, 5); len(got) != 0 {
		t.Errorf("fewer seconds than the window: %d points, want none", len(got))
	}
}

// A point carries the admission levels of its second, or of the last second within
// the three before it that has them (beats drift against the clock's seconds); none
// older than that.
func TestHistoryCarriesTheLevels(t *testing.T) {
	start := time.Unix(1_700_000_000, 0).UTC()
	secs := make([]fleet.Second, 12)
	for i := range secs {
		secs[i] = fleet.Second{At: start.Add(time.Duration(i) * time.Second)}
	}
	secs[2].Levels = &fleet.Levels{Backlog: 7, Admissible: 3, SlotsInUse: 2, Limit: 5}
	secs[6].Levels = &fleet.Levels{Backlog: 1, SlotsInUse: 5, Limit: 5}
	points := fleet.History(secs, 1, 1)
	want := map[int]*fleet.Levels{0: nil, 1: nil, 2: secs[2].Levels, 3: secs[2].Levels, 4: secs[2].Levels,
		5: nil, 6: secs[6].Levels, 8: secs[6].Levels, 9: nil, 11: nil}
	for i, w := range want {
		if got := points[i].Levels; got != w {
			t.Errorf("point %d: levels %+v, want %+v", i, got, w)
		}
	}
}
