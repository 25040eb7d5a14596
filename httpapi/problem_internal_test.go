package httpapi

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderflow/orderflow/commands"
)

// A commit whose outcome the bus could not learn is not "retry" (that could
// apply a keyless command twice): it says so and names the command; a
// deadlock or timeout that outlasted the bus's retries is a 503, not a 500.
func TestLostCommitsAndTransientDatabaseFailuresAre503(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := toProblem(&commands.UnknownOutcomeError{CommandID: "cmd-1", Err: io.ErrUnexpectedEOF}, quiet, "/commands")
	if p.Status != http.StatusServiceUnavailable || p.Code != "outcome_unknown" || p.CommandID != "cmd-1" {
		t.Fatalf("unknown outcome: %+v", p)
	}
	for _, code := range []string{"40P01", "40001", "57014", "55P03", "53300", "57P01", "57P02", "57P03"} {
		if p := toProblem(&pgconn.PgError{Code: code}, quiet, "/commands"); p.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %+v", code, p)
		}
	}
	if p := toProblem(errors.New("a bug"), quiet, "/commands"); p.Status != http.StatusInternalServerError {
		t.Fatalf("a bug: %+v", p)
	}
}
