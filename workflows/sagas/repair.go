package sagas

// Repair of sagas whose run ended without a business outcome (terminated,
// timed out, cancelled from outside, failed), whose order may hold stock,
// money or a booking no run looks after: finding them (Unfinished) and
// starting a repair run under the same workflow id (Repair) with the step
// keys of the run it repairs (LegacyKeys).

import (
	"context"
	"errors"
	"fmt"

	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/workflows"
)

// Unfinished reports whether the saga's latest run closed without a
// business outcome: terminated, timed out or cancelled from outside, or
// failed (as runs recorded before VersionGuarded did when they ended in
// NEEDS_ATTENTION). Its order may hold stock, money or a booking.
func (st State) Unfinished() bool {
	return st.RunStatus != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING.String() &&
		st.RunStatus != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED.String()
}

// ErrNothingToRepair: the order's saga runs, or ended with an outcome.
var ErrNothingToRepair = errors.New("the saga is running or ended with a business outcome")

// Repair starts a repair run for an order whose saga is Unfinished: the
// same workflow id — so the same step keys, and what the ended run did is
// not done twice — and the input of the first start, with Repair set. The
// run reads the order from the event log and completes or compensates it.
func Repair(ctx context.Context, pool *pgxpool.Pool, c client.Client, orderID string) error {
	st, err := Client{C: c}.State(ctx, orderID)
	if errors.Is(err, ErrNoSaga) {
		// Its runs are past the namespace's retention: repaired like an
		// ended one, if it was started at all.
		if started, serr := Started(ctx, pool, orderID); serr != nil || !started {
			return errors.Join(err, serr)
		}
	} else if err != nil {
		return err
	} else if !st.Unfinished() {
		return fmt.Errorf("order %s: %w (%s, %s)", orderID, ErrNothingToRepair, st.RunStatus, st.Status)
	}
	var in workflows.Input
	if err := pool.QueryRow(ctx, `SELECT input FROM saga_starts WHERE order_id = $1`, orderID).Scan(&in); err != nil {
		return fmt.Errorf("order %s: the saga's input: %w", orderID, err)
	}
	legacy := false
	if st.WorkflowID != "" {
		if legacy, err = legacyKeys(ctx, c, st.WorkflowID, st.RunID); err != nil {
			return fmt.Errorf("order %s: the ended run's keys: %w", orderID, err)
		}
	}
	in.Repair, in.LegacyKeys = true, legacy
	_, err = c.ExecuteWorkflow(ctx, startOptions(in, enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE), workflows.Name, in)
	return err
}

// legacyKeys reports whether a run sent its commands under the keys of
// the runs recorded before workflows.VersionGuarded (LegacyKeys).
func legacyKeys(ctx context.Context, c client.Client, workflowID, runID string) (bool, error) {
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return false, err
		}
		events = append(events, e)
	}
	return LegacyKeys(events), nil
}

// LegacyKeys reports whether the run whose history this is sent its
// commands (and booked the carrier) under the keys of the runs recorded
// before workflows.VersionGuarded: its version marker says so, or no marker
// came before its first step (the first version), or it repaired such a run
// itself.
func LegacyKeys(events []*historypb.HistoryEvent) bool {
	dc := converter.GetDefaultDataConverter()
	for _, e := range events {
		if started := e.GetWorkflowExecutionStartedEventAttributes(); started != nil {
			var in workflows.Input
			if p := started.GetInput().GetPayloads(); len(p) > 0 && dc.FromPayload(p[0], &in) == nil && in.LegacyKeys {
				return true
			}
		}
		m := e.GetMarkerRecordedEventAttributes()
		if m != nil && m.GetMarkerName() == "Version" {
			var change string
			var v workflow.Version
			if dc.FromPayloads(m.GetDetails()["change-id"], &change) == nil && change == workflows.ChangeID &&
				dc.FromPayloads(m.GetDetails()["version"], &v) == nil {
				return v < workflows.VersionGuarded
			}
		}
		if e.GetActivityTaskScheduledEventAttributes() != nil || m != nil {
			return true // a step before any version marker: the first version
		}
	}
	return false
}

// Unfinished lists the sagas whose latest run ended without a business
// outcome (terminated, timed out, cancelled from outside, failed), whatever
// their order's status, from Temporal's visibility store: the orders that
// may hold stock, money or a booking no run looks after.
//
// Orders not at an end in the read model whose saga was started but has no
// run left (past the namespace's retention) are listed too, with the run
// status "GONE".
func Unfinished(ctx context.Context, pool *pgxpool.Pool, c client.Client) ([]State, error) {
	var out []State
	seen := map[string]bool{}
	var token []byte
	for {
		res, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:    fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus != "Running" AND ExecutionStatus != "Completed"`, workflows.Name),
			PageSize: 1000, NextPageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, info := range res.GetExecutions() {
			wid := info.GetExecution().GetWorkflowId()
			if seen[wid] {
				continue
			}
			seen[wid] = true
			orderID, ok := strings.CutPrefix(wid, workflows.WorkflowID(""))
			if !ok {
				continue
			}
			// The latest run decides: a repaired order has a newer one.
			st, err := (Client{C: c}).State(ctx, orderID)
			if err != nil {
				return nil, fmt.Errorf("order %s: %w", orderID, err)
			}
			if st.Unfinished() {
				out = append(out, st)
			}
		}
		if token = res.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	rows, _ := pool.Query(ctx, `SELECT r.order_id FROM read_orders r JOIN saga_starts s USING (order_id)
		WHERE r.status IN ('placed', 'confirmed', 'shipped') AND s.started_at IS NOT NULL ORDER BY r.placed_at`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if seen[workflows.WorkflowID(id)] {
			continue
		}
		if _, err := (Client{C: c}).State(ctx, id); errors.Is(err, ErrNoSaga) {
			out = append(out, State{OrderID: id, WorkflowID: workflows.WorkflowID(id), RunStatus: "GONE"})
		} else if err != nil {
			return nil, fmt.Errorf("order %s: %w", id, err)
		}
	}
	slices.SortFunc(out, func(a, b State) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}
