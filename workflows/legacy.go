package workflows

// The saga's code for the runs recorded before VersionGuarded — versions
// VersionRegular and VersionLocal — kept as it was so that those runs
// replay and finish on the path they started. New runs never come here.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
)

type legacy struct {
	in       Input
	p        Progress
	version  workflow.Version
	written  [2]string // the OrderStatus and FailedStep last upserted
	undo     []namedStep
	cancel   string // the customer's reason, once asked
	cancelCh workflow.Channel
	shipped  bool // the carrier has the parcel: no more cancelling
	done     bool
}

// runLegacy is the saga as it ran before VersionGuarded, from the point
// where the version was read.
func runLegacy(ctx workflow.Context, in Input, version workflow.Version) (Progress, error) {
	f := &legacy{in: in, cancelCh: workflow.NewChannel(ctx), version: version}
	if f.version != VersionRegular {
		// The launcher starts the run with OrderStatus=PLACED.
		f.written = [2]string{StatusPlaced, ""}
	}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return f.p, nil }); err != nil {
		return f.p, err
	}
	err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateCancel, func(ctx workflow.Context, reason string) (Progress, error) {
		f.cancel = reason
		f.cancelCh.SendAsync(reason)
		return f.p, nil
	}, workflow.UpdateHandlerOptions{Validator: func(reason string) error {
		switch {
		case strings.TrimSpace(reason) == "":
			return temporal.NewApplicationError("a cancellation needs a reason", "reason_required")
		case f.shipped:
			return temporal.NewApplicationError("the order has shipped and can no longer be cancelled", ErrShipped)
		case f.done || f.cancel != "" || f.p.Status == StatusCompensating:
			return temporal.NewApplicationError("the order is already being cancelled or is finished", "saga_finished")
		}
		return nil
	}})
	if err != nil {
		return f.p, err
	}
	f.status(ctx, StatusPlaced, "")

	if f.version == VersionRegular {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			// Infrastructure errors retry with backoff, without limit: business
			// failures are non-retryable application errors from the activities.
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		})
	} else {
		ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout: StepAttemptTimeout, ScheduleToCloseTimeout: StepDeadline,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second},
		})
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: CarrierTimeout, HeartbeatTimeout: CarrierHeartbeat,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		})
	}
	err = f.forward(ctx)
	switch {
	case err == nil:
		f.done = true
		f.status(ctx, StatusCompleted, "done")
		return f.p, nil
	case f.shipped && !errors.Is(err, errCancelled):
		// Past the point of no return nothing is undone: the goods are gone.
		f.done = true
		f.fail(ctx, err)
		f.status(ctx, StatusNeedsAttention, f.p.Step)
		return f.p, err
	}
	return f.compensate(ctx, err)
}

// step runs one forward step unless a cancel came first.
func (f *legacy) step(ctx workflow.Context, name, status string, run func(workflow.Context) error) error {
	if f.cancel != "" {
		return errCancelled
	}
	f.status(ctx, status, name)
	return run(ctx)
}

// before registers the compensation of the step about to run: it is
// registered first, so a step that half-happened is undone too (every
// compensation is a no-op when there is nothing to undo).
func (f *legacy) before(name string, run func(workflow.Context) error) {
	f.undo = append(f.undo, namedStep{step: "compensate:" + name, run: run})
}

// call runs one step's activity: a local activity on VersionLocal, a
// regular one on the runs recorded before.
func (f *legacy) call(ctx workflow.Context, activity, arg any) error {
	if f.version == VersionRegular {
		return workflow.ExecuteActivity(ctx, activity, arg).Get(ctx, nil)
	}
	return workflow.ExecuteLocalActivity(ctx, activity, arg).Get(ctx, nil)
}

func (f *legacy) at(step string) activities.Step {
	return activities.Step{OrderID: f.in.OrderID, Step: step, CorrelationID: f.in.CorrelationID}
}

func (f *legacy) forward(ctx workflow.Context) error {
	in := f.in
	f.before("cancel_order", func(ctx workflow.Context) error {
		return f.call(ctx, a.CancelOrder, activities.OrderChange{Step: f.at("compensate:cancel_order"), Reason: f.p.Reason})
	})
	for _, l := range in.Lines {
		line := activities.Line{Step: f.at("reserve_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}
		f.before("release_stock:"+l.SKU, func(ctx workflow.Context) error {
			undo := line
			undo.Step = f.at("compensate:release_stock:" + l.SKU)
			return f.call(ctx, a.ReleaseStock, undo)
		})
		if err := f.step(ctx, line.Step.Step, StatusReservingStock, func(ctx workflow.Context) error {
			return f.call(ctx, a.ReserveStock, line)
		}); err != nil {
			return err
		}
	}
	pay := activities.Payment{Step: f.at("authorise_payment"), WalletID: in.WalletID, Amount: in.Total, Currency: in.Currency}
	f.before("void_payment", func(ctx workflow.Context) error {
		undo := pay
		undo.Step = f.at("compensate:void_payment")
		return f.call(ctx, a.VoidPayment, undo)
	})
	if err := f.step(ctx, "authorise_payment", StatusAuthorisingPayment, func(ctx workflow.Context) error {
		return f.call(ctx, a.AuthorisePayment, pay)
	}); err != nil {
		return err
	}
	if err := f.step(ctx, "confirm_order", StatusConfirmed, func(ctx workflow.Context) error {
		return f.call(ctx, a.ConfirmOrder, activities.OrderChange{Step: f.at("confirm_order")})
	}); err != nil {
		return err
	}
	parcel := activities.Parcel{Step: f.at("schedule_shipment"), ShipmentID: "shp-" + in.OrderID, Address: in.ShippingAddress}
	f.before("fail_shipment", func(ctx workflow.Context) error {
		undo := parcel
		undo.Step, undo.Reason = f.at("compensate:fail_shipment"), "order not fulfilled: "+f.p.Reason
		return f.call(ctx, a.FailShipment, undo)
	})
	if err := f.step(ctx, "schedule_shipment", StatusShipping, func(ctx workflow.Context) error {
		return f.call(ctx, a.ScheduleShipment, parcel)
	}); err != nil {
		return err
	}
	if err := f.step(ctx, "dispatch_shipment", StatusShipping, func(ctx workflow.Context) error {
		return f.dispatch(ctx, parcel)
	}); err != nil {
		return err
	}
	f.shipped = true
	f.status(ctx, StatusShipped, "dispatch_shipment")

	capture := pay
	capture.Step = f.at("capture_payment")
	f.before("refund_payment", func(ctx workflow.Context) error {
		undo := pay
		undo.Step = f.at("compensate:refund_payment")
		return f.call(ctx, a.RefundPayment, undo)
	})
	f.status(ctx, StatusShipped, "capture_payment")
	if err := f.call(ctx, a.CapturePayment, capture); err != nil {
		// A capture refused for good is undone like an earlier failure: the
		// payment never happened, so the order is not fulfilled.
		f.shipped = false
		return err
	}
	f.status(ctx, StatusShipped, "mark_shipped")
	if err := f.call(ctx, a.MarkOrderShipped, activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: parcel.ShipmentID}); err != nil {
		return err
	}
	for _, l := range in.Lines {
		f.status(ctx, StatusShipped, "commit_stock:"+l.SKU)
		if err := f.call(ctx, a.CommitStock, activities.Line{Step: f.at("commit_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}); err != nil {
			return err
		}
	}
	f.status(ctx, StatusShipped, "complete_order")
	return f.call(ctx, a.CompleteOrder, activities.OrderChange{Step: f.at("complete_order")})
}

// dispatch waits for the carrier, for the customer's cancel, or for the
// shipping deadline (a timer: a business deadline, not a workflow timeout),
// whichever comes first.
func (f *legacy) dispatch(ctx workflow.Context, parcel activities.Parcel) error {
	actCtx, stop := workflow.WithCancel(ctx)
	defer stop()
	p := parcel
	p.Step = f.at("dispatch_shipment")
	if f.version != VersionRegular {
		f.publish(ctx) // SHIPPING, while the carrier works
	}
	dispatched := workflow.ExecuteActivity(actCtx, a.DispatchWithCarrier, p)
	timerCtx, stopTimer := workflow.WithCancel(ctx)
	defer stopTimer()
	deadline := workflow.NewTimer(timerCtx, f.in.ShippingDeadline)
	var err error
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(dispatched, func(fut workflow.Future) { err = fut.Get(ctx, &f.p.TrackingNumber) })
	sel.AddReceive(f.cancelCh, func(c workflow.ReceiveChannel, more bool) { c.Receive(ctx, nil); err = errCancelled })
	sel.AddFuture(deadline, func(workflow.Future) {
		err = temporal.NewNonRetryableApplicationError(fmt.Sprintf("the carrier did not dispatch within %s", f.in.ShippingDeadline), "shipping_deadline_passed", nil)
	})
	sel.Select(ctx)
	return err
}

// compensate undoes every registered step in reverse on a disconnected
// context, so that a cancelled workflow still cleans up.
func (f *legacy) compensate(ctx workflow.Context, cause error) (Progress, error) {
	f.fail(ctx, cause)
	f.status(ctx, StatusCompensating, f.p.Step)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var failed error
	for i := len(f.undo) - 1; i >= 0; i-- {
		c := f.undo[i]
		f.p.Step = c.step
		if err := c.run(dctx); err != nil {
			failed = errors.Join(failed, fmt.Errorf("%s: %w", c.step, err))
			continue
		}
		f.p.Compensated = append(f.p.Compensated, c.step)
	}
	f.done = true
	if failed != nil {
		f.status(dctx, StatusNeedsAttention, f.p.Step)
		return f.p, failed
	}
	f.status(dctx, StatusCompensated, "compensated")
	return f.p, nil
}

// fail records why the forward path stopped.
func (f *legacy) fail(ctx workflow.Context, err error) {
	var app *temporal.ApplicationError
	switch {
	case errors.Is(err, errCancelled):
		f.p.Reason = "cancelled by the customer: " + f.cancel
	case temporal.IsCanceledError(err):
		f.p.Reason = "cancelled by an operator"
	case errors.As(err, &app):
		f.p.Reason = app.Message()
		if app.Type() != "" && !strings.HasPrefix(f.p.Reason, app.Type()) {
			f.p.Reason = app.Type() + ": " + f.p.Reason
		}
	default:
		f.p.Reason = err.Error()
	}
	if !errors.Is(err, errCancelled) {
		f.p.FailedStep = f.p.Step
	}
}

// status records progress. The runs recorded before VersionLocal upserted
// the search attributes at every call; VersionLocal writes them (each write
// is a history event and a visibility update) only where the workflow
// waits — for the carrier — and when it ends: between those points the
// steps run as local activities inside one workflow task, and the
// intermediate values would never be seen. The progress query has the
// current step at any time.
func (f *legacy) status(ctx workflow.Context, status, step string) {
	f.p.Status, f.p.Step = status, step
	switch {
	case f.version == VersionRegular:
		f.upsert(ctx)
	case status == StatusCompleted || status == StatusCompensated || status == StatusNeedsAttention:
		f.publish(ctx)
	}
}

// publish writes the search attributes when they changed since last time.
func (f *legacy) publish(ctx workflow.Context) {
	if f.written != [2]string{f.p.Status, f.p.FailedStep} {
		f.upsert(ctx)
	}
}

func (f *legacy) upsert(ctx workflow.Context) {
	f.written = [2]string{f.p.Status, f.p.FailedStep}
	writeAttrs(ctx, f.in, f.p.Status, f.p.FailedStep, false)
}
