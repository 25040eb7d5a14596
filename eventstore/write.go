package eventstore

// Writing: the envelopes of an aggregate's pending changes (Pending), and
// the statements that store them with the snapshots due, queued on a
// group commit's batch (QueueSaves). A stale version fails on the unique
// (stream, version) constraint and is reported as a *ConflictError.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// placeSQL inserts the placed events of any number of streams (a group
// commit's). It does not check for a gap: its versions follow an aggregate
// loaded from the store (the cache holds committed versions only), so they
// can only be stale, which the unique (stream, version) constraint
// refuses. (A correlated check per row cost more than the rest of the
// group's writes together once its plan was cached on a small table.)
const placeSQL = `
INSERT INTO events (global_position, event_id, stream_type, stream_id, stream_version, event_type, schema_version,
                    data, correlation_id, causation_id, actor, recorded_at, on_behalf_of, customer_id, traceparent)
OVERRIDING SYSTEM VALUE
SELECT (e->>'p')::bigint, (e->>'id')::uuid, e->>'st', e->>'sid', (e->>'v')::bigint, e->>'t', (e->>'s')::int, e->'d',
       e->>'corr', e->>'caus', e->>'actor', (e->>'at')::timestamptz, e->>'obo', e->>'cust', nullif(e->>'tp', '')
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(e, n)
ORDER BY n`

// placedRow is one event of placeSQL.
type placedRow struct {
	ID         uuid.UUID       `json:"id"`
	Version    int64           `json:"v"`
	Type       string          `json:"t"`
	Schema     int             `json:"s"`
	Data       json.RawMessage `json:"d"`
	Position   int64           `json:"p"`
	StreamType string          `json:"st"`
	StreamID   string          `json:"sid"`
	Corr       string          `json:"corr"`
	Caus       string          `json:"caus"`
	Actor      string          `json:"actor"`
	At         time.Time       `json:"at"`
	OnBehalfOf string          `json:"obo"`
	Customer   string          `json:"cust"`
	TraceP     string          `json:"tp"`
}

// envelopes are the events to append to a stream at expected, with new
// ids, not yet placed in the global log.
func (s *Store) envelopes(streamType, streamID string, expected int64, events []aggregate.Event, md Metadata) ([]Envelope, error) {
	recorded := s.now().UTC().Truncate(time.Microsecond)
	envs := make([]Envelope, len(events))
	for i, e := range events {
		name := e.EventType()
		version, ok := s.reg.SchemaVersion(name)
		if !ok {
			return nil, fmt.Errorf("append %s: unregistered event type", name)
		}
		data, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", name, err)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		envs[i] = Envelope{
			EventID: id, StreamType: streamType, StreamID: streamID, StreamVersion: expected + int64(i) + 1,
			EventType: name, SchemaVersion: version, RecordedAt: recorded, Data: data, Event: e,
			CorrelationID: md.CorrelationID, CausationID: md.CausationID, Actor: md.Actor,
			OnBehalfOf: md.OnBehalfOf, CustomerID: md.CustomerID, TraceParent: md.TraceParent,
		}
	}
	return envs, nil
}

// Pending returns the envelopes of agg's pending changes for a group
// commit, which places them in the global log (sets GlobalPosition and
// TransactionID) and queues them with QueueSaves.
func (s *Store) Pending(agg aggregate.Root, md Metadata) ([]Envelope, error) {
	changes := agg.Changes()
	return s.envelopes(agg.StreamType(), agg.StreamID(), agg.Version()-int64(len(changes)), changes, md)
}

// Placed is an aggregate with its pending changes as a group commit
// placed them (GlobalPosition and TransactionID set).
type Placed struct {
	Agg  aggregate.Root
	Envs []Envelope
}

// QueueSaves queues on b the writes of every aggregate of saves: their
// events in one statement, and the snapshots due (when an aggregate's
// version crosses a multiple of SnapshotEvery). When the batch runs, a
// stream that has moved fails it with the unique violation of (stream,
// version), a *ConflictError when saves is one aggregate. It fails only
// with an error of PostgreSQL's: a group commit sends COMMIT in the same
// batch, which PostgreSQL then skips.
func (s *Store) QueueSaves(ctx context.Context, b *pgx.Batch, saves []Placed) error {
	var rows []placedRow
	for _, p := range saves {
		for _, e := range p.Envs {
			rows = append(rows, placedRow{
				ID: e.EventID, Version: e.StreamVersion, Type: e.EventType, Schema: e.SchemaVersion, Data: e.Data,
				Position: e.GlobalPosition, StreamType: e.StreamType, StreamID: e.StreamID, Corr: e.CorrelationID, Caus: e.CausationID,
				Actor: e.Actor, At: e.RecordedAt, OnBehalfOf: e.OnBehalfOf, Customer: e.CustomerID, TraceP: e.TraceParent,
			})
		}
	}
	if len(rows) > 0 {
		raw, err := json.Marshal(rows)
		if err != nil {
			return err
		}
		q := b.Queue(placeSQL, raw)
		if len(saves) == 1 {
			st, id, before := saves[0].Agg.StreamType(), saves[0].Agg.StreamID(), saves[0].Envs[0].StreamVersion-1
			q.Fn = func(br pgx.BatchResults) error {
				if _, err := br.Exec(); err != nil {
					return s.appendError(ctx, err, st, id, before)
				}
				return nil
			}
		}
	}
	for _, p := range saves {
		if len(p.Envs) > 0 && s.snapshotDue(p.Envs[0].StreamVersion-1, p.Agg.Version()) {
			args, err := s.snapshotArgs(p.Agg)
			if err != nil {
				return err
			}
			b.Queue(snapshotSQL, args...)
		}
	}
	return nil
}

func (s *Store) appendError(ctx context.Context, err error, streamType, streamID string, expected int64) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_version_key" {
		return s.conflict(ctx, streamType, streamID, expected)
	}
	return fmt.Errorf("append to %s/%s: %w", streamType, streamID, err)
}

// conflict reads the current version outside the failed transaction: the
// winner has committed by now, since a unique violation waits for it.
func (s *Store) conflict(ctx context.Context, streamType, streamID string, expected int64) error {
	current, err := s.StreamVersion(ctx, streamType, streamID)
	if err != nil {
		return fmt.Errorf("read version of %s/%s after conflict: %w", streamType, streamID, err)
	}
	return &ConflictError{StreamType: streamType, StreamID: streamID, Expected: expected, Current: current}
}

// StreamVersion is the version of a stream, 0 when it has no events.
func (s *Store) StreamVersion(ctx context.Context, streamType, streamID string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_type = $1 AND stream_id = $2`,
		streamType, streamID).Scan(&v)
	return v, err
}

func (s *Store) snapshotDue(before, after int64) bool {
	return s.snapshotEvery > 0 && before/s.snapshotEvery != after/s.snapshotEvery
}

const snapshotSQL = `
INSERT INTO snapshots (stream_type, stream_id, stream_version, schema_version, state, taken_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (stream_type, stream_id) DO UPDATE
SET stream_version = excluded.stream_version, schema_version = excluded.schema_version,
    state = excluded.state, taken_at = excluded.taken_at
WHERE snapshots.stream_version < excluded.stream_version`

func (s *Store) snapshotArgs(agg aggregate.Root) ([]any, error) {
	t, ok := s.reg.streams[agg.StreamType()]
	if !ok {
		return nil, fmt.Errorf("snapshot: unregistered stream type %s", agg.StreamType())
	}
	state, err := json.Marshal(agg.State())
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of %s/%s: %w", agg.StreamType(), agg.StreamID(), err)
	}
	return []any{agg.StreamType(), agg.StreamID(), agg.Version(), t.snapshotVersion, state, s.now().UTC()}, nil
}
