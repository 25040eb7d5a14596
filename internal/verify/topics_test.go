package verify_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// Messages as orderflow really writes them (the command bus's events and
// commands, personal fields sealed, and what a failing handler poisons)
// match the AsyncAPI document, read back from the topic tables.
func TestRealMessagesMatchTheContract(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	w, sku, o := "w-"+uuid.NewString(), "sku-"+uuid.NewString(), "o-"+uuid.NewString()
	for _, c := range []commands.Command{
		commands.OpenWallet{WalletID: w, CustomerID: "c-" + w, Currency: "EUR", Name: "Ada's"},
		commands.RenameWallet{WalletID: w, Name: "Grace's"},
		commands.TopUpWallet{WalletID: w, Amount: 100, Reason: "test funds"},
		commands.ReceiveStock{SKU: sku, Quantity: 1},
		commands.SetPrice{SKU: sku, UnitPrice: 10, Currency: "EUR"},
		commands.PlaceOrder{OrderID: o, CustomerID: "c-" + w, WalletID: w, Currency: "EUR", Lines: []commands.OrderLine{{SKU: sku, Quantity: 1, UnitPrice: 10}},
			ShippingAddress: order.Address{Name: "Ada", Line1: "1 Main St", Line2: "Flat 2", City: "Paris", PostalCode: "75001", Country: "FR"}},
		commands.AuthoriseHold{WalletID: w, OrderID: o, Amount: 1000, Currency: "EUR"}, // rejected: insufficient funds
	} {
		dispatch(t, bus, c)
	}
	// The saga schedules the shipment with the order's address as the
	// order.placed event holds it: sealed.
	var addr order.Address
	if err := pool.QueryRow(ctx, `SELECT data->'shipping_address' FROM events WHERE stream_id = $1 AND event_type = 'order.placed'`, o).Scan(&addr); err != nil {
		t.Fatal(err)
	}
	dispatch(t, bus, commands.ScheduleShipment{ShipmentID: "shp-" + o, OrderID: o, Address: addr})
	dispatch(t, bus, commands.CancelOrder{OrderID: o, Reason: "test"}) // every order ends (verify's other tests)

	// A handler that gives up on every wallet event poisons them (this
	// test's wallet's three, and any other test's before).
	group := "contract_poisoner"
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, RetryInterval: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		delivery.Handler{Name: group, ConsumerGroup: group, Topic: "wallet_events",
			Handle: func(context.Context, *message.Message) error { return errors.New("no") }})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(runCtx) }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM watermill_poison WHERE metadata->>'handler_poisoned' = $1
			AND metadata->>'stream_id' = $2`, group, w).Scan(&n); err == nil && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the wallet events were never poisoned")
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The group is gone: the other tests' messages wait for nobody.
	if _, err := pool.Exec(ctx, `DELETE FROM watermill_offsets_wallet_events WHERE consumer_group = $1`, group); err != nil {
		t.Fatal(err)
	}

	fails, err := asyncapi.CheckTopics(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fails {
		t.Error(f)
	}
	// Nothing of this test is left for verify's other tests: its poison is
	// an operator's skip, its order's saga one the launcher started.
	if _, err := pool.Exec(ctx, `INSERT INTO poison_resolutions (poison_offset, outcome)
		SELECT "offset", 'skipped' FROM watermill_poison WHERE metadata->>'handler_poisoned' = $1`, group); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO saga_starts (order_id, input, started_at, finished_at) VALUES ($1, '{}', now(), now())`, o); err != nil {
		t.Fatal(err)
	}
}

func dispatch(t *testing.T, bus *commands.Bus, c commands.Command) {
	t.Helper()
	_, err := bus.Dispatch(context.Background(), commands.Request{Command: c, Type: c.CommandType(), Internal: true, Actor: "test"})
	if err != nil && !errors.As(err, new(*commands.RejectedError)) {
		t.Fatalf("%s: %v", c.CommandType(), err)
	}
}
