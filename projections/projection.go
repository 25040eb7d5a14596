// Package projections holds orderflow's read models: the Watermill handlers
// that keep them (each in the subscriber's own transaction, idempotent on
// redelivery), their queries, status, rebuild and poison handling.
package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commands"
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
	// OnEvent or OnCommand applies one delivered message inside tx.
	OnEvent   func(ctx context.Context, tx pgx.Tx, e eventstore.Envelope) error
	OnCommand func(ctx context.Context, tx pgx.Tx, c commands.Logged) error
}

// Topic is the Watermill topic the projection consumes.
func (p Projection) Topic() string {
	if p.Source == outbox.CommandsTopic {
		return outbox.CommandsTopic
	}
	return outbox.Topic(p.Source)
}

// ErrGap means an event arrived before an earlier event of its stream was
// applied (that one is in the poison topic): it is retried and poisoned in
// turn, so a stream's row never skips a version; replaying the poison topic
// in order repairs it.
var ErrGap = errors.New("earlier event of the stream not applied yet")

// All returns every projection. Names are consumer groups: never rename one.
func All() []Projection {
	return []Projection{ordersProjection(), timelineProjection(), inventoryProjection(), walletsProjection()}
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

// Handler is the projection's Watermill handler.
func (p Projection) Handler(reg *eventstore.Registry) delivery.Handler {
	return delivery.Handler{Name: p.Name, ConsumerGroup: p.Name, Topic: p.Topic(), Handle: func(ctx context.Context, msg *message.Message) error {
		tx, err := delivery.Tx(ctx)
		if err != nil {
			return err
		}
		return p.ApplyMessage(ctx, tx, reg, msg)
	}}
}

// ApplyMessage applies msg in a savepoint of tx and advances the
// checkpoint: a failed attempt leaves nothing behind in the shared
// subscriber transaction.
func (p Projection) ApplyMessage(ctx context.Context, tx pgx.Tx, reg *eventstore.Registry, msg *message.Message) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	defer sp.Rollback(ctx)
	var position int64
	var at time.Time
	if p.OnCommand != nil {
		c, err := commands.DecodeLogged(msg)
		if err != nil {
			return err
		}
		if err := p.OnCommand(ctx, sp, c); err != nil {
			return err
		}
		position, at = c.GlobalPosition, c.RecordedAt
	} else {
		e, err := outbox.Envelope(msg)
		if err != nil {
			return err
		}
		if e.Event, e.Data, e.SchemaVersion, err = reg.Decode(e.EventType, e.SchemaVersion, e.Data); err != nil {
			return err
		}
		if err := p.OnEvent(ctx, sp, e); err != nil {
			return fmt.Errorf("%s at position %d: %w", e.EventType, e.GlobalPosition, err)
		}
		position, at = e.GlobalPosition, e.RecordedAt
	}
	if err := checkpoint(ctx, sp, p.Name, position, at); err != nil {
		return err
	}
	return sp.Commit(ctx)
}

func checkpoint(ctx context.Context, tx pgx.Tx, name string, position int64, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, position, applied, last_event_at, updated_at)
		VALUES ($1, $2, 1, $3, now())
		ON CONFLICT (projection) DO UPDATE SET position = greatest(projection_checkpoints.position, EXCLUDED.position),
		    applied = projection_checkpoints.applied + 1, last_event_at = EXCLUDED.last_event_at, updated_at = now()`,
		name, position, at)
	return err
}

// advance applies the event with stream version v to the row of key in
// table: insert runs for the stream's first event, update (which must
// compare "version = $v - 1") for the others. A redelivered event (the row
// is at v or beyond) changes nothing; a missing predecessor is ErrGap.
func advance(ctx context.Context, tx pgx.Tx, table, keyCol, key string, v int64, insert, update string, args ...any) error {
	sql := update
	if v == 1 {
		sql = insert
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil || tag.RowsAffected() == 1 {
		return err
	}
	var current int64
	err = tx.QueryRow(ctx, fmt.Sprintf(`SELECT version FROM %s WHERE %s = $1`, table, keyCol), key).Scan(&current)
	if errors.Is(err, pgx.ErrNoRows) {
		current = 0
	} else if err != nil {
		return err
	}
	if current >= v {
		return nil
	}
	return fmt.Errorf("%w: %s %s is at version %d, event is version %d", ErrGap, table, key, current, v)
}

// orderID is the order a command concerns: its stream, its payload's
// order_id, or the order_id the saga put in its metadata.
func orderID(c commands.Logged) string {
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
