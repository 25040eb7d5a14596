// Package verify checks orderflow's invariants against the database (and
// Temporal): after a load or a fault, nothing may be lost, duplicated,
// dangling or overdrawn. Each failed check names exactly what is wrong.
package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Checker runs the checks.
type Checker struct {
	Pool   *pgxpool.Pool
	Store  *eventstore.Store
	Reader *projections.Reader
	// Temporal, when set, checks every order against its saga.
	Temporal client.Client
	// Settle bounds the wait for consumers and sagas to finish first.
	Settle time.Duration
}

// Report lists the failures of every check.
type Report struct {
	Checks   []Check
	Orders   int
	Wallets  int
	Products int
}

// Check is one invariant and what violates it.
type Check struct {
	Name     string
	Failures []string
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if len(c.Failures) > 0 {
			return false
		}
	}
	return true
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified %d orders, %d wallets, %d products\n", r.Orders, r.Wallets, r.Products)
	for _, c := range r.Checks {
		if len(c.Failures) == 0 {
			fmt.Fprintf(&b, "  ok    %s\n", c.Name)
			continue
		}
		fmt.Fprintf(&b, "  FAIL  %s (%d)\n", c.Name, len(c.Failures))
		for i, f := range c.Failures {
			if i == 20 {
				fmt.Fprintf(&b, "        ... and %d more\n", len(c.Failures)-20)
				break
			}
			fmt.Fprintf(&b, "        %s\n", f)
		}
	}
	return b.String()
}

func (r *Report) add(name string, failures []string) {
	r.Checks = append(r.Checks, Check{Name: name, Failures: failures})
}

// Run waits for delivery and sagas to settle (bounded), then checks.
func (c *Checker) Run(ctx context.Context) (*Report, error) {
	r := &Report{}
	r.add("nothing is left undelivered in the outbox", c.settle(ctx))

	streams, err := c.streams(ctx)
	if err != nil {
		return nil, err
	}
	r.Orders, r.Wallets, r.Products = len(streams[order.StreamType]), len(streams[wallet.StreamType]), len(streams[inventory.StreamType])

	terminal := map[string]order.Status{}
	var orderFails, sagaFails, running []string
	for _, id := range streams[order.StreamType] {
		// The saga first, then the order: a saga's commands precede its
		// end, so an order read after a finished saga has its outcome,
		// even while other sagas still run.
		saga := c.describeSaga(ctx, id)
		o := order.New(id)
		if err := c.Store.Load(ctx, o); err != nil {
			return nil, err
		}
		st := o.Status()
		switch st {
		case order.StatusCompleted, order.StatusCancelled, order.StatusRejected, order.StatusWrittenOff:
			terminal[id] = st
		default:
			orderFails = append(orderFails, fmt.Sprintf("order %s is still %s", id, st))
		}
		if saga.running != "" {
			running = append(running, fmt.Sprintf("order %s (%s): its saga is still running, at %s", id, st, saga.running))
		} else if f := saga.matches(id, st); f != "" {
			sagaFails = append(sagaFails, f)
		}
	}
	r.add("every accepted order reached a terminal state", orderFails)
	if c.Temporal != nil {
		r.add("every saga has finished", running)
		r.add("every order's state matches its saga", sagaFails)
	}
	taken, err := c.carrierTook(ctx)
	if err != nil {
		return nil, err
	}
	var carrierFails []string
	for id, st := range terminal {
		switch shipped := st == order.StatusCompleted || st == order.StatusWrittenOff; {
		case shipped && !taken[id]:
			carrierFails = append(carrierFails, fmt.Sprintf("order %s is %s but the carrier never took its parcel", id, st))
		case !shipped && taken[id]:
			carrierFails = append(carrierFails, fmt.Sprintf("order %s is %s but the carrier took its parcel", id, st))
		}
	}
	r.add("the carrier took a parcel exactly for each completed or written-off order", carrierFails)
	var captureFails []string

	var walletFails, dangling, overdrawn []string
	for _, id := range streams[wallet.StreamType] {
		w := wallet.New(id)
		if err := c.Store.Load(ctx, w); err != nil {
			return nil, err
		}
		st := w.State().(wallet.State)
		got, err := c.Reader.Wallet(ctx, id)
		if err != nil {
			walletFails = append(walletFails, fmt.Sprintf("wallet %s: %v", id, err))
		} else if got.Balance != st.Balance || got.Held != st.Held || got.Version != w.Version() {
			walletFails = append(walletFails, fmt.Sprintf("wallet %s: read model balance %d held %d v%d, events balance %d held %d v%d",
				id, got.Balance, got.Held, got.Version, st.Balance, st.Held, w.Version()))
		}
		if st.Balance-st.Held < 0 || st.Balance < 0 {
			overdrawn = append(overdrawn, fmt.Sprintf("wallet %s: balance %d held %d", id, st.Balance, st.Held))
		}
		for o, amount := range st.Holds {
			if s, ok := terminal[o]; ok {
				dangling = append(dangling, fmt.Sprintf("wallet %s holds %d for %s order %s", id, amount, s, o))
			}
		}
		for o, amount := range st.Captured {
			if amount > 0 && !taken[o] {
				captureFails = append(captureFails, fmt.Sprintf("wallet %s captured %d for order %s, whose parcel the carrier never took", id, amount, o))
			}
		}
	}
	var stockFails []string
	for _, sku := range streams[inventory.StreamType] {
		it := inventory.New(sku)
		if err := c.Store.Load(ctx, it); err != nil {
			return nil, err
		}
		st := it.State().(inventory.State)
		got, err := c.Reader.Product(ctx, sku)
		if err != nil {
			stockFails = append(stockFails, fmt.Sprintf("sku %s: %v", sku, err))
		} else if got.OnHand != st.OnHand || got.Reserved != st.Reserved || got.Version != it.Version() {
			stockFails = append(stockFails, fmt.Sprintf("sku %s: read model on hand %d reserved %d v%d, events on hand %d reserved %d v%d",
				sku, got.OnHand, got.Reserved, got.Version, st.OnHand, st.Reserved, it.Version()))
		}
		if st.OnHand < 0 || st.OnHand-st.Reserved < 0 {
			overdrawn = append(overdrawn, fmt.Sprintf("sku %s: on hand %d reserved %d", sku, st.OnHand, st.Reserved))
		}
		for o, q := range st.Reservations {
			if s, ok := terminal[o]; ok {
				dangling = append(dangling, fmt.Sprintf("sku %s reserves %d for %s order %s", sku, q, s, o))
			}
		}
	}
	r.add("wallet read models equal a replay of the event log", walletFails)
	r.add("stock read models equal a replay of the event log", stockFails)
	r.add("no wallet overdrawn, no stock negative", overdrawn)
	r.add("no hold or reservation left for a terminal order", dangling)
	r.add("money captured only for a parcel the carrier took", captureFails)

	projFails, err := c.projectionsComplete(ctx, streams[order.StreamType])
	if err != nil {
		return nil, err
	}
	r.add("no event missing or duplicated in any projection", projFails)
	dupFails, err := c.oneEffectPerCommand(ctx)
	if err != nil {
		return nil, err
	}
	r.add("no command id produced two sets of events", dupFails)
	topicFails, err := asyncapi.CheckTopics(ctx, c.Pool)
	if err != nil {
		return nil, err
	}
	r.add("every message on every topic matches the AsyncAPI document", topicFails)
	return r, nil
}

// settle waits until every consumer group of every topic has consumed it.
func (c *Checker) settle(ctx context.Context) []string {
	deadline := time.Now().Add(c.Settle)
	for {
		waiting, err := c.undelivered(ctx)
		if err != nil {
			return []string{err.Error()}
		}
		if (len(waiting) == 0 && !c.sagasBusy(ctx)) || time.Now().After(deadline) {
			return waiting
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sagasBusy reports sagas still running that wait for no operator
// (Temporal's visibility store, which trails them by a moment).
func (c *Checker) sagasBusy(ctx context.Context) bool {
	if c.Temporal == nil {
		return false
	}
	res, err := c.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus = "Running" AND %s != %q`, workflows.Name,
			workflows.AttrOrderStatus.GetName(), workflows.StatusNeedsAttention)})
	return err == nil && res.GetCount() > 0
}

func (c *Checker) undelivered(ctx context.Context) ([]string, error) {
	var out []string
	backlogs, err := outbox.Backlogs(ctx, c.Pool)
	if err != nil {
		return nil, err
	}
	for _, b := range backlogs {
		if b.Messages > 0 && b.Topic != outbox.PoisonTopic {
			out = append(out, fmt.Sprintf("%s: consumer group %s has %d messages waiting", b.Topic, b.ConsumerGroup, b.Messages))
		}
	}
	var pending int64
	if err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM saga_starts WHERE started_at IS NULL`).Scan(&pending); err != nil {
		return nil, err
	}
	if pending > 0 {
		out = append(out, fmt.Sprintf("saga_starts: %d sagas queued but not started", pending))
	}
	if st, err := c.Reader.Status(ctx); err == nil {
		for _, s := range st {
			if s.Poisoned > 0 {
				out = append(out, fmt.Sprintf("%s: %d unresolved poison messages", s.Name, s.Poisoned))
			}
		}
	}
	return out, nil
}

func (c *Checker) streams(ctx context.Context) (map[string][]string, error) {
	rows, _ := c.Pool.Query(ctx, `SELECT DISTINCT stream_type, stream_id FROM events ORDER BY 1, 2`)
	type row struct{ Type, ID string }
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	out := map[string][]string{}
	for _, r := range all {
		out[r.Type] = append(out[r.Type], r.ID)
	}
	return out, err
}

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
		return sagaView{problem: "it has no saga"}
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

// carrierTook returns the orders whose parcel the carrier took: the
// shipment records it, or the simulated carrier's bookings do (what the
// carrier knows, whether orderflow recorded it or not).
func (c *Checker) carrierTook(ctx context.Context) (map[string]bool, error) {
	rows, _ := c.Pool.Query(ctx, `
		SELECT substr(stream_id, 5) FROM events
		WHERE stream_type = 'shipment' AND event_type IN ('shipment.dispatched', 'shipment.delivered') AND stream_id LIKE 'shp-%'
		UNION
		SELECT substr(shipment_id, 5) FROM carrier_sim_bookings WHERE state = 'taken' AND shipment_id LIKE 'shp-%'`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	out := map[string]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out, err
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
		bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			return nil, err
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
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[trow])
	if err != nil {
		return nil, err
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
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range bad {
		out = append(out, fmt.Sprintf("command %s caused %d events, its log row names %d", b.Command, b.Events, b.Logs))
	}
	return out, nil
}
