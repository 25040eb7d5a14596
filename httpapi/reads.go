package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// consistent makes the request wait until the named read models have
// applied the position the client passed (?min_position= or
// X-Min-Position), all within the configured timeout: read-your-writes
// for a client that just sent a command.
func (s *Server) consistent(c echo.Context, names ...string) error {
	raw := c.QueryParam("min_position")
	if raw == "" {
		raw = c.Request().Header.Get("X-Min-Position")
	}
	pos, err := projections.ParsePosition(raw)
	if err != nil {
		return problem(http.StatusUnprocessableEntity, "invalid_min_position", err.Error())
	}
	if pos, err = s.knownEvent(c, pos); err != nil {
		return err
	}
	if pos > 0 {
		release := s.waits.take(principal(c).Subject)
		if release == nil {
			c.Response().Header().Set("Retry-After", "1")
			return problem(http.StatusTooManyRequests, "too_many_waits",
				fmt.Sprintf("at most %d min_position waits at once per client", s.limits.Waits))
		}
		defer release()
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.consistencyTimeout)
	defer cancel()
	for _, name := range names {
		p, _ := projections.ByName(name)
		if err = s.reader.WaitFor(ctx, p, pos, s.consistencyTimeout); err != nil {
			break
		}
	}
	var behind *projections.BehindError
	if errors.As(err, &behind) {
		c.Response().Header().Set("Retry-After", "1")
		return problem(http.StatusServiceUnavailable, "projection_behind",
			fmt.Sprintf("the %s read model has not reached position %d within %s; retry", behind.Projection, pos, s.consistencyTimeout))
	}
	return err
}

// orderView is an order with its saga's state.
type orderView struct {
	projections.Order
	Saga *sagaView `json:"saga,omitempty"`
}

type sagaView struct {
	*sagas.State
	Error string `json:"error,omitempty"`
}

// sagaOf asks Temporal for the state of the order's saga, briefly: the
// order itself comes from the read model and is answered even when
// Temporal is not. It describes the workflow (search attributes) rather
// than querying it, so no worker has to answer.
func (s *Server) sagaOf(c echo.Context, orderID string) *sagaView {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	st, err := s.sagas.State(ctx, orderID)
	switch {
	case errors.Is(err, sagas.ErrNoSaga):
		return nil
	case err != nil:
		s.log.Warn("saga state", "order_id", orderID, "err", err)
		return &sagaView{State: &sagas.State{WorkflowID: workflows.WorkflowID(orderID)}, Error: "the saga's state is unavailable right now"}
	}
	return &sagaView{State: &st}
}

// sagaProgress runs the saga's progress query: its current step, reason
// and the compensations done.
func (s *Server) sagaProgress(c echo.Context) error {
	if s.sagas == nil {
		return problem(http.StatusNotFound, "no_saga", "this service runs without Temporal")
	}
	if err := s.mustOwnOrder(c, c.Param("id")); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
	defer cancel()
	p, err := s.sagas.Progress(ctx, c.Param("id"))
	if errors.Is(err, sagas.ErrNoSaga) {
		return problem(http.StatusNotFound, "no_saga", "no saga for this order")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"order_id": c.Param("id"), "workflow_id": workflows.WorkflowID(c.Param("id")), "progress": progressFor(c, p)})
}

// customerProgress is what a customer sees of its order's saga: where it
// is and why it stopped, as a code. Operators see the whole progress: the
// raw error of a step waiting for them (attention.error), their decisions
// and who took them, the compensations.
type customerProgress struct {
	Status         string `json:"status"`
	Step           string `json:"step"`
	FailedStep     string `json:"failed_step,omitempty"`
	Reason         string `json:"reason,omitempty"`
	TrackingNumber string `json:"tracking_number,omitempty"`
}

func progressFor(c echo.Context, p workflows.Progress) any {
	if principal(c).Role == auth.Operator {
		return p
	}
	return customerProgress{Status: p.Status, Step: p.Step, FailedStep: p.FailedStep, Reason: reasonCode(p.Reason), TrackingNumber: p.TrackingNumber}
}

// reasonCode is the code a saga's reason starts with (a domain's or an
// activity's error type: insufficient_funds, carrier_rejected, ...), or
// the code of the saga's own words; never the text after it, which may
// be a customer's, an operator's or an internal error's.
func reasonCode(reason string) string {
	for prefix, code := range map[string]string{
		"cancelled by the customer":  "cancelled_by_customer",
		"cancelled by an operator":   "cancelled_by_operator",
		"compensated by an operator": "compensated_by_operator",
		"written off":                "written_off",
		"order not fulfilled":        "not_fulfilled",
	} {
		if strings.HasPrefix(reason, prefix) {
			return code
		}
	}
	code, _, _ := strings.Cut(reason, ":")
	if reason == "" || reasonCodePattern.MatchString(code) {
		return code
	}
	return "failed"
}

var reasonCodePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// knownEvent is, for a customer, the global position of its own latest
// event at or before pos: a customer knows the positions of its own events
// only, and every position past them (past the head of the log included)
// is answered as that one, so no answer tells how many events the whole
// system holds. Operators' positions are taken as they are.
func (s *Server) knownEvent(c echo.Context, pos int64) (int64, error) {
	p := principal(c)
	if p.Role == auth.Operator || pos <= 0 {
		return pos, nil
	}
	err := s.pool.QueryRow(c.Request().Context(), `SELECT coalesce(max(global_position), 0) FROM events
		WHERE customer_id = $1 AND customer_id <> '' AND global_position <= $2`, p.CustomerID, pos).Scan(&pos)
	return pos, err
}

// knownCommand is knownEvent for the command log: a customer's own latest
// command at or before seq.
func (s *Server) knownCommand(c echo.Context, seq int64) (int64, error) {
	p := principal(c)
	if p.Role == auth.Operator || seq <= 0 {
		return seq, nil
	}
	err := s.pool.QueryRow(c.Request().Context(), `SELECT coalesce(max(seq), 0) FROM commands WHERE actor = $1 AND seq <= $2`,
		p.Subject, seq).Scan(&seq)
	return seq, err
}

// cancelOrder is POST /orders/{id}/cancel.
func (s *Server) cancelOrder(c echo.Context) error {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	return s.cancelThroughSaga(c, c.Param("id"), body.Reason)
}

// cancelThroughSaga is a client's cancel, by whichever route it came (POST
// /orders/{id}/cancel, or CancelOrder through POST /commands): the order's
// saga alone decides it — while the carrier works it asks the carrier
// first, and after a terminate the repair run answers with its reading of
// the carrier. The order itself refuses any cancel but the saga's.
func (s *Server) cancelThroughSaga(c echo.Context, id, reason string) error {
	ctx := c.Request().Context()
	o, err := s.ownOrder(c, id)
	if err != nil {
		return err
	}
	// An order at its end stays there, whatever became of its saga's run.
	if answered, err := s.cancelEnded(c, o); answered || err != nil {
		return err
	}
	if s.sagas == nil {
		return problem(http.StatusServiceUnavailable, "sagas_unavailable", "an order is cancelled by its saga, and this API has no connection to Temporal")
	}
	// A key makes the cancel idempotent: the same update, the same answer.
	updateID := ""
	if key := c.Request().Header.Get("Idempotency-Key"); key != "" {
		updateID = commands.ScopedID(principal(c).Subject, "cancel\x00"+id+"\x00"+key)
	}
	wait, stop := context.WithTimeout(ctx, s.cancelWait)
	defer stop()
	p, err := s.sagas.CancelOrder(wait, id, reason, updateID)
	var unavailable *serviceerror.Unavailable
	var timedOut *client.WorkflowUpdateServiceTimeoutOrCanceledError
	switch {
	case errors.Is(err, sagas.ErrSagaStarting):
		c.Response().Header().Set("Retry-After", "1")
		return problem(http.StatusServiceUnavailable, "saga_starting", fmt.Sprintf("the saga of order %s is starting: send the cancel again in a moment", id))
	case errors.Is(err, sagas.ErrNoSaga):
		// The saga finished meanwhile: its outcome stands.
		if err := s.store.Load(ctx, o); err != nil {
			return err
		}
		if answered, err := s.cancelEnded(c, o); answered || err != nil {
			return err
		}
		return problem(http.StatusConflict, "order_"+string(o.Status()), fmt.Sprintf("order %s is %s and its saga has ended", id, o.Status()))
	case errors.Is(err, sagas.ErrPending):
		// The saga accepted the cancel and has not answered yet (the
		// carrier is slow to): its outcome shows in the saga's progress.
		return c.JSON(http.StatusAccepted, map[string]any{"order_id": id, "workflow_id": workflows.WorkflowID(id), "status": "pending"})
	case err != nil && (wait.Err() != nil || errors.As(err, &timedOut)):
		// (The SDK may give up waiting for the update a moment before
		// wait's deadline: that is the same timeout, not a fault. The
		// request's own context cut — the service stopping after its
		// grace — leaves the same doubt.)
		// No answer in time: the update may have reached the saga, which
		// may yet take it and cancel. Nothing here says it did not.
		c.Response().Header().Set("Retry-After", "1")
		p := problem(http.StatusServiceUnavailable, "outcome_unknown", fmt.Sprintf("the saga of order %s did not answer in time: "+
			"the cancel may have been taken. GET /orders/%s/saga shows the outcome; sent again with the same Idempotency-Key, "+
			"the cancel gets the first one's answer", id, id))
		p.Extensions = map[string]any{"order_id": id, "saga": "/orders/" + id + "/saga"}
		return p
	case errors.As(err, &unavailable):
		c.Response().Header().Set("Retry-After", "1")
		return problem(http.StatusServiceUnavailable, "temporal_unavailable", "the saga cannot be reached right now; send the cancel again in a moment")
	case err != nil:
		return refusal(err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"order_id": id, "workflow_id": workflows.WorkflowID(id),
		"status": "cancelling", "saga": progressFor(c, p)})
}

// cancelEnded answers a cancel of an order at its end: 200 for one
// cancelled or rejected, 409 for one completed or written off.
func (s *Server) cancelEnded(c echo.Context, o *order.Order) (bool, error) {
	switch st := o.Status(); st {
	case order.StatusCancelled, order.StatusRejected:
		return true, c.JSON(http.StatusOK, map[string]any{"order_id": o.StreamID(), "workflow_id": workflows.WorkflowID(o.StreamID()), "status": string(st)})
	case order.StatusCompleted, order.StatusWrittenOff:
		return true, problem(http.StatusConflict, "order_"+string(st), fmt.Sprintf("order %s is %s: it can no longer be cancelled", o.StreamID(), st))
	}
	return false, nil
}

// ownOrder loads the order and answers 404 when it does not exist or is
// not the customer's (the same answer: existence does not leak).
func (s *Server) ownOrder(c echo.Context, id string) (*order.Order, error) {
	o := order.New(id)
	if err := s.store.Load(c.Request().Context(), o); err != nil {
		return nil, err
	}
	if o.Version() == 0 || !principal(c).Owns(o.CustomerID()) {
		return nil, problem(http.StatusNotFound, "order_not_found", fmt.Sprintf("order %s does not exist", id))
	}
	return o, nil
}

// mustOwnOrder answers 404 when the order is not the customer's, as when
// it does not exist (operators pass). It asks the event store, which is
// never behind.
func (s *Server) mustOwnOrder(c echo.Context, id string) error {
	if principal(c).Role == auth.Operator {
		return nil
	}
	_, err := s.ownOrder(c, id)
	return err
}

// refusal answers a saga's refusal of an update: 422 for text it cannot
// store, 409 for the rest (shipped, not waiting, action not allowed).
func refusal(err error) error {
	var refused *sagas.RefusedError
	switch {
	case errors.As(err, &refused) && (refused.Code == workflows.ErrInvalidText || refused.Code == workflows.ErrReasonRequired):
		return problem(http.StatusUnprocessableEntity, refused.Code, refused.Message)
	case errors.As(err, &refused):
		return problem(http.StatusConflict, refused.Code, refused.Message)
	}
	return err
}

// resolveSaga passes an operator's decision to a saga in NEEDS_ATTENTION.
func (s *Server) resolveSaga(c echo.Context) error {
	if s.sagas == nil {
		return problem(http.StatusNotFound, "no_saga", "this service runs without Temporal")
	}
	var r workflows.Resolution
	if err := bind(c, &r); err != nil {
		return err
	}
	r.Operator = principal(c).Subject
	p, err := s.sagas.Resolve(c.Request().Context(), c.Param("id"), r)
	if errors.Is(err, sagas.ErrNoSaga) {
		return problem(http.StatusNotFound, "no_saga", "no running saga for this order")
	} else if err != nil {
		return refusal(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"order_id": c.Param("id"), "workflow_id": workflows.WorkflowID(c.Param("id")), "progress": p})
}

// listSagas lists sagas by status (NEEDS_ATTENTION: those waiting for an
// operator).
func (s *Server) listSagas(c echo.Context) error {
	if s.sagas == nil {
		return problem(http.StatusNotFound, "no_saga", "this service runs without Temporal")
	}
	list, err := s.sagas.List(c.Request().Context(), c.QueryParam("status"), limit(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"sagas": nonNil(list)})
}

// read answers a query from one read model after the consistency wait.
func read[T any](s *Server, projection string, get func(c echo.Context) (T, error)) echo.HandlerFunc {
	return readAfter(s, []string{projection}, get)
}

// readAfter answers a query that reads several read models, after the
// consistency wait for all of them.
func readAfter[T any](s *Server, names []string, get func(c echo.Context) (T, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.consistent(c, names...); err != nil {
			return err
		}
		v, err := get(c)
		if err != nil {
			return err
		}
		return s.reply(c, http.StatusOK, v)
	}
}

func (s *Server) readRoutes(e *echo.Echo) {
	e.GET("/orders/:id", read(s, "orders_projection", func(c echo.Context) (orderView, error) {
		o, err := s.reader.Order(c.Request().Context(), c.Param("id"))
		if err == nil && !principal(c).Owns(o.CustomerID) {
			err = projections.ErrNotFound
		}
		if err != nil || s.sagas == nil {
			return orderView{Order: o}, err
		}
		return orderView{Order: o, Saga: s.sagaOf(c, o.OrderID)}, nil
	}))
	e.GET("/orders", read(s, "orders_projection", func(c echo.Context) (map[string]any, error) {
		q := c.QueryParams()
		customer := q.Get("customer_id")
		if p := principal(c); p.Role != auth.Operator {
			customer = p.CustomerID // a customer lists its own orders only
		}
		orders, next, err := s.reader.Orders(c.Request().Context(), projections.OrderFilter{
			CustomerID: customer, Status: q.Get("status"), Limit: limit(c), Cursor: q.Get("cursor")})
		page := map[string]any{"orders": nonNil(orders)}
		if next != "" {
			page["next_cursor"] = next
		}
		return page, err
	}))
	e.GET("/orders/:id/saga", s.sagaProgress)
	e.POST("/orders/:id/saga/resolve", s.resolveSaga)
	e.GET("/sagas", s.listSagas)
	e.GET("/orders/:id/timeline", read(s, "timeline_projection", func(c echo.Context) (map[string]any, error) {
		if err := s.mustOwnOrder(c, c.Param("id")); err != nil {
			return nil, err
		}
		entries, err := s.reader.Timeline(c.Request().Context(), c.Param("id"), c.QueryParam("cursor"), limit(c))
		page := map[string]any{"order_id": c.Param("id"), "entries": nonNil(entries)}
		if n := len(entries); n == limit(c) {
			page["next_cursor"] = entries[n-1].Cursor
		}
		return page, err
	}))
	e.GET("/products/:sku", read(s, "inventory_projection", func(c echo.Context) (projections.Product, error) {
		return s.reader.Product(c.Request().Context(), c.Param("sku"))
	}))
	e.GET("/wallets/:id", read(s, "wallets_projection", func(c echo.Context) (projections.Wallet, error) {
		w, err := s.reader.Wallet(c.Request().Context(), c.Param("id"))
		if err == nil && !principal(c).Owns(w.CustomerID) {
			return projections.Wallet{}, projections.ErrNotFound
		}
		return w, err
	}))
	e.GET("/projections", func(c echo.Context) error {
		st, err := s.reader.Status(c.Request().Context())
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"projections": st})
	})
	e.GET("/poison", func(c echo.Context) error {
		unresolved, _ := strconv.ParseBool(c.QueryParam("unresolved"))
		after, _ := strconv.ParseInt(c.QueryParam("after"), 10, 64)
		msgs, err := s.reader.Poison(c.Request().Context(), unresolved, after, limit(c))
		if err != nil {
			return err
		}
		page := map[string]any{"messages": nonNil(msgs)}
		if n := len(msgs); n == limit(c) {
			page["next_after"] = msgs[n-1].Offset
		}
		return s.reply(c, http.StatusOK, page)
	})
	e.POST("/poison/:offset/replay", func(c echo.Context) error {
		offset, _ := strconv.ParseInt(c.Param("offset"), 10, 64)
		if err := projections.ReplayPoison(c.Request().Context(), s.pool, s.store.Registry(), offset, s.consumers...); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"offset": offset, "resolved": "replayed"})
	})
}
