// Package eventstore keeps aggregates as append-only streams of events in
// PostgreSQL (pgx/v5). store.go holds the envelope, the metadata and the
// Store; write.go the write path (Pending, QueueSaves: a stale version is
// a *ConflictError); load.go loading aggregates from snapshots and events;
// read.go reads of streams and of the global log in commit order;
// registry.go the registry of event types and their upcasters; cache.go
// the aggregates kept at their last committed version.
package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
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
