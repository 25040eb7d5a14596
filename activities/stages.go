package activities

// The saga's stages (from workflows.VersionStages): the steps before the
// carrier, and those after it, each sent as one local activity in a few
// group commits instead of one activity per step.

import (
	"context"

	"github.com/orderflow/orderflow/commands"
)

// ForwardStage is the saga's steps before the carrier, sent together.
type ForwardStage struct {
	Reserve   []Line      `json:"reserve"`
	Authorise Payment     `json:"authorise"`
	Confirm   OrderChange `json:"confirm"`
	Schedule  Parcel      `json:"schedule"`
}

// RunForwardStage sends the steps before the carrier in two group
// commits: every reservation with the authorisation, then — once all of
// them were applied — the confirmation with the shipment's schedule. A
// step not applied fails the stage: the saga then runs the stage step by
// step, where each step applied here is answered from the command log
// under its key, so nothing is applied twice.
func (a *Activities) RunForwardStage(ctx context.Context, s ForwardStage) error {
	var first []stepCommand
	for _, l := range s.Reserve {
		first = append(first, stepCommand{l.Step, commands.ReserveStock{SKU: l.SKU, OrderID: l.OrderID, Quantity: l.Quantity}})
	}
	p := s.Authorise
	first = append(first, stepCommand{p.Step, commands.AuthoriseHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency}})
	if err := a.sendAll(ctx, first...); err != nil {
		return err
	}
	return a.sendAll(ctx, stepCommand{s.Confirm.Step, commands.ConfirmOrder{OrderID: s.Confirm.OrderID}},
		stepCommand{s.Schedule.Step, commands.ScheduleShipment{ShipmentID: s.Schedule.ShipmentID, OrderID: s.Schedule.OrderID, Address: s.Schedule.Address}})
}

// FinishStage is the saga's steps after the carrier took the parcel.
type FinishStage struct {
	Record      Dispatch    `json:"record"`
	Capture     Payment     `json:"capture"`
	MarkShipped OrderChange `json:"mark_shipped"`
	Commit      []Line      `json:"commit"`
	Complete    OrderChange `json:"complete"`
}

// RunFinishStage sends the steps after the carrier took the parcel in
// three group commits: the dispatch's record; the capture, the order's
// shipment and every line's stock; then the order's completion. As with the
// forward stage, a step not applied fails the stage and the saga goes on
// step by step.
func (a *Activities) RunFinishStage(ctx context.Context, s FinishStage) error {
	d, p := s.Record, s.Capture
	// The record first, alone: money is captured only for a dispatch on
	// record, as step by step.
	if err := a.sendAll(ctx, stepCommand{d.Step, commands.DispatchShipment{ShipmentID: d.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: d.TrackingNumber}}); err != nil {
		return err
	}
	first := []stepCommand{
		{p.Step, commands.CaptureHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount}},
		{s.MarkShipped.Step, commands.MarkOrderShipped{OrderID: s.MarkShipped.OrderID, ShipmentID: s.MarkShipped.ShipmentID}},
	}
	for _, l := range s.Commit {
		first = append(first, stepCommand{l.Step, commands.CommitStock{SKU: l.SKU, OrderID: l.OrderID}})
	}
	if err := a.sendAll(ctx, first...); err != nil {
		return err
	}
	return a.sendAll(ctx, stepCommand{s.Complete.Step, commands.CompleteOrder{OrderID: s.Complete.OrderID}})
}
