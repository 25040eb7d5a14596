// The operator's side of the campaign: sagas that wait for an operator resolved
// during the load, and the end phase that drives every saga to an end.

package campaign

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// sagaStatus is the order's saga status as GET /orders/{id} shows it ("" if unknown).
func (r *run) sagaStatus(ctx context.Context, id string) string {
	st, out, err := r.ops.At(r.cfg.APIs[rand.IntN(len(r.cfg.APIs))]).Get(ctx, "/orders/"+id)
	if err != nil || st != http.StatusOK {
		return ""
	}
	saga, _ := out["saga"].(map[string]any)
	s, _ := saga["status"].(string)
	if rs, _ := saga["run_status"].(string); rs == "Terminated" || rs == "WORKFLOW_EXECUTION_STATUS_TERMINATED" {
		return "TERMINATED"
	}
	return s
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
	st, out, err := r.ops.Get(ctx, "/sagas?status=NEEDS_ATTENTION&limit=1000")
	if err != nil || st != http.StatusOK {
		return 1
	}
	list, _ := out["sagas"].([]any)
	for _, s := range list {
		m, _ := s.(map[string]any)
		id, _ := m["order_id"].(string)
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
	st, out, err := r.ops.Get(ctx, "/orders/"+id+"/saga")
	if err != nil || st != http.StatusOK {
		return
	}
	prog, _ := out["progress"].(map[string]any)
	att, _ := prog["attention"].(map[string]any)
	opts, _ := att["options"].([]any)
	var choices []string
	r.mu.Lock()
	tries := r.retries[id]
	r.mu.Unlock()
	for _, o := range opts {
		s, _ := o.(string)
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
	st, out, _ = r.ops.Post(ctx, "/orders/"+id+"/saga/resolve", "", map[string]any{"action": action, "reason": "campaign operator"})
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
