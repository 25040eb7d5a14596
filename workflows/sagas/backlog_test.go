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

// The pace is counted over PaceOver, or since the first start when that is
// sooner (a cold start), never over less than a second.
func TestPace(t *testing.T) {
	for _, c := range []struct {
		started int64
		since   float64
		want    float64
	}{
		{200, 9.9, 200 / 9.9}, // steady: the first start in the window is PaceOver ago
		{200, 10, 20},         // never over more than PaceOver
		{20, 1.5, 20 / 1.5},   // a cold start: 20 sagas in its first 1.5 s
		{16, 0.05, 16},        // a first burst: at least a second
		{0, 0, 0},             // nothing started
	} {
		if got := Pace(c.started, c.since); got != c.want {
			t.Errorf("%d started, the first %.2fs ago: %.2f/s, want %.2f", c.started, c.since, got, c.want)
		}
	}
}
