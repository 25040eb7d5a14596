package commands

import (
	"context"
	"fmt"
	"slices"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
)

// SagaHeld marks a command on what an order's fulfilment saga holds: the
// order's hold on the wallet, its reservations and its shipment. Sent from
// outside orderflow's processes (an operator's POST /commands), it is
// refused while the order has not ended — its saga runs or waits for an
// operator's decision (saga_owns, naming the saga and the route to decide
// through) — and for an order that does not exist. Once the order ended,
// it is allowed only for the end statuses in endedOK: those where it moves
// nothing the end settled (a capture for a cancelled order never is).
// orderOf names the order the command acts for.
func SagaHeld[P any](d Definition, orderOf func(ctx context.Context, load Loader, p *P) (string, error), endedOK ...order.Status) Definition {
	d.held = func(ctx context.Context, load Loader, p any) error {
		orderID, err := orderOf(ctx, load, p.(*P))
		if err != nil {
			return err
		}
		if !ValidID(orderID) {
			return aggregate.NotFound("order_not_found", "order %s does not exist", orderID)
		}
		agg, err := load(ctx, order.StreamType, orderID)
		if err != nil {
			return err
		}
		o := agg.(*order.Order)
		switch st := o.Status(); {
		case agg.Version() == 0:
			return aggregate.NotFound("order_not_found", "order %s does not exist: %s moves money, stock or parcels for orders only", orderID, d.Name)
		case !st.Ended():
			return &aggregate.Error{Kind: aggregate.ErrState, Code: "saga_owns",
				Message: fmt.Sprintf("order %s is in fulfilment: its saga (workflow %s) alone moves its money, stock and parcel until the order ends; "+
					"decide for it through POST /orders/%s/saga/resolve", orderID, sagaWorkflowID(orderID), orderID),
				Details: map[string]any{"order_id": orderID, "saga": sagaWorkflowID(orderID), "resolve": "/orders/" + orderID + "/saga/resolve"}}
		case !slices.Contains(endedOK, st):
			return aggregate.State("order_ended", "order %s is %s: %s would move money, stock or a parcel its end settled", orderID, st, d.Name)
		}
		return matchesOrder(p, orderID, o.State().(order.State))
	}
	return d
}

// matchesOrder refuses a wallet command on another wallet than the
// order's, and a hold that is not the order's total: an order's money
// moves in its own wallet, for its own amount.
func matchesOrder(p any, orderID string, o order.State) error {
	if w, ok := p.(interface{ walletOf() string }); ok && w.walletOf() != o.WalletID {
		return aggregate.Rule("not_the_orders_wallet", "order %s is paid from its own wallet, not %s", orderID, w.walletOf())
	}
	if h, ok := p.(interface{ holdOf() (int64, string) }); ok {
		if amount, cur := h.holdOf(); amount != o.Total || cur != o.Currency {
			return aggregate.Rule("hold_not_total", "order %s's hold is its total, %d %s", orderID, o.Total, o.Currency)
		}
	}
	return nil
}

// sagaWorkflowID is workflows.WorkflowID, which this package cannot import
// (workflows imports commands); the end-to-end test of saga_owns holds
// them equal.
func sagaWorkflowID(orderID string) string { return "order-fulfilment:" + orderID }

// Where each held command finds its order.
func holdOrder[P interface{ order() string }](_ context.Context, _ Loader, p *P) (string, error) {
	return (*p).order(), nil
}

// shipmentOrder loads the shipment to find its order; a shipment that does
// not exist belongs to no order.
func shipmentOrder[P interface{ shipment() string }](ctx context.Context, load Loader, p *P) (string, error) {
	id := (*p).shipment()
	if !ValidID(id) {
		return "", aggregate.NotFound("shipment_not_found", "shipment %s does not exist", id)
	}
	agg, err := load(ctx, shipment.StreamType, id)
	if err != nil {
		return "", err
	}
	if agg.Version() == 0 {
		return "", aggregate.NotFound("shipment_not_found", "shipment %s does not exist", id)
	}
	return agg.(*shipment.Shipment).OrderID(), nil
}

func (p AuthoriseHold) order() string    { return p.OrderID }
func (p CaptureHold) order() string      { return p.OrderID }
func (p VoidHold) order() string         { return p.OrderID }
func (p RefundCapture) order() string    { return p.OrderID }
func (p ReserveStock) order() string     { return p.OrderID }
func (p ReleaseStock) order() string     { return p.OrderID }
func (p CommitStock) order() string      { return p.OrderID }
func (p ScheduleShipment) order() string { return p.OrderID }

func (p AuthoriseHold) walletOf() string { return p.WalletID }
func (p CaptureHold) walletOf() string   { return p.WalletID }
func (p VoidHold) walletOf() string      { return p.WalletID }
func (p RefundCapture) walletOf() string { return p.WalletID }

func (p AuthoriseHold) holdOf() (int64, string) { return p.Amount, p.Currency }

func (p DispatchShipment) shipment() string { return p.ShipmentID }
func (p DeliverShipment) shipment() string  { return p.ShipmentID }
func (p FailShipment) shipment() string     { return p.ShipmentID }
