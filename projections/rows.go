package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/eventstore"
)

// applied is what every row of a stream's read model records of the
// events applied to it: the last stream version (a redelivered event, at
// or below it, changes nothing; one beyond the next is a gap), its global
// position and time.
type applied struct {
	Version   int64     `json:"version"`
	Position  int64     `json:"position"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (a *applied) meta() *applied { return a }

// streamRows is a read model with one row per stream. A batch of events is
// applied set-based: the rows it touches are read in one statement (and
// locked), the events are folded onto them in order, and the changed rows
// are written back in one statement. R's JSON names are the table's
// columns (generated columns left out).
type streamRows[R any, P interface {
	*R
	meta() *applied
}] struct {
	table, key string
	// apply folds event e onto row (nil before the stream's first event).
	apply func(row P, e eventstore.Envelope) (P, error)
}

func (m streamRows[R, P]) columns() []string {
	raw, _ := json.Marshal(P(new(R)))
	var cols map[string]any
	_ = json.Unmarshal(raw, &cols)
	names := make([]string, 0, len(cols))
	for c := range cols {
		names = append(names, c)
	}
	slices.Sort(names)
	return names
}

// Apply applies es, in order, to the rows of their streams inside tx.
func (m streamRows[R, P]) Apply(ctx context.Context, tx pgx.Tx, es []eventstore.Envelope) error {
	if len(es) == 0 {
		return nil
	}
	var ids []string
	for _, e := range es {
		if !slices.Contains(ids, e.StreamID) {
			ids = append(ids, e.StreamID)
		}
	}
	rows := map[string]P{}
	res, err := tx.Query(ctx, fmt.Sprintf(`SELECT %[1]s, to_jsonb(t) FROM %[2]s t WHERE %[1]s = ANY($1) ORDER BY %[1]s FOR UPDATE`, m.key, m.table), ids)
	if err != nil {
		return err
	}
	for res.Next() {
		var id string
		var raw []byte
		if err := res.Scan(&id, &raw); err != nil {
			res.Close()
			return err
		}
		r := P(new(R))
		if err := json.Unmarshal(raw, r); err != nil {
			res.Close()
			return fmt.Errorf("%s %s: %w", m.table, id, err)
		}
		rows[id] = r
	}
	if err := res.Err(); err != nil {
		return err
	}
	var changed []string
	for _, e := range es {
		row := rows[e.StreamID]
		var at int64
		if row != nil {
			at = row.meta().Version
		}
		switch {
		case e.StreamVersion <= at:
			continue // applied before: a redelivery
		case e.StreamVersion > at+1:
			return fmt.Errorf("%w: %s %s is at version %d, event is version %d", ErrGap, m.table, e.StreamID, at, e.StreamVersion)
		}
		row, err := m.apply(row, e)
		if err != nil {
			return fmt.Errorf("%s at position %d: %w", e.EventType, e.GlobalPosition, err)
		}
		*row.meta() = applied{Version: e.StreamVersion, Position: e.GlobalPosition, UpdatedAt: e.RecordedAt}
		rows[e.StreamID] = row
		if !slices.Contains(changed, e.StreamID) {
			changed = append(changed, e.StreamID)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	out := make([]P, 0, len(changed))
	for _, id := range changed {
		out = append(out, rows[id])
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return err
	}
	cols := m.columns()
	var set []string
	for _, c := range cols {
		set = append(set, c+" = excluded."+c)
	}
	_, err = tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) SELECT %[2]s FROM jsonb_populate_recordset(NULL::%[1]s, $1)
		ON CONFLICT (%[3]s) DO UPDATE SET %[4]s`, m.table, strings.Join(cols, ", "), m.key, strings.Join(set, ", ")), raw)
	return err
}
