// Package shipment is the parcel of one order: scheduled, dispatched by a
// carrier, then delivered or failed.
package shipment

import (
	"encoding/json"
	"strings"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/order"
)

// StreamType is the stream family of shipments.
const StreamType = "shipment"

// SnapshotVersion changes whenever State changes shape.
const SnapshotVersion = 1

// Status is where the shipment stands.
type Status string

const (
	StatusScheduled  Status = "scheduled"
	StatusDispatched Status = "dispatched"
	StatusDelivered  Status = "delivered"
	StatusFailed     Status = "failed"
)

type Scheduled struct {
	ShipmentID string        `json:"shipment_id"`
	OrderID    string        `json:"order_id"`
	Address    order.Address `json:"address"`
}

type Dispatched struct {
	Carrier        string `json:"carrier"`
	TrackingNumber string `json:"tracking_number"`
}

type Delivered struct{}

type Failed struct {
	Reason string `json:"reason"`
}

func (Scheduled) EventType() string  { return "shipment.scheduled" }
func (Dispatched) EventType() string { return "shipment.dispatched" }
func (Delivered) EventType() string  { return "shipment.delivered" }
func (Failed) EventType() string     { return "shipment.failed" }

// State is the shipment as JSON.
type State struct {
	ShipmentID     string        `json:"shipment_id"`
	OrderID        string        `json:"order_id,omitempty"`
	Status         Status        `json:"status,omitempty"`
	Address        order.Address `json:"address"`
	Carrier        string        `json:"carrier,omitempty"`
	TrackingNumber string        `json:"tracking_number,omitempty"`
	Reason         string        `json:"reason,omitempty"`
}

// Shipment is the aggregate.
type Shipment struct {
	aggregate.Base
	id string
	s  State
}

// New returns an empty shipment stream.
func New(id string) *Shipment { return &Shipment{id: id, s: State{ShipmentID: id}} }

func (s *Shipment) StreamType() string       { return StreamType }
func (s *Shipment) StreamID() string         { return s.id }
func (s *Shipment) Replay(e aggregate.Event) { s.ReplayWith(e, s.apply) }
func (s *Shipment) record(e aggregate.Event) { s.Record(e, s.apply) }
func (s *Shipment) State() any               { return s.s }
func (s *Shipment) OrderID() string          { return s.s.OrderID }

func (s *Shipment) Restore(version int64, data []byte) error {
	st := State{}
	if err := json.Unmarshal(data, &st); err != nil {
		return err
	}
	s.s = st
	s.SetVersion(version)
	return nil
}

func (s *Shipment) mustExist() error {
	if s.s.Status == "" {
		return aggregate.NotFound("shipment_not_found", "shipment %s does not exist", s.id)
	}
	return nil
}

// Schedule creates the shipment of an order. Scheduling the same order again is a no-op.
func (s *Shipment) Schedule(orderID string, addr order.Address) error {
	if s.s.Status != "" {
		if s.s.OrderID == orderID {
			return nil
		}
		return aggregate.State("shipment_exists", "shipment %s already exists for order %s", s.id, s.s.OrderID)
	}
	if strings.TrimSpace(orderID) == "" {
		return aggregate.Rule("order_required", "order_id is required")
	}
	s.record(Scheduled{ShipmentID: s.id, OrderID: orderID, Address: addr})
	return nil
}

// Dispatch records that the carrier accepted the parcel.
func (s *Shipment) Dispatch(carrier, tracking string) error {
	if err := s.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(carrier) == "" || strings.TrimSpace(tracking) == "" {
		return aggregate.Rule("carrier_required", "carrier and tracking_number are required")
	}
	switch s.s.Status {
	case StatusDispatched, StatusDelivered:
		// The same dispatch recorded again (a repair run's record of a
		// parcel delivered meanwhile) changes nothing.
		if s.s.TrackingNumber == tracking {
			return nil
		}
	case StatusScheduled:
		s.record(Dispatched{Carrier: carrier, TrackingNumber: tracking})
		return nil
	}
	return s.illegal("dispatch")
}

// Deliver records the delivery.
func (s *Shipment) Deliver() error {
	if err := s.mustExist(); err != nil {
		return err
	}
	switch s.s.Status {
	case StatusDelivered:
		return nil
	case StatusDispatched:
		s.record(Delivered{})
		return nil
	}
	return s.illegal("deliver")
}

// Fail records that the shipment cannot be delivered.
func (s *Shipment) Fail(reason string) error {
	if err := s.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a failure needs a reason")
	}
	switch s.s.Status {
	case StatusFailed:
		return nil
	case StatusScheduled, StatusDispatched:
		s.record(Failed{Reason: reason})
		return nil
	}
	return s.illegal("fail")
}

func (s *Shipment) illegal(action string) error {
	return aggregate.State("shipment_"+string(s.s.Status), "cannot %s shipment %s: it is %s", action, s.id, s.s.Status)
}

func (s *Shipment) apply(e aggregate.Event) {
	st := &s.s
	switch e := e.(type) {
	case Scheduled:
		st.Status, st.OrderID, st.Address = StatusScheduled, e.OrderID, e.Address
	case Dispatched:
		st.Status, st.Carrier, st.TrackingNumber = StatusDispatched, e.Carrier, e.TrackingNumber
	case Delivered:
		st.Status = StatusDelivered
	case Failed:
		st.Status, st.Reason = StatusFailed, e.Reason
	}
}
