package workflows

// Repair: a run that finishes what an ended run (terminated by an
// operator) left, from the event log and the carrier's answer.

import (
	"errors"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
)

// cancelRepair answers a cancel sent to a repair run with what the repair
// finds: accepted when it compensates (the carrier does not have the
// parcel), refused when it finishes the order (the carrier has it, or the
// order reached its end). Never accepted and then ignored.
func (f *fulfilment) cancelRepair(ctx workflow.Context, reason string) (Progress, error) {
	f.asked, f.answer = reason, ""
	if err := workflow.Await(ctx, func() bool { return f.answer != "" }); err != nil {
		return f.p, err
	}
	f.asked = ""
	if f.answer == answerTaken {
		return f.p, temporal.NewApplicationError("the order can no longer be cancelled: "+f.p.Status, ErrShipped)
	}
	return f.p, nil
}

// repair finishes what an ended run left, from the event log: nothing if
// the order reached its end, forward if the carrier has the parcel (asked
// again under the same key), compensation otherwise.
func (f *fulfilment) repair(ctx workflow.Context) (Progress, error) {
	var seen activities.Inspection
	f.p.Step = "inspect_order"
	if err := f.do(ctx, "inspect_order", func(ctx workflow.Context) error {
		p := f.parcel("inspect_order")
		if f.v >= VersionStages {
			p.Steps = f.retriable()
		}
		return call(ctx, a.InspectOrder, p, &seen)
	}, true, ActionRetry); err != nil {
		return f.p, err
	}
	// An operator's retries in the ended run sent steps under new keys:
	// the repair goes on from the latest attempt of each.
	for step, n := range seen.Attempts {
		f.attempts[step] = n
	}
	for _, s := range f.stages() {
		f.register(s)
	}
	switch seen.OrderStatus {
	case order.StatusCompleted:
		f.end(ctx, StatusCompleted, "done")
		return f.p, nil
	case order.StatusCancelled, order.StatusRejected:
		// The ended run may have booked with the carrier (its task went on
		// after the terminate): withdraw, so no parcel leaves for this order.
		if f.withdrawsAlways(ctx, seen) {
			if err := f.withdrawCancelled(ctx); err != nil {
				return f.p, err
			}
		}
		f.p.Step = ""
		return f.compensateRepaired(ctx, f.repairCause("repaired: the order was "+string(seen.OrderStatus)))
	case order.StatusWrittenOff:
		f.end(ctx, StatusWrittenOff, "written_off")
		return f.p, nil
	}
	taken := seen.ShipmentStatus == shipment.StatusDispatched || seen.ShipmentStatus == shipment.StatusDelivered
	if !taken && (seen.ShipmentStatus == shipment.StatusScheduled || f.withdrawsAlways(ctx, seen)) {
		withdrawn, err := f.withdraw(ctx)
		if err != nil {
			return f.p, err
		}
		taken = !withdrawn
	}
	if !taken {
		f.p.Carrier, f.p.Step = answerWithdrawn, ""
		return f.compensateRepaired(ctx, f.repairCause("repaired: the saga ended before the carrier took the parcel"))
	}
	f.p.Carrier = answerTaken
	if f.v >= VersionDoors {
		// Past the point of no return: a cancel waiting for the repair's
		// reading is refused now, not when the order is finished.
		f.phase = phaseShipped
		f.answerCancel(answerTaken)
	}
	if seen.TrackingNumber == "" {
		// The carrier took it but the dispatch was never recorded: the same
		// key gets the same tracking number, and the dispatch is recorded.
		f.p.Step = "dispatch_shipment"
		if err := f.do(ctx, "dispatch_shipment", func(ctx workflow.Context) error {
			if f.v >= VersionDoors {
				return workflow.ExecuteActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
			}
			return workflow.ExecuteActivity(ctx, a.DispatchWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
		}, true, ActionRetry); err != nil {
			return f.p, err
		}
	} else {
		f.p.TrackingNumber = seen.TrackingNumber
	}
	return f.finish(ctx)
}

// changeRepairWithdraws marks the repair runs that ask the carrier to
// withdraw whatever the shipment's status: the ended run's carrier call
// (a local activity inside its workflow task) can book after the
// terminate, before or without any shipment event — nor does a status an
// operator could have set say what the carrier has.
const changeRepairWithdraws = "repair-withdraws-always"

// withdrawsAlways reports whether this repair run withdraws from the
// carrier before compensating, though no dispatch was recorded and the
// shipment is not scheduled (recorded as a version marker the first time
// it is asked; older repair histories replay without it).
func (f *fulfilment) withdrawsAlways(ctx workflow.Context, seen activities.Inspection) bool {
	if seen.ShipmentStatus == shipment.StatusDispatched || seen.ShipmentStatus == shipment.StatusDelivered {
		return false
	}
	return workflow.GetVersion(ctx, changeRepairWithdraws, workflow.DefaultVersion, 1) == 1
}

// changeRepairSettles marks the repair runs that settle the ended run's
// reservations and authorisation before compensating (a change id of its
// own: only repair runs that compensate record it).
const changeRepairSettles = "repair-settles-first"

// compensateRepaired undoes what the ended run did. That run may have left
// a reservation or the authorisation in flight (its local activity still
// running when it was terminated): each is sent again under its key first,
// so that it is settled — committed once, or refused — before the
// compensations undo it, and none lands after them.
func (f *fulfilment) compensateRepaired(ctx workflow.Context, cause error) (Progress, error) {
	if workflow.GetVersion(ctx, changeRepairSettles, workflow.DefaultVersion, 1) == 1 {
		for _, s := range f.stages() {
			if s.name == "confirm_order" {
				break
			}
			if s.run != nil {
				f.p.Step = s.name
				_ = f.do(ctx, s.name, s.run, false, ActionRetry, ActionSkip) // a refusal settles it too
			}
		}
	}
	f.p.Step = ""
	return f.compensate(ctx, cause)
}

// retriable are the steps where an operator's retry sends a new attempt
// (after the carrier, and the compensations): those a repair may send
// again.
func (f *fulfilment) retriable() []string {
	steps := []string{"record_dispatch", "capture_payment", "mark_shipped", "complete_order", "write_off:void_payment", "write_off:order",
		"compensate:fail_shipment", "compensate:void_payment", "compensate:cancel_order"}
	for _, l := range f.in.Lines {
		steps = append(steps, "commit_stock:"+l.SKU, "write_off:commit_stock:"+l.SKU, "compensate:release_stock:"+l.SKU)
	}
	return steps
}

// repairCause is why a repair compensates: the customer's cancel when one
// waits for the repair's reading (from VersionDoors), the repair's own
// finding otherwise.
func (f *fulfilment) repairCause(finding string) error {
	if f.v >= VersionDoors && f.asked != "" {
		f.cancel = f.asked
		return errCancelled
	}
	return errors.New(finding)
}
