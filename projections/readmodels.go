package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

func ordersProjection() Projection {
	return Projection{Name: "orders_projection", Source: order.StreamType, Tables: []string{"read_orders"},
		OnEvent: func(ctx context.Context, tx pgx.Tx, e eventstore.Envelope) error {
			if p, ok := e.Event.(order.Placed); ok {
				return advance(ctx, tx, "read_orders", "order_id", e.StreamID, e.StreamVersion, `
					INSERT INTO read_orders (order_id, customer_id, wallet_id, status, currency, lines, total, shipping_address,
					    version, position, placed_at, updated_at)
					VALUES ($1, $2, $3, 'placed', $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (order_id) DO NOTHING`, "",
					e.StreamID, p.CustomerID, p.WalletID, p.Currency, p.Lines, p.Total, p.ShippingAddress, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
			}
			var status order.Status
			reason := ""
			switch ev := e.Event.(type) {
			case order.Confirmed:
				status = order.StatusConfirmed
			case order.Shipped:
				status = order.StatusShipped
			case order.Completed:
				status = order.StatusCompleted
			case order.Cancelled:
				status, reason = order.StatusCancelled, ev.Reason
			case order.Rejected:
				status, reason = order.StatusRejected, ev.Reason
			case order.WrittenOff:
				status, reason = order.StatusWrittenOff, ev.Reason
			default:
				return fmt.Errorf("orders projection: unexpected event %s", e.EventType)
			}
			return advance(ctx, tx, "read_orders", "order_id", e.StreamID, e.StreamVersion, "", `
				UPDATE read_orders SET status = $2, reason = coalesce(nullif($3, ''), reason), version = $4, position = $5, updated_at = $6
				WHERE order_id = $1 AND version = $4 - 1`,
				e.StreamID, string(status), reason, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
		}}
}

func inventoryProjection() Projection {
	return Projection{Name: "inventory_projection", Source: inventory.StreamType, Tables: []string{"read_inventory"},
		OnEvent: func(ctx context.Context, tx pgx.Tx, e eventstore.Envelope) error {
			var onHand, reserved int64
			switch ev := e.Event.(type) {
			case inventory.StockReceived:
				onHand = ev.Quantity
			case inventory.StockReserved:
				reserved = ev.Quantity
			case inventory.ReservationReleased:
				reserved = -ev.Quantity
			case inventory.ReservationCommitted:
				onHand, reserved = -ev.Quantity, -ev.Quantity
			default:
				return fmt.Errorf("inventory projection: unexpected event %s", e.EventType)
			}
			return advance(ctx, tx, "read_inventory", "sku", e.StreamID, e.StreamVersion, `
				INSERT INTO read_inventory (sku, on_hand, reserved, version, position, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sku) DO NOTHING`, `
				UPDATE read_inventory SET on_hand = on_hand + $2, reserved = reserved + $3, version = $4, position = $5, updated_at = $6
				WHERE sku = $1 AND version = $4 - 1`,
				e.StreamID, onHand, reserved, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
		}}
}

func walletsProjection() Projection {
	return Projection{Name: "wallets_projection", Source: wallet.StreamType, Tables: []string{"read_wallets"},
		OnEvent: func(ctx context.Context, tx pgx.Tx, e eventstore.Envelope) error {
			if o, ok := e.Event.(wallet.Opened); ok {
				return advance(ctx, tx, "read_wallets", "wallet_id", e.StreamID, e.StreamVersion, `
					INSERT INTO read_wallets (wallet_id, customer_id, name, currency, balance, held, version, position, updated_at)
					VALUES ($1, $2, $3, $4, 0, 0, $5, $6, $7) ON CONFLICT (wallet_id) DO NOTHING`, "",
					e.StreamID, o.CustomerID, o.Name, o.Currency, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
			}
			var balance, held int64
			name := ""
			switch ev := e.Event.(type) {
			case wallet.Suspended, wallet.Reinstated:
				suspended, reason := false, ""
				if s, ok := ev.(wallet.Suspended); ok {
					suspended, reason = true, s.Reason
				}
				return advance(ctx, tx, "read_wallets", "wallet_id", e.StreamID, e.StreamVersion, "", `
					UPDATE read_wallets SET suspended = $2, suspended_reason = nullif($3, ''), version = $4, position = $5, updated_at = $6
					WHERE wallet_id = $1 AND version = $4 - 1`,
					e.StreamID, suspended, reason, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
			case wallet.Renamed:
				name = ev.Name
			case wallet.ToppedUp:
				balance = ev.Amount
			case wallet.HoldAuthorised:
				held = ev.Amount
			case wallet.HoldCaptured:
				balance, held = -ev.Amount, -(ev.Amount + ev.Released)
			case wallet.HoldVoided:
				held = -ev.Amount
			case wallet.CaptureRefunded:
				balance = ev.Amount
			default:
				return fmt.Errorf("wallets projection: unexpected event %s", e.EventType)
			}
			return advance(ctx, tx, "read_wallets", "wallet_id", e.StreamID, e.StreamVersion, "", `
				UPDATE read_wallets SET balance = balance + $2, held = held + $3, name = coalesce(nullif($4, ''), name),
				    version = $5, position = $6, updated_at = $7
				WHERE wallet_id = $1 AND version = $5 - 1`,
				e.StreamID, balance, held, name, e.StreamVersion, e.GlobalPosition, e.RecordedAt)
		}}
}

// The timeline is fed by the commands topic: each message is one command
// with the events it caused, so rejected commands show up too.
func timelineProjection() Projection {
	return Projection{Name: "timeline_projection", Source: outbox.CommandsTopic, Tables: []string{"read_order_timeline"},
		OnCommand: func(ctx context.Context, tx pgx.Tx, c commands.Logged) error {
			id := orderID(c)
			if id == "" {
				return nil
			}
			step := c.Metadata["saga_step"]
			const insert = `INSERT INTO read_order_timeline (order_id, entry_id, command_seq, entry_index, kind, type, stream_type,
				stream_id, stream_version, global_position, status, reason, causation_id, correlation_id, actor, saga_step, at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, nullif($11, ''), nullif($12, ''), nullif($13, ''), $14, $15, nullif($16, ''), $17)
				ON CONFLICT (order_id, entry_id) DO NOTHING`
			b := &pgx.Batch{}
			b.Queue(insert, id, "command:"+c.CommandID, c.Seq, 0, "command", c.Type, c.StreamType, c.StreamID, nil, nil,
				c.Status, c.Reason, c.CausationID, c.CorrelationID, c.Actor, step, c.RecordedAt)
			for i, e := range c.Events {
				b.Queue(insert, id, "event:"+e.EventID.String(), c.Seq, i+1, "event", e.EventType, e.StreamType, e.StreamID,
					e.StreamVersion, e.GlobalPosition, "", "", c.CommandID, c.CorrelationID, c.Actor, step, e.RecordedAt)
			}
			return tx.SendBatch(ctx, b).Close()
		}}
}
