// Package streams is the registry of orderflow's streams and events: which
// aggregate each stream type holds, and each event's wire name and schema
// version, for the event store to decode them.
package streams

import (
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/payment"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
)

// Registry returns the registry of every stream type and event of orderflow.
// Wire names come from each event's EventType method; a changed schema gets
// a higher version here and an upcaster registered next to it.
func Registry() *eventstore.Registry {
	r := eventstore.NewRegistry()
	r.RegisterStream(order.StreamType, order.SnapshotVersion, func(id string) aggregate.Root { return order.New(id) })
	r.RegisterStream(inventory.StreamType, inventory.SnapshotVersion, func(id string) aggregate.Root { return inventory.New(id) })
	r.RegisterStream(wallet.StreamType, wallet.SnapshotVersion, func(id string) aggregate.Root { return wallet.New(id) })
	r.RegisterStream(shipment.StreamType, shipment.SnapshotVersion, func(id string) aggregate.Root { return shipment.New(id) })
	r.RegisterStream(payment.StreamType, payment.SnapshotVersion, func(id string) aggregate.Root { return payment.New(id) })

	eventstore.RegisterEvent[order.Placed](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.Confirmed](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.Cancelled](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.Shipped](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.Completed](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.Rejected](r, order.StreamType, 1)
	eventstore.RegisterEvent[order.WrittenOff](r, order.StreamType, 1)

	eventstore.RegisterEvent[inventory.PriceSet](r, inventory.StreamType, 1)
	eventstore.RegisterEvent[inventory.StockReceived](r, inventory.StreamType, 1)
	eventstore.RegisterEvent[inventory.StockReserved](r, inventory.StreamType, 1)
	eventstore.RegisterEvent[inventory.ReservationReleased](r, inventory.StreamType, 1)
	eventstore.RegisterEvent[inventory.ReservationCommitted](r, inventory.StreamType, 1)

	eventstore.RegisterEvent[wallet.Opened](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.Renamed](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.ToppedUp](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.HoldAuthorised](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.HoldCaptured](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.HoldVoided](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.CaptureRefunded](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.Suspended](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.Reinstated](r, wallet.StreamType, 1)

	eventstore.RegisterEvent[shipment.Scheduled](r, shipment.StreamType, 1)
	eventstore.RegisterEvent[shipment.Dispatched](r, shipment.StreamType, 1)
	eventstore.RegisterEvent[shipment.Delivered](r, shipment.StreamType, 1)
	eventstore.RegisterEvent[shipment.Failed](r, shipment.StreamType, 1)

	eventstore.RegisterEvent[payment.Requested](r, payment.StreamType, 1)
	eventstore.RegisterEvent[payment.IntentCreated](r, payment.StreamType, 1)
	eventstore.RegisterEvent[payment.Succeeded](r, payment.StreamType, 1)
	eventstore.RegisterEvent[payment.Failed](r, payment.StreamType, 1)
	return r
}
