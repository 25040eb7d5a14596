package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/internal/dbfailure"
	"github.com/orderflow/orderflow/projections"
)

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type           string       `json:"type"`
	Title          string       `json:"title"`
	Status         int          `json:"status"`
	Detail         string       `json:"detail,omitempty"`
	Instance       string       `json:"instance,omitempty"`
	Code           string       `json:"code,omitempty"`
	CommandID      string       `json:"command_id,omitempty"`
	CurrentVersion *int64       `json:"current_version,omitempty"`
	Errors         []FieldError `json:"errors,omitempty"`
	// RetryAfter, for a 503 or 429, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
	// Extensions are a domain refusal's details (aggregate.Error.Details),
	// as extension members of the body (RFC 9457 §3.2).
	Extensions map[string]any `json:"-"`
}

// MarshalJSON writes the problem's members and its extensions (which never
// replace a standard member).
func (p Problem) MarshalJSON() ([]byte, error) {
	type plain Problem
	raw, err := json.Marshal(plain(p))
	if err != nil || len(p.Extensions) == 0 {
		return raw, err
	}
	members := map[string]any{}
	for k, v := range p.Extensions {
		members[k] = v
	}
	var std map[string]json.RawMessage
	if err := json.Unmarshal(raw, &std); err != nil {
		return nil, err
	}
	for k, v := range std {
		members[k] = v
	}
	return json.Marshal(members)
}

// FieldError names one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p *Problem) Error() string { return p.Detail }

func problem(status int, code, detail string) *Problem {
	return &Problem{Type: "urn:orderflow:problem:" + code, Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// toProblem is the one place that maps errors to statuses. Internal errors
// are logged and answered without their text.
func toProblem(err error, log *slog.Logger, path string) *Problem {
	var (
		p        *Problem
		rejected *commands.RejectedError
		domain   *aggregate.Error
		conflict *eventstore.ConflictError
		payload  *commands.PayloadError
		he       *echo.HTTPError
		unknown  *commands.UnknownOutcomeError
		overload *commands.OverloadedError
		cut      *requestCut
	)
	switch {
	case errors.As(err, &p):
	case errors.As(err, &rejected):
		p = domainProblem(rejected.Err)
		p.CommandID = rejected.Record.CommandID
	case errors.As(err, &domain):
		p = domainProblem(domain)
	case errors.As(err, &conflict):
		p = problem(http.StatusConflict, "version_conflict", conflict.Error())
		p.CurrentVersion = &conflict.Current
	case errors.As(err, &payload):
		p = problem(http.StatusUnprocessableEntity, "invalid_payload", payload.Msg)
	case errors.Is(err, commands.ErrUnknownType):
		p = invalid([]FieldError{{Field: "type", Message: err.Error()}}) // a schema violation, as the document's enum says
	case errors.Is(err, commands.ErrKeyReused):
		p = problem(http.StatusUnprocessableEntity, "idempotency_key_reused", err.Error())
	case errors.Is(err, commands.ErrForbidden):
		p = problem(http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, commands.ErrUnauthenticated):
		p = problem(http.StatusUnauthorized, "unauthenticated", "send a bearer token: Authorization: Bearer <token>")
	case errors.Is(err, commands.ErrReservedKey):
		p = problem(http.StatusUnprocessableEntity, "idempotency_key_reserved", err.Error())
	case errors.Is(err, projections.ErrBadCursor):
		p = problem(http.StatusUnprocessableEntity, "invalid_cursor", "the cursor is not one this service handed out")
	case errors.Is(err, projections.ErrResolved):
		p = problem(http.StatusConflict, "poison_resolved", err.Error())
	case errors.Is(err, projections.ErrUnknownHandler):
		p = problem(http.StatusConflict, "poison_handler_unknown", "no handler of this service poisoned this message; replay it where its consumer runs")
	case errors.Is(err, projections.ErrGap):
		p = problem(http.StatusConflict, "poison_out_of_order", "an earlier event of this stream is still unresolved; replay it first")
	case errors.Is(err, commandlog.ErrNotFound), errors.Is(err, eventstore.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		p = problem(http.StatusNotFound, "not_found", "no such resource")
	case errors.As(err, &overload):
		p = problem(http.StatusServiceUnavailable, "overloaded", overload.Reason)
		p.RetryAfter = overload.RetryAfter
	case errors.As(err, &unknown):
		log.Warn("command outcome unknown", "path", path, "err", err)
		p = problem(http.StatusServiceUnavailable, "outcome_unknown",
			"the database was lost while the command committed; retry with the same Idempotency-Key, or look up command_id")
		p.CommandID = unknown.CommandID
	case errors.As(err, &cut):
		// Not a fault: the service is stopping (its requests are cut
		// after the grace) or the client went away. A command cut here
		// never reached its commit, which no request can cut.
		log.Warn("request cut before it was done", "path", path, "err", err)
		p = problem(http.StatusServiceUnavailable, "request_cut",
			"the request was cut before it was done (the service is stopping): a command was not committed; send it again (with the same Idempotency-Key)")
	case unavailable(err):
		log.Warn("database unavailable", "path", path, "err", err)
		p = problem(http.StatusServiceUnavailable, "database_unavailable", "the database is not reachable right now; retry")
	case errors.As(err, &he):
		p = problem(he.Code, "http_"+fmt.Sprint(he.Code), fmt.Sprint(he.Message))
	default:
		log.Error("request failed", "path", path, "err", err)
		p = problem(http.StatusInternalServerError, "internal", "the request failed on our side; it is logged")
	}
	if p.Instance == "" {
		p.Instance = path
	}
	return p
}

func domainProblem(e *aggregate.Error) *Problem {
	status := http.StatusUnprocessableEntity
	switch {
	case errors.Is(e, aggregate.ErrState):
		status = http.StatusConflict
	case errors.Is(e, aggregate.ErrNotFound):
		status = http.StatusNotFound
	}
	p := problem(status, e.Code, e.Message)
	p.Extensions = e.Details
	return p
}

func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		if c.Request().Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			err = &requestCut{err}
		}
		p := toProblem(err, log, c.Request().URL.Path)
		c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
		if p.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", retryAfter(p.RetryAfter))
		} else if p.Status == http.StatusServiceUnavailable && c.Response().Header().Get("Retry-After") == "" {
			c.Response().Header().Set("Retry-After", "1")
		}
		if err := c.JSON(p.Status, p); err != nil {
			log.Error("write problem", "err", err)
		}
	}
}

// requestCut is an error a request met because its own context ended: the
// service stopping cuts the requests still running after its grace, and
// a client that goes away cuts its own. toProblem answers it 503
// request_cut, unless the error says more (an outcome unknown, a domain
// refusal).
type requestCut struct{ err error }

func (e *requestCut) Error() string { return e.err.Error() }
func (e *requestCut) Unwrap() error { return e.err }

// unavailable reports a database that can't be reached (down, restarting,
// connection lost) or a transient failure that outlasted the bus's retries
// (a deadlock, a serialization failure, a timeout): the client may retry,
// it did nothing wrong. dbfailure holds the one classification.
func unavailable(err error) bool { return dbfailure.Transient(err) }

// retryAfter is a Retry-After header's whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}
