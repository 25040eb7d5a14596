package inventory_test

import (
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/inventory"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*inventory.Item]

var stocked = ev{inventory.StockReceived{SKU: "sku-1", Quantity: 10}}
var reserved = ev{stocked[0], inventory.StockReserved{OrderID: "o1", Quantity: 4}}

func TestItem(t *testing.T) {
	aggregatetest.Run(t, func() *inventory.Item { return inventory.New("sku-1") }, []row{
		{Name: "receive", When: func(i *inventory.Item) error { return i.Receive(10) }, Then: stocked},
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
