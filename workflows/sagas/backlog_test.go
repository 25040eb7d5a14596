package sagas

import (
	"testing"
	"time"
)

// The queue of starts refuses orders once it is more than the pace of the
// sagas works off within Wait, and never below Min.
func TestAdmissionFull(t *testing.T) {
	a := &Admission{Wait: 2 * time.Second, Min: 8}
	for _, c := range []struct {
		f    Figures
		full bool
	}{
		{Figures{Queued: 7, PerSec: 0}, false},   // under Min: a cold start
		{Figures{Queued: 8, PerSec: 0}, true},    // nothing finishes
		{Figures{Queued: 40, PerSec: 20}, false}, // two seconds of work
		{Figures{Queued: 41, PerSec: 20}, true},
		{Figures{Queued: 41, PerSec: 25}, false},
	} {
		if got := a.Full(c.f); got != c.full {
			t.Errorf("backlog %d at %.0f/s: full %v, want %v", c.f.Queued, c.f.PerSec, got, c.full)
		}
	}
}
