// Command consumer is an example consumer of orderflow's topics: it
// subscribes to order_events with watermill-sql's own subscriber under a
// consumer group of its own, decodes order.placed and order.shipped into
// typed values (written from the AsyncAPI document, docs/asyncapi.json) and
// deduplicates redeliveries by message UUID. See docs/consumers.md.
//
//	go run ./examples/consumer -database-url "$DATABASE_URL" -group my_first_consumer
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	dbURL := flag.String("database-url", os.Getenv("DATABASE_URL"), "orderflow's PostgreSQL (default $DATABASE_URL)")
	group := flag.String("group", "example_consumer", "the consumer group: a new name starts at the topic's beginning; a name is permanent")
	flag.Parse()
	if *dbURL == "" {
		fmt.Fprintln(os.Stderr, "consumer: set -database-url or DATABASE_URL (against `orderflow dev`: cat .orderflow/database-url)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, *dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	defer pool.Close()

	c := &Consumer{
		Placed: func(m Meta, e OrderPlaced) {
			fmt.Printf("%s placed: order %s of customer %s, %d lines, %d %s, to %s\n", m.RecordedAt, e.OrderID, e.CustomerID, len(e.Lines), e.Total, e.Currency, e.ShippingAddress.Country)
		},
		Shipped: func(m Meta, e OrderShipped) {
			fmt.Printf("%s shipped: order %s in shipment %s\n", m.RecordedAt, m.StreamID, e.ShipmentID)
		},
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := c.Run(ctx, pool, *group, log); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
