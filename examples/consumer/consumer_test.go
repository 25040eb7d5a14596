package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// The example consumer, against topics orderflow's own write path wrote
// (the command bus: events, command log and outbox in one transaction):
// it starts its new consumer group at the beginning, decodes both event
// types into its typed values, and, when everything is delivered again (a
// crash before the acks), hands nothing on twice.
func TestTheExampleConsumerReadsOrderflowsTopics(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	do := func(c commands.Command) {
		t.Helper()
		if _, err := bus.Dispatch(ctx, commands.Request{Command: c, Type: c.CommandType(), Internal: true, Actor: "test"}); err != nil {
			t.Fatalf("%s: %v", c.CommandType(), err)
		}
	}
	w, sku, shipped, cancelled := "w-"+uuid.NewString(), "sku-"+uuid.NewString(), "o-"+uuid.NewString(), "o-"+uuid.NewString()
	do(commands.OpenWallet{WalletID: w, CustomerID: "c-" + w, Currency: "EUR", Name: "Ada's wallet"})
	do(commands.TopUpWallet{WalletID: w, Amount: 10000, Reason: "test funds"})
	do(commands.ReceiveStock{SKU: sku, Quantity: 5})
	do(commands.SetPrice{SKU: sku, UnitPrice: 1250, Currency: "EUR"})
	addr := order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}
	for _, id := range []string{shipped, cancelled} {
		do(commands.PlaceOrder{OrderID: id, CustomerID: "c-" + w, WalletID: w, Currency: "EUR",
			Lines: []commands.OrderLine{{SKU: sku, Quantity: 2, UnitPrice: 1250}}, ShippingAddress: addr})
	}
	do(commands.ConfirmOrder{OrderID: shipped})
	do(commands.MarkOrderShipped{OrderID: shipped, ShipmentID: "shp-1"})
	do(commands.CancelOrder{OrderID: cancelled, Reason: "test"})

	var mu sync.Mutex
	placed := map[string]OrderPlaced{}
	ships := map[string]OrderShipped{}
	c := &Consumer{
		Placed:  func(m Meta, e OrderPlaced) { mu.Lock(); defer mu.Unlock(); placed[e.OrderID] = e },
		Shipped: func(m Meta, e OrderShipped) { mu.Lock(); defer mu.Unlock(); ships[m.StreamID] = e },
	}
	group := "example_consumer_test"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// run runs the consumer until it has acknowledged the whole topic.
	run := func() {
		t.Helper()
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, pool, group, quiet) }()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			// The commands ran one after another: the last offset is the last commit.
			var caughtUp bool
			if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT offset_acked FROM watermill_offsets_order_events WHERE consumer_group = $1), -1)
				= (SELECT max("offset") FROM watermill_order_events)`, group).Scan(&caughtUp); err == nil && caughtUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the consumer never caught up with order_events")
			}
		}
		cancel()
		<-done
	}
	run()

	mu.Lock()
	p := placed[shipped]
	if len(placed) != 2 || p.Total != 2500 || p.Currency != "EUR" || len(p.Lines) != 1 || p.Lines[0].SKU != sku || p.ShippingAddress.Country != "FR" || p.CustomerID != "c-"+w {
		t.Fatalf("placed orders: %+v", placed)
	}
	if len(ships) != 1 || ships[shipped].ShipmentID != "shp-1" {
		t.Fatalf("shipped orders: %+v", ships)
	}
	mu.Unlock()
	if c.Duplicates != 0 {
		t.Fatalf("%d duplicates on the first delivery", c.Duplicates)
	}

	// Everything again, as after a crash before the acks: the group's
	// offset goes back to the start. Nothing is handed on twice.
	if _, err := pool.Exec(ctx, `UPDATE watermill_offsets_order_events SET offset_acked = 0, last_processed_transaction_id = '0'
		WHERE consumer_group = $1`, group); err != nil {
		t.Fatal(err)
	}
	placed, ships = map[string]OrderPlaced{}, map[string]OrderShipped{}
	run()
	var total int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM watermill_order_events`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if len(placed) != 0 || len(ships) != 0 || c.Duplicates != total {
		t.Fatalf("redelivered: %d placed, %d shipped handed on again; %d duplicates of %d messages", len(placed), len(ships), c.Duplicates, total)
	}
}
