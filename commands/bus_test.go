package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// ops is the principal of the tests' requests: an operator may send every command.
var ops = &auth.Principal{Subject: "ops-test", Role: auth.Operator}

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func newBus(t testing.TB) (*commands.Bus, *pgxpool.Pool) {
	pool := pgtest.Pool(t)
	// As the service runs: with the aggregate cache.
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50, CacheSize: 1000})
	return commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 50}), pool
}

func req(id, typ string, payload any) commands.Request {
	raw, _ := json.Marshal(payload)
	return commands.Request{Principal: ops, CommandID: id, Type: typ, Payload: raw}
}

func mustDispatch(t testing.TB, b *commands.Bus, r commands.Request) commandlog.Record {
	t.Helper()
	rec, err := b.Dispatch(context.Background(), r)
	if err != nil {
		t.Fatalf("%s: %v", r.Type, err)
	}
	return rec
}

func count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func openWallet(t testing.TB, b *commands.Bus, funds int64) string {
	id := "w-" + uuid.NewString()
	mustDispatch(t, b, req("", "OpenWallet", commands.OpenWallet{WalletID: id, CustomerID: "c1", Currency: "EUR"}))
	if funds > 0 {
		mustDispatch(t, b, req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: funds, Reason: "test funds"}))
	}
	return id
}

func TestAcceptedCommandWritesEventsLogAndOutboxTogether(t *testing.T) {
	b, pool := newBus(t)
	id := openWallet(t, b, 0)
	rec := mustDispatch(t, b, commands.Request{Principal: ops, CommandID: "cmd-" + uuid.NewString(), Type: "TopUpWallet",
		Payload: json.RawMessage(`{"wallet_id":"` + id + `","amount":700,"reason":"test funds"}`), CorrelationID: "corr-9", Actor: "alice",
		Metadata: map[string]string{"saga_step": "test"}})
	if rec.Status != commandlog.StatusAccepted || rec.StreamVersion != 2 || len(rec.EventIDs) != 1 || rec.GlobalPosition == 0 {
		t.Fatalf("record %+v", rec)
	}
	logged, err := b.Log().Get(context.Background(), rec.CommandID)
	// The actor is the principal's subject, whatever the request says.
	if err != nil || logged.Metadata["saga_step"] != "test" || logged.EventIDs[0] != rec.EventIDs[0] || logged.Actor != ops.Subject {
		t.Fatalf("logged %+v %v", logged, err)
	}
	var meta map[string]string
	if err := pool.QueryRow(context.Background(), `SELECT metadata::jsonb FROM watermill_wallet_events WHERE uuid = $1`, rec.EventIDs[0].String()).Scan(&meta); err != nil {
		t.Fatal("no outbox message for the event:", err)
	}
	if meta["event_type"] != "wallet.topped_up" || meta["causation_id"] != rec.CommandID || meta["correlation_id"] != "corr-9" ||
		meta["global_position"] != fmt.Sprint(rec.GlobalPosition) || meta["stream_id"] != id {
		t.Fatalf("outbox metadata %v", meta)
	}
}

func TestSameCommandIDTwiceAppendsOnce(t *testing.T) {
	b, pool := newBus(t)
	id := openWallet(t, b, 0)
	r := req("topup-"+uuid.NewString(), "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"})
	first := mustDispatch(t, b, r)
	second := mustDispatch(t, b, r)
	if !second.Replayed || first.Replayed || second.EventIDs[0] != first.EventIDs[0] || second.StreamVersion != first.StreamVersion {
		t.Fatalf("first %+v second %+v", first, second)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, id); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	// The same key with another payload is refused, not silently replayed.
	other := req(r.CommandID, "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 999, Reason: "test funds"})
	if _, err := b.Dispatch(context.Background(), other); !errors.Is(err, commands.ErrKeyReused) {
		t.Fatalf("reused key: %v", err)
	}
}

func TestConcurrentSameCommandIDAppendsOnce(t *testing.T) {
	b, pool := newBus(t)
	id := openWallet(t, b, 0)
	r := req("topup-"+uuid.NewString(), "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"})
	var wg sync.WaitGroup
	results := make(chan commandlog.Record, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := b.Dispatch(context.Background(), r)
			if err != nil {
				t.Error(err)
				return
			}
			results <- rec
		}()
	}
	wg.Wait()
	close(results)
	fresh := 0
	for rec := range results {
		if !rec.Replayed {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d requests claim to have applied the command", fresh)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, id); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}

func TestConflictsAreRetriedWithoutExpectedVersion(t *testing.T) {
	b, _ := newBus(t)
	id := openWallet(t, b, 0)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Dispatch(context.Background(), req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 10, Reason: "test funds"})); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rec := mustDispatch(t, b, req("", "RenameWallet", commands.RenameWallet{WalletID: id, Name: "after"}))
	if rec.StreamVersion != 22 {
		t.Fatalf("version %d, want 22 (open + 20 top-ups + rename)", rec.StreamVersion)
	}
}

func TestStaleExpectedVersionIsAConflict(t *testing.T) {
	b, pool := newBus(t)
	id := openWallet(t, b, 100)
	stale := int64(1)
	r := req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 5, Reason: "test funds"})
	r.ExpectedVersion = &stale
	_, err := b.Dispatch(context.Background(), r)
	var ce *eventstore.ConflictError
	if !errors.As(err, &ce) || ce.Current != 2 {
		t.Fatalf("want conflict at version 2, got %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, id); n != 2 {
		t.Fatalf("%d events after a conflict", n)
	}
	current := int64(2)
	r.ExpectedVersion = &current
	mustDispatch(t, b, r)
}

func TestRejectionIsLoggedAndReplayed(t *testing.T) {
	b, pool := newBus(t)
	id := openWallet(t, b, 100)
	// As the saga sends it (an operator's hold needs an order).
	r := req("auth-"+uuid.NewString(), "AuthoriseHold", commands.AuthoriseHold{WalletID: id, OrderID: "o1", Amount: 500, Currency: "EUR"})
	r.Principal, r.Internal = nil, true
	for i, wantReplay := range []bool{false, true} {
		rec, err := b.Dispatch(context.Background(), r)
		var rej *commands.RejectedError
		if !errors.As(err, &rej) || rej.Err.Code != "insufficient_funds" || !errors.Is(err, aggregate.ErrRule) || rec.Replayed != wantReplay {
			t.Fatalf("attempt %d: %+v %v", i, rec, err)
		}
	}
	logged, err := b.Log().Get(context.Background(), r.CommandID)
	if err != nil || logged.Status != commandlog.StatusRejected || logged.ReasonCode != "insufficient_funds" || len(logged.EventIDs) != 0 {
		t.Fatalf("logged %+v %v", logged, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, id); n != 2 {
		t.Fatalf("%d events after a rejection", n)
	}
}

// A failure anywhere in the command transaction leaves no event, no log
// entry and no outbox message.
func TestRollbackLeavesNoTrace(t *testing.T) {
	b, pool := newBus(t)
	ctx := context.Background()
	id := openWallet(t, b, 0)
	// Make the outbox insert (the last write of the transaction) fail for one amount.
	_, err := pool.Exec(ctx, `
		CREATE OR REPLACE FUNCTION fail_boom() RETURNS trigger AS $$
		BEGIN
			IF NEW.payload::jsonb->>'amount' = '13' THEN RAISE EXCEPTION 'boom'; END IF;
			RETURN NEW;
		END $$ LANGUAGE plpgsql;
		CREATE TRIGGER fail_boom BEFORE INSERT ON watermill_wallet_events FOR EACH ROW EXECUTE FUNCTION fail_boom();`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(ctx, `DROP TRIGGER fail_boom ON watermill_wallet_events`) })

	cmdID := "top-up-" + uuid.NewString()
	if _, err := b.Dispatch(ctx, req(cmdID, "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 13, Reason: "test funds"})); err == nil {
		t.Fatal("the failing transaction reported success")
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, id); n != 1 {
		t.Fatalf("%d events, want only the opening one", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM commands WHERE command_id = $1`, commands.ScopedID(ops.Subject, cmdID)); n != 0 {
		t.Fatal("the failed command was logged")
	}
	if n := count(t, pool, `SELECT count(*) FROM watermill_wallet_events WHERE metadata::jsonb->>'stream_id' = $1`, id); n != 1 {
		t.Fatalf("%d outbox messages, want only the opening one", n)
	}
	// The same command id can then succeed.
	rec := mustDispatch(t, b, req(cmdID, "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 14, Reason: "test funds"}))
	if rec.Replayed || rec.StreamVersion != 2 {
		t.Fatalf("retry after rollback: %+v", rec)
	}
}

func TestPlaceOrderDerivesOrderIDFromCommandID(t *testing.T) {
	b, _ := newBus(t)
	w := openWallet(t, b, 0)
	mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: "a", UnitPrice: 5, Currency: "EUR"}))
	body := json.RawMessage(`{"customer_id":"c1","wallet_id":"` + w + `","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price":5}],
		"shipping_address":{"name":"A","line1":"1 St","city":"X","postal_code":"1","country":"FR"}}`)
	key := "place-" + uuid.NewString()
	first := mustDispatch(t, b, commands.Request{Principal: ops, CommandID: key, Type: "PlaceOrder", Payload: body})
	again := mustDispatch(t, b, commands.Request{Principal: ops, CommandID: key, Type: "PlaceOrder", Payload: body})
	other := mustDispatch(t, b, commands.Request{Principal: ops, Type: "PlaceOrder", Payload: body})
	if first.StreamID == "" || again.StreamID != first.StreamID || !again.Replayed || other.StreamID == first.StreamID {
		t.Fatalf("first %s again %s other %s", first.StreamID, again.StreamID, other.StreamID)
	}
}

func TestBadPayloads(t *testing.T) {
	b, _ := newBus(t)
	for _, r := range []commands.Request{
		{Principal: ops, Type: "TopUpWallet", Payload: json.RawMessage(`{"wallet_id":"w","amount":"ten"}`)},
		{Principal: ops, Type: "TopUpWallet", Payload: json.RawMessage(`{"wallet_id":"w","amount":1,"bonus":2}`)},
		{Principal: ops, Type: "TopUpWallet", Payload: json.RawMessage(`{"wallet_id":"no spaces","amount":1}`)},
		{Principal: ops, Type: "TopUpWallet", CommandID: "bad key!", Payload: json.RawMessage(`{"wallet_id":"w","amount":1}`)},
	} {
		var pe *commands.PayloadError
		if _, err := b.Dispatch(context.Background(), r); !errors.As(err, &pe) {
			t.Errorf("%s: want a payload error, got %v", r.Payload, err)
		}
	}
	if _, err := b.Dispatch(context.Background(), commands.Request{Principal: ops, Type: "Nope", Payload: json.RawMessage(`{}`)}); !errors.Is(err, commands.ErrUnknownType) {
		t.Errorf("unknown type: %v", err)
	}
}

func TestTheSagasKeysAreReservedForInternalRequests(t *testing.T) {
	b, pool := newBus(t)
	w := openWallet(t, b, 100)
	key := commands.ReservedPrefix + "order-fulfilment:o-evil.capture_payment"
	r := req(key, "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"})
	if _, err := b.Dispatch(context.Background(), r); !errors.Is(err, commands.ErrReservedKey) {
		t.Fatalf("a client pre-claimed a saga key: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM commands WHERE command_id = $1`, key); n != 0 {
		t.Fatalf("the refused key was logged %d times", n)
	}
	r.Internal = true
	if rec := mustDispatch(t, b, r); rec.CommandID != key {
		t.Fatalf("record %+v", rec)
	}
}

func TestInternalOnlyCommandsAreUnknownToClients(t *testing.T) {
	b, _ := newBus(t)
	r := req("", "WriteOffOrder", commands.WriteOffOrder{OrderID: "o-1", Reason: "x"})
	if _, err := b.Dispatch(context.Background(), r); !errors.Is(err, commands.ErrUnknownType) {
		t.Fatalf("a client wrote an order off: %v", err)
	}
	r.Internal = true
	var rejected *commands.RejectedError
	if _, err := b.Dispatch(context.Background(), r); !errors.As(err, &rejected) || rejected.Record.ReasonCode != "order_not_found" {
		t.Fatalf("internal write-off of a missing order: %v", err)
	}
}

// A NUL character would fail the command's every retry in PostgreSQL (jsonb
// refuses it); the bus refuses it as a payload error instead, and a
// backslash followed by "u0000" as text is no NUL.
func TestTextWithANULIsAPayloadError(t *testing.T) {
	b, pool := newBus(t)
	w := openWallet(t, b, 0)
	var payloadErr *commands.PayloadError
	if _, err := b.Dispatch(context.Background(), req("", "RenameWallet", commands.RenameWallet{WalletID: w, Name: "a\x00b"})); !errors.As(err, &payloadErr) {
		t.Fatalf("NUL in a (personal, sealed) name: %v", err)
	}
	if _, err := b.Dispatch(context.Background(), req("", "SuspendWallet", commands.SuspendWallet{WalletID: w, Reason: "a\x00b"})); !errors.As(err, &payloadErr) {
		t.Fatalf("NUL in a reason: %v", err)
	}
	mustDispatch(t, b, req("", "SuspendWallet", commands.SuspendWallet{WalletID: w, Reason: `a\u0000b`}))
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1 AND data->>'reason' = $2`, w, `a\u0000b`); n != 1 {
		t.Fatalf("the literal text was stored %d times", n)
	}
}

func TestARetryWithTheSameKeyAndStaleExpectedVersionReplays(t *testing.T) {
	b, pool := newBus(t)
	w := openWallet(t, b, 0)
	v := int64(1)
	r := req("k-"+uuid.NewString(), "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 5, Reason: "test funds"})
	r.ExpectedVersion = &v
	first := mustDispatch(t, b, r)
	again := mustDispatch(t, b, r) // version 1 is stale now
	if !again.Replayed || again.StreamVersion != first.StreamVersion || again.EventIDs[0] != first.EventIDs[0] {
		t.Fatalf("retry %+v, first %+v", again, first)
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, w); n != 2 {
		t.Fatalf("%d events after the retry", n)
	}
	r.CommandID = "k-" + uuid.NewString() // a new command with the stale version conflicts
	var conflict *eventstore.ConflictError
	if _, err := b.Dispatch(context.Background(), r); !errors.As(err, &conflict) || conflict.Current != 2 {
		t.Fatalf("stale version under a new key: %v", err)
	}
}

// The bus applies the policy and ownership whoever calls it: a customer
// never sends an operator's command, acts only on its own streams, and an
// order may only name a wallet of its own customer, even when an operator
// sends it. A refused request logs nothing.
func TestTheBusEnforcesPolicyAndOwnership(t *testing.T) {
	b, pool := newBus(t)
	ctx := context.Background()
	victimWallet := openWallet(t, b, 1000) // customer c1
	mallory := &auth.Principal{Subject: "mallory", Role: auth.Customer, CustomerID: "mallory"}
	as := func(p *auth.Principal, typ string, payload any) error {
		raw, _ := json.Marshal(payload)
		_, err := b.Dispatch(ctx, commands.Request{Principal: p, Type: typ, Payload: raw})
		return err
	}
	order := func(customer, wallet string) commands.PlaceOrder {
		return commands.PlaceOrder{CustomerID: customer, WalletID: wallet, Currency: "EUR", Lines: []commands.OrderLine{{SKU: "a", Quantity: 1}},
			ShippingAddress: order.Address{Name: "M", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}}
	}
	before := count(t, pool, `SELECT count(*) FROM commands`)
	var notFound *aggregate.Error
	for name, err := range map[string]error{
		"no principal": func() error {
			_, err := b.Dispatch(ctx, commands.Request{Type: "ReceiveStock", Payload: json.RawMessage(`{"sku":"a","quantity":1}`)})
			return err
		}(),
		"a customer's hold":                                    as(mallory, "AuthoriseHold", commands.AuthoriseHold{WalletID: victimWallet, OrderID: "o", Amount: 1, Currency: "EUR"}),
		"an order for another":                                 as(mallory, "PlaceOrder", order("c1", victimWallet)),
		"an order on another's wallet":                         as(mallory, "PlaceOrder", order("mallory", victimWallet)),
		"a top-up of another's wallet":                         as(mallory, "TopUpWallet", commands.TopUpWallet{WalletID: victimWallet, Amount: 1, Reason: "test funds"}),
		"an operator's order naming another customer's wallet": as(ops, "PlaceOrder", order("c2", victimWallet)),
	} {
		switch name {
		case "no principal":
			if !errors.Is(err, commands.ErrUnauthenticated) {
				t.Errorf("%s: %v", name, err)
			}
		case "a customer's hold", "an order for another", "a top-up of another's wallet":
			if !errors.Is(err, commands.ErrForbidden) {
				t.Errorf("%s: %v", name, err)
			}
		default:
			if !errors.As(err, &notFound) || !errors.Is(err, aggregate.ErrNotFound) {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	if after := count(t, pool, `SELECT count(*) FROM commands`); after != before {
		t.Fatalf("refused requests logged %d commands", after-before)
	}
	// The suspension's operator is the principal, never the payload's.
	rec := mustDispatch(t, b, req("", "SuspendWallet", commands.SuspendWallet{WalletID: victimWallet, Reason: "r", Operator: "forged"}))
	if !strings.Contains(string(rec.Payload), `"operator": "ops-test"`) && !strings.Contains(string(rec.Payload), `"operator":"ops-test"`) {
		t.Fatalf("payload %s", rec.Payload)
	}
}

// Personal fields are sealed before they are logged: neither the command
// log, the events nor the outbox hold them in clear, and a retry with the
// same key compares equal (the sealing is deterministic per customer).
func TestPersonalFieldsAreSealedBeforeTheyAreLogged(t *testing.T) {
	b, pool := newBus(t)
	w := openWallet(t, b, 0)
	mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: "a", UnitPrice: 5, Currency: "EUR"}))
	secret := "Secret Street " + uuid.NewString()
	body := commands.PlaceOrder{CustomerID: "c1", WalletID: w, Currency: "EUR", Lines: []commands.OrderLine{{SKU: "a", Quantity: 1}},
		ShippingAddress: order.Address{Name: "Ada", Line1: secret, City: "X", PostalCode: "1", Country: "FR"}}
	key := "place-" + uuid.NewString()
	first := mustDispatch(t, b, req(key, "PlaceOrder", body))
	again := mustDispatch(t, b, req(key, "PlaceOrder", body))
	if !again.Replayed || again.CommandID != first.CommandID {
		t.Fatalf("a retry with the same key: %+v", again)
	}
	for _, table := range []string{"commands", "events", "watermill_order_events"} {
		if n := count(t, pool, `SELECT count(*) FROM `+table+` t WHERE strpos(t::text, $1) > 0`, secret); n != 0 {
			t.Fatalf("%s holds the address in clear", table)
		}
	}
	if !strings.Contains(string(first.Payload), "pii:1:") {
		t.Fatalf("payload %s", first.Payload)
	}
}

// Commands on one stream queue in the process (one writer per stream):
// concurrent top-ups of one wallet all succeed without a single conflict,
// even with no retry allowed.
func TestOneWriterPerStreamLeavesNoConflicts(t *testing.T) {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50})
	var conflicts atomic.Int64
	b := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 0, Conflict: func(string) { conflicts.Add(1) }})
	w := openWallet(t, b, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.Dispatch(context.Background(), req("", "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"}))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent top-up failed: %v", err)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, w); n != 25 || conflicts.Load() != 0 {
		t.Fatalf("%d events, %d conflicts", n, conflicts.Load())
	}
}

// An in-process caller hands the bus a typed payload: no JSON is decoded,
// and the command is the same as its JSON form (a retry in either form
// replays it).
func TestATypedCommandIsTheSameAsItsJSON(t *testing.T) {
	b, _ := newBus(t)
	w := openWallet(t, b, 0)
	key := "typed-" + uuid.NewString()
	typed, err := b.Dispatch(context.Background(), commands.Request{Principal: ops, CommandID: key, Command: commands.TopUpWallet{WalletID: w, Amount: 7, Reason: "test funds"}})
	if err != nil || typed.Type != "TopUpWallet" || typed.StreamID != w {
		t.Fatalf("typed: %+v %v", typed, err)
	}
	again := mustDispatch(t, b, req(key, "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 7, Reason: "test funds"}))
	if !again.Replayed || again.CommandID != typed.CommandID {
		t.Fatalf("the JSON form of the same command: %+v", again)
	}
	ptr, err := b.Dispatch(context.Background(), commands.Request{Principal: ops, CommandID: key, Command: &commands.TopUpWallet{WalletID: w, Amount: 7, Reason: "test funds"}})
	if err != nil || !ptr.Replayed {
		t.Fatalf("a pointer payload: %+v %v", ptr, err)
	}
}

// A command that creates a customer's stream must name the customer: its
// personal fields are never sealed under no one's key.
func TestPersonalFieldsNeedTheirCustomer(t *testing.T) {
	b, pool := newBus(t)
	_, err := b.Dispatch(context.Background(), req("", "OpenWallet", commands.OpenWallet{WalletID: "w-" + uuid.NewString(), Currency: "EUR", Name: "Ada"}))
	var payloadErr *commands.PayloadError
	if !errors.As(err, &payloadErr) {
		t.Fatalf("a wallet of no customer: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM customer_keys WHERE customer_id = ''`); n != 0 {
		t.Fatal("a key was made for no customer")
	}
}

// Concurrent commands commit together, many per transaction; one that
// conflicts (another process moved its stream while it waited for its
// group) is taken out and decided again alone, and its neighbours commit
// without it. Each keeps its events, log row and outbox messages together.
func TestAGroupCommitsTogetherAndAConflictFailsNoNeighbour(t *testing.T) {
	pool := pgtest.Pool(t)
	newStore := func() *eventstore.Store {
		return eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50, CacheSize: 1000})
	}
	var conflicts, decided atomic.Int64
	ready := make(chan struct{})
	// A waits a second for its group; B, another process, commits at once.
	// A's clock is read once per command, as it goes to the committer.
	a := commands.NewBus(pool, newStore(), commands.Definitions(), commands.Options{Retries: 5,
		Conflict: func(string) { conflicts.Add(1) }, Group: commands.GroupCommit{MaxWait: time.Second, Committers: 1},
		Clock: func() time.Time {
			if decided.Add(1) == 12 {
				close(ready)
			}
			return time.Now()
		}})
	b := commands.NewBus(pool, newStore(), commands.Definitions(), commands.Options{Retries: 5})
	contended := openWallet(t, b, 0)
	wallets := []string{contended}
	for range 11 {
		wallets = append(wallets, openWallet(t, b, 0))
	}
	var wg sync.WaitGroup
	recs := make([]commandlog.Record, len(wallets))
	for i, w := range wallets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := a.Dispatch(context.Background(), req("", "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 10, Reason: "test funds"}))
			if err != nil {
				t.Errorf("top-up of %s: %v", w, err)
			}
			recs[i] = rec
		}()
	}
	<-ready // every command of A's group is decided
	mustDispatch(t, b, req("", "TopUpWallet", commands.TopUpWallet{WalletID: contended, Amount: 1, Reason: "test funds"}))
	wg.Wait()
	if t.Failed() {
		return
	}
	if conflicts.Load() != 1 || recs[0].StreamVersion != 3 {
		t.Fatalf("the contended top-up: %d conflicts, committed at version %d (want 1 conflict, version 3)", conflicts.Load(), recs[0].StreamVersion)
	}
	shared := 0
	for _, r := range recs[1:] {
		if r.TransactionID == recs[1].TransactionID {
			shared++
		}
		if r.StreamVersion != 2 || r.Seq == 0 || r.GlobalPosition == 0 {
			t.Fatalf("neighbour %+v", r)
		}
	}
	if shared != len(recs)-1 || recs[0].TransactionID == recs[1].TransactionID {
		t.Fatalf("%d of %d neighbours share one transaction; the contended one's is %d, theirs %d",
			shared, len(recs)-1, recs[0].TransactionID, recs[1].TransactionID)
	}
	for i, w := range wallets {
		want := 2
		if i == 0 {
			want = 3
		}
		if n := count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1`, w); n != want {
			t.Fatalf("wallet %s: %d events, want %d", w, n, want)
		}
		if n := count(t, pool, `SELECT count(*) FROM watermill_wallet_events WHERE metadata::jsonb->>'stream_id' = $1`, w); n != want {
			t.Fatalf("wallet %s: %d outbox messages, want %d", w, n, want)
		}
		if n := count(t, pool, `SELECT count(*) FROM commands c JOIN events e ON e.event_id = ANY(c.event_ids)
			WHERE c.stream_id = $1 AND c.transaction_id = e.transaction_id`, w); n != want {
			t.Fatalf("wallet %s: %d events logged by the command that wrote them, want %d", w, n, want)
		}
	}
}

// What an order's saga holds, only the saga moves: an operator's command on
// the order's hold, stock or shipment is refused while the order has not
// ended (saga_owns), refused for an order that does not exist, and after
// the order ended allowed only where it takes nothing the end settled. The
// saga's own (internal) commands pass. Nothing refused is logged.
func TestAnOperatorsCommandsOnWhatASagaHoldsAreRefused(t *testing.T) {
	b, pool := newBus(t)
	ctx := context.Background()
	w := openWallet(t, b, 10000)
	sku, id := "sku-"+uuid.NewString(), "o-"+uuid.NewString()
	saga := func(c commands.Command) {
		t.Helper()
		if _, err := b.Dispatch(ctx, commands.Request{Internal: true, Command: c}); err != nil {
			t.Fatalf("the saga's %s: %v", c.CommandType(), err)
		}
	}
	saga(commands.SetPrice{SKU: sku, UnitPrice: 100, Currency: "EUR"})
	saga(commands.ReceiveStock{SKU: sku, Quantity: 5})
	saga(commands.PlaceOrder{OrderID: id, CustomerID: "c1", WalletID: w, Currency: "EUR", Lines: []commands.OrderLine{{SKU: sku, Quantity: 2}},
		ShippingAddress: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}})
	saga(commands.ReserveStock{SKU: sku, OrderID: id, Quantity: 2})
	saga(commands.AuthoriseHold{WalletID: w, OrderID: id, Amount: 200, Currency: "EUR"})
	saga(commands.ScheduleShipment{ShipmentID: "shp-" + id, OrderID: id, Address: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}})
	ops := func(c commands.Command) error {
		_, err := b.Dispatch(ctx, commands.Request{Principal: ops, Command: c})
		return err
	}
	held := []commands.Command{
		commands.CaptureHold{WalletID: w, OrderID: id, Amount: 200},
		commands.VoidHold{WalletID: w, OrderID: id},
		commands.RefundCapture{WalletID: w, OrderID: id, Amount: 1},
		commands.AuthoriseHold{WalletID: w, OrderID: id, Amount: 1, Currency: "EUR"},
		commands.ReserveStock{SKU: sku, OrderID: id, Quantity: 1},
		commands.ReleaseStock{SKU: sku, OrderID: id},
		commands.CommitStock{SKU: sku, OrderID: id},
		commands.ScheduleShipment{ShipmentID: "shp2-" + id, OrderID: id, Address: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}},
		commands.DispatchShipment{ShipmentID: "shp-" + id, Carrier: "other", TrackingNumber: "T"},
		commands.FailShipment{ShipmentID: "shp-" + id, Reason: "lost"},
		commands.DeliverShipment{ShipmentID: "shp-" + id},
	}
	before := count(t, pool, `SELECT count(*) FROM commands`)
	for _, c := range held {
		if err := ops(c); code(err) != "saga_owns" || !errors.Is(err, aggregate.ErrState) {
			t.Errorf("an operator's %s while the saga runs: %v", c.CommandType(), err)
		}
	}
	if err := ops(commands.AuthoriseHold{WalletID: w, OrderID: "o-none", Amount: 1, Currency: "EUR"}); code(err) != "order_not_found" {
		t.Errorf("a hold for an order that does not exist: %v", err)
	}
	if err := ops(commands.FailShipment{ShipmentID: "shp-none", Reason: "x"}); code(err) != "shipment_not_found" {
		t.Errorf("a shipment that does not exist: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM commands`); n != before {
		t.Fatalf("refused commands logged: %d", n-before)
	}
	// The saga cancels: it releases and voids.
	saga(commands.ReleaseStock{SKU: sku, OrderID: id})
	saga(commands.VoidHold{WalletID: w, OrderID: id})
	saga(commands.CancelOrder{OrderID: id, Reason: "changed my mind"})
	// Then only undoing is allowed: what has nothing left to undo passes as
	// a no-op, a refund is the wallet's to refuse (nothing was captured),
	// and the parcel of an order not sold may fail.
	after := map[string]string{"VoidHold": "", "ReleaseStock": "", "RefundCapture": "nothing_captured", "FailShipment": ""}
	for _, c := range held {
		want, ok := after[c.CommandType()]
		if !ok {
			want = "order_ended"
		}
		if err := ops(c); code(err) != want {
			t.Errorf("%s after the cancel: %v", c.CommandType(), err)
		}
	}
}

// code is the domain error's code in err, "" for no error, or err's text.
func code(err error) string {
	var dErr *aggregate.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &dErr):
		return dErr.Code
	}
	return err.Error()
}

// After a write-off (the goods left, the money was not taken), an operator
// may collect the order's money: in the order's own wallet, for its total,
// and nothing else.
func TestMoneyForAWrittenOffOrderIsTheOrdersOwn(t *testing.T) {
	b, _ := newBus(t)
	ctx := context.Background()
	w, other := openWallet(t, b, 10000), openWallet(t, b, 10000)
	sku, id := "sku-"+uuid.NewString(), "o-"+uuid.NewString()
	for _, c := range []commands.Command{
		commands.SetPrice{SKU: sku, UnitPrice: 100, Currency: "EUR"},
		commands.PlaceOrder{OrderID: id, CustomerID: "c1", WalletID: w, Currency: "EUR", Lines: []commands.OrderLine{{SKU: sku, Quantity: 2}},
			ShippingAddress: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}},
		commands.ConfirmOrder{OrderID: id},
		commands.WriteOffOrder{OrderID: id, Reason: "the capture failed"},
	} {
		if _, err := b.Dispatch(ctx, commands.Request{Internal: true, Command: c}); err != nil {
			t.Fatalf("the saga's %s: %v", c.CommandType(), err)
		}
	}
	for want, c := range map[string]commands.Command{
		"not_the_orders_wallet": commands.AuthoriseHold{WalletID: other, OrderID: id, Amount: 200, Currency: "EUR"},
		"hold_not_total":        commands.AuthoriseHold{WalletID: w, OrderID: id, Amount: 40000, Currency: "EUR"},
	} {
		_, err := b.Dispatch(ctx, commands.Request{Principal: ops, Command: c})
		var dErr *aggregate.Error
		if !errors.As(err, &dErr) || dErr.Code != want {
			t.Errorf("%+v: %v, want %s", c, err, want)
		}
	}
	for _, c := range []commands.Command{
		commands.AuthoriseHold{WalletID: w, OrderID: id, Amount: 200, Currency: "EUR"},
		commands.CaptureHold{WalletID: w, OrderID: id, Amount: 200},
	} {
		if _, err := b.Dispatch(ctx, commands.Request{Principal: ops, Command: c}); err != nil {
			t.Fatalf("collecting the written-off order's money: %s: %v", c.CommandType(), err)
		}
	}
}

// A command committed before is answered as before, though what its check
// read has moved on since: here the price the order was placed at changed.
func TestARetryIsAnsweredAsBeforeThoughThePriceChanged(t *testing.T) {
	b, _ := newBus(t)
	w := openWallet(t, b, 0)
	sku := "sku-" + uuid.NewString()
	mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 5, Currency: "EUR"}))
	body := commands.PlaceOrder{CustomerID: "c1", WalletID: w, Currency: "EUR", Lines: []commands.OrderLine{{SKU: sku, Quantity: 1, UnitPrice: 5}},
		ShippingAddress: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}}
	key := "place-" + uuid.NewString()
	first := mustDispatch(t, b, req(key, "PlaceOrder", body))
	mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 7, Currency: "EUR"}))
	again := mustDispatch(t, b, req(key, "PlaceOrder", body))
	if !again.Replayed || again.StreamID != first.StreamID {
		t.Fatalf("the retry: %+v", again)
	}
	_, err := b.Dispatch(context.Background(), req("", "PlaceOrder", body))
	var dErr *aggregate.Error
	if !errors.As(err, &dErr) || dErr.Code != "price_changed" {
		t.Fatalf("a new order at the old price: %v", err)
	}
}

// A route-only command has no payload for POST /commands to fill: its own
// route sends it (RequestPayment's asks the payment provider too).
func TestARouteOnlyCommandHasNoPayloadForPOSTCommands(t *testing.T) {
	b, _ := newBus(t)
	if !b.RouteOnly("RequestPayment") || b.RouteOnly("TopUpWallet") {
		t.Fatal("RequestPayment alone is route-only")
	}
	if _, ok := b.NewPayload("RequestPayment"); ok {
		t.Fatal("a payload for RequestPayment by type")
	}
	if _, ok := b.NewPayload("TopUpWallet"); !ok {
		t.Fatal("no payload for TopUpWallet")
	}
}
