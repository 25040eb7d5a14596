package sagas

import (
	"testing"
	"time"
)

// The queue of starts refuses orders once it is more than the pace of the
// sagas works off within Wait, and never below Min.
func TestAdmissionFull(t *testing.T) {
	a := &Admission{Wait: 2 * time.Second, Min: 8, Slots: 16}
	for _, c := range []struct {
		f    Figures
		full bool
	}{
		{Figures{Queued: 15, Running: 0, PerSec: 0}, false},   // after a quiet spell: the launchers' free slots take them
		{Figures{Queued: 16, Running: 0, PerSec: 0}, true},    // as many as they take, and nothing starts
		{Figures{Queued: 7, Running: 16, PerSec: 0}, false},   // every slot busy: under Min is admitted
		{Figures{Queued: 8, Running: 16, PerSec: 0}, true},    // nothing finishes
		{Figures{Queued: 47, Running: 16, PerSec: 20}, false}, // Min and under two seconds of work
		{Figures{Queued: 48, Running: 16, PerSec: 20}, true},
		{Figures{Queued: 48, Running: 16, PerSec: 25}, false},
	} {
		if got := a.Full(c.f); got != c.full {
			t.Errorf("backlog %d, %d running, at %.0f/s: full %v, want %v", c.f.Queued, c.f.Running, c.f.PerSec, got, c.full)
		}
	}
}

// The pace is counted over PaceOver, or, after a cold start or a quiet
// spell, the starts beyond the slots' first fill since the first start,
// never over less than a second.
func TestPace(t *testing.T) {
	for _, c := range []struct {
		started int64
		since   float64
		want    float64
	}{
		{200, 10, 20},              // steady: the first start in the window is PaceOver ago
		{200, 9.9, 20},             // the same, a moment short of it: the fill subtracted is less
		{40, 1.5, (40 - 16) / 1.5}, // a cold start: the 16 slots filled, then 24 more in 1.5 s
		{16, 0.05, 1.6},            // the fill alone is no pace: counted over PaceOver
		{17, 1, 1.7},               // a stray start a second before the fill: still none
		{0, 0, 0},                  // nothing started
	} {
		if got := Pace(c.started, c.since, 16); got != c.want {
			t.Errorf("%d started, the first %.2fs ago: %.2f/s, want %.2f", c.started, c.since, got, c.want)
		}
	}
}
