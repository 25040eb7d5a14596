// Package dbfailure classifies database failures, once for every caller
// (the command committer, the consumers, the HTTP error mapping): a
// transient one is the database's moment, not the work's fault, and the
// same work succeeds when tried again later; anything else is the work's
// own (a constraint, a bug, a refusal) and trying again changes nothing.
package dbfailure

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// transientCodes are the SQLSTATEs that say nothing of the work that met
// them: tried again, it goes through.
var transientCodes = map[string]string{
	"40001": "serialization_failure",
	"40P01": "deadlock_detected",
	"55P03": "lock_not_available (lock_timeout)",
	"57014": "query_canceled (statement_timeout)",
	"53300": "too_many_connections",
	"57P01": "admin_shutdown (pg_terminate_backend, a restart)",
	"57P02": "crash_shutdown",
	"57P03": "cannot_connect_now (starting up, shutting down)",
}

// Transient reports a failure that is the database's moment rather than
// the work's fault: the connection lost or refused (a connect error, a
// network error, an unexpected EOF, anything pgconn calls safe to retry),
// a serialization failure, a deadlock, a lock or statement timeout, too
// many connections, a server shutting down or starting up (and any
// connection_exception, class 08). Retried later, the same work goes
// through; it must never be counted against the work.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if _, ok := transientCodes[pgErr.Code]; ok {
			return true
		}
		if len(pgErr.Code) == 5 && pgErr.Code[:2] == "08" {
			return true
		}
	}
	var connect *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connect), errors.As(err, &netErr), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	return pgconn.SafeToRetry(err)
}

// SessionEnded reports a failure that ended the connection's session:
// the server terminated it (57P01 admin shutdown, 57P02 crash shutdown),
// a connection exception (class 08), or the connection lost without an
// answer. What the session was doing when it ended (a COMMIT sent with
// the rest) is unknown to the client: only the server can tell.
func SessionEnded(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err != nil
	}
	return pgErr.Code == "57P01" || pgErr.Code == "57P02" || (len(pgErr.Code) == 5 && pgErr.Code[:2] == "08")
}

// Backoff is the wait before the n-th retry (n from 1) of something that
// failed transiently: base doubled each time, capped at ceiling, and
// jittered over its upper half, so that the retries of two parties that
// met (a deadlock) or of many consumers (a restart) do not meet again.
func Backoff(n int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n < 1 {
		n = 1
	}
	if n <= 30 && base<<(n-1) > 0 && base<<(n-1) < ceiling {
		d = base << (n - 1)
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}
