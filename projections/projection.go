// Package projections holds orderflow's read models: the Watermill handlers
// that keep them (each in the subscriber's own transaction, idempotent on
// redelivery), their queries, status, rebuild and poison handling.
package projections

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// Projection is one read model fed by one topic.
type Projection struct {
	// Name is the projection's consumer group and checkpoint key: permanent.
	Name string
	// Source is the stream type whose events feed it, or "commands" for the
	// command log.
	Source string
	// Tables are the read model's tables, emptied by a rebuild.
	Tables []string
	// OnEvents or OnCommands applies delivered messages, in order, inside
	// tx: a batch set-based, or one message (the poison path).
	OnEvents   func(ctx context.Context, tx pgx.Tx, es []eventstore.Envelope) error
	OnCommands func(ctx context.Context, tx pgx.Tx, cs []commandlog.Logged) error
}

// Topic is the Watermill topic the projection consumes.
func (p Projection) Topic() string {
	if p.Source == outbox.CommandsTopic {
		return outbox.CommandsTopic
	}
	return outbox.Topic(p.Source)
}

// ErrGap means an event arrived before an earlier event of its stream was
// applied (that one is in the poison topic): no retry can apply it before
// that one is replayed, so it is poisoned in turn at once (a permanent
// failure) and a stream's row never skips a version; replaying the poison
// topic in order repairs it.
var ErrGap = errors.New("earlier event of the stream not applied yet")

// All returns every projection. Names are consumer groups: never rename one.
func All() []Projection {
	return []Projection{ordersProjection(), timelineProjection(), inventoryProjection(), walletsProjection(), paymentsProjection()}
}

// ByName finds a projection.
func ByName(name string) (Projection, bool) {
	for _, p := range All() {
		if p.Name == name {
			return p, true
		}
	}
	return Projection{}, false
}

// Handler is the projection's handler: batches of messages applied
// set-based, and one message at a time when a batch fails (retries, then
// the poison topic).
func (p Projection) Handler(reg *eventstore.Registry) delivery.Handler {
	var read func(context.Context, commitorder.Querier, commitorder.Cursor, int) ([]wsql.Row, error)
	if p.OnCommands != nil {
		read = commandlog.Rows // the commands topic's table is a view over the log
	}
	return delivery.Handler{Name: p.Name, ConsumerGroup: p.Name, Topic: p.Topic(), Read: read,
		Handle: func(ctx context.Context, msg *message.Message) error {
			tx, err := delivery.Tx(ctx)
			if err != nil {
				return err
			}
			err = p.ApplyMessages(ctx, tx, reg, msg)
			if errors.Is(err, ErrGap) {
				return delivery.Permanent(err)
			}
			return err
		},
		// A failed batch rolls back its whole transaction: no savepoint.
		HandleBatch: func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
			return p.apply(ctx, tx, reg, msgs)
		}}
}

// ApplyMessages applies msgs in a savepoint of tx and advances the
// checkpoint: a failed attempt leaves nothing behind in the shared
// transaction (a message handled alone, a poison replay).
func (p Projection) ApplyMessages(ctx context.Context, tx pgx.Tx, reg *eventstore.Registry, msgs ...*message.Message) error {
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return p.apply(ctx, sp, reg, msgs) })
}

// apply applies msgs, in order, inside tx and advances the checkpoint.
func (p Projection) apply(ctx context.Context, tx pgx.Tx, reg *eventstore.Registry, msgs []*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var position int64
	var at time.Time
	if p.OnCommands != nil {
		cs := make([]commandlog.Logged, 0, len(msgs))
		for _, m := range msgs {
			c, err := commandlog.DecodeLogged(m)
			if err != nil {
				return err
			}
			cs = append(cs, c)
		}
		if err := p.OnCommands(ctx, tx, cs); err != nil {
			return err
		}
		position, at = cs[len(cs)-1].GlobalPosition, cs[len(cs)-1].RecordedAt
	} else {
		es := make([]eventstore.Envelope, 0, len(msgs))
		for _, m := range msgs {
			e, err := outbox.Envelope(m)
			if err != nil {
				return err
			}
			if e.Event, e.Data, e.SchemaVersion, err = reg.Decode(e.EventType, e.SchemaVersion, e.Data); err != nil {
				return err
			}
			es = append(es, e)
		}
		if err := p.OnEvents(ctx, tx, es); err != nil {
			return err
		}
		position, at = es[len(es)-1].GlobalPosition, es[len(es)-1].RecordedAt
	}
	return checkpoint(ctx, tx, p.Name, len(msgs), position, at)
}

func checkpoint(ctx context.Context, tx pgx.Tx, name string, applied int, position int64, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, position, applied, last_event_at, updated_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (projection) DO UPDATE SET position = greatest(projection_checkpoints.position, EXCLUDED.position),
		    applied = projection_checkpoints.applied + EXCLUDED.applied, last_event_at = EXCLUDED.last_event_at, updated_at = now()`,
		name, position, applied, at)
	return err
}

// orderID is the order a command concerns: its stream, its payload's
// order_id, or the order_id the saga put in its metadata.
func orderID(c commandlog.Logged) string {
	if c.StreamType == "order" {
		return c.StreamID
	}
	var p struct {
		OrderID string `json:"order_id"`
	}
	if json.Unmarshal(c.Payload, &p) == nil && p.OrderID != "" {
		return p.OrderID
	}
	return c.Metadata["order_id"]
}
