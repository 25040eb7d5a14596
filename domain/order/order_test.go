package order_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/order"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*order.Order]

var addr = order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}

// The catalogue: a at 150 (its 3rd price), b at 99; c is priced in USD only.
var prices = order.Prices{"a": {UnitPrice: 150, Currency: "EUR", Version: 3}, "b": {UnitPrice: 99, Currency: "EUR", Version: 1},
	"c": {UnitPrice: 10, Currency: "USD", Version: 1}, "big": {UnitPrice: 1 << 40, Currency: "EUR", Version: 1}}

// lines as a client asks for them: no prices, or the ones it was shown.
var lines = []order.Line{{SKU: "a", Quantity: 2}, {SKU: "b", Quantity: 1}}
var placed = order.Placed{OrderID: "o1", CustomerID: "c1", WalletID: "w1", Currency: "EUR",
	Lines: []order.Line{{SKU: "a", Quantity: 2, UnitPrice: 150, PriceVersion: 3}, {SKU: "b", Quantity: 1, UnitPrice: 99, PriceVersion: 1}},
	Total: 399, ShippingAddress: addr}

func place(ls []order.Line, a order.Address) func(*order.Order) error {
	return func(o *order.Order) error { return o.Place("c1", "w1", "EUR", ls, prices, a) }
}

func TestOrder(t *testing.T) {
	confirmed := ev{placed, order.Confirmed{}}
	shipped := append(confirmed[:2:2], order.Shipped{ShipmentID: "s1"})
	aggregatetest.Run(t, func() *order.Order { return order.New("o1") }, []row{
		{Name: "place prices every line from the catalogue and computes the total", When: place(lines, addr), Then: ev{placed}},
		{Name: "a client's price is never taken: the catalogue's is", When: place([]order.Line{{SKU: "a", Quantity: 2, UnitPrice: 150}, {SKU: "b", Quantity: 1, UnitPrice: 99}}, addr), Then: ev{placed}},
		{Name: "a shown price that is not the current one is refused, not re-priced", When: place([]order.Line{{SKU: "a", Quantity: 2, UnitPrice: 1}, {SKU: "b", Quantity: 1}}, addr), Err: "price_changed"},
		{Name: "a SKU with no price is not for sale", When: place([]order.Line{{SKU: "z", Quantity: 1}}, addr), Err: "not_for_sale"},
		{Name: "a SKU priced in another currency is not for sale in this one", When: place([]order.Line{{SKU: "c", Quantity: 1}}, addr), Err: "not_for_sale"},
		{Name: "place twice", Given: ev{placed}, When: place(lines, addr), Err: "order_exists"},
		{Name: "place without lines", When: place(nil, addr), Err: "no_lines"},
		{Name: "place zero quantity", When: place([]order.Line{{SKU: "a", Quantity: 0, UnitPrice: 1}}, addr), Err: "quantity_not_positive"},
		{Name: "place duplicate sku", When: place([]order.Line{{SKU: "a", Quantity: 1}, {SKU: "a", Quantity: 1}}, addr), Err: "duplicate_sku"},
		{Name: "place overflowing total", When: place([]order.Line{{SKU: "big", Quantity: 1 << 40}}, addr), Err: "amount_overflow"},
		{Name: "place without city", When: place(lines, order.Address{Name: "A", Line1: "x", PostalCode: "1", Country: "FR"}), Err: "address_incomplete"},
		{Name: "place bad country", When: place(lines, order.Address{Name: "A", Line1: "x", City: "y", PostalCode: "1", Country: "France"}), Err: "invalid_country"},
		{Name: "confirm", Given: ev{placed}, When: (*order.Order).Confirm, Then: ev{order.Confirmed{}}},
		{Name: "confirm unknown", When: (*order.Order).Confirm, Err: "order_not_found"},
		{Name: "cancel placed", Given: ev{placed}, When: func(o *order.Order) error { return o.Cancel("changed my mind", order.BySaga) }, Then: ev{order.Cancelled{Reason: "changed my mind"}}},
		{Name: "cancel without reason", Given: ev{placed}, When: func(o *order.Order) error { return o.Cancel(" ", order.BySaga) }, Err: "reason_required"},
		{Name: "cancel twice is a no-op", Given: ev{placed, order.Cancelled{Reason: "x"}}, When: func(o *order.Order) error { return o.Cancel("y", order.BySaga) }},
		{Name: "a client's cancel of a placed order is the saga's to decide", Given: ev{placed}, When: func(o *order.Order) error { return o.Cancel("x", order.ByClient) }, Err: "saga_decides"},
		{Name: "a client's cancel of a confirmed order is the saga's to decide", Given: confirmed, When: func(o *order.Order) error { return o.Cancel("x", order.ByClient) }, Err: "saga_decides"},
		{Name: "cancel shipped", Given: shipped, When: func(o *order.Order) error { return o.Cancel("late", order.BySaga) }, Err: "order_shipped"},
		{Name: "ship unconfirmed", Given: ev{placed}, When: func(o *order.Order) error { return o.MarkShipped("s1") }, Err: "order_placed"},
		{Name: "ship", Given: confirmed, When: func(o *order.Order) error { return o.MarkShipped("s1") }, Then: ev{order.Shipped{ShipmentID: "s1"}}},
		{Name: "complete", Given: shipped, When: (*order.Order).Complete, Then: ev{order.Completed{}}},
		{Name: "complete before shipping", Given: confirmed, When: (*order.Order).Complete, Err: "order_confirmed"},
		{Name: "reject", Given: ev{placed}, When: func(o *order.Order) error { return o.Reject("out of stock") }, Then: ev{order.Rejected{Reason: "out of stock"}}},
		{Name: "write off confirmed", Given: confirmed, When: func(o *order.Order) error { return o.WriteOff("capture failed") }, Then: ev{order.WrittenOff{Reason: "capture failed"}}},
		{Name: "write off shipped", Given: shipped, When: func(o *order.Order) error { return o.WriteOff("x") }, Then: ev{order.WrittenOff{Reason: "x"}}},
		{Name: "write off twice is a no-op", Given: append(shipped[:3:3], order.WrittenOff{Reason: "x"}), When: func(o *order.Order) error { return o.WriteOff("y") }},
		{Name: "write off without reason", Given: shipped, When: func(o *order.Order) error { return o.WriteOff("") }, Err: "reason_required"},
		{Name: "write off placed", Given: ev{placed}, When: func(o *order.Order) error { return o.WriteOff("x") }, Err: "order_placed"},
		{Name: "cancel written off", Given: append(shipped[:3:3], order.WrittenOff{Reason: "x"}), When: func(o *order.Order) error { return o.Cancel("y", order.BySaga) }, Err: "order_written_off"},
		{Name: "reject completed", Given: append(shipped[:3:3], order.Completed{}), When: func(o *order.Order) error { return o.Reject("x") }, Err: "order_completed"},
	})
}

// A price_changed refusal names the current price of each changed line, so
// the client can show it and place the order again.
func TestAPriceChangedRefusalCarriesTheCurrentPrices(t *testing.T) {
	err := order.New("o1").Place("c1", "w1", "EUR", []order.Line{{SKU: "a", Quantity: 1, UnitPrice: 140}, {SKU: "b", Quantity: 1, UnitPrice: 99}}, prices, addr)
	var dErr *aggregate.Error
	if !errors.As(err, &dErr) || dErr.Code != "price_changed" || !errors.Is(err, aggregate.ErrState) {
		t.Fatalf("got %v", err)
	}
	cur, _ := dErr.Details["current_prices"].([]map[string]any)
	if len(cur) != 1 || cur[0]["sku"] != "a" || cur[0]["unit_price"] != int64(150) || cur[0]["price_version"] != int64(3) {
		t.Fatalf("current_prices: %v", dErr.Details)
	}
}

// The ids the saga derives from an order's (its shipment's, "shp-" + id)
// must fit the id limit: an order whose would not is refused when placed.
func TestAnOrderIDTooLongForItsDerivedIDsIsRefusedAtPlacement(t *testing.T) {
	long := strings.Repeat("o", order.MaxIDLength+1)
	err := order.New(long).Place("c1", "w1", "EUR", lines, prices, addr)
	var dErr *aggregate.Error
	if !errors.As(err, &dErr) || dErr.Code != "order_id_too_long" {
		t.Fatalf("placing order %d characters long: %v", len(long), err)
	}
	if err := order.New(long[:order.MaxIDLength]).Place("c1", "w1", "EUR", lines, prices, addr); err != nil {
		t.Fatalf("an id of the maximum length: %v", err)
	}
	if len("shp-")+order.MaxIDLength > 128 {
		t.Fatalf("the shipment id derived from a %d-character order id is over 128 characters", order.MaxIDLength)
	}
}
