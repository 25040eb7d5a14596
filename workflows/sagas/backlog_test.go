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
