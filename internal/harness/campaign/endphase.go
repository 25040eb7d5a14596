// The operator's side of the campaign: sagas that wait for an operator resolved
// during the load, and the end phase that drives every saga to an end.

package campaign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/orderflow/orderflow/client"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// sagaStatus is the order's saga status as GET /orders/{id} shows it ("" if unknown).
func (r *run) sagaStatus(ctx context.Context, id string) string {
	o, err := r.ops.At(r.cfg.APIs[rand.IntN(len(r.cfg.APIs))]).API.GetOrderWithResponse(ctx, id, nil)
	if err != nil || o.JSON200 == nil || o.JSON200.Saga == nil {
		return ""
	}
	saga := o.JSON200.Saga
	if rs := saga.RunStatus; rs == "Terminated" || rs == "WORKFLOW_EXECUTION_STATUS_TERMINATED" {
		return "TERMINATED"
	}
	return saga.Status
}

// awaitSaga polls until the saga's status is one of want (or limit passes).
func (r *run) awaitSaga(ctx context.Context, id string, limit time.Duration, want ...string) string {
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last = r.sagaStatus(ctx, id); slices.Contains(want, last) {
			return last
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return last
}

// ended: the saga's outcome statuses.
var ended = []string{workflows.StatusCompleted, workflows.StatusCompensated, workflows.StatusWrittenOff, workflows.StatusNeedsAttention}

// operatorRound resolves the sagas that wait for an operator (except those
// an action resolves itself) and, in the end phase, repairs the sagas that
// ended without an outcome.
func (r *run) operatorRound(ctx context.Context, rnd *rand.Rand, end bool) (waiting int) {
	limit := 1000
	list, err := r.ops.API.ListSagasWithResponse(ctx, &client.ListSagasParams{Status: workflows.StatusNeedsAttention, Limit: &limit})
	if err != nil || list.JSON200 == nil {
		return 1
	}
	for _, s := range list.JSON200.Sagas {
		id := s.OrderId
		r.mu.Lock()
		mine := r.handled[id]
		r.mu.Unlock()
		if id == "" || (mine && !end) {
			waiting++
			continue
		}
		r.resolve(ctx, rnd, id)
		waiting++
	}
	if end {
		unfinished, err := sagas.Unfinished(ctx, r.cfg.Pool, r.cfg.Temporal)
		if err != nil {
			return waiting + 1
		}
		for _, u := range unfinished {
			err := sagas.Repair(ctx, r.cfg.Pool, r.cfg.Temporal, u.OrderID)
			var already *serviceerror.WorkflowExecutionAlreadyStarted
			if err == nil {
				r.count(r.rep.Operator, "repair (bulk, end)")
			} else if !errors.Is(err, sagas.ErrNothingToRepair) && !errors.As(err, &already) {
				r.cfg.Logf("repair %s: %v", u.OrderID, err)
			}
			waiting++
		}
	}
	return waiting
}

// resolve decides for a saga in NEEDS_ATTENTION, by seed among the options
// it offers: retry (twice at most per order), compensate or write_off.
// skip is never chosen: it says an operator undid a step by hand, which
// the campaign does not do.
func (r *run) resolve(ctx context.Context, rnd *rand.Rand, id string) {
	saga, err := r.ops.API.GetOrderSagaWithResponse(ctx, id)
	if err != nil || saga.JSON200 == nil || saga.JSON200.Progress.Attention == nil {
		return
	}
	var choices []string
	r.mu.Lock()
	tries := r.retries[id]
	r.mu.Unlock()
	for _, o := range saga.JSON200.Progress.Attention.Options {
		s := string(o)
		if s == workflows.ActionSkip || (s == workflows.ActionRetry && tries >= 2) {
			continue
		}
		choices = append(choices, s)
	}
	if len(choices) == 0 {
		return
	}
	action := choices[rnd.IntN(len(choices))]
	if action == workflows.ActionRetry {
		r.mu.Lock()
		r.retries[id]++
		r.mu.Unlock()
	}
	st, out := 0, map[string]any(nil)
	if res, err := r.ops.API.ResolveOrderSagaWithResponse(ctx, id, client.ResolveOrderSagaJSONRequestBody{Action: client.ResolveOrderSagaJSONBodyAction(action), Reason: "campaign operator"}); err == nil {
		st = res.StatusCode()
		_ = json.Unmarshal(res.Body, &out)
	}
	r.answer("operator resolve "+action, st, out)
	if st == http.StatusOK {
		r.count(r.rep.Operator, "resolve "+action)
	}
}

// endPhase drives every saga to an end: it resolves those waiting for an
// operator and repairs those terminated, until none runs.
func (r *run) endPhase(ctx context.Context, rnd *rand.Rand) {
	deadline := time.Now().Add(r.cfg.Settle)
	quiet := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		waiting := r.operatorRound(ctx, rnd, true)
		running, err := r.cfg.Temporal.CountWorkflow(ctx, &workflowCount)
		if err != nil {
			sleep(ctx, 2*time.Second)
			continue
		}
		if waiting == 0 && running.GetCount() == 0 {
			if quiet++; quiet == 2 {
				return
			}
		} else {
			quiet = 0
			r.cfg.Logf("end phase: %d sagas running, %d waiting for an operator or a repair", running.GetCount(), waiting)
		}
		sleep(ctx, 2*time.Second)
	}
	all, _ := sagas.Unfinished(ctx, r.cfg.Pool, r.cfg.Temporal)
	for _, u := range all {
		r.rep.Unended = append(r.rep.Unended, u.OrderID+" (ended without an outcome)")
	}
	running, _ := r.cfg.Temporal.CountWorkflow(ctx, &workflowCount)
	r.rep.Unended = append(r.rep.Unended, fmt.Sprintf("%d sagas still running after %s", running.GetCount(), r.cfg.Settle))
}

// workflowCount counts the sagas still running (waiting for an operator included).
var workflowCount = workflowservice.CountWorkflowExecutionsRequest{
	Query: fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus = "Running"`, workflows.Name),
}
