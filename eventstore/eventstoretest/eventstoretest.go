// Package eventstoretest writes events for tests through the event
// store's production write path — Store.Pending, then Store.QueueSaves
// (and outbox.Queue) — in a transaction the test holds, with the events'
// global positions and the transaction's id reserved in it the way a
// command's group commit reserves them (package commands). Tests that need
// a transaction of their own use it: one kept open while another commits
// (readers must not skip the late commit), writers racing on one stream,
// or events forged behind the domain's back. Everything else writes
// through the command bus.
package eventstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// Save writes agg's pending changes in tx, and its snapshot when one is
// due, and returns their envelopes placed in the global log. A stream that
// moved since agg was loaded fails with an *eventstore.ConflictError; tx
// is then unusable.
func Save(ctx context.Context, tx pgx.Tx, s *eventstore.Store, agg aggregate.Root, md eventstore.Metadata) ([]eventstore.Envelope, error) {
	return write(ctx, tx, s, agg, md, false)
}

// SaveAndPublish is Save that also writes an outbox message per event in
// tx, as a command's commit does: the events reach Watermill's
// subscribers when tx commits.
func SaveAndPublish(ctx context.Context, tx pgx.Tx, s *eventstore.Store, agg aggregate.Root, md eventstore.Metadata) ([]eventstore.Envelope, error) {
	return write(ctx, tx, s, agg, md, true)
}

// reserveSQL reserves n global positions (ascending) and reads the
// transaction's id, as the group commit's reservation does.
const reserveSQL = `SELECT pg_current_xact_id()::text,
	ARRAY(SELECT nextval(pg_get_serial_sequence('events', 'global_position')) FROM generate_series(1, $1::int))`

func write(ctx context.Context, tx pgx.Tx, s *eventstore.Store, agg aggregate.Root, md eventstore.Metadata, publish bool) ([]eventstore.Envelope, error) {
	envs, err := s.Pending(agg, md)
	if err != nil || len(envs) == 0 {
		return nil, err
	}
	var txid string
	var positions []int64
	if err := tx.QueryRow(ctx, reserveSQL, len(envs)).Scan(&txid, &positions); err != nil {
		return nil, fmt.Errorf("reserve positions: %w", err)
	}
	xid, err := commitorder.ParseXID(txid)
	if err != nil {
		return nil, err
	}
	for i := range envs {
		envs[i].GlobalPosition, envs[i].TransactionID = positions[i], xid
	}
	b := &pgx.Batch{}
	if err := s.QueueSaves(ctx, b, []eventstore.Placed{{Agg: agg, Envs: envs}}); err != nil {
		return nil, err
	}
	if publish {
		if err := outbox.Queue(b, envs); err != nil {
			return nil, err
		}
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return envs, nil
}

// Stream is events to write to a stream as they are, at version expected
// (0: a new stream), without an aggregate deciding them: a stream raced
// on at a stale version, or forged. It has no state: a store that takes
// snapshots fails the write of one that crosses SnapshotEvery rather
// than store an empty snapshot.
func Stream(streamType, streamID string, expected int64, events ...aggregate.Event) aggregate.Root {
	return &stream{typ: streamType, id: streamID, expected: expected, events: events}
}

type stream struct {
	typ, id  string
	expected int64
	events   []aggregate.Event
}

func (s *stream) StreamType() string                    { return s.typ }
func (s *stream) StreamID() string                      { return s.id }
func (s *stream) Version() int64                        { return s.expected + int64(len(s.events)) }
func (s *stream) Replay(aggregate.Event)                {}
func (s *stream) Changes() []aggregate.Event            { return s.events }
func (s *stream) State() any                            { return noState{} }
func (s *stream) Restore(version int64, _ []byte) error { return errNoState }

var errNoState = errors.New("eventstoretest: a raw stream has no state to snapshot or restore")

type noState struct{}

func (noState) MarshalJSON() ([]byte, error) { return nil, errNoState }

var _ json.Marshaler = noState{}
