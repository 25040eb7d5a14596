package eventstore

// Loading an aggregate: from its snapshot (or the cache's copy) plus the
// events after it, or as it was at a version or a time by full replay.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/domain/aggregate"
)

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
