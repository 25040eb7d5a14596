package shipment_test

import (
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*shipment.Shipment]

var addr = order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}
var scheduled = shipment.Scheduled{ShipmentID: "s1", OrderID: "o1", Address: addr}
var dispatched = shipment.Dispatched{Carrier: "sim", TrackingNumber: "T1"}

func TestShipment(t *testing.T) {
	aggregatetest.Run(t, func() *shipment.Shipment { return shipment.New("s1") }, []row{
		{Name: "schedule", When: func(s *shipment.Shipment) error { return s.Schedule("o1", addr) }, Then: ev{scheduled}},
		{Name: "schedule same order again is a no-op", Given: ev{scheduled}, When: func(s *shipment.Shipment) error { return s.Schedule("o1", addr) }},
		{Name: "schedule for another order", Given: ev{scheduled}, When: func(s *shipment.Shipment) error { return s.Schedule("o2", addr) }, Err: "shipment_exists"},
		{Name: "dispatch", Given: ev{scheduled}, When: func(s *shipment.Shipment) error { return s.Dispatch("sim", "T1") }, Then: ev{dispatched}},
		{Name: "dispatch unknown", When: func(s *shipment.Shipment) error { return s.Dispatch("sim", "T1") }, Err: "shipment_not_found"},
		{Name: "deliver", Given: ev{scheduled, dispatched}, When: (*shipment.Shipment).Deliver, Then: ev{shipment.Delivered{}}},
		{Name: "deliver before dispatch", Given: ev{scheduled}, When: (*shipment.Shipment).Deliver, Err: "shipment_scheduled"},
		{Name: "fail", Given: ev{scheduled, dispatched}, When: func(s *shipment.Shipment) error { return s.Fail("lost") }, Then: ev{shipment.Failed{Reason: "lost"}}},
		{Name: "the same dispatch again after delivery is a no-op", Given: ev{scheduled, dispatched, shipment.Delivered{}},
			When: func(s *shipment.Shipment) error { return s.Dispatch(dispatched.Carrier, dispatched.TrackingNumber) }},
		{Name: "fail delivered", Given: ev{scheduled, dispatched, shipment.Delivered{}}, When: func(s *shipment.Shipment) error { return s.Fail("x") }, Err: "shipment_delivered"},
	})
}
