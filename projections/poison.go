package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// Poisoned is one message on the poison topic.
type Poisoned struct {
	Offset    int64             `json:"offset"`
	MessageID string            `json:"message_id"`
	Handler   string            `json:"handler"`
	Topic     string            `json:"topic"`
	Reason    string            `json:"reason"`
	EventType string            `json:"event_type,omitempty"`
	StreamID  string            `json:"stream_id,omitempty"`
	Position  string            `json:"global_position,omitempty"`
	At        time.Time         `json:"poisoned_at"`
	Resolved  string            `json:"resolved,omitempty"`
	Metadata  map[string]string `json:"-"`
	Payload   json.RawMessage   `json:"-"`
}

func (p Poisoned) message() *message.Message {
	m := message.NewMessage(p.MessageID, message.Payload(p.Payload))
	for k, v := range p.Metadata {
		m.Metadata.Set(k, v)
	}
	return m
}

const poisonSQL = `SELECT pm."offset", pm.uuid, pm.payload, pm.metadata, pm.created_at, coalesce(pr.outcome, '')
	FROM watermill_poison pm LEFT JOIN poison_resolutions pr ON pr.poison_offset = pm."offset" `

func scanPoisoned(row pgx.CollectableRow) (Poisoned, error) {
	var p Poisoned
	var payload, md []byte
	if err := row.Scan(&p.Offset, &p.MessageID, &payload, &md, &p.At, &p.Resolved); err != nil {
		return p, err
	}
	p.Payload = payload
	if err := json.Unmarshal(md, &p.Metadata); err != nil {
		return p, err
	}
	p.Handler = p.Metadata[middleware.PoisonedHandlerKey]
	p.Topic = p.Metadata[middleware.PoisonedTopicKey]
	p.Reason = p.Metadata[middleware.ReasonForPoisonedKey]
	p.EventType = p.Metadata[outbox.MetaEventType]
	p.StreamID = p.Metadata[outbox.MetaStreamID]
	p.Position = p.Metadata[outbox.MetaGlobalPosition]
	return p, nil
}

// Poison lists poison messages after the one at offset after (0: from
// the start) in the order they were poisoned, which is commit order: a
// message is listed once every transaction older than its own has ended,
// so paging never skips one poisoned by a transaction that committed late
// (two consumer groups poison at once). With unresolvedOnly, only those
// not yet replayed or skipped.
func (r *Reader) Poison(ctx context.Context, unresolvedOnly bool, after int64, limit int) ([]Poisoned, error) {
	c, found, err := commitorder.At(ctx, r.pool, "watermill_poison", `"offset"`, after)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("poison message %d: %w", after, ErrBadCursor)
	}
	where := `WHERE ` + commitorder.After(`pm."offset"`, 1) + ` AND ` + commitorder.Visible + ` `
	if unresolvedOnly {
		where += "AND pr.poison_offset IS NULL "
	}
	rows, _ := r.pool.Query(ctx, poisonSQL+where+commitorder.Order(`pm."offset"`)+` LIMIT $3`, append(c.Args(), limit)...)
	return pgx.CollectRows(rows, scanPoisoned)
}

// ErrResolved is returned when replaying a poison message that was resolved.
var ErrResolved = errors.New("poison message already resolved")

// ReplayPoison runs the poison message at offset through the handler
// that poisoned it again (after a fix) and marks it resolved, in one
// transaction: a projection's, or any other consumer's among consumers
// (the saga starter's: the process passes the handlers it runs). The
// handler's consumer group is held meanwhile (its offset row), so the
// replay and the group's own consumer take turns. A message that still
// fails stays unresolved and the error says why.
func ReplayPoison(ctx context.Context, pool *pgxpool.Pool, reg *eventstore.Registry, offset int64, consumers ...delivery.Handler) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, poisonSQL+`WHERE pm."offset" = $1 FOR UPDATE OF pm`, offset)
		p, err := one(pgx.CollectExactlyOneRow(rows, scanPoisoned))
		if err != nil {
			return fmt.Errorf("poison message %d: %w", offset, err)
		}
		if p.Resolved != "" {
			return fmt.Errorf("poison message %d: %w (%s)", offset, ErrResolved, p.Resolved)
		}
		if proj, ok := ByName(p.Handler); ok {
			if _, err := outbox.Consumer(ctx, tx, proj.Topic(), proj.Name, true); err != nil {
				return err
			}
			if err := proj.ApplyMessages(ctx, tx, reg, p.message()); err != nil {
				return fmt.Errorf("poison message %d still fails: %w", offset, err)
			}
		} else {
			i := slices.IndexFunc(consumers, func(h delivery.Handler) bool { return h.Name == p.Handler })
			if i < 0 {
				return fmt.Errorf("poison message %d came from handler %q: %w", offset, p.Handler, ErrUnknownHandler)
			}
			h := consumers[i]
			if _, err := outbox.Consumer(ctx, tx, h.Topic, h.ConsumerGroup, true); err != nil {
				return err
			}
			if err := delivery.Replay(ctx, tx, h, p.message()); err != nil {
				return fmt.Errorf("poison message %d still fails: %w", offset, err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO poison_resolutions (poison_offset, outcome) VALUES ($1, 'replayed')`, offset)
		return err
	})
}

// ErrUnknownHandler is a poison message of a handler this process neither
// projects nor runs.
var ErrUnknownHandler = errors.New("no such handler to replay it with")

// UnresolvedPoison counts the unresolved poison messages of every handler
// (every consumer group, projections or not) that has any.
func UnresolvedPoison(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) (map[string]int64, error) {
	rows, _ := q.Query(ctx, `SELECT coalesce(pm.metadata->>'`+middleware.PoisonedHandlerKey+`', ''), count(*)
		FROM watermill_poison pm LEFT JOIN poison_resolutions pr ON pr.poison_offset = pm."offset"
		WHERE pr.poison_offset IS NULL GROUP BY 1`)
	out := map[string]int64{}
	var handler string
	var n int64
	_, err := pgx.ForEachRow(rows, []any{&handler, &n}, func() error { out[handler] = n; return nil })
	return out, err
}
