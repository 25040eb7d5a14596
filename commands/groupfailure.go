package commands

// When a group's transaction fails as a whole, for no command's own fault:
// a deadlock or a connection lost before COMMIT rolls it back and it is
// written again; a connection lost at COMMIT leaves its outcome to be
// learned from the server (pg_xact_status) before any command is answered.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/internal/dbfailure"
)

// maxGroupRetries bounds how often a group whose transaction was rolled
// back as a whole (retryGroup) is written again.
const maxGroupRetries = 8

// groupBackoff is the wait before the n-th retry of a group: short, and
// jittered so that two groups that deadlocked do not meet again.
func groupBackoff(n int) time.Duration {
	return dbfailure.Backoff(n+1, 5*time.Millisecond, 500*time.Millisecond)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// retryGroup is a group whose transaction was rolled back as a whole for a
// reason that is no command's own: a deadlock, a statement timeout, a
// serialization failure, a connection lost before COMMIT ran. Nothing of
// it was committed; it is written again.
type retryGroup struct{ err error }

func (e *retryGroup) Error() string { return e.err.Error() }
func (e *retryGroup) Unwrap() error { return e.err }

// groupWide reports a PostgreSQL error that rolls back the group's
// transaction without being any one command's fault: the server answered
// (so COMMIT did not run) with a failure dbfailure calls transient — a
// deadlock, a serialization failure, a lock or statement timeout, a
// shutdown or a terminated backend.
func groupWide(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && dbfailure.Transient(err)
}

// UnknownOutcomeError is a command whose group lost its connection at
// COMMIT and whose transaction's fate could not be learned (the database
// stayed unreachable): it may or may not have been applied. A retry with
// the same idempotency key (or a look at the command id) tells.
type UnknownOutcomeError struct {
	CommandID string
	Err       error
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("command %s: outcome unknown after a lost connection: %v", e.CommandID, e.Err)
}
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// errUnknownOutcome is the group's outcome before it is given to each command.
type errUnknownOutcome struct{ err error }

func (e *errUnknownOutcome) Error() string { return e.err.Error() }

// resolve learns what became of the group's transaction xid after its
// connection was lost in the round trip that carried COMMIT, asking on
// another connection: committed (nil), or rolled back (retryGroup). A
// transaction still in progress is waited for; one that stays so (its
// server process has not noticed the client is gone) is ended by
// terminating that process, whose outcome is then read.
//
// A server that crashed before the COMMIT reached its WAL forgets the
// transaction, and may give its id to another one after recovery: the
// status of the id is then another's. So a "committed" is believed only
// with the group's own log row (commandID) written under that id, and an
// id the server has not reached again ("in the future") was rolled back.
func (c *committer) resolve(xid uint64, pid uint32, commandID string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	asked := time.Now()
	for wait := time.Millisecond; ; wait = min(2*wait, 250*time.Millisecond) {
		var status *string
		err := c.pool.QueryRow(ctx, `SELECT pg_xact_status($1::text::xid8)`, commitorder.FormatXID(xid)).Scan(&status)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "22023": // invalid_parameter_value
			// "transaction ID … is in the future": not reached since a restart.
			return &retryGroup{cause}
		case err != nil:
		case status == nil:
			// Too old to be known: cannot happen within a minute.
			return &errUnknownOutcome{fmt.Errorf("transaction %d: no status: %w", xid, cause)}
		case *status == "committed":
			var ours bool
			err := c.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM commands WHERE command_id = $1 AND transaction_id = $2::text::xid8)`,
				commandID, commitorder.FormatXID(xid)).Scan(&ours)
			switch {
			case err != nil:
			case ours:
				return nil
			default:
				return &retryGroup{cause} // the id is another transaction's now
			}
		case *status == "aborted":
			return &retryGroup{cause}
		case time.Since(asked) > stuckAfter:
			_, _ = c.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE pid = $1 AND backend_xid = xid($2::text::xid8)`, int64(pid), commitorder.FormatXID(xid))
		}
		if ctx.Err() != nil {
			return &errUnknownOutcome{fmt.Errorf("transaction %d: %w", xid, cause)}
		}
		sleepCtx(ctx, wait)
	}
}

// How long resolve waits for an answer, and for a transaction whose
// client is gone to end by itself.
const (
	resolveTimeout = time.Minute
	stuckAfter     = 2 * time.Second
)
