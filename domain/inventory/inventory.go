// Package inventory is one SKU of the catalogue: its price, set by
// operators, and its stock, received, reserved for orders, released and
// committed on shipment. Available stock is never negative and one order
// holds at most one reservation per SKU.
package inventory

import (
	"encoding/json"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
)

// StreamType is the stream family of inventory items; the stream id is the SKU.
const StreamType = "inventory"

// SnapshotVersion changes whenever State changes shape. (The price fields
// were added without a change: a snapshot without them predates every
// price, so it restores a SKU that has none, as it should.)
const SnapshotVersion = 1

type StockReceived struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

type StockReserved struct {
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

type ReservationReleased struct {
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

// ReservationCommitted takes reserved stock out of the warehouse on shipment.
type ReservationCommitted struct {
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

// PriceSet is a new price of the SKU; Version counts the SKU's prices
// (1, 2, …), so that an order names the one it was priced with.
type PriceSet struct {
	SKU       string `json:"sku"`
	UnitPrice int64  `json:"unit_price"`
	Currency  string `json:"currency"`
	Version   int64  `json:"price_version"`
}

func (PriceSet) EventType() string             { return "inventory.price_set" }
func (StockReceived) EventType() string        { return "inventory.stock_received" }
func (StockReserved) EventType() string        { return "inventory.stock_reserved" }
func (ReservationReleased) EventType() string  { return "inventory.reservation_released" }
func (ReservationCommitted) EventType() string { return "inventory.reservation_committed" }

// State is the item as JSON.
type State struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	// Reservations are open reservations by order id.
	Reservations map[string]int64 `json:"reservations"`
	// Committed lists orders whose reservation left the warehouse.
	Committed map[string]int64 `json:"committed"`
	// Price is the SKU's current price; PriceVersion 0: never priced (not
	// for sale).
	UnitPrice    int64  `json:"unit_price,omitempty"`
	Currency     string `json:"currency,omitempty"`
	PriceVersion int64  `json:"price_version,omitempty"`
}

// Item is the aggregate.
type Item struct {
	aggregate.Base
	sku string
	s   State
}

// New returns an empty item stream for sku.
func New(sku string) *Item {
	return &Item{sku: sku, s: State{SKU: sku, Reservations: map[string]int64{}, Committed: map[string]int64{}}}
}

func (i *Item) StreamType() string       { return StreamType }
func (i *Item) StreamID() string         { return i.sku }
func (i *Item) Replay(e aggregate.Event) { i.ReplayWith(e, i.apply) }
func (i *Item) record(e aggregate.Event) { i.Record(e, i.apply) }
func (i *Item) available() int64         { return i.s.OnHand - i.s.Reserved }

func (i *Item) State() any {
	s := i.s
	s.Available = i.available()
	return s
}

func (i *Item) Restore(version int64, data []byte) error {
	s := State{}
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	if s.Reservations == nil {
		s.Reservations = map[string]int64{}
	}
	if s.Committed == nil {
		s.Committed = map[string]int64{}
	}
	i.s = s
	i.SetVersion(version)
	return nil
}

// Price is the SKU's current price and its version; ok is false for a SKU
// never priced, which is not for sale.
func (i *Item) Price() (unitPrice int64, currency string, version int64, ok bool) {
	return i.s.UnitPrice, i.s.Currency, i.s.PriceVersion, i.s.PriceVersion > 0
}

// SetPrice makes amount the SKU's price (an operator's decision); the
// first price puts it on sale. Setting the price it has is a no-op, so a
// PUT of the same price changes nothing.
func (i *Item) SetPrice(amount money.Money) error {
	switch {
	case amount.Amount <= 0:
		return aggregate.Rule("price_not_positive", "a price must be positive (minor units)")
	case !money.ValidCurrency(amount.Currency):
		return aggregate.Rule("invalid_currency", "currency %q is not an ISO 4217 code", amount.Currency)
	case i.s.PriceVersion > 0 && i.s.UnitPrice == amount.Amount && i.s.Currency == amount.Currency:
		return nil
	}
	i.record(PriceSet{SKU: i.sku, UnitPrice: amount.Amount, Currency: amount.Currency, Version: i.s.PriceVersion + 1})
	return nil
}

// Receive adds stock to the warehouse; the first receipt creates the item.
func (i *Item) Receive(quantity int64) error {
	if quantity <= 0 {
		return aggregate.Rule("quantity_not_positive", "quantity must be positive")
	}
	if i.s.OnHand > (1<<62)-quantity {
		return aggregate.Rule("quantity_overflow", "stock level would overflow")
	}
	i.record(StockReceived{SKU: i.sku, Quantity: quantity})
	return nil
}

// Reserve sets stock aside for an order. Reserving again for the same order
// and quantity is a no-op, never a second reservation.
func (i *Item) Reserve(orderID string, quantity int64) error {
	if quantity <= 0 {
		return aggregate.Rule("quantity_not_positive", "quantity must be positive")
	}
	if q, ok := i.s.Reservations[orderID]; ok {
		if q == quantity {
			return nil
		}
		return aggregate.Rule("reservation_exists", "order %s already reserves %d of %s, not %d", orderID, q, i.sku, quantity)
	}
	if _, ok := i.s.Committed[orderID]; ok {
		return aggregate.State("reservation_committed", "the reservation of order %s for %s was already committed", orderID, i.sku)
	}
	if avail := i.available(); quantity > avail {
		return aggregate.Rule("out_of_stock", "%s has %d available, %d requested", i.sku, avail, quantity)
	}
	i.record(StockReserved{OrderID: orderID, Quantity: quantity})
	return nil
}

// Release gives a reservation back. Without a reservation it is a no-op, so a
// compensation can run whether or not the reservation was made.
func (i *Item) Release(orderID string) error {
	q, ok := i.s.Reservations[orderID]
	if !ok {
		if _, committed := i.s.Committed[orderID]; committed {
			return aggregate.State("reservation_committed", "the reservation of order %s for %s already shipped", orderID, i.sku)
		}
		return nil
	}
	i.record(ReservationReleased{OrderID: orderID, Quantity: q})
	return nil
}

// Commit takes the reserved stock out of the warehouse on shipment.
// Committing twice is a no-op.
func (i *Item) Commit(orderID string) error {
	q, ok := i.s.Reservations[orderID]
	if !ok {
		if _, committed := i.s.Committed[orderID]; committed {
			return nil
		}
		return aggregate.State("no_reservation", "order %s has no reservation of %s", orderID, i.sku)
	}
	i.record(ReservationCommitted{OrderID: orderID, Quantity: q})
	return nil
}

func (i *Item) apply(e aggregate.Event) {
	s := &i.s
	switch e := e.(type) {
	case PriceSet:
		s.UnitPrice, s.Currency, s.PriceVersion = e.UnitPrice, e.Currency, e.Version
	case StockReceived:
		s.OnHand += e.Quantity
	case StockReserved:
		s.Reservations[e.OrderID] = e.Quantity
		s.Reserved += e.Quantity
	case ReservationReleased:
		delete(s.Reservations, e.OrderID)
		s.Reserved -= e.Quantity
	case ReservationCommitted:
		delete(s.Reservations, e.OrderID)
		s.Reserved -= e.Quantity
		s.OnHand -= e.Quantity
		s.Committed[e.OrderID] = e.Quantity
	}
}
