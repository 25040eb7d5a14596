package outbox_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A commit wakes the consumers of the topics it wrote to, not every
// consumer of the process; a raise with no topic wakes all.
func TestASignalWakesTheTopicsRaised(t *testing.T) {
	s := outbox.NewSignal()
	wallets, orders := s.C("wallet_events"), s.C("order_events")
	s.Raise("commands", "wallet_events")
	if !closed(wallets) || closed(orders) {
		t.Fatalf("raised wallet_events: woken wallets %v, orders %v", closed(wallets), closed(orders))
	}
	wallets = s.C("wallet_events")
	if closed(wallets) {
		t.Fatal("a channel taken after the raise is already closed")
	}
	anyCommit := s.Any()
	s.Raise("payment_events")
	if !closed(anyCommit) || closed(wallets) {
		t.Fatal("a commit to another topic: Any not closed, or the wallets' channel closed")
	}
	s.Raise()
	if !closed(wallets) || !closed(orders) {
		t.Fatal("a raise without topics left a consumer asleep")
	}
}

// Between processes the NOTIFY names the topics; a payload without any
// (a process from before topics were named) wakes every topic.
func TestANotifyNamesTheTopicsWritten(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := pgtest.Pool(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	got := make(chan string, 16)
	go outbox.Listen(ctx, pool, outbox.NotifyChannel, func(p string) { got <- p }, log)
	if p := <-got; p != "" { // on (re)connecting: every topic, it may have missed some
		t.Fatalf("first call %q, want the empty payload", p)
	}
	n := outbox.NewNotifier(ctx, pool, log)
	for deadline := time.Now().Add(10 * time.Second); ; {
		n.Raise("wallet_events", "commands")
		select {
		case p := <-got:
			if p != "commands,wallet_events" {
				t.Fatalf("payload %q", p)
			}
			if ts := outbox.NotifiedTopics(p); len(ts) != 2 || ts[0] != "commands" || ts[1] != "wallet_events" {
				t.Fatalf("topics of %q: %v", p, ts)
			}
			if outbox.NotifiedTopics("") != nil {
				t.Fatal("an empty payload names topics")
			}
			return
		case <-time.After(100 * time.Millisecond): // the LISTEN may not be in place yet
		}
		if time.Now().After(deadline) {
			t.Fatal("no NOTIFY heard")
		}
	}
}
