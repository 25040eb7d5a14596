package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
)

// dispatch runs a command (a typed payload, or a type and its JSON) with
// the request's principal and headers, and writes its outcome: 201 when
// accepted now, 200 when replayed for a known Idempotency-Key.
func (s *Server) dispatch(c echo.Context, req commands.Request) error {
	correlationID, onBehalfOf, err := traceHeaders(c)
	if err != nil {
		return err
	}
	p := principal(c)
	req.CommandID = c.Request().Header.Get("Idempotency-Key")
	req.CorrelationID, req.Principal, req.OnBehalfOf = correlationID, &p, onBehalfOf
	if m := c.Request().Header.Get("If-Match"); m != "" {
		v, err := strconv.ParseInt(strings.Trim(m, `"`), 10, 64)
		if err != nil {
			// The document's pattern refuses it first, as a schema violation.
			return invalid([]FieldError{{Field: "header.If-Match", Message: "If-Match must be a stream version, e.g. \"3\""}})
		}
		req.ExpectedVersion = &v
	}
	rec, err := s.bus.Dispatch(c.Request().Context(), req)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, "/commands/"+rec.CommandID)
	h.Set("ETag", fmt.Sprintf(`"%d"`, rec.StreamVersion))
	status := http.StatusCreated
	if rec.Replayed {
		status = http.StatusOK
		h.Set("Idempotent-Replayed", "true")
	}
	return s.replyCommitted(c, status, rec)
}

// replyCommitted answers for a command that is in the log: whatever fails
// now (opening its personal fields needs the database) must not answer
// "retry" — a keyless client would send it again — so the answer is the
// record itself, its personal fields withheld.
func (s *Server) replyCommitted(c echo.Context, status int, rec commandlog.Record) error {
	raw, err := sealedJSON(c.Request().Context(), s.opener(c), rec)
	if err != nil {
		s.log.Warn("command committed; its personal fields withheld from the answer", "command_id", rec.CommandID, "err", err)
		if raw, err = json.Marshal(rec); err == nil {
			raw, err = personal.WithholdJSON(raw)
		}
		if err != nil {
			return &commands.UnknownOutcomeError{CommandID: rec.CommandID, Err: err}
		}
	}
	return c.JSONBlob(status, raw)
}

// reply writes v as JSON with the personal fields the principal may see
// opened: an operator's all, a customer's its own; a field whose key was
// destroyed reads as personal.Erased.
func (s *Server) reply(c echo.Context, status int, v any) error {
	raw, err := sealedJSON(c.Request().Context(), s.opener(c), v)
	if err != nil {
		return err
	}
	return c.JSONBlob(status, raw)
}

func (s *Server) opener(c echo.Context) *personal.Opener {
	if p := principal(c); p.Role == auth.Customer {
		return s.customerKeys.For(p.CustomerID)
	}
	return s.customerKeys.For("")
}

// forgetCustomer destroys the customer's key: its personal fields read as
// erased everywhere from then on (crypto-shredding).
func (s *Server) forgetCustomer(c echo.Context) error {
	id := c.Param("id")
	p := principal(c)
	if !p.Owns(id) {
		return problem(http.StatusNotFound, "customer_not_found", fmt.Sprintf("customer %s does not exist", id))
	}
	destroyed, err := s.customerKeys.Forget(c.Request().Context(), id, p.Subject)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"customer_id": id, "personal_data": "erased", "key_destroyed": destroyed})
}

// command is the handler of a REST command endpoint: payload P bound from
// the body's value (decoded once, by checkBody), completed from the path by
// fromPath (may be nil), then handed to the bus typed.
func command[P commands.Command](s *Server, fromPath func(*P, echo.Context)) echo.HandlerFunc {
	return func(c echo.Context) error {
		var p P
		if err := bind(c, &p); err != nil {
			return err
		}
		if fromPath != nil {
			fromPath(&p, c)
		}
		return s.dispatch(c, commands.Request{Command: p})
	}
}

func (s *Server) submitCommand(c echo.Context) error {
	var body struct {
		Type    string `json:"type"`
		Payload any    `json:"payload"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	// The policy first: a customer learns nothing of an operator's schema.
	if a := auth.CommandAccess(body.Type); a != auth.Nobody && !principal(c).Allows(a) {
		return problem(http.StatusForbidden, "forbidden", fmt.Sprintf("a %s may not send %s", principal(c).Role, body.Type)+forbiddenHint(body.Type))
	}
	if err := s.validatePayload(body.Type, body.Payload); err != nil {
		return err
	}
	// The bus gets the payload typed, from the body's value: no JSON between.
	p, ok := s.bus.NewPayload(body.Type)
	if !ok {
		if s.bus.RouteOnly(body.Type) { // behind the document's enum, which leaves it out too
			return invalid([]FieldError{{Field: "type", Message: body.Type + " is sent through its own route, not POST /commands"}})
		}
		return s.dispatch(c, commands.Request{Type: body.Type}) // the bus's answer to an unknown type
	}
	if err := assign(reflect.ValueOf(p).Elem(), body.Payload, "payload"); err != nil {
		return &commands.PayloadError{Msg: fmt.Sprintf("payload of %s: %v", body.Type, err)}
	}
	if cancel, ok := p.(*commands.CancelOrder); ok {
		// The same cancel as POST /orders/{id}/cancel: the saga decides.
		return s.cancelThroughSaga(c, cancel.OrderID, cancel.Reason)
	}
	return s.dispatch(c, commands.Request{Command: p})
}

// commandView is a logged command with the events it caused.
type commandView struct {
	commandlog.Record
	Events []eventstore.Envelope `json:"events"`
}

// getCommand finds a command by its id or, for the principal that sent
// it, by its Idempotency-Key; customers see their own commands only.
func (s *Server) getCommand(c echo.Context) error {
	ctx := c.Request().Context()
	p := principal(c)
	log := s.bus.Log()
	rec, err := log.Get(ctx, commands.ScopedID(p.Subject, c.Param("id")))
	if errors.Is(err, commandlog.ErrNotFound) {
		rec, err = log.Get(ctx, c.Param("id"))
	}
	if err == nil && p.Role != auth.Operator && rec.Actor != p.Subject {
		err = commandlog.ErrNotFound
	}
	if err != nil {
		return err
	}
	events, err := s.store.Events(ctx, rec.EventIDs)
	if err != nil {
		return err
	}
	return s.reply(c, http.StatusOK, commandView{Record: rec, Events: nonNil(events)})
}

// ownCommands narrows a customer's view of the command log to its own.
func ownCommands(c echo.Context, f *commandlog.Filter) {
	if p := principal(c); p.Role != auth.Operator {
		f.Actor = p.Subject
	}
}

func (s *Server) listCommands(c echo.Context) error {
	q := c.QueryParams()
	f := commandlog.Filter{Type: q.Get("type"), Status: q.Get("status"), StreamType: q.Get("stream_type"), StreamID: q.Get("stream_id"), Limit: limit(c)}
	ownCommands(c, &f)
	f.AfterSeq, _ = strconv.ParseInt(q.Get("cursor"), 10, 64)
	recs, err := s.bus.Log().List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	page := map[string]any{"commands": nonNil(recs)}
	if len(recs) == f.Limit {
		page["next_cursor"] = recs[len(recs)-1].Seq
	}
	return s.reply(c, http.StatusOK, page)
}

func (s *Server) listEvents(c echo.Context) error {
	ctx := c.Request().Context()
	q := c.QueryParams()
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	cursor, err := s.store.CursorAt(ctx, after)
	if errors.Is(err, eventstore.ErrNotFound) {
		return problem(http.StatusNotFound, "unknown_position", fmt.Sprintf("no event at global position %d", after))
	}
	if err != nil {
		return err
	}
	f := eventstore.Filter{StreamType: q.Get("stream_type"), StreamID: q.Get("stream_id")}
	if t := q.Get("type"); t != "" {
		f.EventTypes = []string{t}
	}
	n := limit(c)
	events, err := s.store.ReadAll(ctx, cursor, n, f)
	if err != nil {
		return err
	}
	page := map[string]any{"events": nonNil(events)}
	if len(events) == n {
		page["next_after"] = events[len(events)-1].GlobalPosition
	}
	return s.reply(c, http.StatusOK, page)
}

func (s *Server) getEvent(c echo.Context) error {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return problem(http.StatusUnprocessableEntity, "invalid_event_id", "the event id must be a UUID")
	}
	e, err := s.store.Event(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return s.reply(c, http.StatusOK, e)
}

func (s *Server) getStream(c echo.Context) error {
	ctx := c.Request().Context()
	typ, id := c.Param("type"), c.Param("id")
	agg, ok := s.store.Registry().NewAggregate(typ, id)
	if !ok {
		return problem(http.StatusNotFound, "unknown_stream_type", fmt.Sprintf("no stream type %q", typ))
	}
	var until eventstore.Until
	q := c.QueryParams()
	if v := q.Get("at_version"); v != "" {
		until.Version, _ = strconv.ParseInt(v, 10, 64)
	}
	if t := q.Get("as_of"); t != "" {
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return problem(http.StatusUnprocessableEntity, "invalid_as_of", "as_of must be an RFC 3339 time")
		}
		until.Time = ts
	}
	// Now: from the latest snapshot. An earlier point replays from the start
	// (only the latest snapshot is kept), bounded by the statement timeout.
	load := s.store.Load
	if until != (eventstore.Until{}) {
		load = func(ctx context.Context, agg aggregate.Root) error { return s.store.LoadUntil(ctx, agg, until) }
	}
	if err := load(ctx, agg); err != nil {
		return err
	}
	if agg.Version() == 0 {
		return problem(http.StatusNotFound, "stream_not_found", fmt.Sprintf("stream %s/%s has no events at that point", typ, id))
	}
	if until.Version > agg.Version() {
		return problem(http.StatusUnprocessableEntity, "version_out_of_range", fmt.Sprintf("stream %s/%s is at version %d", typ, id, agg.Version()))
	}
	// The state comes from the latest snapshot and the events after it;
	// the events listed are one page (?after_version=&limit=).
	after, _ := strconv.ParseInt(q.Get("after_version"), 10, 64)
	n := limit(c)
	events, err := s.store.ReadStream(ctx, typ, id, max(after, 0), min(n, int(max(agg.Version()-after, 0))))
	if err != nil {
		return err
	}
	page := map[string]any{"stream_type": typ, "stream_id": id, "version": agg.Version(), "state": agg.State(), "events": nonNil(events)}
	if len(events) > 0 && events[len(events)-1].StreamVersion < agg.Version() {
		page["next_after_version"] = events[len(events)-1].StreamVersion
	}
	return s.reply(c, http.StatusOK, page)
}

func limit(c echo.Context) int {
	n, err := strconv.Atoi(c.QueryParam("limit"))
	if err != nil || n <= 0 {
		return 100
	}
	return min(n, 1000)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
