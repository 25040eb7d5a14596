package activities

// The saga's steps that send one command each, with their compensations:
// stock (reserve, release, commit), payment (authorise, void, capture,
// refund) and the order's status (confirm, ship, complete, write off,
// cancel).

import (
	"context"

	"github.com/orderflow/orderflow/commands"
)

// Line is one SKU to reserve, release or commit.
type Line struct {
	Step
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

func (a *Activities) ReserveStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.ReserveStock{SKU: l.SKU, OrderID: l.OrderID, Quantity: l.Quantity})
	return err
}

// ReleaseStock is a compensation: a reservation that never happened is a
// no-op, and stock that already left the warehouse stays gone.
func (a *Activities) ReleaseStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.ReleaseStock{SKU: l.SKU, OrderID: l.OrderID}, "reservation_committed")
	return err
}

func (a *Activities) CommitStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.CommitStock{SKU: l.SKU, OrderID: l.OrderID})
	return err
}

// Payment names an amount on the customer's wallet.
type Payment struct {
	Step
	WalletID string `json:"wallet_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

func (a *Activities) AuthorisePayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.AuthoriseHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency})
	return err
}

// VoidPayment is a compensation; after a capture the refund has done its work.
func (a *Activities) VoidPayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.VoidHold{WalletID: p.WalletID, OrderID: p.OrderID}, "hold_captured")
	return err
}

func (a *Activities) CapturePayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.CaptureHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount})
	return err
}

// RefundPayment is a compensation; nothing captured is nothing to refund.
func (a *Activities) RefundPayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.RefundCapture{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount}, "nothing_captured")
	return err
}

// OrderChange confirms, ships, completes or cancels the order.
type OrderChange struct {
	Step
	ShipmentID string `json:"shipment_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func (a *Activities) ConfirmOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.ConfirmOrder{OrderID: o.OrderID})
	return err
}

func (a *Activities) MarkOrderShipped(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.MarkOrderShipped{OrderID: o.OrderID, ShipmentID: o.ShipmentID})
	return err
}

func (a *Activities) CompleteOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.CompleteOrder{OrderID: o.OrderID})
	return err
}

// WriteOffOrder closes an order whose parcel left but whose sale could not
// be finished, on an operator's decision.
func (a *Activities) WriteOffOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.WriteOffOrder{OrderID: o.OrderID, Reason: o.Reason})
	return err
}

// CancelOrder is the last compensation: the order says why it did not happen.
func (a *Activities) CancelOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.CancelOrder{OrderID: o.OrderID, Reason: o.Reason})
	return err
}
