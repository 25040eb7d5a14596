package activities

// The shipment's steps: scheduling it, opening the sealed address for the
// carrier, booking with the carrier and recording its answer, asking it to
// withdraw, and failing the shipment as a compensation. The carrier's
// calls heartbeat, so a worker that died during one is noticed.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/personal"
)

// Parcel is a shipment of the order.
type Parcel struct {
	Step
	ShipmentID string        `json:"shipment_id"`
	Address    order.Address `json:"address"`
	// CustomerID's key opens the address, which travels sealed.
	CustomerID string `json:"customer_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Steps are the steps whose retried attempts InspectOrder counts.
	Steps []string `json:"steps,omitempty"`
}

func (a *Activities) ScheduleShipment(ctx context.Context, p Parcel) error {
	_, err := a.send(ctx, p.Step, commands.ScheduleShipment{ShipmentID: p.ShipmentID, OrderID: p.OrderID, Address: p.Address})
	return err
}

// openAddress returns the parcel's address in clear for the carrier. An
// address whose key was destroyed (the customer was forgotten) cannot be
// shipped to: the carrier refuses it, and the saga compensates.
func (a *Activities) openAddress(ctx context.Context, p Parcel) (order.Address, error) {
	if a.CustomerKeys == nil {
		return p.Address, nil
	}
	open := a.CustomerKeys.For(p.CustomerID)
	to := p.Address
	for _, f := range to.PersonalFields() {
		v, err := open.Open(ctx, *f)
		if errors.Is(err, personal.ErrErased) {
			return to, temporal.NewNonRetryableApplicationError("the shipping address was erased (the customer was forgotten)", ErrTypeCarrierRefuse, nil)
		}
		if err != nil {
			return to, err
		}
		*f = v
	}
	return to, nil
}

// DispatchWithCarrier hands the parcel to the carrier under the step's key
// and records the dispatch, in one activity: the saga's runs recorded
// before VersionDoors call it. Newer runs call BookWithCarrier and record
// the answer in a step of its own (RecordDispatch), so that no failure of
// the recording is taken for the carrier's refusal.
func (a *Activities) DispatchWithCarrier(ctx context.Context, p Parcel) (string, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	to, err := a.openAddress(ctx, p)
	if err != nil {
		return "", err
	}
	tracking, err := a.callCarrier(ctx, key, p.ShipmentID, to)
	if err != nil {
		return "", err
	}
	_, err = a.send(ctx, p.Step, commands.DispatchShipment{ShipmentID: p.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: tracking})
	return tracking, err
}

// BookWithCarrier hands the parcel to the carrier under the dispatch key
// and returns the tracking number once the carrier has taken it; it
// records nothing. Its only non-retryable failures are the carrier's
// refusals (carrier_rejected, carrier_withdrawn): the carrier does not
// have the parcel. Anything else is retried under the same key, so the
// carrier answers for the parcel it booked.
//
// An address that can no longer be opened (the customer was forgotten)
// is not taken for a refusal: an earlier attempt may have booked the
// parcel. The carrier is asked by key alone; it answers for a booking it
// has, and refuses to book anew without an address.
func (a *Activities) BookWithCarrier(ctx context.Context, p Parcel) (string, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	to, err := a.openAddress(ctx, p)
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		to, err = order.Address{}, nil
	}
	if err != nil {
		return "", err
	}
	return a.callCarrier(ctx, key, p.ShipmentID, to)
}

// callCarrier books the parcel and waits for the carrier, heartbeating;
// its refusals are final (non-retryable, typed), anything else is retried.
func (a *Activities) callCarrier(ctx context.Context, key, shipmentID string, to order.Address) (string, error) {
	tracking, err := heartbeating(ctx, func(ctx context.Context) (string, error) {
		return a.Carrier.Dispatch(ctx, key, shipmentID, to)
	})
	switch {
	case errors.Is(err, ErrCarrierRejected):
		return "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeCarrierRefuse, nil)
	case errors.Is(err, ErrWithdrawn):
		return "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeWithdrawn, nil)
	case err != nil:
		return "", fmt.Errorf("carrier: %w", err)
	}
	return tracking, nil
}

// Dispatch is the carrier's answer to record on the shipment.
type Dispatch struct {
	Step
	ShipmentID     string `json:"shipment_id"`
	TrackingNumber string `json:"tracking_number"`
}

// RecordDispatch records that the carrier took the parcel (past the point
// of no return: a failure here never compensates).
func (a *Activities) RecordDispatch(ctx context.Context, d Dispatch) error {
	_, err := a.send(ctx, d.Step, commands.DispatchShipment{ShipmentID: d.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: d.TrackingNumber})
	return err
}

// WithdrawFromCarrier asks the carrier not to take the parcel booked under
// the dispatch step's key (p.Step is that step) and reports whether it
// could: false means the carrier has the parcel. It heartbeats, so that a
// worker that died during the call is noticed.
func (a *Activities) WithdrawFromCarrier(ctx context.Context, p Parcel) (bool, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	answer, err := heartbeating(ctx, func(ctx context.Context) (string, error) {
		withdrawn, err := a.Carrier.Withdraw(ctx, key)
		if withdrawn {
			return answerWithdrawn, err
		}
		return "", err
	})
	return answer == answerWithdrawn, err
}

const answerWithdrawn = "withdrawn"

// FailShipment is a compensation for a scheduled shipment.
func (a *Activities) FailShipment(ctx context.Context, p Parcel) error {
	_, err := a.send(ctx, p.Step, commands.FailShipment{ShipmentID: p.ShipmentID, Reason: p.Reason}, "shipment_not_found")
	return err
}

// heartbeating runs call while telling Temporal every few seconds that the
// worker is still alive, so a dead worker's carrier call is retried after
// the heartbeat timeout instead of the whole activity timeout; the SDK
// throttles the heartbeats it actually sends.
func heartbeating(ctx context.Context, call func(context.Context) (string, error)) (string, error) {
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(ctx)
		done <- result{v, err}
	}()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r.v, r.err
		case <-tick.C:
			activity.RecordHeartbeat(ctx)
		}
	}
}
