// Package commitorder places rows in the logs that are read in commit
// order (events, the command log, Watermill's topic tables): by the
// PostgreSQL transaction that wrote them (xid8) and a sequence within it,
// reading only transactions older than any still running, so that a late
// commit is never skipped.
package commitorder

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ParseXID reads an xid8 sent as text (pgx has no xid8 type).
func ParseXID(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("transaction id %q: %w", s, err)
	}
	return v, nil
}

// FormatXID writes an xid8 for a "$n::text::xid8" parameter.
func FormatXID(v uint64) string { return strconv.FormatUint(v, 10) }

// Cursor is a place in a log read in commit order: the transaction that
// wrote a row and the row's sequence within the log (a global position,
// a command seq, a message offset).
type Cursor struct {
	TransactionID uint64
	Seq           int64
}

// Args are the cursor's two parameters for After and UpTo.
func (c Cursor) Args() []any { return []any{FormatXID(c.TransactionID), c.Seq} }

// Visible keeps the rows of transactions older than the oldest one still
// running: a row whose transaction commits late is not visible, nor is
// anything after it, until it has committed, so a reader that moves its
// cursor past what it read never skips one.
const Visible = `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`

// After is the condition "after the cursor at parameters $n and $n+1" on
// a log whose sequence column is seq.
func After(seq string, n int) string {
	return fmt.Sprintf(`(transaction_id, %s) > ($%d::text::xid8, $%d)`, seq, n, n+1)
}

// UpTo is the condition "at or before the cursor at $n and $n+1".
func UpTo(seq string, n int) string {
	return fmt.Sprintf(`(transaction_id, %s) <= ($%d::text::xid8, $%d)`, seq, n, n+1)
}

// HorizonSQL reads the horizon Visible reads below: when it moves, rows
// that were invisible may have become visible.
const HorizonSQL = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`

// Now is where a reader that starts "from now" begins: after every row of
// the transactions below the horizon (all ended), before every row of the
// others, running or not. Starting after the last row instead would skip
// the rows of a transaction still running with a lower transaction id.
func Now(ctx context.Context, q Querier) (Cursor, error) {
	var xmin string
	if err := q.QueryRow(ctx, HorizonSQL).Scan(&xmin); err != nil {
		return Cursor{}, err
	}
	tx, err := ParseXID(xmin)
	if err != nil {
		return Cursor{}, err
	}
	return Cursor{TransactionID: tx - 1, Seq: math.MaxInt64}, nil
}

// Order orders a log by commit.
func Order(seq string) string { return fmt.Sprintf(`ORDER BY transaction_id, %s`, seq) }

// Querier is a pool or a transaction: the logs are read through either.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// At returns the cursor of the row of table whose column seq is v (0 is
// the start); found is false when there is no such row.
func At(ctx context.Context, q Querier, table, seq string, v int64) (c Cursor, found bool, err error) {
	if v == 0 {
		return Cursor{}, true, nil
	}
	var txid string
	err = q.QueryRow(ctx, fmt.Sprintf(`SELECT transaction_id::text FROM %s WHERE %s = $1`, table, seq), v).Scan(&txid)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, false, nil
	}
	if err != nil {
		return Cursor{}, false, err
	}
	tx, err := ParseXID(txid)
	return Cursor{TransactionID: tx, Seq: v}, err == nil, err
}
