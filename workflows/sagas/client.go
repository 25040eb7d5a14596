package sagas

// Client: what the API asks of the sagas through Temporal. A customer's
// cancel and an operator's decision are workflow updates; progress is a
// query; a saga's state, a count and a list come from Temporal's
// visibility store (the saga's search attributes), without a worker.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/orderflow/orderflow/workflows"
)

// Client asks running sagas about their progress and to cancel.
type Client struct {
	C client.Client
	// Pool, when set, lets a customer's cancel of an order whose saga
	// ended without an outcome start its repair run (which answers it).
	Pool *pgxpool.Pool
}

// ErrNoSaga means no saga runs for the order (none started, or finished).
var ErrNoSaga = errors.New("no running saga for this order")

// ErrSagaStarting: the order is placed and its saga not started yet (the
// launcher is about to): a cancel is to be sent again in a moment.
var ErrSagaStarting = errors.New("the order's saga is starting")

// RefusedError is the saga refusing an update: a cancel once the carrier
// has the parcel, a decision it is not waiting for, text it cannot store.
type RefusedError struct{ Code, Message string }

func (e *RefusedError) Error() string { return e.Message }

// CancelOrder is a customer's cancel of an order, sent to the one place
// that decides it: the running saga (which may have to ask the carrier
// first). A saga that ended without an outcome (terminated) is repaired,
// and the repair run answers with its reading of the carrier. ErrNoSaga:
// the saga finished with an outcome, which stands; ErrSagaStarting: none
// runs yet.
//
// updateID, when not empty, makes the cancel idempotent: Temporal answers a
// cancel sent again under the same id with the first one's outcome.
func (s Client) CancelOrder(ctx context.Context, orderID, reason, updateID string) (workflows.Progress, error) {
	p, err := s.update(ctx, orderID, workflows.UpdateCancel, reason, updateID)
	if !errors.Is(err, ErrNoSaga) {
		return p, err
	}
	st, err := s.State(ctx, orderID)
	switch {
	case errors.Is(err, ErrNoSaga):
		// Not started yet, or its runs are past the namespace's
		// retention: the inbox says which.
		if started, err := Started(ctx, s.Pool, orderID); err != nil || !started {
			return p, errors.Join(ErrSagaStarting, err)
		}
	case err != nil:
		return p, err
	case !st.Unfinished():
		return p, ErrNoSaga
	}
	if s.Pool == nil {
		return p, ErrNoSaga
	}
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if err := Repair(ctx, s.Pool, s.C, orderID); err != nil && !errors.Is(err, ErrNothingToRepair) && !errors.As(err, &already) {
		return p, err
	}
	return s.update(ctx, orderID, workflows.UpdateCancel, reason, updateID)
}

// Resolve gives an operator's decision to a saga in NEEDS_ATTENTION; it
// returns once the saga has taken it (or refused it, *RefusedError).
func (s Client) Resolve(ctx context.Context, orderID string, r workflows.Resolution) (workflows.Progress, error) {
	return s.update(ctx, orderID, workflows.UpdateResolve, r, "")
}

func (s Client) update(ctx context.Context, orderID, name string, arg any, updateID string) (workflows.Progress, error) {
	if updateID == "" {
		updateID = uuid.NewString()
	}
	// The workflow task that runs an update can fail when an event lands
	// at the same moment (the carrier's answer to a withdrawal): the
	// server then answers WorkflowNotReady. The same update id again is
	// the same update, so it is sent again, briefly.
	opts := client.UpdateWorkflowOptions{
		UpdateID:   updateID,
		WorkflowID: workflows.WorkflowID(orderID), UpdateName: name, Args: []any{arg},
		WaitForStage: client.WorkflowUpdateStageAccepted,
	}
	run := func() (p workflows.Progress, err error) {
		h, err := s.C.UpdateWorkflow(ctx, opts)
		if err != nil {
			return p, err
		}
		// Accepted: the saga has it. Its answer may come later than ctx
		// allows (the carrier is slow to answer a withdrawal).
		if err := h.Get(ctx, &p); err != nil && ctx.Err() != nil {
			return p, ErrPending
		} else if err != nil {
			return p, err
		}
		return p, nil
	}
	p, err := run()
	var notReady *serviceerror.WorkflowNotReady
	for attempt := 1; errors.As(err, &notReady) && attempt <= 5 && ctx.Err() == nil; attempt++ {
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		p, err = run()
	}
	if errors.Is(err, ErrPending) {
		return workflows.Progress{}, err
	} else if err != nil {
		return workflows.Progress{}, s.mapErr(err)
	}
	return p, nil
}

// ErrPending: the saga accepted the update and has not answered within
// the caller's time; the answer shows in its progress.
var ErrPending = errors.New("the saga accepted and has not answered yet")

func (s Client) mapErr(err error) error {
	var notFound *serviceerror.NotFound
	var app *temporal.ApplicationError
	switch {
	case errors.As(err, &notFound):
		return ErrNoSaga
	case errors.As(err, &app) && app.Type() == workflows.ErrSagaFinished:
		return ErrNoSaga
	case errors.As(err, &app):
		return &RefusedError{Code: app.Type(), Message: app.Message()}
	}
	return err
}

// State is what the Temporal server knows of a saga without asking the
// workflow (no worker involved, so it is fast even under load).
type State struct {
	OrderID    string     `json:"order_id"`
	WorkflowID string     `json:"workflow_id"`
	RunID      string     `json:"run_id,omitempty"`
	RunStatus  string     `json:"run_status"`
	Status     string     `json:"status"`
	FailedStep string     `json:"failed_step,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	ClosedAt   *time.Time `json:"closed_at,omitempty"`
}

// State describes the order's saga from its search attributes.
func (s Client) State(ctx context.Context, orderID string) (State, error) {
	d, err := s.C.DescribeWorkflowExecution(ctx, workflows.WorkflowID(orderID), "")
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return State{}, ErrNoSaga
		}
		return State{}, err
	}
	st := stateOf(d.GetWorkflowExecutionInfo())
	st.OrderID = orderID
	return st, nil
}

func stateOf(info *workflowpb.WorkflowExecutionInfo) State {
	st := State{WorkflowID: info.GetExecution().GetWorkflowId(), RunID: info.GetExecution().GetRunId(), RunStatus: info.GetStatus().String(), StartedAt: info.GetStartTime().AsTime()}
	if info.GetCloseTime() != nil {
		t := info.GetCloseTime().AsTime()
		st.ClosedAt = &t
	}
	fields := info.GetSearchAttributes().GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	_ = dc.FromPayload(fields[workflows.AttrOrderID.GetName()], &st.OrderID)
	_ = dc.FromPayload(fields[workflows.AttrOrderStatus.GetName()], &st.Status)
	if p, ok := fields[workflows.AttrFailedStep.GetName()]; ok {
		_ = dc.FromPayload(p, &st.FailedStep)
	}
	return st
}

// byStatus is the visibility query of the sagas whose OrderStatus is status.
func byStatus(status string) string {
	return fmt.Sprintf("%s = %q AND WorkflowType = %q", workflows.AttrOrderStatus.GetName(), status, workflows.Name)
}

// Count returns how many sagas have OrderStatus status (running ones only:
// a finished saga keeps its last status).
func (s Client) Count(ctx context.Context, status string) (int64, error) {
	res, err := s.C.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: byStatus(status) + ` AND ExecutionStatus = "Running"`})
	return res.GetCount(), err
}

// List returns up to limit sagas whose OrderStatus is status, newest first
// (Temporal's visibility store: it trails the sagas by a moment).
func (s Client) List(ctx context.Context, status string, limit int) ([]State, error) {
	var out []State
	var token []byte
	for len(out) < limit {
		res, err := s.C.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:    byStatus(status),
			PageSize: int32(min(limit-len(out), 1000)), NextPageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, info := range res.GetExecutions() {
			out = append(out, stateOf(info))
		}
		if token = res.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	return out, nil
}

// Progress returns the saga's progress, running or finished.
func (s Client) Progress(ctx context.Context, orderID string) (workflows.Progress, error) {
	v, err := s.C.QueryWorkflow(ctx, workflows.WorkflowID(orderID), "", workflows.QueryProgress)
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return workflows.Progress{}, ErrNoSaga
		}
		return workflows.Progress{}, err
	}
	var p workflows.Progress
	return p, v.Get(&p)
}
