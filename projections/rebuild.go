package projections

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// Rebuild recomputes p from the event log (or, for the timeline, the
// command log) while the service keeps running, into shadow tables:
//
//   - it creates empty copies of p's tables in the schema
//     orderflow_rebuild and fills them in chunks, each its own short
//     transaction whose search_path puts the copies first, up to where
//     the live consumer stood when the rebuild began; the live consumer
//     and every query go on with the old tables meanwhile;
//   - in one last short transaction it holds p's consumer (pauseConsumer),
//     applies what the consumer applied since, swaps the copies in for the
//     old tables, sets p's checkpoint and marks p's poison messages
//     resolved, since their events are now applied (a still failing event
//     aborts the rebuild and changes nothing).
//
// progress is called with (done, total) as events are applied.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, log *commandlog.Log, p Projection, progress func(done, total int64)) (int64, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	// One rebuild of a projection at a time (a session lock, released
	// with the connection's session below).
	var mine bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('orderflow rebuild ' || $1))`, p.Name).Scan(&mine); err != nil {
		return 0, err
	}
	if !mine {
		return 0, fmt.Errorf("a rebuild of %s is running", p.Name)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext('orderflow rebuild ' || $1))`, p.Name)
	for _, t := range p.Tables {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %[1]s; DROP TABLE IF EXISTS %[1]s.%[2]s;
			CREATE TABLE %[1]s.%[2]s (LIKE public.%[2]s INCLUDING ALL)`, shadowSchema, t)); err != nil {
			return 0, fmt.Errorf("shadow table of %s: %w", t, err)
		}
	}
	into := func(f func(tx pgx.Tx) error) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+shadowSchema+`, public`); err != nil {
				return err
			}
			return f(tx)
		})
	}
	// Up to where the consumer stands now, in chunks.
	var src commandsOrEvents
	var done, total int64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		src.upTo, err = consumed(ctx, tx, p, false)
		if err != nil {
			return err
		}
		total, err = src.count(ctx, tx, p)
		return err
	})
	if err != nil {
		return 0, err
	}
	if progress != nil {
		progress(0, total)
	}
	for {
		var n int
		if err := into(func(tx pgx.Tx) (err error) { n, err = src.next(ctx, tx, store, log, p); return err }); err != nil {
			return 0, fmt.Errorf("rebuild %s: %w", p.Name, err)
		}
		if n == 0 {
			break
		}
		done += int64(n)
		if progress != nil {
			progress(done, total)
		}
	}
	// The rest, and the swap, with the live consumer held.
	err = into(func(tx pgx.Tx) error {
		upTo, err := consumed(ctx, tx, p, true)
		if err != nil {
			return err
		}
		src.upTo = upTo
		for {
			n, err := src.next(ctx, tx, store, log, p)
			if err != nil {
				return fmt.Errorf("rebuild %s: %w", p.Name, err)
			}
			if n == 0 {
				break
			}
			done += int64(n)
		}
		for _, t := range p.Tables {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`DROP TABLE public.%[2]s; ALTER TABLE %[1]s.%[2]s SET SCHEMA public`, shadowSchema, t)); err != nil {
				return fmt.Errorf("swap %s: %w", t, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM projection_checkpoints WHERE projection = $1`, p.Name); err != nil {
			return err
		}
		if done > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, position, applied, last_event_at)
				VALUES ($1, $2, $3, $4)`, p.Name, src.position, done, src.at); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO poison_resolutions (poison_offset, outcome)
			SELECT "offset", 'replayed' FROM watermill_poison WHERE metadata->>'handler_poisoned' = $1
			ON CONFLICT (poison_offset) DO NOTHING`, p.Name)
		return err
	})
	if err != nil {
		return 0, err
	}
	if progress != nil {
		progress(done, done)
	}
	return done, nil
}

// shadowSchema holds the tables a rebuild fills before they are swapped in.
const shadowSchema = "orderflow_rebuild"

// consumed is where p's live consumer stands: the transaction and the
// global position (or command seq) of the last message it acknowledged.
// With hold, the consumer waits until tx ends.
func consumed(ctx context.Context, tx pgx.Tx, p Projection, hold bool) (commitorder.Cursor, error) {
	at, err := outbox.Consumer(ctx, tx, p.Topic(), p.Name, hold)
	if err != nil || at.Seq == 0 {
		return commitorder.Cursor{}, err
	}
	m, err := outbox.MessageAt(ctx, tx, p.Topic(), at)
	if err != nil {
		return commitorder.Cursor{}, fmt.Errorf("the last message %s consumed: %w", p.Name, err)
	}
	key := outbox.MetaGlobalPosition
	if p.OnCommands != nil {
		key = commandlog.MetaSeq
	}
	seq, err := strconv.ParseInt(m.Metadata[key], 10, 64)
	if err != nil {
		return commitorder.Cursor{}, fmt.Errorf("the last message %s consumed: %w", p.Name, err)
	}
	return commitorder.Cursor{TransactionID: at.TransactionID, Seq: seq}, nil
}

// commandsOrEvents pages through the source of a rebuild, up to upTo.
type commandsOrEvents struct {
	upTo     commitorder.Cursor
	after    commitorder.Cursor
	position int64
	at       time.Time
}

// rebuildPage is the events (or commands) of one chunk: one read, one
// set-based apply.
const rebuildPage = 5000

func (c *commandsOrEvents) count(ctx context.Context, tx pgx.Tx, p Projection) (int64, error) {
	var total int64
	upTx := commitorder.FormatXID(c.upTo.TransactionID)
	if p.OnCommands != nil {
		return total, tx.QueryRow(ctx, `SELECT count(*) FROM commands WHERE (transaction_id, seq) <= ($1::text::xid8, $2)`, upTx, c.upTo.Seq).Scan(&total)
	}
	return total, tx.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_type = $1
		AND (transaction_id, global_position) <= ($2::text::xid8, $3)`, p.Source, upTx, c.upTo.Seq).Scan(&total)
}

func (c *commandsOrEvents) next(ctx context.Context, tx pgx.Tx, store *eventstore.Store, log *commandlog.Log, p Projection) (int, error) {
	if p.OnCommands != nil {
		page, err := log.ReadUpTo(ctx, tx, c.after, c.upTo, rebuildPage)
		if err != nil {
			return 0, err
		}
		if err := p.OnCommands(ctx, tx, page); err != nil {
			return 0, err
		}
		for _, l := range page {
			c.after, c.position, c.at = l.Cursor(), max(c.position, l.GlobalPosition), l.RecordedAt
		}
		return len(page), nil
	}
	page, err := store.ReadUpTo(ctx, tx, p.Source, c.after, c.upTo, rebuildPage)
	if err != nil {
		return 0, err
	}
	if err := p.OnEvents(ctx, tx, page); err != nil {
		return 0, err
	}
	if n := len(page); n > 0 {
		c.after, c.position, c.at = page[n-1].Cursor(), page[n-1].GlobalPosition, page[n-1].RecordedAt
	}
	return len(page), nil
}
