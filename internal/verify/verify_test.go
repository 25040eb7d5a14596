package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows/sagas"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

type world struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *eventstore.Store
	bus   *commands.Bus
}

func (w *world) do(typ string, payload any) commandlog.Record {
	w.t.Helper()
	raw, _ := json.Marshal(payload)
	rec, err := w.bus.Dispatch(w.ctx, commands.Request{Type: typ, Payload: raw, Internal: true})
	var rejected *commands.RejectedError
	if err != nil && !errors.As(err, &rejected) {
		w.t.Fatalf("%s: %v", typ, err)
	}
	return rec
}

// forge appends events behind the domain's back (no command, no outbox):
// the corruption verify exists to find.
func (w *world) forge(streamType, id string, expected int64, events ...aggregate.Event) {
	w.t.Helper()
	err := pgx.BeginFunc(w.ctx, w.pool, func(tx pgx.Tx) error {
		_, err := eventstoretest.Save(w.ctx, tx, w.store, eventstoretest.Stream(streamType, id, expected, events...),
			eventstore.Metadata{CorrelationID: "forged", CausationID: "forged-" + id, Actor: "test"})
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if tag, err := w.pool.Exec(w.ctx, sql, args...); err != nil || tag.RowsAffected() == 0 {
		w.t.Fatalf("%s: %v (%d rows)", sql, err, tag.RowsAffected())
	}
}

// sold runs an order's saga by hand, step by step, through the bus (as the
// saga's activities send them), skipping the steps named in skip, and
// paying captured instead of the total when it is not 0. With "carrier" in
// skip, the shipment is dispatched by an operator's DispatchShipment alone:
// the carrier was never called.
func (w *world) sold(oid, wid, sku string, quantity, unitPrice, captured int64, skip ...string) {
	w.t.Helper()
	skipped := func(step string) bool { return slices.Contains(skip, step) }
	addr := order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}
	total := quantity * unitPrice
	if captured == 0 {
		captured = total
	}
	ship := "shp-" + oid
	w.do("SetPrice", commands.SetPrice{SKU: sku, UnitPrice: unitPrice, Currency: "EUR"})
	w.do("PlaceOrder", commands.PlaceOrder{OrderID: oid, CustomerID: "c", WalletID: wid, Currency: "EUR",
		Lines: []commands.OrderLine{{SKU: sku, Quantity: quantity, UnitPrice: unitPrice}}, ShippingAddress: addr})
	w.mustAccept("ReserveStock", commands.ReserveStock{SKU: sku, OrderID: oid, Quantity: quantity})
	w.mustAccept("AuthoriseHold", commands.AuthoriseHold{WalletID: wid, OrderID: oid, Amount: total, Currency: "EUR"})
	w.mustAccept("ConfirmOrder", commands.ConfirmOrder{OrderID: oid})
	w.mustAccept("ScheduleShipment", commands.ScheduleShipment{ShipmentID: ship, OrderID: oid, Address: addr})
	tracking := "OPERATOR-1"
	if !skipped("carrier") {
		var err error
		carrier := activities.SimulatedCarrier{Pool: w.pool}
		if tracking, err = carrier.Dispatch(w.ctx, "saga:"+oid+".dispatch", ship, addr); err != nil {
			w.t.Fatal(err)
		}
	}
	w.mustAccept("DispatchShipment", commands.DispatchShipment{ShipmentID: ship, Carrier: "simulated-carrier", TrackingNumber: tracking})
	w.mustAccept("CaptureHold", commands.CaptureHold{WalletID: wid, OrderID: oid, Amount: captured})
	w.mustAccept("MarkOrderShipped", commands.MarkOrderShipped{OrderID: oid, ShipmentID: ship})
	if !skipped("commit") {
		w.mustAccept("CommitStock", commands.CommitStock{SKU: sku, OrderID: oid})
	}
	w.mustAccept("CompleteOrder", commands.CompleteOrder{OrderID: oid})
}

// cancelled places an order and cancels it at once.
func (w *world) cancelled(wid, sku string) string {
	w.t.Helper()
	id := "o-cancelled-" + uuid.NewString()
	w.do("PlaceOrder", commands.PlaceOrder{OrderID: id, CustomerID: "c", WalletID: wid, Currency: "EUR",
		Lines:           []commands.OrderLine{{SKU: sku, Quantity: 1}},
		ShippingAddress: order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}})
	w.mustAccept("CancelOrder", commands.CancelOrder{OrderID: id, Reason: "test"})
	return id
}

func (w *world) mustAccept(typ string, payload any) {
	w.t.Helper()
	if rec := w.do(typ, payload); rec.Status != "accepted" {
		w.t.Fatalf("%s: %s %s", typ, rec.Status, rec.Reason)
	}
}

// check runs verify and returns the failures of the named check.
func (w *world) check(name string) []string {
	w.t.Helper()
	rep, err := (&verify.Checker{Pool: w.pool, Store: w.store, Reader: projections.NewReader(w.pool), Settle: 200 * time.Millisecond}).Run(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Failures
		}
	}
	w.t.Fatalf("no check named %q in\n%s", name, rep)
	return nil
}

// Every check of orderflow verify fires on the corruption it is for, and
// names what is wrong. (The saga check needs Temporal: the end-to-end tests
// show it naming a saga that waits for an operator and one that was
// terminated.)
func TestEachCheckFindsItsCorruption(t *testing.T) {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50})
	w := &world{t: t, ctx: context.Background(), pool: pool, store: store,
		bus: commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})}

	// A clean world: a wallet, a product and a cancelled order, projected,
	// and the orders' sagas started (by a launcher on a Temporal that only
	// starts workflows).
	handlers := []delivery.Handler{sagas.Starter(24 * time.Hour)}
	stopLauncher := runLauncher(t, pool, newStarts())
	for _, p := range projections.All() {
		handlers = append(handlers, p.Handler(store.Registry()))
	}
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, handlers...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	defer stop()
	<-router.Running()
	wid, sku, oid := "w-"+uuid.NewString(), "sku-"+uuid.NewString(), "o-"+uuid.NewString()
	w.do("OpenWallet", commands.OpenWallet{WalletID: wid, CustomerID: "c", Currency: "EUR"})
	w.do("TopUpWallet", commands.TopUpWallet{WalletID: wid, Amount: 100_000, Reason: "test funds"})
	w.do("ReceiveStock", commands.ReceiveStock{SKU: sku, Quantity: 100})
	w.do("SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 100, Currency: "EUR"})
	w.do("PlaceOrder", commands.PlaceOrder{OrderID: oid, CustomerID: "c", WalletID: wid, Currency: "EUR",
		Lines:           []commands.OrderLine{{SKU: sku, Quantity: 1, UnitPrice: 100}},
		ShippingAddress: order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}})
	w.do("CancelOrder", commands.CancelOrder{OrderID: oid, Reason: "test"})
	// An order sold by the book: the carrier took it, the stock left, the
	// total was paid.
	w.sold("o-sold-"+uuid.NewString(), wid, sku, 2, 100, 0)
	rep, err := (&verify.Checker{Pool: pool, Store: store, Reader: projections.NewReader(pool), Settle: 30 * time.Second}).Run(w.ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("the clean world fails verify: %v\n%s", err, rep)
	}
	stop() // what follows is tampering the projector must not repair
	stopLauncher()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	fresh := func(prefix string) string { return prefix + uuid.NewString() }
	cases := []struct {
		check  string
		tamper func() string // returns what the failure must name
	}{
		{"nothing is left undelivered in the outbox", func() string {
			w.exec(`INSERT INTO saga_starts (order_id, input) VALUES ($1, '{}')`, fresh("o-queued-"))
			return "sagas queued but not started"
		}},
		{"every order's saga was started", func() string {
			// An order.placed the saga starter never queued (poisoned, or
			// consumed by a starter that dropped it).
			id := fresh("o-unstarted-")
			w.forge(order.StreamType, id, 0, order.Placed{OrderID: id, CustomerID: "c", WalletID: wid, Currency: "EUR"})
			return "order " + id + " (placed): its saga was never queued"
		}},
		{"nothing is left undelivered in the outbox", func() string {
			// Any consumer group's poison counts, not only a projection's.
			m := message.NewMessage(uuid.NewString(), []byte(`{}`))
			m.Metadata.Set("handler_poisoned", "some_consumer")
			if err := pgx.BeginFunc(w.ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(w.ctx, tx, outbox.PoisonTopic, m) }); err != nil {
				t.Fatal(err)
			}
			return "some_consumer: 1 unresolved poison messages"
		}},
		{"every accepted order reached a terminal state", func() string {
			id := fresh("o-open-")
			w.forge(order.StreamType, id, 0, order.Placed{OrderID: id, CustomerID: "c", WalletID: wid, Currency: "EUR"})
			return "order " + id + " is still placed"
		}},
		{"wallet read models equal a replay of the event log", func() string {
			w.exec(`UPDATE read_wallets SET balance = balance + 1 WHERE wallet_id = $1`, wid)
			return "wallet " + wid + ": read model balance"
		}},
		{"stock read models equal a replay of the event log", func() string {
			w.exec(`UPDATE read_inventory SET on_hand = on_hand + 1 WHERE sku = $1`, sku)
			return "sku " + sku + ": read model on hand"
		}},
		{"no wallet overdrawn, no stock negative", func() string {
			id := fresh("w-overdrawn-")
			w.forge(wallet.StreamType, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"},
				wallet.HoldAuthorised{OrderID: "o-x", Amount: 50, Currency: "EUR"})
			return "wallet " + id + ": balance 0 held 50"
		}},
		{"no hold or reservation left for a terminal order", func() string {
			id := fresh("sku-dangling-")
			w.forge(inventory.StreamType, id, 0, inventory.StockReceived{SKU: id, Quantity: 3}, inventory.StockReserved{OrderID: oid, Quantity: 1})
			return "sku " + id + " reserves 1 for cancelled order " + oid
		}},
		{"the carrier took a parcel exactly for each completed or written-off order", func() string {
			// The case a customer's direct cancel once made: cancelled, but
			// the carrier has the parcel.
			w.exec(`INSERT INTO carrier_sim_bookings (dispatch_key, shipment_id, tracking_number, ready_at, state)
				VALUES ($1, $2, 'T-1', now(), 'taken')`, fresh("k-"), "shp-"+oid)
			return "order " + oid + " is cancelled but the carrier took its parcel"
		}},
		{"the carrier took a parcel exactly for each completed or written-off order", func() string {
			id := fresh("o-done-")
			w.forge(order.StreamType, id, 0, order.Placed{OrderID: id, CustomerID: "c", WalletID: wid, Currency: "EUR"}, order.Confirmed{},
				order.Shipped{ShipmentID: "shp-" + id}, order.Completed{})
			return "order " + id + " is completed but the carrier never took its parcel"
		}},
		{"money captured only for a parcel the carrier took", func() string {
			id, o := fresh("w-captured-"), fresh("o-untaken-")
			w.forge(wallet.StreamType, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}, wallet.ToppedUp{Amount: 100, Currency: "EUR"},
				wallet.HoldAuthorised{OrderID: o, Amount: 50, Currency: "EUR"}, wallet.HoldCaptured{OrderID: o, Amount: 50})
			return "wallet " + id + " captured 50 for order " + o
		}},
		// Orders sold by hand through operators' commands: a dispatch that
		// orderflow recorded is no parcel unless the carrier booked it (its
		// own bookings are the truth), and the stock committed and money
		// captured must follow each order's end.
		{"money captured only for a parcel the carrier took", func() string {
			// An operator's DispatchShipment is no parcel with the carrier.
			id := fresh("o-operator-dispatched-")
			w.sold(id, wid, sku, 1, 100, 0, "carrier")
			return "wallet " + wid + " captured 100 for order " + id + ", whose parcel the carrier never took"
		}},
		{"every dispatch orderflow recorded is a parcel the carrier took", func() string {
			id := fresh("o-operator-dispatched-")
			w.sold(id, wid, sku, 1, 100, 0, "carrier")
			return "shipment shp-" + id + " of order " + id + " is dispatched (tracking OPERATOR-1) but the carrier never took its parcel"
		}},
		{"the carrier took a parcel exactly for each completed or written-off order", func() string {
			id := fresh("o-operator-dispatched-")
			w.sold(id, wid, sku, 1, 100, 0, "carrier")
			return "order " + id + " is completed but the carrier never took its parcel"
		}},
		{"stock committed is each order's lines when shipped, nothing otherwise", func() string {
			id := fresh("o-uncommitted-")
			w.sold(id, wid, sku, 2, 100, 0, "commit")
			return "order " + id + " is completed: 0 of sku " + sku + " committed, its lines say 2"
		}},
		{"the amount captured is each order's total when shipped, nothing otherwise", func() string {
			id := fresh("o-underpaid-")
			w.sold(id, wid, sku, 3, 100, 120)
			return "order " + id + " is completed with a total of 300 EUR, but 120 was captured (less refunds)"
		}},
		{"the amount captured is each order's total when shipped, nothing otherwise", func() string {
			// Paid in full, then refunded in part by hand.
			id := fresh("o-refunded-")
			w.sold(id, wid, sku, 1, 100, 0)
			w.mustAccept("RefundCapture", commands.RefundCapture{WalletID: wid, OrderID: id, Amount: 40})
			return "order " + id + " is completed with a total of 100 EUR, but 60 was captured (less refunds)"
		}},
		{"holds, captures and reservations only for orders that exist", func() string {
			id := fresh("o-ghost-")
			w.mustAccept("AuthoriseHold", commands.AuthoriseHold{WalletID: wid, OrderID: id, Amount: 50, Currency: "EUR"})
			return "wallet " + wid + " holds 50 for order " + id + ", which does not exist"
		}},
		{"holds, captures and reservations only for orders that exist", func() string {
			id := fresh("o-ghost-")
			w.mustAccept("ReserveStock", commands.ReserveStock{SKU: sku, OrderID: id, Quantity: 1})
			return "sku " + sku + " reserves 1 for order " + id + ", which does not exist"
		}},
		{"the carrier took a parcel exactly for each completed or written-off order", func() string {
			// A booking still pending past its ready time: the carrier has
			// the parcel (it decides when next asked, and nobody asks).
			id := w.cancelled(wid, sku)
			w.exec(`INSERT INTO carrier_sim_bookings (dispatch_key, shipment_id, tracking_number, ready_at, state)
				VALUES ($1, $2, 'T-2', now() - interval '1 second', 'pending')`, fresh("k-"), "shp-"+id)
			return "order " + id + " is cancelled but the carrier took its parcel"
		}},
		{"the carrier took a parcel exactly for each completed or written-off order", func() string {
			// A booking of a cancelled order not withdrawn: the carrier takes it later.
			id, key := w.cancelled(wid, sku), fresh("k-")
			w.exec(`INSERT INTO carrier_sim_bookings (dispatch_key, shipment_id, tracking_number, ready_at, state)
				VALUES ($1, $2, 'T-3', now() + interval '1 hour', 'pending')`, key, "shp-"+id)
			return "order " + id + " is cancelled but its booking " + key + " is still pending with the carrier"
		}},
		{"no event missing or duplicated in any projection", func() string {
			w.exec(`UPDATE read_orders SET version = version - 1 WHERE order_id = $1`, oid)
			return "read_orders " + oid + " is at version 1, its stream at 2"
		}},
		{"no command id produced two sets of events", func() string {
			var cmd string
			if err := pool.QueryRow(w.ctx, `SELECT command_id FROM commands WHERE stream_id = $1 AND command_type = 'TopUpWallet'`, wid).Scan(&cmd); err != nil {
				t.Fatal(err)
			}
			w.exec(`UPDATE events SET causation_id = $1 WHERE causation_id = (SELECT command_id FROM commands WHERE stream_id = $2 AND command_type = 'OpenWallet')`, cmd, wid)
			return "command " + cmd + " caused 2 events, its log row names 1"
		}},
		{"every wallet's balance is its confirmed payments and operators' credits, less captures, plus refunds", func() string {
			id := fresh("w-minted-")
			w.forge(wallet.StreamType, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}, wallet.ToppedUp{Amount: 1_000_000, Currency: "EUR"})
			return "wallet " + id + ": a credit of 1000000 at"
		}},
		{"every wallet's balance is its confirmed payments and operators' credits, less captures, plus refunds", func() string {
			id, pid := fresh("w-paid-"), fresh("pay-")
			w.forge(wallet.StreamType, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}, wallet.ToppedUp{Amount: 700, Currency: "EUR", PaymentID: pid})
			return "wallet " + id + ": credited 700 for payment " + pid + ", which the payment provider never took"
		}},
		{"every wallet's balance is its confirmed payments and operators' credits, less captures, plus refunds", func() string {
			pid := fresh("pay-")
			w.exec(`INSERT INTO payment_sim_intents (intent_id, idempotency_key, payment_id, wallet_id, amount, currency, client_secret, status, outcome, decide_at)
				VALUES ($1, $1, $1, $2, 900, 'EUR', 'secret', 'succeeded', 'succeeded', now())`, pid, wid)
			return "payment " + pid + ": the provider took 900 for wallet " + wid + ", never credited"
		}},
		{"every order line is priced by the catalogue as of its placement", func() string {
			id := fresh("o-cheap-")
			w.forge(order.StreamType, id, 0, order.Placed{OrderID: id, CustomerID: "c", WalletID: wid, Currency: "EUR",
				Lines: []order.Line{{SKU: sku, Quantity: 1, UnitPrice: 1, PriceVersion: 1}}, Total: 1})
			return "order " + id + ": line " + sku + " at 1 EUR, but price version 1 is 100 EUR"
		}},
		{"every message on every topic matches the AsyncAPI document", func() string {
			w.exec(`UPDATE watermill_wallet_events SET payload = jsonb_set(payload::jsonb, '{amount}', '"lots"')::json
				WHERE metadata->>'stream_id' = $1 AND metadata->>'event_type' = 'wallet.topped_up'`, wid)
			return `wallet.topped_up payload at "/amount": got string, want integer`
		}},
	}
	for _, c := range cases {
		want := c.tamper()
		found := w.check(c.check)
		if !strings.Contains(strings.Join(found, "\n"), want) {
			t.Errorf("%s: want a failure naming %q, got %q", c.check, want, found)
		}
	}
}
