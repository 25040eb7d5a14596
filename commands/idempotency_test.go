package commands_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// A client retrying while the service refuses new commands: a command it
// sent before is answered as before (it adds nothing), while a new one —
// keyless, under a key never logged, or under another client's key — is
// refused with nothing logged, and a logged key with another body is
// still a reused key. Orderflow's own commands are never asked about.
func TestAdmissionRefusesNewCommandsAndAnswersRetries(t *testing.T) {
	var refusing atomic.Bool
	var asked atomic.Int64
	admit := func(context.Context, string) error {
		asked.Add(1)
		if refusing.Load() {
			return &commands.OverloadedError{Reason: "test: refusing new commands"}
		}
		return nil
	}
	b, _ := newCountedBus(t, admit)
	pool := pgtest.Pool(t)
	ctx := context.Background()
	w := openWallet(t, b, 0)
	topUp := func(key string, amount int64) commands.Request {
		return req(key, "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: amount, Reason: "test funds"})
	}
	key := "k-" + uuid.NewString()
	first := mustDispatch(t, b, topUp(key, 5))

	refusing.Store(true)
	logged := count(t, pool, `SELECT count(*) FROM commands`)
	again, err := b.Dispatch(ctx, topUp(key, 5))
	if err != nil || !again.Replayed || again.EventIDs[0] != first.EventIDs[0] {
		t.Fatalf("a retry of a logged command while refusing: %+v %v", again, err)
	}
	if _, err := b.Dispatch(ctx, topUp(key, 6)); !errors.Is(err, commands.ErrKeyReused) {
		t.Fatalf("a logged key with another body while refusing: %v", err)
	}
	other := topUp(key, 5)
	other.Principal = &auth.Principal{Subject: "another-operator", Role: auth.Operator}
	for name, r := range map[string]commands.Request{"keyless": topUp("", 5), "new key": topUp("k-"+uuid.NewString(), 5), "another client's key": other} {
		if _, err := b.Dispatch(ctx, r); !errors.As(err, new(*commands.OverloadedError)) {
			t.Fatalf("%s while refusing: %v", name, err)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM commands`); n != logged {
		t.Fatalf("refused commands logged %d rows", n-logged)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, w); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	before := asked.Load()
	internal := commands.Request{Internal: true, CommandID: "test-internal-" + uuid.NewString(), Command: commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"}}
	if _, err := b.Dispatch(ctx, internal); err != nil || asked.Load() != before {
		t.Fatalf("an internal command while refusing: %v (admission asked %d times)", err, asked.Load()-before)
	}
}

// Twin requests (one key, one body) racing: from two processes, each with
// its own stream locks and committer, and within one process whose
// commands on a stream do not queue, so twins meet in one group. No
// lookup precedes the commit, so the commit itself must catch every twin:
// the group's reservation reads the ids logged already, and the log's
// primary key refuses a twin committed after that. Exactly one twin is
// applied; every other is answered with its recorded outcome — for an
// accepted command and for a rejected one alike.
func TestRacingTwinsAreAppliedOnceAndAnsweredAlike(t *testing.T) {
	pool := pgtest.Pool(t)
	newProcess := func(concurrent bool) *commands.Bus {
		store := eventstore.New(pgtest.Pool(t), streams.Registry(), eventstore.Options{CacheSize: 1000})
		return commands.NewBus(pgtest.Pool(t), store, commands.Definitions(), commands.Options{Retries: 50, ConcurrentStreams: concurrent})
	}
	setups := map[string][]*commands.Bus{
		"two processes":              {newProcess(false), newProcess(false)},
		"one process, twins grouped": {newProcess(true)},
	}
	for name, buses := range setups {
		w := openWallet(t, buses[0], 100)
		accepted := req("k-"+uuid.NewString(), "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 10, Reason: "test funds"})
		// As the saga sends it; refused by the wallet (insufficient funds).
		rejected := commands.Request{Internal: true, CommandID: "test-hold-" + uuid.NewString(), Command: commands.AuthoriseHold{WalletID: w, OrderID: "o1", Amount: 500, Currency: "EUR"}}
		for _, r := range []commands.Request{accepted, rejected} {
			var wg sync.WaitGroup
			recs, errs := make([]commandlog.Record, 16), make([]error, 16)
			for i := range 16 {
				wg.Go(func() { recs[i], errs[i] = buses[i%len(buses)].Dispatch(context.Background(), r) })
			}
			wg.Wait()
			fresh := 0
			for i := range recs {
				if rej := (*commands.RejectedError)(nil); errors.As(errs[i], &rej) {
					recs[i] = rej.Record
				} else if errs[i] != nil {
					t.Fatalf("%s, twin %d: %v", name, i, errs[i])
				}
				if !recs[i].Replayed {
					fresh++
				}
				if recs[i].Seq != recs[0].Seq || recs[i].Status != recs[0].Status || recs[i].StreamVersion != recs[0].StreamVersion {
					t.Fatalf("%s: twin %d answered %+v, twin 0 %+v", name, i, recs[i], recs[0])
				}
			}
			if fresh != 1 {
				t.Fatalf("%s: %d twins claim to have applied the command", name, fresh)
			}
		}
		if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, w); n != 3 {
			t.Fatalf("%s: %d events, want 3 (open, funds, one top-up)", name, n)
		}
	}
}
