package workflows

// The forward path: the steps before the carrier (as one stage from
// VersionStages, or one by one) and those after it, with the
// compensation each registers before it runs.

import (
	"errors"
	"fmt"
	"slices"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
)

// at is the step's command context. Its key is the saga's key of the step
// — the keys of the time for a repair of a run recorded before
// VersionGuarded — and, after an operator retried a refused command, that
// of the new attempt.
func (f *fulfilment) at(step string) activities.Step {
	s := activities.Step{OrderID: f.in.OrderID, Step: step, CorrelationID: f.in.CorrelationID, OnBehalfOf: f.in.Actor}
	switch n := f.attempts[step]; {
	case f.in.LegacyKeys && n == 0:
		// activities.CommandID, the key a run of that time used.
	case n > 0:
		s.Key = activities.SagaKey(f.wid, fmt.Sprintf("%s.%d", step, n+1))
	default:
		s.Key = activities.SagaKey(f.wid, step)
	}
	return s
}

// call runs one step's local activity.
func call(ctx workflow.Context, activity, arg, result any) error {
	return workflow.ExecuteLocalActivity(ctx, activity, arg).Get(ctx, result)
}

// stage is a step before the carrier and the compensation registered before
// it runs (so a step that half-happened is undone too: every compensation
// is a no-op when there is nothing to undo).
type stage struct {
	name, status string
	run          func(workflow.Context) error
	undo         string
	compensate   func(workflow.Context) error
}

func (f *fulfilment) stages() []stage {
	in := f.in
	out := []stage{{undo: "cancel_order", compensate: func(ctx workflow.Context) error {
		return call(ctx, a.CancelOrder, activities.OrderChange{Step: f.at("compensate:cancel_order"), Reason: clip(f.p.Reason)}, nil)
	}}}
	for _, l := range in.Lines {
		step := "reserve_stock:" + l.SKU
		out = append(out, stage{name: step, status: StatusReservingStock,
			run: func(ctx workflow.Context) error {
				return call(ctx, a.ReserveStock, activities.Line{Step: f.at(step), SKU: l.SKU, Quantity: l.Quantity}, nil)
			},
			undo: "release_stock:" + l.SKU, compensate: func(ctx workflow.Context) error {
				undo := activities.Line{Step: f.at("compensate:release_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}
				return call(ctx, a.ReleaseStock, undo, nil)
			}})
	}
	out = append(out, stage{name: "authorise_payment", status: StatusAuthorisingPayment,
		run: func(ctx workflow.Context) error {
			return call(ctx, a.AuthorisePayment, f.payment("authorise_payment"), nil)
		},
		undo: "void_payment", compensate: func(ctx workflow.Context) error {
			return call(ctx, a.VoidPayment, f.payment("compensate:void_payment"), nil)
		}},
		stage{name: "confirm_order", status: StatusConfirmed, run: func(ctx workflow.Context) error {
			return call(ctx, a.ConfirmOrder, activities.OrderChange{Step: f.at("confirm_order")}, nil)
		}},
		stage{name: "schedule_shipment", status: StatusShipping,
			run: func(ctx workflow.Context) error {
				return call(ctx, a.ScheduleShipment, f.parcel("schedule_shipment"), nil)
			},
			undo: "fail_shipment", compensate: func(ctx workflow.Context) error {
				undo := f.parcel("compensate:fail_shipment")
				undo.Reason = clip("order not fulfilled: " + f.p.Reason)
				return call(ctx, a.FailShipment, undo, nil)
			}})
	return out
}

// stage runs a stage's local activity once (no retries: a stage that
// fails is run again step by step by the caller) and reports whether every
// step of it was applied. Its timeout outlasts the bus's resolution of a
// lost commit, so that no command of the stage is still in flight when
// the saga goes on without it.
func (f *fulfilment) stage(ctx workflow.Context, run, arg any) bool {
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: StageTimeout, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	return workflow.ExecuteLocalActivity(ctx, run, arg).Get(ctx, nil) == nil
}

// forwardStage is the steps before the carrier, with the keys the steps
// have when run one by one.
func (f *fulfilment) forwardStage() activities.ForwardStage {
	s := activities.ForwardStage{Authorise: f.payment("authorise_payment"), Confirm: activities.OrderChange{Step: f.at("confirm_order")},
		Schedule: f.parcel("schedule_shipment")}
	for _, l := range f.in.Lines {
		s.Reserve = append(s.Reserve, activities.Line{Step: f.at("reserve_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity})
	}
	return s
}

// finishStage is the steps after the carrier took the parcel.
func (f *fulfilment) finishStage() activities.FinishStage {
	shipmentID := "shp-" + f.in.OrderID
	s := activities.FinishStage{
		Record:      activities.Dispatch{Step: f.at("record_dispatch"), ShipmentID: shipmentID, TrackingNumber: f.p.TrackingNumber},
		Capture:     f.payment("capture_payment"),
		MarkShipped: activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: shipmentID},
		Complete:    activities.OrderChange{Step: f.at("complete_order")},
	}
	for _, l := range f.in.Lines {
		s.Commit = append(s.Commit, activities.Line{Step: f.at("commit_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity})
	}
	return s
}

// register adds a stage's compensation, if it has one, to those to undo.
func (f *fulfilment) register(s stage) {
	if s.compensate != nil {
		f.undo = append(f.undo, namedStep{step: "compensate:" + s.undo, run: s.compensate})
	}
}

func (f *fulfilment) payment(step string) activities.Payment {
	return activities.Payment{Step: f.at(step), WalletID: f.in.WalletID, Amount: f.in.Total, Currency: f.in.Currency}
}

func (f *fulfilment) parcel(step string) activities.Parcel {
	return activities.Parcel{Step: f.at(step), ShipmentID: "shp-" + f.in.OrderID, Address: f.in.ShippingAddress, CustomerID: f.in.CustomerID}
}

// forward runs the steps up to and including the carrier. An error means
// compensate: a refusal, the customer's cancel, an operator's choice.
func (f *fulfilment) forward(ctx workflow.Context) error {
	stages := f.stages()
	// The stage sends its steps in two groups: the reservations with the
	// authorisation, then the confirmation with the schedule. Before it,
	// the compensations of the first group are registered, all of them:
	// any step of that group may have been applied when the stage fails.
	// Those of the second group are registered when it is reached.
	first := slices.IndexFunc(stages, func(s stage) bool { return s.name == "confirm_order" })
	staged := f.v >= VersionStages && !f.cancelling()
	if staged {
		for _, s := range stages[:first] {
			f.register(s)
		}
		f.p.Status, f.p.Step = StatusReservingStock, "reserve_stock:"+f.in.Lines[0].SKU
		if f.stage(ctx, a.RunForwardStage, f.forwardStage()) {
			for _, s := range stages[first:] {
				f.register(s)
			}
			f.p.Status, f.p.Step = StatusConfirmed, "schedule_shipment"
			if f.cancelling() {
				return errCancelled
			}
			return f.dispatch(ctx)
		}
	}
	for i, s := range stages {
		if !staged || i >= first {
			f.register(s)
		}
		if s.run == nil {
			continue
		}
		if f.cancelling() {
			return errCancelled
		}
		f.p.Status, f.p.Step = s.status, s.name
		if err := f.do(ctx, s.name, s.run, false, ActionRetry, ActionCompensate); err != nil {
			return err
		}
	}
	if f.cancelling() {
		return errCancelled
	}
	return f.dispatch(ctx)
}

// finish runs the steps after the carrier took the parcel. Nothing here is
// ever compensated, and a cancel of the workflow changes nothing (the
// goods are gone): a step that fails for good waits for an operator, who
// retries it or writes the order off.
func (f *fulfilment) finish(ctx workflow.Context) (Progress, error) {
	ctx, _ = workflow.NewDisconnectedContext(ctx)
	f.phase, f.p.Status = phaseShipped, StatusShipped
	var steps []namedStep
	if f.v >= VersionDoors {
		// The carrier's answer, recorded past the point of no return.
		steps = append(steps, namedStep{"record_dispatch", func(ctx workflow.Context) error {
			return call(ctx, a.RecordDispatch, activities.Dispatch{Step: f.at("record_dispatch"), ShipmentID: "shp-" + f.in.OrderID,
				TrackingNumber: f.p.TrackingNumber}, nil)
		}})
	}
	steps = append(steps, []namedStep{
		{"capture_payment", func(ctx workflow.Context) error {
			return call(ctx, a.CapturePayment, f.payment("capture_payment"), nil)
		}},
		{"mark_shipped", func(ctx workflow.Context) error {
			return call(ctx, a.MarkOrderShipped, activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: "shp-" + f.in.OrderID}, nil)
		}},
	}...)
	steps = append(steps, f.commitStock("commit_stock:")...)
	steps = append(steps, namedStep{"complete_order", func(ctx workflow.Context) error {
		return call(ctx, a.CompleteOrder, activities.OrderChange{Step: f.at("complete_order")}, nil)
	}})
	if f.v >= VersionStages {
		f.p.Step = steps[0].step
		if f.stage(ctx, a.RunFinishStage, f.finishStage()) {
			steps = nil
		}
	}
	for _, s := range steps {
		f.p.Step = s.step
		err := f.do(ctx, s.step, s.run, true, ActionRetry, ActionWriteOff)
		var d *decided
		if errors.As(err, &d) {
			return f.writeOff(ctx, d.Resolution)
		} else if err != nil {
			return f.p, err
		}
	}
	f.end(ctx, StatusCompleted, "done")
	return f.p, nil
}

// commitStock is the step that takes every line's reservation out of the
// warehouse, under prefix (commit_stock: or write_off:commit_stock:).
func (f *fulfilment) commitStock(prefix string) []namedStep {
	var out []namedStep
	for _, l := range f.in.Lines {
		step := prefix + l.SKU
		out = append(out, namedStep{step, func(ctx workflow.Context) error {
			return call(ctx, a.CommitStock, activities.Line{Step: f.at(step), SKU: l.SKU, Quantity: l.Quantity}, nil)
		}})
	}
	return out
}
