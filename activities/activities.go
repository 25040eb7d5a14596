// Package activities holds the fulfilment saga's activities: each sends one
// command through the same command bus as the REST API, with an idempotency
// key derived from the workflow and the step — in a namespace no client can
// write to — so a retried activity never applies twice. A business refusal
// fails the activity for good, with the domain's reason code as its type;
// anything else (the database, the network) is retried by Temporal.
//
// activities.go holds the Activities, the step's idempotency keys and the
// sending of a step's command; steps.go the one-command steps (stock,
// payment, the order); stages.go the stages that send several steps in a
// few group commits; shipment.go the shipment and the carrier's calls;
// inspect.go the repair's reading of an order. carrier.go and payments.go
// are where a real carrier's and payment provider's APIs plug in.
package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
)

// Activities are registered on the worker; their method names are the
// activity names in the Temporal UI.
type Activities struct {
	Bus     *commands.Bus
	Store   *eventstore.Store
	Carrier Carrier
	// CustomerKeys opens the sealed shipping address for the carrier, the
	// one place outside the API that needs it in clear.
	CustomerKeys *personal.Keys
}

// Step says which saga step sends a command and on whose behalf.
type Step struct {
	OrderID       string `json:"order_id"`
	Step          string `json:"step"`
	CorrelationID string `json:"correlation_id"`
	// Key is the command's idempotency key (SagaKey). Runs recorded before
	// the saga's keys were reserved have none and use CommandID.
	Key string `json:"key,omitempty"`
	// OnBehalfOf is who placed the order.
	OnBehalfOf string `json:"on_behalf_of,omitempty"`
}

// key is the step's idempotency key.
func (s Step) key(workflowID string) string {
	if s.Key != "" {
		return s.Key
	}
	return CommandID(workflowID, s.Step)
}

// Error types of the activities' non-retryable failures besides the
// domain's reason codes. A key collision and an invalid command are no
// business refusal: the saga does not compensate for them but stops for an
// operator. The carrier's refusal and a withdrawn booking are refusals.
const (
	ErrTypeKeyCollision  = "key_collision"
	ErrTypeInvalid       = "invalid_command"
	ErrTypeWithdrawn     = "carrier_withdrawn"
	ErrTypeCarrierRefuse = "carrier_rejected"
)

// send dispatches one command of the saga. Rejections whose code is in
// done mean the effect is already there (or nothing is left to undo).
func (a *Activities) send(ctx context.Context, s Step, cmd commands.Command, done ...string) (commandlog.Record, error) {
	rec, err := a.Bus.Dispatch(ctx, a.request(ctx, s, cmd))
	return a.outcome(ctx, s, cmd, rec, err, done)
}

// request is the bus request of one step's command.
func (a *Activities) request(ctx context.Context, s Step, cmd commands.Command) commands.Request {
	info := activity.GetInfo(ctx)
	return commands.Request{
		CommandID:     s.key(info.WorkflowExecution.ID),
		Internal:      true,
		Command:       cmd,
		CorrelationID: s.CorrelationID,
		CausationID:   info.WorkflowExecution.ID,
		Actor:         "saga:" + info.WorkflowExecution.ID,
		OnBehalfOf:    s.OnBehalfOf,
		Metadata:      map[string]string{"saga_step": s.Step, "order_id": s.OrderID, "workflow_id": info.WorkflowExecution.ID},
	}
}

// outcome is what a step's command came to, as the saga sees it.
func (a *Activities) outcome(ctx context.Context, s Step, cmd commands.Command, rec commandlog.Record, err error, done []string) (commandlog.Record, error) {
	typ := cmd.CommandType()
	key := s.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	var rejected *commands.RejectedError
	if errors.As(err, &rejected) {
		if slices.Contains(done, rejected.Record.ReasonCode) {
			return rejected.Record, nil
		}
		return rec, temporal.NewNonRetryableApplicationError(rejected.Error(), rejected.Record.ReasonCode, nil)
	}
	if errors.Is(err, commands.ErrKeyReused) {
		// A step run again (a local activity whose workflow task did not
		// complete) may carry other text than its first run, e.g. a
		// compensation's reason after an update arrived in between: the
		// step's key says it was applied already, so its recorded outcome
		// stands. Another command type under the key is no step of ours:
		// a collision, never a business refusal (the saga stops for an
		// operator instead of compensating).
		if prior, perr := a.Bus.Log().Get(ctx, key); perr == nil && prior.Type == typ {
			if prior.Status == commandlog.StatusRejected && !slices.Contains(done, prior.ReasonCode) {
				return prior, temporal.NewNonRetryableApplicationError(prior.Reason, prior.ReasonCode, nil)
			}
			return prior, nil
		}
		return rec, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeKeyCollision, nil)
	}
	var payloadErr *commands.PayloadError
	if errors.As(err, &payloadErr) || errors.Is(err, commands.ErrUnknownType) {
		return rec, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalid, nil)
	}
	return rec, err
}

// stepCommand is one step of a stage and its command.
type stepCommand struct {
	step Step
	cmd  commands.Command
}

// sendAll sends independent steps together (Bus.DispatchAll: one group
// commit when the committer is free) and returns the first failure, in
// the steps' order.
func (a *Activities) sendAll(ctx context.Context, steps ...stepCommand) error {
	reqs := make([]commands.Request, len(steps))
	for i, s := range steps {
		reqs[i] = a.request(ctx, s.step, s.cmd)
	}
	recs, errs := a.Bus.DispatchAll(ctx, reqs...)
	for i, s := range steps {
		if _, err := a.outcome(ctx, s.step, s.cmd, recs[i], errs[i], nil); err != nil {
			return fmt.Errorf("%s: %w", s.step.Step, err)
		}
	}
	return nil
}

// SagaKey is the idempotency key of a saga step's command: the workflow id
// and the step in the namespace only orderflow's own requests may use
// (commands.ReservedPrefix), hashed when too long for a command id.
func SagaKey(workflowID, step string) string {
	id := commands.ReservedPrefix + workflowID + "." + step
	if commands.ValidID(id) {
		return id
	}
	return commands.ReservedPrefix + uuid.NewSHA1(uuid.NameSpaceURL, []byte(workflowID+"."+step)).String()
}

// CommandID is the key of the runs recorded before SagaKey: the same
// parts in the clients' namespace. Kept so those runs finish with the keys
// they started with.
func CommandID(workflowID, step string) string {
	id := workflowID + "." + step
	if commands.ValidID(id) {
		return id
	}
	return "saga." + uuid.NewSHA1(uuid.NameSpaceURL, []byte(id)).String()
}
