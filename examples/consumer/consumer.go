package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Topic is the topic this consumer reads (see docs/asyncapi.json).
const Topic = "order_events"

// OrderPlaced is the payload of order.placed, schema version 1, with the
// fields this consumer needs (it ignores the others, as consumers must:
// fields may be added within a version).
type OrderPlaced struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	WalletID   string `json:"wallet_id"`
	Currency   string `json:"currency"`
	Lines      []struct {
		SKU       string `json:"sku"`
		Quantity  int64  `json:"quantity"`
		UnitPrice int64  `json:"unit_price"`
	} `json:"lines"`
	Total int64 `json:"total"`
	// The name and address lines are personal (x-personal): sealed with
	// the customer's key, unreadable here. The country is not.
	ShippingAddress struct {
		Country string `json:"country"`
	} `json:"shipping_address"`
}

// OrderShipped is the payload of order.shipped, schema version 1.
type OrderShipped struct {
	ShipmentID string `json:"shipment_id"`
}

// Meta is what this consumer reads of a message's metadata.
type Meta struct {
	UUID, EventType, StreamID, CorrelationID string
	RecordedAt                               string
}

// Consumer hands each order.placed and order.shipped to its functions,
// once: a message redelivered (at least once is the promise) is recognised
// by its UUID and skipped.
type Consumer struct {
	Placed  func(Meta, OrderPlaced)
	Shipped func(Meta, OrderShipped)

	mu   sync.Mutex
	seen map[string]bool // message UUIDs handled; a real consumer stores them with its effect, in one transaction
	// Duplicates counts redeliveries skipped.
	Duplicates int
}

// Run subscribes to Topic with watermill-sql's subscriber as group, in the
// tables orderflow's migrations created, and handles messages until ctx ends.
func (c *Consumer) Run(ctx context.Context, pool *pgxpool.Pool, group string, log *slog.Logger) error {
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		ConsumerGroup:    group,
		SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: false,                  // orderflow's migrations own the tables
		PollInterval:     100 * time.Millisecond, // watermill-sql's default is 1 s
	}, watermill.NewSlogLogger(log))
	if err != nil {
		return err
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, Topic)
	if err != nil {
		return err
	}
	for msg := range msgs {
		if err := c.Handle(msg); err != nil {
			log.Error("message not handled; it is delivered again", "uuid", msg.UUID, "err", err)
			msg.Nack()
			continue
		}
		msg.Ack()
	}
	return ctx.Err()
}

// Handle decodes one message and hands it on, unless it was handled before.
func (c *Consumer) Handle(msg *message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[msg.UUID] {
		c.Duplicates++
		return nil
	}
	md := msg.Metadata
	m := Meta{UUID: msg.UUID, EventType: md.Get("event_type"), StreamID: md.Get("stream_id"),
		CorrelationID: md.Get("correlation_id"), RecordedAt: md.Get("recorded_at")}
	switch m.EventType {
	case "order.placed", "order.shipped":
		// This consumer knows version 1; a later version is a new contract.
		if v := md.Get("schema_version"); v != "1" {
			return fmt.Errorf("%s has schema version %s, this consumer reads 1", m.EventType, v)
		}
	default:
		c.seen[msg.UUID] = true
		return nil // not an event this consumer needs
	}
	var err error
	switch m.EventType {
	case "order.placed":
		var e OrderPlaced
		if err = json.Unmarshal(msg.Payload, &e); err == nil && c.Placed != nil {
			c.Placed(m, e)
		}
	case "order.shipped":
		var e OrderShipped
		if err = json.Unmarshal(msg.Payload, &e); err == nil && c.Shipped != nil {
			c.Shipped(m, e)
		}
	}
	if err != nil {
		return fmt.Errorf("decode %s %s: %w", m.EventType, msg.UUID, err)
	}
	c.seen[msg.UUID] = true
	return nil
}
