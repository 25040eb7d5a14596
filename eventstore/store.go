// Package eventstore keeps aggregates as append-only streams of events in
// PostgreSQL (pgx/v5): appends with an expected version, stream reads, a
// global log in commit order, snapshots and upcasting of old schemas.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/domain/aggregate"
)

// Metadata travels with every event appended in one call.
type Metadata struct {
	// CorrelationID ties together everything one request or process caused.
	CorrelationID string
	// CausationID is the command (or event) that caused these events.
	CausationID string
	// Actor is who issued the command.
	Actor string
	// OnBehalfOf is whom the actor acted for (an operator for a customer,
	// the saga for whoever placed the order).
	OnBehalfOf string
	// CustomerID owns the stream (empty for streams of no customer): a
	// customer's live stream shows only its own events.
	CustomerID string
	// TraceParent is the W3C trace context of the command (tracing).
	TraceParent string
}

// Envelope is a stored event with its metadata.
type Envelope struct {
	EventID        uuid.UUID       `json:"event_id"`
	StreamType     string          `json:"stream_type"`
	StreamID       string          `json:"stream_id"`
	StreamVersion  int64           `json:"stream_version"`
	GlobalPosition int64           `json:"global_position"`
	EventType      string          `json:"event_type"`
	SchemaVersion  int             `json:"schema_version"`
	RecordedAt     time.Time       `json:"recorded_at"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    string          `json:"causation_id"`
	Actor          string          `json:"actor"`
	OnBehalfOf     string          `json:"on_behalf_of,omitempty"`
	CustomerID     string          `json:"customer_id,omitempty"`
	TraceParent    string          `json:"traceparent,omitempty"`
	Data           json.RawMessage `json:"data"`
	// TransactionID is the PostgreSQL transaction that wrote the event; the
	// global log is ordered by (TransactionID, GlobalPosition).
	TransactionID uint64 `json:"-"`
	// Event is Data decoded into its registered type.
	Event aggregate.Event `json:"-"`
}

// Cursor returns the place of this event in the global log, which is in
// commit order (Seq is the global position).
func (e Envelope) Cursor() commitorder.Cursor {
	return commitorder.Cursor{TransactionID: e.TransactionID, Seq: e.GlobalPosition}
}

// ErrConflict is matched by every *ConflictError.
var ErrConflict = errors.New("version conflict")

// ErrNotFound is returned for unknown events and positions.
var ErrNotFound = errors.New("not found")

// ConflictError is a stale expected version; Current is the stream's version.
type ConflictError struct {
	StreamType, StreamID string
	Expected, Current    int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %s/%s is at version %d, not %d", e.StreamType, e.StreamID, e.Current, e.Expected)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Options configure a Store.
type Options struct {
	// SnapshotEvery takes a snapshot whenever a stream's version crosses a
	// multiple of it; 0 disables snapshots.
	SnapshotEvery int
	// Clock gives the recorded time of events; time.Now when nil.
	Clock func() time.Time
	// CacheSize is how many aggregates Load keeps in memory at their last
	// committed version (Remember); 0 keeps none.
	CacheSize int
}

// Store reads and writes event streams.
type Store struct {
	pool          *pgxpool.Pool
	reg           *Registry
	now           func() time.Time
	snapshotEvery int64
	cache         *cache
}

// New returns a store on pool decoding with reg.
func New(pool *pgxpool.Pool, reg *Registry, opts Options) *Store {
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	s := &Store{pool: pool, reg: reg, now: clock, snapshotEvery: int64(opts.SnapshotEvery)}
	if opts.CacheSize > 0 {
		s.cache = newCache(opts.CacheSize)
	}
	return s
}

// Registry returns the store's registry.
func (s *Store) Registry() *Registry { return s.reg }

// placeSQL inserts the placed events of any number of streams (a group
// commit's). It does not check for a gap: its versions follow an aggregate
// loaded from the store (the cache holds committed versions only), so they
// can only be stale, which the unique (stream, version) constraint
// refuses. (A correlated check per row cost more than
// the rest of the group's writes together once its plan was cached on a
// small table.)
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
// version crosses a multiple of SnapshotEvery). When the batch
// runs, a stream that has moved fails it with the unique violation of
// (stream, version), a *ConflictError when saves is one aggregate. It
// fails only with an error of PostgreSQL's: a group commit sends COMMIT
// in the same batch, which PostgreSQL then skips.
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

// Load rebuilds agg from its latest usable snapshot plus the events after it.
// A snapshot of another schema version is ignored (full replay).
func (s *Store) Load(ctx context.Context, agg aggregate.Root) error {
	if s.cache != nil {
		if hit, err := s.cache.get(agg); err != nil {
			return fmt.Errorf("restore cached %s/%s: %w", agg.StreamType(), agg.StreamID(), err)
		} else if hit {
			return s.replay(ctx, agg, `stream_version > $3`, agg.Version())
		}
	}
	var version int64
	var schema int
	var state []byte
	err := s.pool.QueryRow(ctx, `SELECT stream_version, schema_version, state FROM snapshots WHERE stream_type = $1 AND stream_id = $2`,
		agg.StreamType(), agg.StreamID()).Scan(&version, &schema, &state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return fmt.Errorf("load snapshot of %s/%s: %w", agg.StreamType(), agg.StreamID(), err)
	case schema == s.reg.streams[agg.StreamType()].snapshotVersion:
		if err := agg.Restore(version, state); err != nil {
			return fmt.Errorf("restore snapshot of %s/%s: %w", agg.StreamType(), agg.StreamID(), err)
		}
	}
	return s.replay(ctx, agg, `stream_version > $3`, agg.Version())
}

// Remember keeps agg's state at its version for the next Load (call it
// after the transaction that saved agg has committed).
func (s *Store) Remember(agg aggregate.Root) {
	if s.cache != nil {
		s.cache.put(agg)
	}
}

// Until bounds a point-in-time load: at most Version (when > 0) and recorded
// no later than Time (when not zero).
type Until struct {
	Version int64
	Time    time.Time
}

// LoadUntil rebuilds agg as it was at a version or a time, by full replay.
func (s *Store) LoadUntil(ctx context.Context, agg aggregate.Root, u Until) error {
	cond, args := []string{"true"}, []any{}
	if u.Version > 0 {
		args = append(args, u.Version)
		cond = append(cond, fmt.Sprintf("stream_version <= $%d", len(args)+2))
	}
	if !u.Time.IsZero() {
		args = append(args, u.Time)
		cond = append(cond, fmt.Sprintf("recorded_at <= $%d", len(args)+2))
	}
	return s.replay(ctx, agg, strings.Join(cond, " AND "), args...)
}

func (s *Store) replay(ctx context.Context, agg aggregate.Root, cond string, args ...any) error {
	envs, err := s.query(ctx, `WHERE stream_type = $1 AND stream_id = $2 AND `+cond+` ORDER BY stream_version`,
		append([]any{agg.StreamType(), agg.StreamID()}, args...)...)
	if err != nil {
		return fmt.Errorf("load %s/%s: %w", agg.StreamType(), agg.StreamID(), err)
	}
	for _, e := range envs {
		agg.Replay(e.Event)
	}
	return nil
}

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
