// Package order is the customer's order: placed with lines and a shipping
// address, then confirmed, shipped and completed, or cancelled or rejected
// — or written off, when the goods left but the sale could not be finished.
package order

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
)

// StreamType is the stream family of orders.
const StreamType = "order"

// SnapshotVersion changes whenever State changes shape.
const SnapshotVersion = 1

// MaxLines bounds the lines of one order.
const MaxLines = 100

// MaxIDLength bounds an order id. Ids are derived from it (the shipment is
// "shp-" + the order id) and every id has at most 128 characters, so an
// order whose derived ids would not fit is refused when it is placed, not
// stranded half-way through its fulfilment.
const MaxIDLength = 120

// Decider is who asks for a change of the order's status. From the moment
// it is placed, an order belongs to its fulfilment saga: the saga alone
// ends it, and a customer's cancel is a request the saga answers (it may
// have to ask the carrier first).
type Decider int

const (
	// ByClient is a request from outside orderflow's processes.
	ByClient Decider = iota
	// BySaga is the order's fulfilment saga.
	BySaga
)

// Status is where the order stands.
type Status string

const (
	StatusPlaced    Status = "placed"
	StatusConfirmed Status = "confirmed"
	StatusShipped   Status = "shipped"
	StatusCompleted Status = "completed"
	StatusCancelled Status = "cancelled"
	StatusRejected  Status = "rejected"
	// StatusWrittenOff: the parcel left but the payment or a later step
	// failed for good, and an operator accepted the loss.
	StatusWrittenOff Status = "written_off"
)

// Ended reports an order that has reached its end (completed, cancelled,
// rejected, written off): its saga has nothing left to do.
func (s Status) Ended() bool {
	switch s {
	case StatusCompleted, StatusCancelled, StatusRejected, StatusWrittenOff:
		return true
	}
	return false
}

// Line is one SKU of the order. On the order, UnitPrice is the
// catalogue's price when the order was placed and PriceVersion which of the
// SKU's prices it was (0 on orders placed before the catalogue priced
// them). In a request, UnitPrice is the price the client was shown, if any.
type Line struct {
	SKU          string `json:"sku"`
	Quantity     int64  `json:"quantity"`
	UnitPrice    int64  `json:"unit_price"`
	PriceVersion int64  `json:"price_version,omitempty"`
}

// Price is a SKU's price in the catalogue.
type Price struct {
	UnitPrice int64  `json:"unit_price"`
	Currency  string `json:"currency"`
	Version   int64  `json:"price_version"`
}

// Prices are the catalogue's prices by SKU, as they stand when an order is
// decided; a SKU missing has no price and is not for sale.
type Prices map[string]Price

// Address is where the order ships to.
type Address struct {
	Name       string `json:"name"`
	Line1      string `json:"line1"`
	Line2      string `json:"line2,omitempty"`
	City       string `json:"city"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
}

// PersonalFields are the fields that identify a person: everything but
// the country. orderflow stores them sealed with the customer's key.
func (a *Address) PersonalFields() []*string {
	return []*string{&a.Name, &a.Line1, &a.Line2, &a.City, &a.PostalCode}
}

type Placed struct {
	OrderID         string  `json:"order_id"`
	CustomerID      string  `json:"customer_id"`
	WalletID        string  `json:"wallet_id"`
	Currency        string  `json:"currency"`
	Lines           []Line  `json:"lines"`
	Total           int64   `json:"total"`
	ShippingAddress Address `json:"shipping_address"`
}

type Confirmed struct{}

type Cancelled struct {
	Reason string `json:"reason"`
}

type Shipped struct {
	ShipmentID string `json:"shipment_id"`
}

type Completed struct{}

type Rejected struct {
	Reason string `json:"reason"`
}

type WrittenOff struct {
	Reason string `json:"reason"`
}

func (Placed) EventType() string     { return "order.placed" }
func (Confirmed) EventType() string  { return "order.confirmed" }
func (Cancelled) EventType() string  { return "order.cancelled" }
func (Shipped) EventType() string    { return "order.shipped" }
func (Completed) EventType() string  { return "order.completed" }
func (Rejected) EventType() string   { return "order.rejected" }
func (WrittenOff) EventType() string { return "order.written_off" }

// State is the order as JSON.
type State struct {
	OrderID         string  `json:"order_id"`
	Status          Status  `json:"status,omitempty"`
	CustomerID      string  `json:"customer_id,omitempty"`
	WalletID        string  `json:"wallet_id,omitempty"`
	Currency        string  `json:"currency,omitempty"`
	Lines           []Line  `json:"lines,omitempty"`
	Total           int64   `json:"total"`
	ShippingAddress Address `json:"shipping_address"`
	ShipmentID      string  `json:"shipment_id,omitempty"`
	Reason          string  `json:"reason,omitempty"`
}

// Order is the aggregate.
type Order struct {
	aggregate.Base
	id string
	s  State
}

// New returns an empty order stream.
func New(id string) *Order { return &Order{id: id, s: State{OrderID: id}} }

func (o *Order) StreamType() string       { return StreamType }
func (o *Order) StreamID() string         { return o.id }
func (o *Order) Replay(e aggregate.Event) { o.ReplayWith(e, o.apply) }
func (o *Order) record(e aggregate.Event) { o.Record(e, o.apply) }
func (o *Order) State() any               { return o.s }
func (o *Order) Status() Status           { return o.s.Status }
func (o *Order) CustomerID() string       { return o.s.CustomerID }

func (o *Order) Restore(version int64, data []byte) error {
	s := State{}
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	o.s = s
	o.SetVersion(version)
	return nil
}

func (o *Order) mustExist() error {
	if o.s.Status == "" {
		return aggregate.NotFound("order_not_found", "order %s does not exist", o.id)
	}
	return nil
}

// Place records a new order after checking its lines and address. Each
// line is priced from prices, never from the request: a line that names
// a price (the one its client was shown) must name the current one, or the
// order is refused with the current prices (price_changed), never silently
// re-priced.
func (o *Order) Place(customerID, walletID, currency string, lines []Line, prices Prices, addr Address) error {
	if o.s.Status != "" {
		return aggregate.State("order_exists", "order %s already exists", o.id)
	}
	switch {
	case len(o.id) > MaxIDLength:
		return aggregate.Rule("order_id_too_long", "an order id has at most %d characters (the ids derived from it must fit)", MaxIDLength)
	case strings.TrimSpace(customerID) == "":
		return aggregate.Rule("customer_required", "customer_id is required")
	case strings.TrimSpace(walletID) == "":
		return aggregate.Rule("wallet_required", "wallet_id is required")
	case !money.ValidCurrency(currency):
		return aggregate.Rule("invalid_currency", "currency %q is not an ISO 4217 code", currency)
	case len(lines) == 0:
		return aggregate.Rule("no_lines", "an order needs at least one line")
	case len(lines) > MaxLines:
		return aggregate.Rule("too_many_lines", "an order has at most %d lines", MaxLines)
	}
	total := money.New(0, currency)
	seen := map[string]bool{}
	priced := make([]Line, len(lines))
	var changed []map[string]any
	for n, l := range lines {
		switch {
		case strings.TrimSpace(l.SKU) == "":
			return aggregate.Rule("sku_required", "lines[%d].sku is required", n)
		case seen[l.SKU]:
			return aggregate.Rule("duplicate_sku", "lines[%d].sku %s appears twice; use one line with the total quantity", n, l.SKU)
		case l.Quantity <= 0:
			return aggregate.Rule("quantity_not_positive", "lines[%d].quantity must be positive", n)
		case l.UnitPrice < 0:
			return aggregate.Rule("negative_price", "lines[%d].unit_price must not be negative", n)
		}
		seen[l.SKU] = true
		p, ok := prices[l.SKU]
		if !ok || p.Currency != currency {
			return aggregate.Rule("not_for_sale", "lines[%d].sku %s is not for sale in %s", n, l.SKU, currency)
		}
		if l.UnitPrice != 0 && l.UnitPrice != p.UnitPrice {
			changed = append(changed, map[string]any{"sku": l.SKU, "unit_price": p.UnitPrice, "currency": p.Currency, "price_version": p.Version})
		}
		l.UnitPrice, l.PriceVersion = p.UnitPrice, p.Version
		priced[n] = l
		sub, err := money.New(l.UnitPrice, currency).Mul(l.Quantity)
		if err != nil {
			return err
		}
		if total, err = total.Add(sub); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		return &aggregate.Error{Kind: aggregate.ErrState, Code: "price_changed",
			Message: fmt.Sprintf("the price of %d line(s) changed since it was shown: see current_prices, and place the order again", len(changed)),
			Details: map[string]any{"current_prices": changed}}
	}
	if err := addr.validate(); err != nil {
		return err
	}
	o.record(Placed{
		OrderID: o.id, CustomerID: customerID, WalletID: walletID, Currency: currency,
		Lines: priced, Total: total.Amount, ShippingAddress: addr,
	})
	return nil
}

func (a Address) validate() error {
	for field, v := range map[string]string{"name": a.Name, "line1": a.Line1, "city": a.City, "postal_code": a.PostalCode} {
		if strings.TrimSpace(v) == "" {
			return aggregate.Rule("address_incomplete", "shipping_address.%s is required", field)
		}
	}
	if len(a.Country) != 2 || strings.ToUpper(a.Country) != a.Country {
		return aggregate.Rule("invalid_country", "shipping_address.country %q is not an ISO 3166 alpha-2 code", a.Country)
	}
	return nil
}

// Confirm records that stock and payment are secured.
func (o *Order) Confirm() error {
	if err := o.mustExist(); err != nil {
		return err
	}
	switch o.s.Status {
	case StatusConfirmed:
		return nil
	case StatusPlaced:
		o.record(Confirmed{})
		return nil
	}
	return o.illegal("confirm")
}

// Cancel stops an order that has not shipped: the saga's decision (its
// last compensation). A client's cancel never moves the order itself — it
// goes to the saga, which may have to ask the carrier first — so a call
// by any other decider is refused. Cancelling twice is a no-op.
func (o *Order) Cancel(reason string, by Decider) error {
	if err := o.mustExist(); err != nil {
		return err
	}
	if by != BySaga {
		return aggregate.State("saga_decides", "order %s is in fulfilment: only its saga cancels it (POST /orders/%s/cancel asks it)", o.id, o.id)
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a cancellation needs a reason")
	}
	switch o.s.Status {
	case StatusCancelled:
		return nil
	case StatusPlaced, StatusConfirmed:
		o.record(Cancelled{Reason: reason})
		return nil
	}
	return o.illegal("cancel")
}

// MarkShipped records that the shipment left.
func (o *Order) MarkShipped(shipmentID string) error {
	if err := o.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(shipmentID) == "" {
		return aggregate.Rule("shipment_required", "shipment_id is required")
	}
	switch {
	case o.s.Status == StatusShipped && o.s.ShipmentID == shipmentID:
		return nil
	case o.s.Status == StatusConfirmed:
		o.record(Shipped{ShipmentID: shipmentID})
		return nil
	}
	return o.illegal("ship")
}

// Complete closes a shipped and paid order.
func (o *Order) Complete() error {
	if err := o.mustExist(); err != nil {
		return err
	}
	switch o.s.Status {
	case StatusCompleted:
		return nil
	case StatusShipped:
		o.record(Completed{})
		return nil
	}
	return o.illegal("complete")
}

// Reject records that the order cannot be fulfilled (no stock, no funds).
func (o *Order) Reject(reason string) error {
	if err := o.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a rejection needs a reason")
	}
	switch o.s.Status {
	case StatusRejected:
		return nil
	case StatusPlaced, StatusConfirmed:
		o.record(Rejected{Reason: reason})
		return nil
	}
	return o.illegal("reject")
}

// WriteOff closes an order whose parcel left but whose sale could not be
// finished (the capture failed for good): an operator's decision, with the
// reason. Writing off twice is a no-op.
func (o *Order) WriteOff(reason string) error {
	if err := o.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a write-off needs a reason")
	}
	switch o.s.Status {
	case StatusWrittenOff:
		return nil
	case StatusConfirmed, StatusShipped:
		o.record(WrittenOff{Reason: reason})
		return nil
	}
	return o.illegal("write off")
}

func (o *Order) illegal(action string) error {
	return aggregate.State("order_"+string(o.s.Status), "cannot %s order %s: it is %s", action, o.id, o.s.Status)
}

func (o *Order) apply(e aggregate.Event) {
	s := &o.s
	switch e := e.(type) {
	case Placed:
		s.Status = StatusPlaced
		s.CustomerID, s.WalletID, s.Currency = e.CustomerID, e.WalletID, e.Currency
		s.Lines, s.Total, s.ShippingAddress = e.Lines, e.Total, e.ShippingAddress
	case Confirmed:
		s.Status = StatusConfirmed
	case Cancelled:
		s.Status, s.Reason = StatusCancelled, e.Reason
	case Shipped:
		s.Status, s.ShipmentID = StatusShipped, e.ShipmentID
	case Completed:
		s.Status = StatusCompleted
	case Rejected:
		s.Status, s.Reason = StatusRejected, e.Reason
	case WrittenOff:
		s.Status, s.Reason = StatusWrittenOff, e.Reason
	}
}
