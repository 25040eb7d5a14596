package dbfailure_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderflow/orderflow/internal/dbfailure"
)

func TestTransientIsTheDatabasesMomentNotTheWorks(t *testing.T) {
	transient := []error{
		&pgconn.PgError{Code: "40001"}, &pgconn.PgError{Code: "40P01"}, &pgconn.PgError{Code: "55P03"},
		&pgconn.PgError{Code: "57014"}, &pgconn.PgError{Code: "53300"}, &pgconn.PgError{Code: "57P01"},
		&pgconn.PgError{Code: "57P02"}, &pgconn.PgError{Code: "57P03"}, &pgconn.PgError{Code: "08006"},
		fmt.Errorf("apply: %w", &pgconn.PgError{Code: "40P01"}),
		errors.Join(errors.New("rollback"), &pgconn.PgError{Code: "57P01"}),
		io.ErrUnexpectedEOF, &net.OpError{Op: "read", Err: errors.New("connection reset by peer")},
		&pgconn.ConnectError{},
	}
	for _, err := range transient {
		if !dbfailure.Transient(err) {
			t.Errorf("%#v: not transient", err)
		}
	}
	poison := []error{
		nil, errors.New("order refused"), &pgconn.PgError{Code: "23505"}, &pgconn.PgError{Code: "22P02"},
		&pgconn.PgError{Code: "42P01"}, io.EOF, context.Canceled,
	}
	for _, err := range poison {
		if dbfailure.Transient(err) {
			t.Errorf("%#v: transient", err)
		}
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	for n := 1; n < 100; n++ {
		d := dbfailure.Backoff(n, 50*time.Millisecond, 5*time.Second)
		want := min(50*time.Millisecond<<min(n-1, 20), 5*time.Second)
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %v, want within [%v, %v]", n, d, want/2, want)
		}
	}
}
