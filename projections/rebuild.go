package projections

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
)

// Rebuild recomputes p from the event log (or, for the timeline, the
// command log) in one transaction while the service keeps running:
//
//   - it holds p's consumer offset (pauseConsumer), so the live consumer
//     waits and the rebuild reads exactly what the live model had applied;
//   - it empties the tables with DELETE (not TRUNCATE), so queries keep
//     seeing the old rows until the new ones commit at once;
//   - it marks p's poison messages resolved, since their events are now
//     applied (a still failing event aborts the rebuild and changes nothing).
//
// The cost: the transaction is as long as the rebuild and, like any long
// transaction, holds back every watermill-sql subscriber until it ends.
// progress is called with (done, total) as events are applied.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, log *commands.Log, p Projection, progress func(done, total int64)) (int64, error) {
	var done int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		acked, lastTx, err := pauseConsumer(ctx, tx, p)
		if err != nil {
			return err
		}
		txid, _ := strconv.ParseUint(lastTx, 10, 64)
		// The last acknowledged message names the last event (or command) applied.
		var upTo int64
		if acked > 0 {
			key := "global_position"
			if p.OnCommands != nil {
				key = "seq"
			}
			var v string
			err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT metadata->>'%s' FROM watermill_%s WHERE transaction_id = $1::text::xid8 AND "offset" = $2`,
				key, p.Topic()), lastTx, acked).Scan(&v)
			if err != nil {
				return fmt.Errorf("find the last message %s consumed: %w", p.Name, err)
			}
			if upTo, err = strconv.ParseInt(v, 10, 64); err != nil {
				return fmt.Errorf("last message %s consumed: %w", p.Name, err)
			}
		}
		var total int64
		var count pgx.Row
		if p.OnCommands != nil {
			count = tx.QueryRow(ctx, `SELECT count(*) FROM commands WHERE (transaction_id, seq) <= ($1::text::xid8, $2)`, lastTx, upTo)
		} else {
			count = tx.QueryRow(ctx, `SELECT count(*) FROM events WHERE stream_type = $1
				AND (transaction_id, global_position) <= ($2::text::xid8, $3)`, p.Source, lastTx, upTo)
		}
		if err := count.Scan(&total); err != nil {
			return err
		}
		for _, t := range p.Tables {
			if _, err := tx.Exec(ctx, "DELETE FROM "+t); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM projection_checkpoints WHERE projection = $1`, p.Name); err != nil {
			return err
		}
		if progress != nil {
			progress(0, total)
		}
		var last commandsOrEvents
		for {
			n, err := last.next(ctx, tx, store, log, p, txid, upTo)
			if err != nil {
				return fmt.Errorf("rebuild %s: %w", p.Name, err)
			}
			if n == 0 {
				break
			}
			done += int64(n)
			if progress != nil {
				progress(done, total)
			}
		}
		if done > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, position, applied, last_event_at)
				VALUES ($1, $2, $3, $4)`, p.Name, last.position, done, last.at); err != nil {
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
	return done, nil
}

// pauseConsumer holds p's consumer offset until tx ends and returns where
// the consumer stands. It updates the row rather than only locking it: the
// subscriber reads in REPEATABLE READ, so a consumer that took its snapshot
// before tx commits then fails on this row and starts over with a fresh
// snapshot, instead of applying messages over read-model rows it can't see.
func pauseConsumer(ctx context.Context, tx pgx.Tx, p Projection) (acked int64, lastTx string, err error) {
	offsets := "watermill_offsets_" + p.Topic()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ($1, 0, '0') ON CONFLICT (consumer_group) DO NOTHING`, offsets), p.Name); err != nil {
		return 0, "", err
	}
	err = tx.QueryRow(ctx, fmt.Sprintf(`UPDATE %s SET offset_acked = offset_acked WHERE consumer_group = $1
		RETURNING offset_acked, last_processed_transaction_id::text`, offsets), p.Name).Scan(&acked, &lastTx)
	return acked, lastTx, err
}

// commandsOrEvents pages through the source of a rebuild.
type commandsOrEvents struct {
	eventAfter   eventstore.Cursor
	commandAfter commands.Cursor
	position     int64
	at           time.Time
}

const rebuildPage = 2000

func (c *commandsOrEvents) next(ctx context.Context, tx pgx.Tx, store *eventstore.Store, log *commands.Log, p Projection, txid uint64, upTo int64) (int, error) {
	if p.OnCommands != nil {
		page, err := log.ReadUpTo(ctx, tx, c.commandAfter, commands.Cursor{TransactionID: txid, Seq: upTo}, rebuildPage)
		if err != nil {
			return 0, err
		}
		if err := p.OnCommands(ctx, tx, page); err != nil {
			return 0, err
		}
		for _, l := range page {
			c.commandAfter, c.position, c.at = l.Cursor(), max(c.position, l.GlobalPosition), l.RecordedAt
		}
		return len(page), nil
	}
	page, err := store.ReadUpTo(ctx, tx, p.Source, c.eventAfter, eventstore.Cursor{TransactionID: txid, Position: upTo}, rebuildPage)
	if err != nil {
		return 0, err
	}
	if err := p.OnEvents(ctx, tx, page); err != nil {
		return 0, err
	}
	if n := len(page); n > 0 {
		c.eventAfter, c.position, c.at = page[n-1].Cursor(), page[n-1].GlobalPosition, page[n-1].RecordedAt
	}
	return len(page), nil
}
