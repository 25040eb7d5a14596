package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

type env struct {
	t      testing.TB
	ctx    context.Context
	pool   *pgxpool.Pool
	store  *eventstore.Store
	bus    *commands.Bus
	reader *projections.Reader
}

func newEnv(t testing.TB) *env {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50})
	return &env{t: t, ctx: context.Background(), pool: pool, store: store,
		bus: commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 20}), reader: projections.NewReader(pool)}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// run starts a projector with handlers (all projections when none) until the test ends.
func (e *env) run(handlers ...delivery.Handler) {
	e.t.Helper()
	if len(handlers) == 0 {
		for _, p := range projections.All() {
			handlers = append(handlers, p.Handler(e.store.Registry()))
		}
	}
	router, err := delivery.NewRouter(e.pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 2,
		RetryInterval: time.Millisecond, Logger: quiet}, handlers...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	<-router.Running()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("router: %v", err)
		}
	})
}

func (e *env) do(typ string, payload any) commandlog.Record {
	e.t.Helper()
	raw, _ := json.Marshal(payload)
	rec, err := e.bus.Dispatch(e.ctx, commands.Request{Type: typ, Payload: raw, Internal: true})
	var rej *commands.RejectedError
	if err != nil && !errors.As(err, &rej) {
		e.t.Fatalf("%s: %v", typ, err)
	}
	return rec
}

// settle waits until every projection has consumed its whole topic.
func (e *env) settle() {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := e.reader.Status(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		busy := false
		for _, s := range st {
			busy = busy || s.LagEvents > 0
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("projections did not settle: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkAgainstEvents compares the wallet and inventory read models with the
// aggregates replayed from the event log.
func (e *env) checkAgainstEvents(wallets, skus []string) {
	e.t.Helper()
	for _, id := range wallets {
		w := wallet.New(id)
		if err := e.store.Load(e.ctx, w); err != nil {
			e.t.Fatal(err)
		}
		st := w.State().(wallet.State)
		got, err := e.reader.Wallet(e.ctx, id)
		if err != nil {
			e.t.Fatalf("wallet %s: %v", id, err)
		}
		if got.Balance != st.Balance || got.Held != st.Held || got.Available != st.Balance-st.Held || got.Version != w.Version() {
			e.t.Fatalf("wallet %s: read model %+v, events %+v at version %d", id, got, st, w.Version())
		}
	}
	for _, sku := range skus {
		it := inventory.New(sku)
		if err := e.store.Load(e.ctx, it); err != nil {
			e.t.Fatal(err)
		}
		st := it.State().(inventory.State)
		got, err := e.reader.Product(e.ctx, sku)
		if err != nil {
			e.t.Fatalf("sku %s: %v", sku, err)
		}
		if got.OnHand != st.OnHand || got.Reserved != st.Reserved || got.Version != it.Version() {
			e.t.Fatalf("sku %s: read model %+v, events %+v", sku, got, st)
		}
	}
}

var address = order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d-%s", prefix, i, uuid.NewString()[:8])
	}
	return out
}

func TestProjectionsAfterConcurrentCommandsOnManyAggregates(t *testing.T) {
	e := newEnv(t)
	e.run()
	wallets, skus := ids("w", 8), ids("sku", 4)
	for _, w := range wallets {
		e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c-" + w, Currency: "EUR"})
	}
	for _, s := range skus {
		e.do("ReceiveStock", commands.ReceiveStock{SKU: s, Quantity: 100})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				w, s := wallets[(g+i)%len(wallets)], skus[(g*3+i)%len(skus)]
				order := fmt.Sprintf("o-%d-%d", g, i)
				e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1000, Reason: "test funds"})
				e.do("AuthoriseHold", commands.AuthoriseHold{WalletID: w, OrderID: order, Amount: 300, Currency: "EUR"})
				e.do("ReserveStock", commands.ReserveStock{SKU: s, OrderID: order, Quantity: 2})
				if i%3 == 0 {
					e.do("VoidHold", commands.VoidHold{WalletID: w, OrderID: order})
					e.do("ReleaseStock", commands.ReleaseStock{SKU: s, OrderID: order})
				} else {
					e.do("CaptureHold", commands.CaptureHold{WalletID: w, OrderID: order, Amount: 250})
					e.do("CommitStock", commands.CommitStock{SKU: s, OrderID: order})
				}
			}
		}()
	}
	wg.Wait()
	e.settle()
	e.checkAgainstEvents(wallets, skus)

	// The checkpoint names the last event applied, and nothing is poisoned.
	st, err := e.reader.Status(e.ctx)
	if err != nil || len(st) != len(projections.All()) {
		t.Fatalf("status %+v: %v", st, err)
	}
	for _, s := range st {
		if s.Poisoned != 0 || (s.Applied == 0 && s.Name != "orders_projection" && s.Name != "payments_projection") || s.LagEvents != 0 {
			t.Fatalf("status %+v", s)
		}
	}
}

// A transaction that took a lower position but commits after a later one is
// still projected: the subscriber waits for it instead of skipping it.
func TestOutOfOrderCommitsAreAllProjected(t *testing.T) {
	e := newEnv(t)
	e.run()
	slowID, fastID := "w-slow-"+uuid.NewString(), "w-fast-"+uuid.NewString()
	appendAndPublish := func(tx pgx.Tx, id string) {
		_, err := eventstoretest.SaveAndPublish(e.ctx, tx, e.store,
			eventstoretest.Stream(wallet.StreamType, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}), eventstore.Metadata{CorrelationID: id, Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
	}
	slow, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	appendAndPublish(slow, slowID)
	if err := pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error { appendAndPublish(tx, fastID); return nil }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the projector polls meanwhile
	if _, err := e.reader.Wallet(e.ctx, fastID); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("the later commit was projected while an older transaction was open: %v", err)
	}
	if err := slow.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.settle()
	e.checkAgainstEvents([]string{slowID, fastID}, nil)
}

// Applying every message of a topic a second time changes nothing.
func TestRedeliveredEventsChangeNothing(t *testing.T) {
	e := newEnv(t)
	e.run()
	w, sku := "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
	e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 700, Reason: "test funds"})
	e.do("ReceiveStock", commands.ReceiveStock{SKU: sku, Quantity: 5})
	e.do("ReserveStock", commands.ReserveStock{SKU: sku, OrderID: "o1", Quantity: 2})
	e.settle()
	before := e.dump()
	for _, p := range projections.All() {
		rows, _ := e.pool.Query(e.ctx, fmt.Sprintf(`SELECT uuid, payload, metadata FROM watermill_%s`, p.Topic()))
		msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*message.Message, error) {
			var id string
			var payload []byte
			var md map[string]string
			err := r.Scan(&id, &payload, &md)
			m := message.NewMessage(id, payload)
			m.Metadata = md
			return m, err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
			for _, m := range msgs {
				if err := p.ApplyMessages(e.ctx, tx, e.store.Registry(), m); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	if after := e.dump(); !reflect.DeepEqual(before, after) {
		t.Fatalf("redelivery changed the read models:\nbefore %v\nafter  %v", before, after)
	}
}

// dump returns every read model table's rows.
func (e *env) dump() map[string][]map[string]any {
	e.t.Helper()
	out := map[string][]map[string]any{}
	for _, p := range projections.All() {
		for _, table := range p.Tables {
			rows, _ := e.pool.Query(e.ctx, fmt.Sprintf(`SELECT * FROM %s ORDER BY 1, 2`, table))
			got, err := pgx.CollectRows(rows, pgx.RowToMap)
			if err != nil {
				e.t.Fatal(err)
			}
			out[table] = got
		}
	}
	return out
}

// One event fails every attempt: it goes to the poison topic, the rest keeps
// flowing, and replaying the poison topic after the fix converges.
func TestPoisonEventIsParkedAndReplayed(t *testing.T) {
	e := newEnv(t)
	bad, good := "w-bad-"+uuid.NewString(), "w-good-"+uuid.NewString()
	var gapAttempts atomic.Int32 // the gap's attempts alone: no retry can apply it
	var handlers []delivery.Handler
	for _, p := range projections.All() {
		if p.Name == "wallets_projection" {
			// The bug is in the projection: a batch with the event fails,
			// and so does the event on its own.
			apply := p.OnEvents
			p.OnEvents = func(ctx context.Context, tx pgx.Tx, es []eventstore.Envelope) error {
				if slices.ContainsFunc(es, func(e eventstore.Envelope) bool { return e.StreamID == bad && e.StreamVersion == 2 }) {
					return errors.New("simulated bug")
				}
				return apply(ctx, tx, es)
			}
		}
		h := p.Handler(e.store.Registry())
		if p.Name == "wallets_projection" {
			handle := h.Handle
			h.Handle = func(ctx context.Context, msg *message.Message) error {
				if msg.Metadata.Get(outbox.MetaStreamID) == bad && msg.Metadata.Get(outbox.MetaStreamVersion) == "3" {
					gapAttempts.Add(1)
				}
				return handle(ctx, msg)
			}
		}
		handlers = append(handlers, h)
	}
	e.run(handlers...)
	for _, w := range []string{bad, good} {
		e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
		e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 100, Reason: "test funds"}) // version 2: fails for bad
		e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 10, Reason: "test funds"})  // version 3: a gap for bad
	}
	e.settle()
	e.checkAgainstEvents([]string{good}, nil)
	if w, err := e.reader.Wallet(e.ctx, bad); err != nil || w.Version != 1 {
		t.Fatalf("the bad wallet moved past its poisoned event: %+v", w)
	}
	poisoned, err := e.reader.Poison(e.ctx, true, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(poisoned) != 2 || poisoned[0].StreamID != bad || poisoned[0].Reason != "simulated bug" ||
		poisoned[0].Handler != "wallets_projection" || poisoned[1].Position <= poisoned[0].Position {
		t.Fatalf("poison topic: %+v", poisoned)
	}
	if n := gapAttempts.Load(); n != 1 {
		t.Fatalf("the event after the poisoned one (a gap) was tried alone %d times; want it poisoned at once", n)
	}
	st, err := e.reader.Status(e.ctx)
	seen := false
	for _, s := range st {
		if s.Name == "wallets_projection" {
			seen = true
			if s.Poisoned != 2 {
				t.Fatalf("status %+v", s)
			}
		}
	}
	if err != nil || !seen {
		t.Fatalf("no status of wallets_projection: %v", err)
	}

	// The second can't go first: its predecessor is still missing.
	if err := projections.ReplayPoison(e.ctx, e.pool, e.store.Registry(), poisoned[1].Offset); !errors.Is(err, projections.ErrGap) {
		t.Fatalf("replaying out of order: %v", err)
	}
	for _, p := range poisoned {
		if err := projections.ReplayPoison(e.ctx, e.pool, e.store.Registry(), p.Offset); err != nil {
			t.Fatal(err)
		}
	}
	e.checkAgainstEvents([]string{bad, good}, nil)
	if err := projections.ReplayPoison(e.ctx, e.pool, e.store.Registry(), poisoned[0].Offset); !errors.Is(err, projections.ErrResolved) {
		t.Fatalf("replaying twice: %v", err)
	}
	if left, err := e.reader.Poison(e.ctx, true, 0, 100); err != nil || len(left) != 0 {
		t.Fatalf("unresolved after replay: %+v", left)
	}
}

// A rebuilt read model is identical to the live one, also while commands
// keep coming.
func TestRebuildEqualsLive(t *testing.T) {
	e := newEnv(t)
	e.run()
	wallets, skus := ids("w", 3), ids("sku", 2)
	for i, w := range wallets {
		e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
		e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: int64(100 * (i + 1)), Reason: "test funds"})
		e.do("ReceiveStock", commands.ReceiveStock{SKU: skus[i%2], Quantity: 3})
		e.do("SetPrice", commands.SetPrice{SKU: skus[i%2], UnitPrice: 100, Currency: "EUR"})
	}
	e.do("PlaceOrder", commands.PlaceOrder{CustomerID: "c", WalletID: wallets[0], Currency: "EUR",
		Lines:           []commands.OrderLine{{SKU: skus[0], Quantity: 1, UnitPrice: 100}},
		ShippingAddress: address})
	e.settle()
	live := e.dump()

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	go func() { // commands keep flowing during the rebuilds
		defer writer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				e.do("TopUpWallet", commands.TopUpWallet{WalletID: wallets[i%3], Amount: 1, Reason: "test funds"})
			}
		}
	}()
	for _, p := range projections.All() {
		var calls int
		n, err := projections.Rebuild(e.ctx, e.pool, e.store, e.bus.Log(), p, func(done, total int64) {
			if calls++; calls == 1 && p.Name == "wallets_projection" {
				// The rebuild does not stall the live consumer: a top-up
				// made now shows in the live read model before it ends.
				rec := e.do("TopUpWallet", commands.TopUpWallet{WalletID: wallets[0], Amount: 1, Reason: "test funds"})
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					var v int64
					if err := e.pool.QueryRow(e.ctx, `SELECT version FROM read_wallets WHERE wallet_id = $1`, wallets[0]).Scan(&v); err == nil && v >= rec.StreamVersion {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the live consumer stalled during the rebuild")
					}
				}
			}
		})
		if err != nil {
			t.Fatalf("rebuild %s: %v", p.Name, err)
		}
		if p.Name == "payments_projection" && n == 0 {
			continue // this workload has no payments
		}
		if n == 0 || calls < 2 {
			t.Fatalf("rebuild %s applied %d, progress called %d times", p.Name, n, calls)
		}
	}
	close(stop)
	writer.Wait()
	e.settle()
	e.checkAgainstEvents(wallets, skus)
	// Without the live top-ups, everything else is as it was.
	rebuilt := e.dump()
	delete(live, "read_wallets")
	delete(rebuilt, "read_wallets")
	if !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("rebuilt differs from live:\nlive    %v\nrebuilt %v", live, rebuilt)
	}
}

func TestWaitForPositionAndTimeout(t *testing.T) {
	e := newEnv(t)
	w := "w-" + uuid.NewString()
	rec := e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
	p, _ := projections.ByName("wallets_projection")
	// No projector runs: the wait ends with a clear "behind".
	err := e.reader.WaitFor(e.ctx, p, rec.GlobalPosition, 150*time.Millisecond)
	var behind *projections.BehindError
	if !errors.As(err, &behind) || behind.Position != rec.GlobalPosition {
		t.Fatalf("want BehindError, got %v", err)
	}
	e.run()
	if err := e.reader.WaitFor(e.ctx, p, rec.GlobalPosition, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := e.reader.Wallet(e.ctx, w); err != nil || got.Currency != "EUR" {
		t.Fatalf("after the wait: %+v %v", got, err)
	}
}

// The orders read model applies each version of an order once and in
// order: a redelivered event changes nothing, an event ahead of the row is
// refused as a gap (it waits, or goes to the poison topic), and the
// missing one then the early one apply in turn.
func TestOrdersProjectionAppliesEachVersionOnceAndInOrder(t *testing.T) {
	e := newEnv(t)
	e.run()
	id := "o-" + uuid.NewString()
	e.do("OpenWallet", commands.OpenWallet{WalletID: "w-" + id, CustomerID: "c", Currency: "EUR"})
	e.do("SetPrice", commands.SetPrice{SKU: "a", UnitPrice: 100, Currency: "EUR"})
	e.do("PlaceOrder", commands.PlaceOrder{OrderID: id, CustomerID: "c", WalletID: "w-" + id, Currency: "EUR",
		Lines: []commands.OrderLine{{SKU: "a", Quantity: 1, UnitPrice: 100}}, ShippingAddress: order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}})
	e.do("ConfirmOrder", commands.ConfirmOrder{OrderID: id})
	e.do("CancelOrder", commands.CancelOrder{OrderID: id, Reason: "changed my mind"})
	e.settle()
	orders := projections.All()[0]
	if orders.Name != "orders_projection" {
		t.Fatalf("projections.All()[0] is %s", orders.Name)
	}
	msgs := map[string]*message.Message{} // by stream version
	rows, _ := e.pool.Query(e.ctx, `SELECT uuid, payload, metadata FROM watermill_order_events`)
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*message.Message, error) {
		var uid string
		var payload []byte
		var md map[string]string
		err := r.Scan(&uid, &payload, &md)
		m := message.NewMessage(uid, payload)
		m.Metadata = md
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Metadata.Get(outbox.MetaStreamID) == id {
			msgs[m.Metadata.Get(outbox.MetaStreamVersion)] = m
		}
	}
	if len(msgs) != 3 {
		t.Fatalf("%d messages of the order", len(msgs))
	}
	apply := func(v string) error {
		return pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
			return orders.ApplyMessages(e.ctx, tx, e.store.Registry(), msgs[v])
		})
	}
	state := func() (string, int64) {
		o, err := e.reader.Order(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return string(o.Status), o.Version
	}
	// Redelivered: the confirmation must not undo the cancel.
	for _, v := range []string{"3", "1", "2"} {
		if err := apply(v); err != nil {
			t.Fatalf("redelivery of v%s: %v", v, err)
		}
	}
	if st, v := state(); st != "cancelled" || v != 3 {
		t.Fatalf("after redelivery: %s v%d", st, v)
	}
	// The row behind by two: the cancel (v3) is a gap until v2 is applied.
	if _, err := e.pool.Exec(e.ctx, `UPDATE read_orders SET status = 'placed', version = 1 WHERE order_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := apply("3"); !errors.Is(err, projections.ErrGap) {
		t.Fatalf("an event ahead of the row: %v", err)
	}
	if st, v := state(); st != "placed" || v != 1 {
		t.Fatalf("after the refused gap: %s v%d", st, v)
	}
	for _, v := range []string{"2", "3"} {
		if err := apply(v); err != nil {
			t.Fatal(err)
		}
	}
	if st, v := state(); st != "cancelled" || v != 3 {
		t.Fatalf("after catching up: %s v%d", st, v)
	}
}

// A command refused on an order id nobody used yet is no part of the
// story of whoever later places an order under that id: the timeline
// leaves it out (the command log keeps it for its sender).
func TestARefusalOnAnUnusedOrderIDStaysOutOfItsLaterTimeline(t *testing.T) {
	e := newEnv(t)
	e.run()
	id := "o-" + uuid.NewString()
	refused := e.do("CancelOrder", commands.CancelOrder{OrderID: id, Reason: "not mine"})
	if refused.Status != commandlog.StatusRejected {
		t.Fatalf("a cancel of an order that does not exist: %+v", refused)
	}
	e.do("OpenWallet", commands.OpenWallet{WalletID: "w-" + id, CustomerID: "c", Currency: "EUR"})
	e.do("SetPrice", commands.SetPrice{SKU: "a", UnitPrice: 100, Currency: "EUR"})
	placed := e.do("PlaceOrder", commands.PlaceOrder{OrderID: id, CustomerID: "c", WalletID: "w-" + id, Currency: "EUR",
		Lines: []commands.OrderLine{{SKU: "a", Quantity: 1, UnitPrice: 100}}, ShippingAddress: order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}})
	e.do("CancelOrder", commands.CancelOrder{OrderID: id, Reason: "changed my mind"})
	e.settle()
	entries, err := e.reader.Timeline(e.ctx, id, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var commandIDs []string
	for _, x := range entries {
		if x.Kind == "command" {
			commandIDs = append(commandIDs, x.ID)
		}
	}
	if len(commandIDs) != 2 || commandIDs[0] != placed.CommandID || slices.ContainsFunc(commandIDs, func(s string) bool { return s == refused.CommandID }) {
		t.Fatalf("timeline commands %v: want the placement and the cancel, not the earlier refusal %s", commandIDs, refused.CommandID)
	}
}

// The poison list pages in commit order: a message poisoned by a
// transaction that took its offset first but committed last is not skipped
// by a reader paging with the offsets it was given.
func TestPoisonListSkipsNoLateCommit(t *testing.T) {
	e := newEnv(t)
	msg := func() *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("handler", "test")
		return m
	}
	late, early := msg(), msg()
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(e.ctx)
	if err := outbox.PublishTo(e.ctx, tx, outbox.PoisonTopic, late); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error { return outbox.PublishTo(e.ctx, tx, outbox.PoisonTopic, early) }); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var after int64
	read := func() {
		t.Helper()
		for {
			page, err := e.reader.Poison(e.ctx, false, after, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				return
			}
			seen[page[0].MessageID]++
			after = page[0].Offset
		}
	}
	read()
	if seen[late.UUID]+seen[early.UUID] != 0 {
		t.Fatalf("paged %v while the lower offset's transaction runs", seen)
	}
	if err := tx.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	// The horizon is the cluster's: another package's transaction running
	// here may hold "early" back a little longer, never skip it.
	for deadline := time.Now().Add(10 * time.Second); seen[late.UUID]+seen[early.UUID] < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		read()
	}
	if seen[late.UUID] != 1 || seen[early.UUID] != 1 {
		t.Fatalf("paged %v; want %s and %s once each", seen, late.UUID, early.UUID)
	}
	if _, err := e.reader.Poison(e.ctx, false, 1<<60, 1); !errors.Is(err, projections.ErrBadCursor) {
		t.Fatalf("an offset that is no poison message's: %v", err)
	}
}
