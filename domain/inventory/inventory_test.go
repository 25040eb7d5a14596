package inventory_test

import (
	"encoding/json"
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/money"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*inventory.Item]

var stocked = ev{inventory.StockReceived{SKU: "sku-1", Quantity: 10}}
var priced1 = inventory.PriceSet{SKU: "sku-1", UnitPrice: 1250, Currency: "EUR", Version: 1}

func setPrice(amount int64, currency string) func(*inventory.Item) error {
	return func(i *inventory.Item) error { return i.SetPrice(money.New(amount, currency)) }
}

var reserved = ev{stocked[0], inventory.StockReserved{OrderID: "o1", Quantity: 4}}

func TestItem(t *testing.T) {
	aggregatetest.Run(t, func() *inventory.Item { return inventory.New("sku-1") }, []row{
		{Name: "receive", When: func(i *inventory.Item) error { return i.Receive(10) }, Then: stocked},
		{Name: "the first price puts the SKU on sale", When: setPrice(1250, "EUR"), Then: ev{priced1}},
		{Name: "a new price is the next version", Given: ev{priced1}, When: setPrice(1300, "EUR"), Then: ev{inventory.PriceSet{SKU: "sku-1", UnitPrice: 1300, Currency: "EUR", Version: 2}}},
		{Name: "the same price again changes nothing", Given: ev{priced1}, When: setPrice(1250, "EUR")},
		{Name: "the same amount in another currency is a new price", Given: ev{priced1}, When: setPrice(1250, "USD"), Then: ev{inventory.PriceSet{SKU: "sku-1", UnitPrice: 1250, Currency: "USD", Version: 2}}},
		{Name: "a price of nothing", When: setPrice(0, "EUR"), Err: "price_not_positive"},
		{Name: "a negative price", When: setPrice(-5, "EUR"), Err: "price_not_positive"},
		{Name: "a price in no currency", When: setPrice(5, "euro"), Err: "invalid_currency"},
		{Name: "receive nothing", When: func(i *inventory.Item) error { return i.Receive(0) }, Err: "quantity_not_positive"},
		{Name: "reserve", Given: stocked, When: func(i *inventory.Item) error { return i.Reserve("o1", 4) }, Then: reserved[1:]},
		{Name: "reserve all", Given: stocked, When: func(i *inventory.Item) error { return i.Reserve("o1", 10) }, Then: ev{inventory.StockReserved{OrderID: "o1", Quantity: 10}}},
		{Name: "reserve more than available", Given: reserved, When: func(i *inventory.Item) error { return i.Reserve("o2", 7) }, Err: "out_of_stock"},
		{Name: "reserve unknown sku", When: func(i *inventory.Item) error { return i.Reserve("o1", 1) }, Err: "out_of_stock"},
		{Name: "reserve twice for one order is a no-op", Given: reserved, When: func(i *inventory.Item) error { return i.Reserve("o1", 4) }},
		{Name: "reserve other quantity for same order", Given: reserved, When: func(i *inventory.Item) error { return i.Reserve("o1", 5) }, Err: "reservation_exists"},
		{Name: "release", Given: reserved, When: func(i *inventory.Item) error { return i.Release("o1") }, Then: ev{inventory.ReservationReleased{OrderID: "o1", Quantity: 4}}},
		{Name: "release without reservation is a no-op", Given: stocked, When: func(i *inventory.Item) error { return i.Release("o1") }},
		{Name: "commit", Given: reserved, When: func(i *inventory.Item) error { return i.Commit("o1") }, Then: ev{inventory.ReservationCommitted{OrderID: "o1", Quantity: 4}}},
		{Name: "commit twice is a no-op", Given: append(reserved[:2:2], inventory.ReservationCommitted{OrderID: "o1", Quantity: 4}), When: func(i *inventory.Item) error { return i.Commit("o1") }},
		{Name: "release after commit", Given: append(reserved[:2:2], inventory.ReservationCommitted{OrderID: "o1", Quantity: 4}), When: func(i *inventory.Item) error { return i.Release("o1") }, Err: "reservation_committed"},
		{Name: "commit without reservation", Given: stocked, When: func(i *inventory.Item) error { return i.Commit("o1") }, Err: "no_reservation"},
	})
}

func TestAvailableNeverNegative(t *testing.T) {
	i := inventory.New("sku-1")
	i.Replay(stocked[0])
	for n := 0; n < 20; n++ {
		_ = i.Reserve("o"+string(rune('a'+n)), 3)
	}
	s := i.State().(inventory.State)
	if s.Available < 0 || s.Reserved != 9 || s.OnHand != 10 {
		t.Fatalf("state %+v", s)
	}
}

// A snapshot keeps the price: a SKU restored from one is still for sale
// at the same price and version.
func TestPriceSurvivesASnapshot(t *testing.T) {
	i := inventory.New("sku-1")
	i.Replay(priced1)
	raw, err := json.Marshal(i.State())
	if err != nil {
		t.Fatal(err)
	}
	r := inventory.New("sku-1")
	if err := r.Restore(1, raw); err != nil {
		t.Fatal(err)
	}
	if p, cur, v, ok := r.Price(); !ok || p != 1250 || cur != "EUR" || v != 1 {
		t.Fatalf("restored price %d %s v%d (%v)", p, cur, v, ok)
	}
}
