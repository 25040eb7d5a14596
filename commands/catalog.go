package commands

// The catalog: the commands on wallets, stock, orders and shipments, their
// payloads and definitions (payments.go holds the payment commands).

import (
	"context"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/payment"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/domain/wallet"
)

// Command payloads. Their JSON schemas, with the constraints checked at the
// edge, are in the OpenAPI document (httpapi/openapi.yaml) under the same names.

type OpenWallet struct {
	WalletID   string `json:"wallet_id"`
	CustomerID string `json:"customer_id"`
	Currency   string `json:"currency"`
	Name       string `json:"name,omitempty"`
}

type RenameWallet struct {
	WalletID string `json:"wallet_id"`
	Name     string `json:"name"`
}

// TopUpWallet's currency defaults to the wallet's. It credits money from a
// payment the provider confirmed (PaymentID: the payments principal's
// only) or by an operator's decision (Reason required; Operator is filled
// from the principal, never from the payload). Customers pay instead
// (RequestPayment).
type TopUpWallet struct {
	WalletID  string `json:"wallet_id"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Operator  string `json:"operator,omitempty"`
	PaymentID string `json:"payment_id,omitempty"`
}

type AuthoriseHold struct {
	WalletID string `json:"wallet_id"`
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

type CaptureHold struct {
	WalletID string `json:"wallet_id"`
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
}

type VoidHold struct {
	WalletID string `json:"wallet_id"`
	OrderID  string `json:"order_id"`
}

type RefundCapture struct {
	WalletID string `json:"wallet_id"`
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
}

// SuspendWallet and ReinstateWallet record the operator who sent them:
// Operator is filled from the principal, never from the payload.
type SuspendWallet struct {
	WalletID string `json:"wallet_id"`
	Reason   string `json:"reason"`
	Operator string `json:"operator,omitempty"`
}

type ReinstateWallet struct {
	WalletID string `json:"wallet_id"`
	Reason   string `json:"reason"`
	Operator string `json:"operator,omitempty"`
}

type ReceiveStock struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

type ReserveStock struct {
	SKU      string `json:"sku"`
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

type ReleaseStock struct {
	SKU     string `json:"sku"`
	OrderID string `json:"order_id"`
}

type CommitStock struct {
	SKU     string `json:"sku"`
	OrderID string `json:"order_id"`
}

// PlaceOrder's order id, when absent, is derived from the command id so that
// a retry with the same Idempotency-Key names the same order. Its lines
// are priced from the catalogue (prices, loaded by its check).
type PlaceOrder struct {
	OrderID         string        `json:"order_id"`
	CustomerID      string        `json:"customer_id"`
	WalletID        string        `json:"wallet_id"`
	Currency        string        `json:"currency"`
	Lines           []OrderLine   `json:"lines"`
	ShippingAddress order.Address `json:"shipping_address"`
	prices          order.Prices
}

// OrderLine is a line as a client asks for it: UnitPrice, when given, is
// the price the client was shown (the order is refused if the catalogue's
// differs); the order's price always comes from the catalogue.
type OrderLine struct {
	SKU       string `json:"sku"`
	Quantity  int64  `json:"quantity"`
	UnitPrice int64  `json:"unit_price,omitempty"`
}

// SetPrice is an operator's new price for a SKU.
type SetPrice struct {
	SKU       string `json:"sku"`
	UnitPrice int64  `json:"unit_price"`
	Currency  string `json:"currency"`
}

type ConfirmOrder struct {
	OrderID string `json:"order_id"`
}

type CancelOrder struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
	// by is who sends it (set by the bus from the request, never from a
	// payload): only the saga's cancel moves the order.
	by order.Decider
}

type MarkOrderShipped struct {
	OrderID    string `json:"order_id"`
	ShipmentID string `json:"shipment_id"`
}

type CompleteOrder struct {
	OrderID string `json:"order_id"`
}

type RejectOrder struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// WriteOffOrder is sent only by the saga, on an operator's decision.
type WriteOffOrder struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

type ScheduleShipment struct {
	ShipmentID string        `json:"shipment_id"`
	OrderID    string        `json:"order_id"`
	Address    order.Address `json:"address"`
}

type DispatchShipment struct {
	ShipmentID     string `json:"shipment_id"`
	Carrier        string `json:"carrier"`
	TrackingNumber string `json:"tracking_number"`
}

type DeliverShipment struct {
	ShipmentID string `json:"shipment_id"`
}

type FailShipment struct {
	ShipmentID string `json:"shipment_id"`
	Reason     string `json:"reason"`
}

// placeOrder: the order's id defaults to one derived from the command id
// (so a retry with the same key is the same order). Only operators and
// orderflow's own processes may name it: a customer naming one could take,
// in advance, the id another customer's key derives, or probe for others'
// orders. The order names its customer, and its wallet must be that
// customer's (checked here, so no route around the HTTP handler skips it).
func placeOrder() Definition {
	d := Define("PlaceOrder", order.StreamType, func(p *PlaceOrder) string { return p.OrderID },
		func(o *order.Order, p *PlaceOrder) error {
			lines := make([]order.Line, len(p.Lines))
			for i, l := range p.Lines {
				lines[i] = order.Line{SKU: l.SKU, Quantity: l.Quantity, UnitPrice: l.UnitPrice}
			}
			return o.Place(p.CustomerID, p.WalletID, p.Currency, lines, p.prices, p.ShippingAddress)
		})
	d = WithRequestCheck(d, func(p *PlaceOrder, r Request) error {
		if p.OrderID != "" && !r.Internal && r.Principal != nil && r.Principal.Role == auth.Customer {
			return aggregate.Rule("order_id_assigned", "a customer's order gets its id from orderflow: leave order_id out (an Idempotency-Key makes retries safe)")
		}
		if p.OrderID == "" {
			p.OrderID = uuid.NewSHA1(orderIDNamespace, []byte(r.CommandID)).String()
		}
		return nil
	})
	d = CreatedFor(d, func(p *PlaceOrder) string { return p.CustomerID })
	d = WithPersonal(d, func(p *PlaceOrder) []*string { return p.ShippingAddress.PersonalFields() })
	return WithCheck(d, func(ctx context.Context, load Loader, p *PlaceOrder) error {
		agg, err := load(ctx, wallet.StreamType, p.WalletID)
		if err != nil {
			return err
		}
		if w := agg.(*wallet.Wallet); agg.Version() == 0 || w.CustomerID() != p.CustomerID {
			// The same answer whether the wallet is missing or another's.
			return aggregate.NotFound("wallet_not_found", "customer %s has no wallet %s", p.CustomerID, p.WalletID)
		}
		// The catalogue as it stands now: each SKU's price from its own
		// stream (a SKU never priced is left out: not for sale).
		p.prices = order.Prices{}
		for n, l := range p.Lines {
			if n >= order.MaxLines || !ValidID(l.SKU) {
				break // the order refuses the lines; no stream is read for them
			}
			agg, err := load(ctx, inventory.StreamType, l.SKU)
			if err != nil {
				return err
			}
			if price, cur, version, ok := agg.(*inventory.Item).Price(); ok {
				p.prices[l.SKU] = order.Price{UnitPrice: price, Currency: cur, Version: version}
			}
		}
		return nil
	})
}

// Each payload names its command, as each event names its wire type: an
// in-process caller hands the bus the typed payload, with no JSON between.
func (OpenWallet) CommandType() string       { return "OpenWallet" }
func (RenameWallet) CommandType() string     { return "RenameWallet" }
func (TopUpWallet) CommandType() string      { return "TopUpWallet" }
func (AuthoriseHold) CommandType() string    { return "AuthoriseHold" }
func (CaptureHold) CommandType() string      { return "CaptureHold" }
func (VoidHold) CommandType() string         { return "VoidHold" }
func (RefundCapture) CommandType() string    { return "RefundCapture" }
func (SuspendWallet) CommandType() string    { return "SuspendWallet" }
func (ReinstateWallet) CommandType() string  { return "ReinstateWallet" }
func (ReceiveStock) CommandType() string     { return "ReceiveStock" }
func (ReserveStock) CommandType() string     { return "ReserveStock" }
func (ReleaseStock) CommandType() string     { return "ReleaseStock" }
func (CommitStock) CommandType() string      { return "CommitStock" }
func (PlaceOrder) CommandType() string       { return "PlaceOrder" }
func (ConfirmOrder) CommandType() string     { return "ConfirmOrder" }
func (CancelOrder) CommandType() string      { return "CancelOrder" }
func (MarkOrderShipped) CommandType() string { return "MarkOrderShipped" }
func (CompleteOrder) CommandType() string    { return "CompleteOrder" }
func (RejectOrder) CommandType() string      { return "RejectOrder" }
func (WriteOffOrder) CommandType() string    { return "WriteOffOrder" }
func (ScheduleShipment) CommandType() string { return "ScheduleShipment" }
func (DispatchShipment) CommandType() string { return "DispatchShipment" }
func (DeliverShipment) CommandType() string  { return "DeliverShipment" }
func (FailShipment) CommandType() string     { return "FailShipment" }
func (SetPrice) CommandType() string         { return "SetPrice" }

// The ends of an order after which an operator's command on what its saga
// held is allowed (SagaHeld): undoing (a void, a release, a refund) after
// any end; taking money or stock only once the goods left; failing the
// shipment of an order that was not sold.
var (
	endedAny    = []order.Status{order.StatusCompleted, order.StatusCancelled, order.StatusRejected, order.StatusWrittenOff}
	endedSold   = []order.Status{order.StatusCompleted, order.StatusWrittenOff}
	endedUnsold = []order.Status{order.StatusCancelled, order.StatusRejected}
)

// orderIDNamespace makes derived order ids stable across processes.
var orderIDNamespace = uuid.MustParse("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f")

// Definitions returns every command of orderflow.
func Definitions() []Definition { return append(definitions(), PaymentDefinitions()...) }

func definitions() []Definition {
	return []Definition{
		WithPersonal(CreatedFor(Define("OpenWallet", wallet.StreamType, func(p *OpenWallet) string { return p.WalletID },
			func(w *wallet.Wallet, p *OpenWallet) error { return w.Open(p.CustomerID, p.Name, p.Currency) }),
			func(p *OpenWallet) string { return p.CustomerID }),
			func(p *OpenWallet) []*string { return []*string{&p.Name} }),
		WithPersonal(Define("RenameWallet", wallet.StreamType, func(p *RenameWallet) string { return p.WalletID },
			func(w *wallet.Wallet, p *RenameWallet) error { return w.Rename(p.Name) }),
			func(p *RenameWallet) []*string { return []*string{&p.Name} }),
		topUpWallet(),
		SagaHeld(Define("AuthoriseHold", wallet.StreamType, func(p *AuthoriseHold) string { return p.WalletID },
			func(w *wallet.Wallet, p *AuthoriseHold) error {
				return w.Authorise(p.OrderID, money.New(p.Amount, p.Currency))
			}), holdOrder[AuthoriseHold], order.StatusWrittenOff),
		SagaHeld(Define("CaptureHold", wallet.StreamType, func(p *CaptureHold) string { return p.WalletID },
			func(w *wallet.Wallet, p *CaptureHold) error { return w.Capture(p.OrderID, p.Amount) }), holdOrder[CaptureHold], endedSold...),
		SagaHeld(Define("VoidHold", wallet.StreamType, func(p *VoidHold) string { return p.WalletID },
			func(w *wallet.Wallet, p *VoidHold) error { return w.Void(p.OrderID) }), holdOrder[VoidHold], endedAny...),
		SagaHeld(Define("RefundCapture", wallet.StreamType, func(p *RefundCapture) string { return p.WalletID },
			func(w *wallet.Wallet, p *RefundCapture) error { return w.Refund(p.OrderID, p.Amount) }), holdOrder[RefundCapture], endedAny...),
		WithPrepare(Define("SuspendWallet", wallet.StreamType, func(p *SuspendWallet) string { return p.WalletID },
			func(w *wallet.Wallet, p *SuspendWallet) error { return w.Suspend(p.Reason, p.Operator) }),
			func(p *SuspendWallet, r Request) { p.Operator = r.Actor }),
		WithPrepare(Define("ReinstateWallet", wallet.StreamType, func(p *ReinstateWallet) string { return p.WalletID },
			func(w *wallet.Wallet, p *ReinstateWallet) error { return w.Reinstate(p.Reason, p.Operator) }),
			func(p *ReinstateWallet, r Request) { p.Operator = r.Actor }),

		Define("SetPrice", inventory.StreamType, func(p *SetPrice) string { return p.SKU },
			func(i *inventory.Item, p *SetPrice) error { return i.SetPrice(money.New(p.UnitPrice, p.Currency)) }),
		Define("ReceiveStock", inventory.StreamType, func(p *ReceiveStock) string { return p.SKU },
			func(i *inventory.Item, p *ReceiveStock) error { return i.Receive(p.Quantity) }),
		SagaHeld(Define("ReserveStock", inventory.StreamType, func(p *ReserveStock) string { return p.SKU },
			func(i *inventory.Item, p *ReserveStock) error { return i.Reserve(p.OrderID, p.Quantity) }), holdOrder[ReserveStock]),
		SagaHeld(Define("ReleaseStock", inventory.StreamType, func(p *ReleaseStock) string { return p.SKU },
			func(i *inventory.Item, p *ReleaseStock) error { return i.Release(p.OrderID) }), holdOrder[ReleaseStock], endedAny...),
		SagaHeld(Define("CommitStock", inventory.StreamType, func(p *CommitStock) string { return p.SKU },
			func(i *inventory.Item, p *CommitStock) error { return i.Commit(p.OrderID) }), holdOrder[CommitStock], endedSold...),

		placeOrder(),
		InternalOnly(Define("ConfirmOrder", order.StreamType, func(p *ConfirmOrder) string { return p.OrderID },
			func(o *order.Order, _ *ConfirmOrder) error { return o.Confirm() })),
		// A client's cancel reaches the saga (the HTTP layer routes it there);
		// one that reaches the bus any other way (POST /commands, another
		// process) is refused by the order.
		WithPrepare(Define("CancelOrder", order.StreamType, func(p *CancelOrder) string { return p.OrderID },
			func(o *order.Order, p *CancelOrder) error { return o.Cancel(p.Reason, p.by) }),
			func(p *CancelOrder, r Request) {
				if r.Internal {
					p.by = order.BySaga
				}
			}),
		// The order's other changes of status are the saga's alone.
		InternalOnly(Define("MarkOrderShipped", order.StreamType, func(p *MarkOrderShipped) string { return p.OrderID },
			func(o *order.Order, p *MarkOrderShipped) error { return o.MarkShipped(p.ShipmentID) })),
		InternalOnly(Define("CompleteOrder", order.StreamType, func(p *CompleteOrder) string { return p.OrderID },
			func(o *order.Order, _ *CompleteOrder) error { return o.Complete() })),
		InternalOnly(Define("RejectOrder", order.StreamType, func(p *RejectOrder) string { return p.OrderID },
			func(o *order.Order, p *RejectOrder) error { return o.Reject(p.Reason) })),
		InternalOnly(Define("WriteOffOrder", order.StreamType, func(p *WriteOffOrder) string { return p.OrderID },
			func(o *order.Order, p *WriteOffOrder) error { return o.WriteOff(p.Reason) })),

		// The address is the order's customer's: sealed with that key (the
		// saga's, from the order, is sealed already and kept as it is).
		SagaHeld(WithPersonalOf(Define("ScheduleShipment", shipment.StreamType, func(p *ScheduleShipment) string { return p.ShipmentID },
			func(s *shipment.Shipment, p *ScheduleShipment) error { return s.Schedule(p.OrderID, p.Address) }),
			order.StreamType, func(p *ScheduleShipment) string { return p.OrderID },
			func(p *ScheduleShipment) []*string { return p.Address.PersonalFields() }), holdOrder[ScheduleShipment]),
		SagaHeld(Define("DispatchShipment", shipment.StreamType, func(p *DispatchShipment) string { return p.ShipmentID },
			func(s *shipment.Shipment, p *DispatchShipment) error { return s.Dispatch(p.Carrier, p.TrackingNumber) }), shipmentOrder[DispatchShipment]),
		SagaHeld(Define("DeliverShipment", shipment.StreamType, func(p *DeliverShipment) string { return p.ShipmentID },
			func(s *shipment.Shipment, _ *DeliverShipment) error { return s.Deliver() }), shipmentOrder[DeliverShipment], endedSold...),
		SagaHeld(Define("FailShipment", shipment.StreamType, func(p *FailShipment) string { return p.ShipmentID },
			func(s *shipment.Shipment, p *FailShipment) error { return s.Fail(p.Reason) }), shipmentOrder[FailShipment], endedUnsold...),
	}
}

// topUpWallet credits a wallet. A credit naming a payment is the payments
// principal's alone (an internal request) and only for a payment the
// provider confirmed, into its wallet, of its amount: checked here, on the
// payment's own events, whichever caller sent the command (an HTTP route,
// POST /commands, the webhook handler). Anyone
// else's credit is an operator's decision: its reason is required and the
// operator recorded from the principal.
func topUpWallet() Definition {
	d := Define("TopUpWallet", wallet.StreamType, func(p *TopUpWallet) string { return p.WalletID },
		func(w *wallet.Wallet, p *TopUpWallet) error {
			cur := p.Currency
			if cur == "" {
				cur = w.Currency()
			}
			return w.TopUp(money.New(p.Amount, cur), wallet.Credit{PaymentID: p.PaymentID, Operator: p.Operator, Reason: p.Reason})
		})
	d = WithRequestCheck(d, func(p *TopUpWallet, r Request) error {
		if p.PaymentID != "" {
			if !r.Internal {
				return aggregate.Rule("payment_id_reserved", "only the payments process credits a payment; an operator's top-up gives a reason")
			}
			p.Operator = ""
			return nil
		}
		p.Operator = r.Actor // the reason is required by the wallet itself
		return nil
	})
	return WithCheck(d, func(ctx context.Context, load Loader, p *TopUpWallet) error {
		if p.PaymentID == "" {
			return nil
		}
		agg, err := load(ctx, payment.StreamType, p.PaymentID)
		if err != nil {
			return err
		}
		pay := agg.(*payment.Payment)
		switch {
		case agg.Version() == 0:
			return aggregate.NotFound("payment_not_found", "payment %s does not exist", p.PaymentID)
		case pay.Status() != payment.StatusSucceeded:
			return aggregate.State("payment_not_succeeded", "payment %s is %s: only a confirmed payment credits a wallet", p.PaymentID, pay.Status())
		case pay.WalletID() != p.WalletID || pay.Amount().Amount != p.Amount || (p.Currency != "" && p.Currency != pay.Amount().Currency):
			return aggregate.Rule("payment_mismatch", "payment %s credits %s to wallet %s", p.PaymentID, pay.Amount(), pay.WalletID())
		}
		return nil
	})
}
