package eventstore

// Reading events: one stream by version, the global log in commit order
// (never skipping a transaction that commits late), events by id, and the
// decoding of rows through the registry and its upcasters.

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commitorder"
)

// ReadStream returns up to limit events of one stream after version after.
func (s *Store) ReadStream(ctx context.Context, streamType, streamID string, after int64, limit int) ([]Envelope, error) {
	return s.query(ctx, `WHERE stream_type = $1 AND stream_id = $2 AND stream_version > $3 ORDER BY stream_version LIMIT $4`,
		streamType, streamID, after, limit)
}

// Filter narrows a read of the global log; empty fields match everything.
type Filter struct {
	StreamType string
	StreamID   string
	EventTypes []string
	// CustomerID keeps the events of that customer's streams only.
	CustomerID string
}

// ReadAll returns up to limit events after cursor in commit order. It reads
// only transactions older than the oldest one still running, so an event
// whose transaction commits late is never skipped: it is not visible to this
// query, nor is anything after it, until it has committed.
func (s *Store) ReadAll(ctx context.Context, after commitorder.Cursor, limit int, f Filter) ([]Envelope, error) {
	where := `WHERE ` + commitorder.After("global_position", 1) + ` AND ` + commitorder.Visible
	args := after.Args()
	if f.StreamType != "" {
		args = append(args, f.StreamType)
		where += fmt.Sprintf(" AND stream_type = $%d", len(args))
	}
	if f.StreamID != "" {
		args = append(args, f.StreamID)
		where += fmt.Sprintf(" AND stream_id = $%d", len(args))
	}
	if len(f.EventTypes) > 0 {
		args = append(args, f.EventTypes)
		where += fmt.Sprintf(" AND event_type = ANY($%d)", len(args))
	}
	if f.CustomerID != "" {
		args = append(args, f.CustomerID)
		where += fmt.Sprintf(" AND customer_id = $%d", len(args))
	}
	args = append(args, limit)
	return s.query(ctx, where+fmt.Sprintf(" %s LIMIT $%d", commitorder.Order("global_position"), len(args)), args...)
}

// CursorAt returns the cursor of the event at a global position; 0 is the start.
func (s *Store) CursorAt(ctx context.Context, position int64) (commitorder.Cursor, error) {
	c, found, err := commitorder.At(ctx, s.pool, "events", "global_position", position)
	if err == nil && !found {
		err = ErrNotFound
	}
	return c, err
}

// Event returns one event by id.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (Envelope, error) {
	envs, err := s.query(ctx, `WHERE event_id = $1`, id)
	if err != nil {
		return Envelope{}, err
	}
	if len(envs) == 0 {
		return Envelope{}, ErrNotFound
	}
	return envs[0], nil
}

// Events returns the events with the given ids in stream order.
func (s *Store) Events(ctx context.Context, ids []uuid.UUID) ([]Envelope, error) {
	return s.query(ctx, `WHERE event_id = ANY($1) ORDER BY global_position`, ids)
}

// The transaction id is read as text (pgx has no xid8 type) under another
// name: aliased as transaction_id it would make ORDER BY sort it as text.
const columns = `SELECT global_position, transaction_id::text AS txid, event_id, stream_type, stream_id, stream_version,
	event_type, schema_version, data, correlation_id, causation_id, actor, recorded_at, on_behalf_of, customer_id, coalesce(traceparent, '') FROM events `

// ReadUpTo returns up to limit events of one stream type in (after, upTo] in
// commit order, through q: a projection rebuild reads inside its own
// transaction up to where its live consumer stands.
func (s *Store) ReadUpTo(ctx context.Context, q commitorder.Querier, streamType string, after, upTo commitorder.Cursor, limit int) ([]Envelope, error) {
	return s.queryIn(ctx, q, `WHERE stream_type = $1 AND `+commitorder.After("global_position", 2)+` AND `+commitorder.UpTo("global_position", 4)+
		` `+commitorder.Order("global_position")+` LIMIT $6`,
		append(append(append([]any{streamType}, after.Args()...), upTo.Args()...), limit)...)
}

func (s *Store) query(ctx context.Context, where string, args ...any) ([]Envelope, error) {
	return s.queryIn(ctx, s.pool, where, args...)
}

func (s *Store) queryIn(ctx context.Context, q commitorder.Querier, where string, args ...any) ([]Envelope, error) {
	rows, err := q.Query(ctx, columns+where, args...)
	if err != nil {
		return nil, err
	}
	envs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Envelope, error) {
		var e Envelope
		var txid string
		var data []byte
		err := row.Scan(&e.GlobalPosition, &txid, &e.EventID, &e.StreamType, &e.StreamID, &e.StreamVersion,
			&e.EventType, &e.SchemaVersion, &data, &e.CorrelationID, &e.CausationID, &e.Actor, &e.RecordedAt, &e.OnBehalfOf, &e.CustomerID, &e.TraceParent)
		if err != nil {
			return e, err
		}
		if e.TransactionID, err = commitorder.ParseXID(txid); err != nil {
			return e, err
		}
		e.RecordedAt = e.RecordedAt.UTC()
		e.Event, e.Data, e.SchemaVersion, err = s.reg.Decode(e.EventType, e.SchemaVersion, data)
		return e, err
	})
	if err != nil {
		return nil, err
	}
	return envs, nil
}
