package sagas

// The saga starter: the Watermill handler on order_events that records a
// saga start for every placed order in the saga_starts inbox, in the
// consumer's own transaction, so that a placed order's saga is started
// (by the launcher) even when Temporal is away when the order commits.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/tracing"
	"github.com/orderflow/orderflow/workflows"
)

// StarterGroup is the saga starter's consumer group on order_events: permanent.
const StarterGroup = "saga_starter"

// Starter is the Watermill handler that queues a saga for every placed
// order: it records the start in the saga_starts inbox, in the consumer's
// transaction, so the offset is acknowledged only with the start recorded.
// Launcher starts them. It consumes a batch per transaction (HandleBatch):
// a message that fails is retried outside the transaction that holds the
// group's offset, and then poisoned, so it holds back no other consumer.
func Starter(shippingDeadline time.Duration) delivery.Handler {
	return delivery.Handler{Name: StarterGroup, ConsumerGroup: StarterGroup, Topic: outbox.Topic(order.StreamType),
		Handle: func(ctx context.Context, msg *message.Message) error {
			tx, err := delivery.Tx(ctx)
			if err != nil {
				return err
			}
			// The start continues this handling's trace (tracing.Inject).
			return queue(ctx, tx, msg, tracing.Inject(ctx), shippingDeadline)
		},
		HandleBatch: func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
			for _, msg := range msgs {
				// One message continues its trace in ctx; in a larger
				// batch each start continues its own order's trace.
				traceparent := msg.Metadata.Get(outbox.MetaTraceParent)
				if len(msgs) == 1 {
					traceparent = tracing.Inject(ctx)
				}
				if err := queue(ctx, tx, msg, traceparent, shippingDeadline); err != nil {
					return err
				}
			}
			return nil
		}}
}

// queue records the saga start of an order.placed message in tx (other
// events of the topic are no start). The notification is delivered when
// tx commits: it wakes the launcher at once.
func queue(ctx context.Context, tx pgx.Tx, msg *message.Message, traceparent string, shippingDeadline time.Duration) error {
	if msg.Metadata.Get(outbox.MetaEventType) != (order.Placed{}).EventType() {
		return nil
	}
	var p order.Placed
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		return delivery.Permanent(fmt.Errorf("order.placed payload: %w", err))
	}
	in := workflows.Input{OrderID: p.OrderID, CustomerID: p.CustomerID, WalletID: p.WalletID, Currency: p.Currency, Lines: p.Lines,
		Total: p.Total, ShippingAddress: p.ShippingAddress, CorrelationID: msg.Metadata.Get(outbox.MetaCorrelationID),
		Actor: msg.Metadata.Get(outbox.MetaActor), ShippingDeadline: shippingDeadline}
	_, err := tx.Exec(ctx, `WITH queued AS (
		INSERT INTO saga_starts (order_id, input, traceparent) VALUES ($1, $2, nullif($3, '')) ON CONFLICT (order_id) DO NOTHING RETURNING 1)
		SELECT pg_notify('`+startsChannel+`', '') FROM queued`, p.OrderID, in, traceparent)
	return err
}

// startsChannel is the PostgreSQL notification channel of new saga starts.
const startsChannel = "orderflow_saga_starts"
