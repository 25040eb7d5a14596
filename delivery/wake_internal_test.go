package delivery

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/orderflow/orderflow/outbox"
)

// A commit to a consumer's topic that an older transaction holds back
// (invisible after the quick looks) becomes visible when that transaction
// commits, whatever it wrote: the consumer then waits for any commit, not
// for its own topic's next one or its poll interval.
func TestAWakeThatFoundNothingWaitsForAnyCommit(t *testing.T) {
	wake := outbox.NewSignal()
	b := newWakeBackoff(RouterConfig{PollInterval: time.Minute, Wake: wake}, "wallet_events")
	log := watermill.NopLogger{}
	returned := func(f func() time.Duration) chan time.Duration {
		ch := make(chan time.Duration, 1)
		go func() { ch <- f() }()
		return ch
	}
	within := func(ch chan time.Duration, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting", what)
		}
	}
	asleep := func(ch chan time.Duration, what string) {
		t.Helper()
		select {
		case <-ch:
			t.Fatal(what)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Idle: it waits for its topic; another topic's commit does not wake it.
	idle := returned(func() time.Duration { return b.HandleError(log, true, nil) })
	time.Sleep(20 * time.Millisecond)
	wake.Raise("order_events")
	asleep(idle, "woken by another topic's commit")
	wake.Raise("wallet_events")
	within(idle, "its topic's commit")
	// Its poll found nothing (held back): three quick looks, then it waits
	// for any commit.
	for range 3 {
		if d := b.HandleError(log, true, nil); d > 10*time.Millisecond {
			t.Fatalf("a quick look after %v", d)
		}
	}
	behind := returned(func() time.Duration { return b.HandleError(log, true, nil) })
	time.Sleep(20 * time.Millisecond)
	wake.Raise("order_events") // the older transaction, which wrote another topic
	within(behind, "the older transaction's commit")
	// Found nothing again: back to waiting for its own topic.
	again := returned(func() time.Duration { return b.HandleError(log, true, nil) })
	time.Sleep(20 * time.Millisecond)
	wake.Raise("order_events")
	asleep(again, "woken by another topic's commit once it was no longer behind")
	wake.Raise("wallet_events")
	within(again, "its topic's commit")
}
