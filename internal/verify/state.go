// What the checks read beyond the facts: whether delivery and the sagas
// have settled, what is left in the outbox, each saga as Temporal describes
// it, the carrier's bookings, and the projections' and the command log's
// completeness.

package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// settle waits until every consumer group of every topic has consumed it
// and no saga runs; what still waits at the deadline (or could not be
// read) is a failure.
func (c *Checker) settle(ctx context.Context) []string {
	deadline := time.Now().Add(c.Settle)
	for {
		waiting, err := c.undelivered(ctx)
		if err != nil {
			waiting = []string{err.Error()}
		}
		paying, err := c.paymentsInFlight(ctx)
		if err != nil {
			paying = []string{err.Error()}
		}
		waiting = append(waiting, paying...)
		busy, err := c.sagasBusy(ctx)
		if err != nil {
			waiting = append(waiting, fmt.Sprintf("sagas: %v", err))
		}
		if (len(waiting) == 0 && !busy) || time.Now().After(deadline) || ctx.Err() != nil {
			return waiting
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sagasBusy reports sagas still running that wait for no operator
// (Temporal's visibility store, which trails them by a moment).
func (c *Checker) sagasBusy(ctx context.Context) (bool, error) {
	if c.Temporal == nil {
		return false, nil
	}
	res, err := c.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus = "Running" AND %s != %q`, workflows.Name,
			workflows.AttrOrderStatus.GetName(), workflows.StatusNeedsAttention)})
	if err != nil {
		return false, fmt.Errorf("count running sagas: %w", err)
	}
	return res.GetCount() > 0, nil
}

func (c *Checker) undelivered(ctx context.Context) ([]string, error) {
	var out []string
	backlogs, err := outbox.Backlogs(ctx, c.Pool)
	if err != nil {
		return nil, fmt.Errorf("outbox backlogs: %w", err)
	}
	for _, b := range backlogs {
		if b.Messages > 0 && b.Topic != outbox.PoisonTopic {
			out = append(out, fmt.Sprintf("%s: consumer group %s has %d messages waiting", b.Topic, b.ConsumerGroup, b.Messages))
		}
	}
	var pending int64
	if err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM saga_starts WHERE started_at IS NULL`).Scan(&pending); err != nil {
		return nil, fmt.Errorf("saga_starts: %w", err)
	}
	if pending > 0 {
		out = append(out, fmt.Sprintf("saga_starts: %d sagas queued but not started", pending))
	}
	// Every consumer group's poison, the projections' and the others'
	// (the saga starter's: an order whose saga never starts).
	poison, err := projections.UnresolvedPoison(ctx, c.Pool)
	if err != nil {
		return nil, fmt.Errorf("poison messages: %w", err)
	}
	for _, h := range sortedKeys(poison) {
		out = append(out, fmt.Sprintf("%s: %d unresolved poison messages (orderflow poison list -unresolved; poison replay OFFSET)", h, poison[h]))
	}
	return out, nil
}

// sagasStarted names each order whose saga never started, once delivery
// settled: no saga_starts row (the saga starter never queued it — its
// order.placed poisoned, say), a start queued that never left the inbox,
// or (with Temporal) no workflow at all.
func (c *Checker) sagasStarted(ctx context.Context, f *facts) ([]string, error) {
	rows, _ := c.Pool.Query(ctx, `SELECT order_id, started_at IS NOT NULL FROM saga_starts`)
	started := map[string]bool{}
	var id string
	var ok bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &ok}, func() error { started[id] = ok; return nil }); err != nil {
		return nil, fmt.Errorf("saga_starts: %w", err)
	}
	var out []string
	for _, id := range sortedKeys(f.orders) {
		st := f.orders[id].Status
		ok, queued := started[id]
		switch {
		case !queued:
			out = append(out, fmt.Sprintf("order %s (%s): its saga was never queued (no saga_starts row: is its order.placed poisoned in %s? orderflow poison list -unresolved)",
				id, st, sagas.StarterGroup))
		case !ok:
			out = append(out, fmt.Sprintf("order %s (%s): its saga is queued but was never started", id, st))
		case c.Temporal != nil && f.sagas[id].problem == noSaga:
			out = append(out, fmt.Sprintf("order %s (%s): its saga was started but Temporal has no workflow %s", id, st, workflows.WorkflowID(id)))
		}
	}
	return out, nil
}

func (c *Checker) streams(ctx context.Context) (map[string][]string, error) {
	rows, err := c.Pool.Query(ctx, `SELECT DISTINCT stream_type, stream_id FROM events ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	type row struct{ Type, ID string }
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	out := map[string][]string{}
	for _, r := range all {
		out[r.Type] = append(out[r.Type], r.ID)
	}
	return out, nil
}

// noSaga is the problem of an order Temporal has no saga of.
const noSaga = "it has no saga"

// sagaView is what Temporal says of an order's saga.
type sagaView struct {
	// problem is what is wrong whatever the order's state (no saga, one
	// waiting for an operator, one ended without an outcome), to follow
	// "order <id> (<status>): ".
	problem string
	// running is the status of a saga that has not finished.
	running string
	p       workflows.Progress
	checked bool
}

// describeSaga reads the order's saga: its state, and the outcome of a
// finished one.
func (c *Checker) describeSaga(ctx context.Context, id string) sagaView {
	if c.Temporal == nil {
		return sagaView{}
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := sagas.Client{C: c.Temporal}
	state, err := client.State(qctx, id)
	switch {
	case errors.Is(err, sagas.ErrNoSaga):
		return sagaView{problem: noSaga}
	case err != nil:
		return sagaView{problem: fmt.Sprintf("saga: %v", err)}
	case state.Status == workflows.StatusNeedsAttention && state.ClosedAt == nil:
		return sagaView{problem: fmt.Sprintf("its saga waits for an operator at %s (GET /orders/%s/saga, then POST /orders/%s/saga/resolve)",
			state.FailedStep, id, id)}
	case state.ClosedAt == nil:
		return sagaView{running: state.Status}
	case state.Unfinished():
		return sagaView{problem: fmt.Sprintf("its saga ended %s without an outcome; `orderflow sagas repair -order %s` finishes it",
			state.RunStatus, id)}
	}
	v := sagaView{checked: true}
	if err := c.Temporal.GetWorkflow(qctx, workflows.WorkflowID(id), state.RunID).Get(qctx, &v.p); err != nil {
		return sagaView{problem: fmt.Sprintf("saga: %v", err)}
	}
	return v
}

// matches compares the order's state with its finished saga.
func (v sagaView) matches(id string, st order.Status) string {
	switch {
	case v.problem != "":
		return fmt.Sprintf("order %s (%s): %s", id, st, v.problem)
	case !v.checked:
		return ""
	case v.p.Status == workflows.StatusCompleted && st != order.StatusCompleted,
		v.p.Status == workflows.StatusCompensated && st != order.StatusCancelled,
		v.p.Status == workflows.StatusWrittenOff && st != order.StatusWrittenOff,
		v.p.Status != workflows.StatusCompleted && v.p.Status != workflows.StatusCompensated && v.p.Status != workflows.StatusWrittenOff:
		return fmt.Sprintf("order %s is %s but its saga ended %s (%s)", id, st, v.p.Status, v.p.Reason)
	}
	return ""
}

// carrierBookings reads the carrier's own bookings, by order, settled as of
// now: a booking still pending past its ready time is taken, as the
// simulated carrier would answer any call about it from now on (it
// decides lazily, when asked; a booking made by a run nobody waits for is
// never asked again). Withdrawals of keys never booked name no shipment.
func (c *Checker) carrierBookings(ctx context.Context) (map[string][]booking, error) {
	rows, err := c.Pool.Query(ctx, `
		SELECT substr(shipment_id, 5), dispatch_key,
		       CASE WHEN state = 'pending' AND ready_at <= now() THEN 'taken' ELSE state END, ready_at
		FROM carrier_sim_bookings WHERE shipment_id LIKE 'shp-%' ORDER BY dispatch_key`)
	if err != nil {
		return nil, fmt.Errorf("carrier bookings: %w", err)
	}
	out := map[string][]booking{}
	var id string
	var b booking
	_, err = pgx.ForEachRow(rows, []any{&id, &b.key, &b.state, &b.readyAt}, func() error {
		out[id] = append(out[id], b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("carrier bookings: %w", err)
	}
	return out, nil
}

// projectionsComplete compares every read-model row with its stream, and
// every order's timeline with the command log.
func (c *Checker) projectionsComplete(ctx context.Context, orders []string) ([]string, error) {
	var out []string
	for _, q := range []struct{ table, key, stream string }{
		{"read_orders", "order_id", order.StreamType}, {"read_wallets", "wallet_id", wallet.StreamType}, {"read_inventory", "sku", inventory.StreamType},
	} {
		rows, _ := c.Pool.Query(ctx, fmt.Sprintf(`SELECT s.stream_id, s.version, coalesce(r.version, 0)
			FROM (SELECT stream_id, max(stream_version) AS version FROM events WHERE stream_type = $1 GROUP BY stream_id) s
			LEFT JOIN %s r ON r.%s = s.stream_id WHERE coalesce(r.version, 0) <> s.version`, q.table, q.key), q.stream)
		type row struct {
			ID        string
			Want, Got int64
		}
		bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row]) // the query's error too
		if err != nil {
			return nil, fmt.Errorf("%s against the event log: %w", q.table, err)
		}
		for _, b := range bad {
			out = append(out, fmt.Sprintf("%s %s is at version %d, its stream at %d", q.table, b.ID, b.Got, b.Want))
		}
	}
	// The timeline holds each event of an order's commands exactly once
	// (a command refused on an order that did not exist belongs to none).
	rows, _ := c.Pool.Query(ctx, `
		WITH per_order AS (
		    SELECT CASE WHEN stream_type = 'order' THEN stream_id
		                ELSE coalesce(nullif(payload->>'order_id', ''), nullif(metadata->>'order_id', '')) END AS order_id,
		           cardinality(event_ids) AS events, 1 AS commands
		    FROM commands
		    WHERE NOT (stream_type = 'order' AND status = 'rejected' AND stream_version = 0)),
		want AS (SELECT order_id, sum(events) AS events, sum(commands) AS commands FROM per_order WHERE order_id IS NOT NULL GROUP BY order_id),
		got AS (SELECT order_id, count(*) FILTER (WHERE kind = 'event') AS events, count(*) FILTER (WHERE kind = 'command') AS commands
		        FROM read_order_timeline GROUP BY order_id)
		SELECT want.order_id, want.events, coalesce(got.events, 0), want.commands, coalesce(got.commands, 0)
		FROM want LEFT JOIN got USING (order_id)
		WHERE want.events <> coalesce(got.events, 0) OR want.commands <> coalesce(got.commands, 0)`)
	type trow struct {
		ID                             string
		WantEv, GotEv, WantCmd, GotCmd int64
	}
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[trow]) // the query's error too
	if err != nil {
		return nil, fmt.Errorf("timelines against the command log: %w", err)
	}
	for _, b := range bad {
		out = append(out, fmt.Sprintf("timeline of order %s has %d events and %d commands, the logs %d and %d", b.ID, b.GotEv, b.GotCmd, b.WantEv, b.WantCmd))
	}
	return out, nil
}

// oneEffectPerCommand checks that the events caused by each command are
// exactly those its log row names.
func (c *Checker) oneEffectPerCommand(ctx context.Context) ([]string, error) {
	rows, _ := c.Pool.Query(ctx, `
		SELECT e.causation_id, count(*), coalesce(max(cardinality(c.event_ids)), -1)
		FROM events e LEFT JOIN commands c ON c.command_id = e.causation_id
		GROUP BY e.causation_id
		HAVING count(*) <> coalesce(max(cardinality(c.event_ids)), -1)
		    OR bool_or(NOT (e.event_id = ANY(coalesce(c.event_ids, '{}'))))`)
	type row struct {
		Command      string
		Events, Logs int64
	}
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row]) // the query's error too
	if err != nil {
		return nil, fmt.Errorf("events against the command log: %w", err)
	}
	var out []string
	for _, b := range bad {
		out = append(out, fmt.Sprintf("command %s caused %d events, its log row names %d", b.Command, b.Events, b.Logs))
	}
	return out, nil
}
