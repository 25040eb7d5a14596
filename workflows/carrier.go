package workflows

// The carrier: the call that hands it the parcel, the withdrawal a
// cancel or the shipping deadline asks for, and the customer's cancel,
// which while the carrier works holds only if the carrier withdraws.

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
)

// validateCancel refuses a cancel the saga cannot honour, before it is
// written to the history.
func (f *fulfilment) validateCancel(reason string) error {
	if err := checkText(reason); err != nil {
		return err
	}
	switch {
	case f.phase == phaseShipped:
		return temporal.NewApplicationError("the carrier has the parcel; the order can no longer be cancelled", ErrShipped)
	case f.phase == phaseDone:
		return temporal.NewApplicationError("the saga has finished", ErrSagaFinished)
	case f.phase == phaseCompensating || f.cancel != "" || f.asked != "":
		return temporal.NewApplicationError("the order is already being cancelled", ErrCancelling)
	}
	return nil
}

// onCancel takes the customer's cancel. Before the carrier it holds at
// once (the forward path stops at its next step); while the carrier works
// it holds only if the carrier withdraws, and the answer says which.
func (f *fulfilment) onCancel(ctx workflow.Context, reason string) (Progress, error) {
	if f.phase == phaseRepairing {
		return f.cancelRepair(ctx, reason)
	}
	if f.phase == phaseForward && f.v < VersionFastCarrier {
		f.cancel = reason
		return f.p, nil
	}
	if f.phase != phaseDispatching && f.phase != phaseForward {
		return f.p, f.validateCancel(reason) // the carrier answered in between
	}
	// From VersionFastCarrier a cancel before the carrier waits for the
	// carrier too: the forward path stops at its next step and asks it
	// (carrierTookIt).
	f.asked, f.answer = reason, ""
	if f.phase == phaseDispatching {
		f.asks.SendAsync(reason)
	}
	if err := workflow.Await(ctx, func() bool { return f.answer != "" }); err != nil {
		return f.p, err
	}
	f.asked = ""
	if f.answer == answerTaken {
		return f.p, temporal.NewApplicationError("the carrier had already taken the parcel; the order can no longer be cancelled", ErrShipped)
	}
	return f.p, nil
}

// cancelling reports a customer's cancel that holds or waits for the
// carrier's answer.
func (f *fulfilment) cancelling() bool { return f.cancel != "" || f.asked != "" }

// carrierTookIt settles with the carrier, from VersionFastCarrier, a cancel
// (the customer's, or an operator's of the workflow) that stopped the
// forward path before the carrier: the carrier may have the parcel all the
// same. The carrier's first call runs inside the workflow task that ran the
// forward stage; if that task's completion was lost after the call (a
// worker killed, or a cancel of the workflow, which fails a completing
// task), the task runs again from the start and meets the cancel before
// the carrier. So the carrier is asked to withdraw under the saga's key: a
// booking it never had, it records as withdrawn; it refuses only if it has
// the parcel, and then nothing is undone and the saga goes on to the end.
//
// An operator's decision to compensate (after a lost task, the run may meet
// a database outage and stop for one) is settled the same way. A business
// refusal is not: a step's outcome is answered from the command log under
// its key, so a run cannot be refused where a lost task was not.
func (f *fulfilment) carrierTookIt(ctx workflow.Context, cause error) bool {
	var d *decided
	if f.v < VersionFastCarrier || f.phase != phaseForward ||
		!(errors.Is(cause, errCancelled) || temporal.IsCanceledError(cause) || errors.As(cause, &d)) {
		return false
	}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	withdrawn, err := f.withdraw(dctx)
	if err != nil {
		return false // an operator gave up on the withdrawal: as before, compensate
	}
	if withdrawn {
		f.p.Carrier = answerWithdrawn
		f.answerCancel(answerWithdrawn)
		return false
	}
	f.p.Carrier = answerTaken
	f.answerCancel(answerTaken)
	return true
}

// answerCancel settles a cancel waiting for the carrier; the first answer
// stands.
func (f *fulfilment) answerCancel(answer string) {
	if f.asked != "" && f.answer == "" {
		f.answer = answer
		if answer == answerWithdrawn {
			f.cancel = f.asked
		}
	}
}

// carrierRefused reports the carrier's own refusal of the parcel (or of a
// booking withdrawn before): the one failure of the carrier call that says
// the carrier does not have it.
func carrierRefused(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && (app.Type() == activities.ErrTypeCarrierRefuse || app.Type() == activities.ErrTypeWithdrawn)
}

// dispatch hands the parcel to the carrier and waits for it. The customer's
// cancel, an operator's cancel of the workflow, or the shipping deadline (a
// timer: a business deadline, not a workflow timeout) ask the carrier to
// withdraw: if it does, the saga compensates; if it has the parcel, the
// saga waits for the dispatch and goes on past the point of no return.
func (f *fulfilment) dispatch(ctx workflow.Context) error {
	f.phase, f.p.Status, f.p.Step = phaseDispatching, StatusShipping, "dispatch_shipment"
	// The carrier call and the wait outlive a cancel of the workflow: the
	// carrier is asked first.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	deadlineIn := f.in.ShippingDeadline
	if f.v >= VersionFastCarrier {
		started := workflow.Now(dctx)
		if answered, err := f.fastCarrier(dctx); answered {
			return err
		}
		deadlineIn = max(f.in.ShippingDeadline-workflow.Now(dctx).Sub(started), time.Millisecond)
	}
	f.publish(ctx) // SHIPPING, while the carrier works
	actCtx, stopCarrier := workflow.WithCancel(dctx)
	defer stopCarrier()
	p := f.parcel("dispatch_shipment")
	var dispatched workflow.Future
	if f.v >= VersionDoors {
		dispatched = workflow.ExecuteActivity(actCtx, a.BookWithCarrier, p)
	} else {
		dispatched = workflow.ExecuteActivity(actCtx, a.DispatchWithCarrier, p)
	}
	timerCtx, stopTimer := workflow.WithCancel(dctx)
	defer stopTimer()
	deadline := workflow.NewTimer(timerCtx, deadlineIn)
	deadlinePassed, cancelled, taken := false, false, false
	for {
		var result error
		var stop error // why to ask the carrier to withdraw
		done := false
		sel := workflow.NewSelector(dctx)
		sel.AddFuture(dispatched, func(fut workflow.Future) { done, result = true, fut.Get(dctx, &f.p.TrackingNumber) })
		if !taken {
			sel.AddReceive(f.asks, func(c workflow.ReceiveChannel, _ bool) { c.Receive(dctx, nil); stop = errCancelled })
			if !deadlinePassed {
				sel.AddFuture(deadline, func(workflow.Future) {
					deadlinePassed = true
					stop = temporal.NewNonRetryableApplicationError(fmt.Sprintf("the carrier did not dispatch within %s", f.in.ShippingDeadline), "shipping_deadline_passed", nil)
				})
			}
			if !cancelled {
				sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) { cancelled, stop = true, temporal.NewCanceledError() })
			}
		}
		sel.Select(dctx)
		if done {
			if result != nil && f.v >= VersionDoors && !carrierRefused(result) {
				// Not the carrier's refusal: it may have the parcel. Never
				// compensated on that; an operator has the carrier asked
				// again (the same key gets the same answer).
				result = f.retryCarrier(dctx, result)
			}
			if result != nil {
				f.answerCancel(answerWithdrawn) // refused by the carrier: the order is cancelled anyway
				return result
			}
			f.phase = phaseShipped
			f.answerCancel(answerTaken)
			return nil
		}
		withdrawn, err := f.withdraw(dctx)
		if err != nil {
			return err
		}
		if withdrawn {
			f.p.Carrier = answerWithdrawn
			f.answerCancel(answerWithdrawn)
			return stop
		}
		// The carrier has the parcel: from here on, nothing is undone.
		taken, f.phase, f.p.Carrier = true, phaseShipped, answerTaken
		f.answerCancel(answerTaken)
	}
}

// fastCarrier calls the carrier once as a local activity, bounded by
// CarrierFastTimeout (and the shipping deadline). It reports whether the
// carrier answered: with the tracking number (the parcel is taken, err is
// nil) or with its refusal (err, which the caller compensates). Any other
// outcome (too slow, an error that says nothing of the parcel) is no
// answer: the caller calls the carrier again as a regular activity, under
// the same key. A cancel sent meanwhile is taken after this returns, by
// the validator, which then finds the carrier's answer.
func (f *fulfilment) fastCarrier(ctx workflow.Context) (bool, error) {
	timeout := min(CarrierFastTimeout, f.in.ShippingDeadline)
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: timeout, ScheduleToCloseTimeout: timeout,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	err := workflow.ExecuteLocalActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
	switch {
	case err == nil:
		f.phase = phaseShipped
		f.answerCancel(answerTaken)
		return true, nil
	case carrierRefused(err):
		f.answerCancel(answerWithdrawn) // refused by the carrier: the order is cancelled anyway
		return true, err
	}
	return false, nil
}

// changeCarrierRefusalOnRetry marks the runs in which a carrier refusal
// answering an operator's retry compensates (a version of its own: only
// the runs that reach the retry record it).
const changeCarrierRefusalOnRetry = "carrier-refusal-on-retry"

// retryCarrier stops for an operator after the carrier call failed in a
// way that says nothing of the parcel; each retry asks the carrier again
// under the same key, until it answers: with the parcel's tracking number
// (nil), or with its refusal, which the caller compensates.
func (f *fulfilment) retryCarrier(ctx workflow.Context, cause error) error {
	if workflow.GetVersion(ctx, changeCarrierRefusalOnRetry, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		// Runs that reached this point before: each retry's answer,
		// refusals too, stopped the saga for an operator again.
		return f.do(ctx, "dispatch_shipment", func(ctx workflow.Context) error {
			if cause != nil {
				err := cause
				cause = nil
				return err
			}
			return workflow.ExecuteActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
		}, true, ActionRetry)
	}
	for {
		if _, err := f.attend(ctx, "dispatch_shipment", cause, []string{ActionRetry}); err != nil {
			return err
		}
		cause = workflow.ExecuteActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
		if cause == nil || carrierRefused(cause) {
			return cause
		}
	}
}

// withdraw asks the carrier not to take the parcel. From VersionDoors the
// call heartbeats and is bounded: a carrier that does not answer within
// WithdrawDeadline stops the saga for an operator.
func (f *fulfilment) withdraw(ctx workflow.Context) (bool, error) {
	var withdrawn bool
	ctx = f.withdrawOptions(ctx)
	err := f.do(ctx, "withdraw_from_carrier", func(ctx workflow.Context) error {
		if f.v < VersionWithdrawActivity {
			return call(ctx, a.WithdrawFromCarrier, f.parcel("dispatch_shipment"), &withdrawn)
		}
		return workflow.ExecuteActivity(ctx, a.WithdrawFromCarrier, f.parcel("dispatch_shipment")).Get(ctx, &withdrawn)
	}, true, ActionRetry)
	return withdrawn, err
}

func (f *fulfilment) withdrawOptions(ctx workflow.Context) workflow.Context {
	if f.v < VersionDoors {
		return ctx
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: WithdrawTimeout, HeartbeatTimeout: CarrierHeartbeat, ScheduleToCloseTimeout: WithdrawDeadline,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second},
	})
}

// withdrawCancelled asks the carrier to withdraw the parcel of an order
// already cancelled. While the carrier has it, nothing is undone: the saga
// waits for an operator, who has the parcel returned and retries.
func (f *fulfilment) withdrawCancelled(ctx workflow.Context) error {
	ctx = f.withdrawOptions(ctx)
	return f.do(ctx, "withdraw_from_carrier", func(ctx workflow.Context) error {
		var withdrawn bool
		if err := workflow.ExecuteActivity(ctx, a.WithdrawFromCarrier, f.parcel("dispatch_shipment")).Get(ctx, &withdrawn); err != nil {
			return err
		}
		if f.p.Carrier = answerWithdrawn; !withdrawn {
			f.p.Carrier = answerTaken
			return temporal.NewNonRetryableApplicationError("the carrier has the parcel of a cancelled order: have it returned, then retry", ErrCarrierHasParcel, nil)
		}
		return nil
	}, true, ActionRetry)
}
