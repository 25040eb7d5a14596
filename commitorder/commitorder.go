// Package commitorder places rows in the logs that are read in commit
// order (events, the command log, Watermill's topic tables): by the
// PostgreSQL transaction that wrote them (xid8) and a sequence within it,
// reading only transactions older than any still running, so that a late
// commit is never skipped.
package commitorder

import (
	"fmt"
	"strconv"
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
