package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/payment"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

type orderRow struct {
	OrderID         string          `json:"order_id"`
	CustomerID      string          `json:"customer_id"`
	WalletID        string          `json:"wallet_id"`
	Status          string          `json:"status"`
	Currency        string          `json:"currency"`
	Lines           json.RawMessage `json:"lines"`
	Total           int64           `json:"total"`
	ShippingAddress json.RawMessage `json:"shipping_address"`
	Reason          *string         `json:"reason"`
	PlacedAt        time.Time       `json:"placed_at"`
	applied
}

func ordersProjection() Projection {
	rows := streamRows[orderRow, *orderRow]{table: "read_orders", key: "order_id",
		apply: func(row *orderRow, e eventstore.Envelope) (*orderRow, error) {
			if p, ok := e.Event.(order.Placed); ok {
				lines, err := json.Marshal(p.Lines)
				if err != nil {
					return nil, err
				}
				addr, err := json.Marshal(p.ShippingAddress)
				if err != nil {
					return nil, err
				}
				return &orderRow{OrderID: e.StreamID, CustomerID: p.CustomerID, WalletID: p.WalletID, Status: string(order.StatusPlaced),
					Currency: p.Currency, Lines: lines, Total: p.Total, ShippingAddress: addr, PlacedAt: e.RecordedAt}, nil
			}
			if row == nil {
				return nil, fmt.Errorf("orders projection: %s before order.placed", e.EventType)
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
				return nil, fmt.Errorf("orders projection: unexpected event %s", e.EventType)
			}
			row.Status = string(status)
			if reason != "" {
				row.Reason = &reason
			}
			return row, nil
		}}
	return Projection{Name: "orders_projection", Source: order.StreamType, Tables: []string{"read_orders"}, OnEvents: rows.Apply}
}

type inventoryRow struct {
	SKU          string  `json:"sku"`
	OnHand       int64   `json:"on_hand"`
	Reserved     int64   `json:"reserved"`
	UnitPrice    *int64  `json:"unit_price"`
	Currency     *string `json:"currency"`
	PriceVersion int64   `json:"price_version"`
	applied
}

func inventoryProjection() Projection {
	rows := streamRows[inventoryRow, *inventoryRow]{table: "read_inventory", key: "sku",
		apply: func(row *inventoryRow, e eventstore.Envelope) (*inventoryRow, error) {
			if row == nil {
				row = &inventoryRow{SKU: e.StreamID}
			}
			switch ev := e.Event.(type) {
			case inventory.PriceSet:
				row.UnitPrice, row.Currency, row.PriceVersion = &ev.UnitPrice, &ev.Currency, ev.Version
			case inventory.StockReceived:
				row.OnHand += ev.Quantity
			case inventory.StockReserved:
				row.Reserved += ev.Quantity
			case inventory.ReservationReleased:
				row.Reserved -= ev.Quantity
			case inventory.ReservationCommitted:
				row.OnHand, row.Reserved = row.OnHand-ev.Quantity, row.Reserved-ev.Quantity
			default:
				return nil, fmt.Errorf("inventory projection: unexpected event %s", e.EventType)
			}
			return row, nil
		}}
	return Projection{Name: "inventory_projection", Source: inventory.StreamType, Tables: []string{"read_inventory"}, OnEvents: rows.Apply}
}

type walletRow struct {
	WalletID        string  `json:"wallet_id"`
	CustomerID      string  `json:"customer_id"`
	Name            string  `json:"name"`
	Currency        string  `json:"currency"`
	Balance         int64   `json:"balance"`
	Held            int64   `json:"held"`
	Suspended       bool    `json:"suspended"`
	SuspendedReason *string `json:"suspended_reason"`
	applied
}

func walletsProjection() Projection {
	rows := streamRows[walletRow, *walletRow]{table: "read_wallets", key: "wallet_id",
		apply: func(row *walletRow, e eventstore.Envelope) (*walletRow, error) {
			if o, ok := e.Event.(wallet.Opened); ok {
				return &walletRow{WalletID: e.StreamID, CustomerID: o.CustomerID, Name: o.Name, Currency: o.Currency}, nil
			}
			if row == nil {
				return nil, fmt.Errorf("wallets projection: %s before wallet.opened", e.EventType)
			}
			switch ev := e.Event.(type) {
			case wallet.Suspended:
				row.Suspended, row.SuspendedReason = true, nil
				if ev.Reason != "" {
					row.SuspendedReason = &ev.Reason
				}
			case wallet.Reinstated:
				row.Suspended, row.SuspendedReason = false, nil
			case wallet.Renamed:
				if ev.Name != "" {
					row.Name = ev.Name
				}
			case wallet.ToppedUp:
				row.Balance += ev.Amount
			case wallet.HoldAuthorised:
				row.Held += ev.Amount
			case wallet.HoldCaptured:
				row.Balance, row.Held = row.Balance-ev.Amount, row.Held-(ev.Amount+ev.Released)
			case wallet.HoldVoided:
				row.Held -= ev.Amount
			case wallet.CaptureRefunded:
				row.Balance += ev.Amount
			default:
				return nil, fmt.Errorf("wallets projection: unexpected event %s", e.EventType)
			}
			return row, nil
		}}
	return Projection{Name: "wallets_projection", Source: wallet.StreamType, Tables: []string{"read_wallets"}, OnEvents: rows.Apply}
}

type paymentRow struct {
	PaymentID   string    `json:"payment_id"`
	CustomerID  string    `json:"customer_id"`
	WalletID    string    `json:"wallet_id"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Status      string    `json:"status"`
	Provider    *string   `json:"provider"`
	IntentID    *string   `json:"intent_id"`
	Reason      *string   `json:"reason"`
	RequestedAt time.Time `json:"requested_at"`
	applied
}

func paymentsProjection() Projection {
	rows := streamRows[paymentRow, *paymentRow]{table: "read_payments", key: "payment_id",
		apply: func(row *paymentRow, e eventstore.Envelope) (*paymentRow, error) {
			if r, ok := e.Event.(payment.Requested); ok {
				return &paymentRow{PaymentID: e.StreamID, CustomerID: r.CustomerID, WalletID: r.WalletID, Amount: r.Amount, Currency: r.Currency,
					Status: string(payment.StatusRequested), RequestedAt: e.RecordedAt}, nil
			}
			if row == nil {
				return nil, fmt.Errorf("payments projection: %s before payment.requested", e.EventType)
			}
			switch ev := e.Event.(type) {
			case payment.IntentCreated:
				row.Status, row.Provider, row.IntentID = string(payment.StatusPending), null(ev.Provider), null(ev.IntentID)
			case payment.Succeeded:
				row.Status, row.IntentID, row.Reason = string(payment.StatusSucceeded), null(ev.IntentID), nil
			case payment.Failed:
				row.Status, row.IntentID, row.Reason = string(payment.StatusFailed), null(ev.IntentID), null(ev.Reason)
			default:
				return nil, fmt.Errorf("payments projection: unexpected event %s", e.EventType)
			}
			return row, nil
		}}
	return Projection{Name: "payments_projection", Source: payment.StreamType, Tables: []string{"read_payments"}, OnEvents: rows.Apply}
}

// The timeline is fed by the commands topic: each message is one command
// with the events it caused, so rejected commands show up too.
func timelineProjection() Projection {
	return Projection{Name: "timeline_projection", Source: outbox.CommandsTopic, Tables: []string{"read_order_timeline"},
		MayUse: mayConcernOrder,
		OnCommands: func(ctx context.Context, tx pgx.Tx, cs []commandlog.Logged) error {
			var rows []timelineRow
			for _, c := range cs {
				id := orderID(c)
				if id == "" || refusedBeforeItExisted(c) {
					continue
				}
				step := c.Metadata["saga_step"]
				rows = append(rows, timelineRow{OrderID: id, EntryID: "command:" + c.CommandID, Seq: c.Seq, Kind: "command", Type: c.Type,
					StreamType: c.StreamType, StreamID: c.StreamID, Status: null(c.Status), Reason: null(c.Reason), Causation: null(c.CausationID),
					Correlation: c.CorrelationID, Actor: c.Actor, SagaStep: null(step), At: c.RecordedAt})
				for i, e := range c.Events {
					rows = append(rows, timelineRow{OrderID: id, EntryID: "event:" + e.EventID.String(), Seq: c.Seq, Index: i + 1, Kind: "event",
						Type: e.EventType, StreamType: e.StreamType, StreamID: e.StreamID, Version: &e.StreamVersion, Position: &e.GlobalPosition,
						Causation: null(c.CommandID), Correlation: c.CorrelationID, Actor: c.Actor, SagaStep: null(step), At: e.RecordedAt})
				}
			}
			if len(rows) == 0 {
				return nil
			}
			raw, err := json.Marshal(rows)
			if err != nil {
				return err
			}
			// A redelivered command adds nothing: its entries are keyed.
			_, err = tx.Exec(ctx, `INSERT INTO read_order_timeline (order_id, entry_id, command_seq, entry_index, kind, type, stream_type,
				stream_id, stream_version, global_position, status, reason, causation_id, correlation_id, actor, saga_step, at)
				SELECT order_id, entry_id, command_seq, entry_index, kind, type, stream_type, stream_id, stream_version, global_position,
				    status, reason, causation_id, correlation_id, actor, saga_step, at
				FROM jsonb_populate_recordset(NULL::read_order_timeline, $1)
				ON CONFLICT (order_id, entry_id) DO NOTHING`, raw)
			return err
		}}
}

// mayConcernOrder is false for a commands-topic payload that cannot give
// orderID an order: an order's command has "stream_type":"order", any other
// an "order_id" key in its payload or metadata, and encoding/json matches
// keys case-insensitively and decodes \u escapes, so a payload with neither
// "order" in any case nor a \u escape has none (most commands, such as
// top-ups, are not decoded at all).
func mayConcernOrder(payload []byte) bool {
	return bytes.Contains(payload, []byte(`\u`)) || containsFold(payload, "order")
}

// containsFold reports whether b contains w, a word of lower-case ASCII
// letters, in any case.
func containsFold(b []byte, w string) bool {
	first := string([]byte{w[0], w[0] &^ 0x20})
	for i := 0; i+len(w) <= len(b); i++ {
		j := bytes.IndexAny(b[i:], first)
		if j < 0 {
			return false
		}
		i += j
		if i+len(w) > len(b) {
			return false
		}
		k := 1
		for k < len(w) && b[i+k]|0x20 == w[k] {
			k++
		}
		if k == len(w) {
			return true
		}
	}
	return false
}

// refusedBeforeItExisted is a command refused on an order that did not
// exist: it belongs to no order's story (the command log keeps it for its
// sender), so whoever later places an order under that id does not find
// another's attempt in its timeline.
func refusedBeforeItExisted(c commandlog.Logged) bool {
	return c.StreamType == order.StreamType && c.Status == commandlog.StatusRejected && c.StreamVersion == 0
}

// timelineRow is one entry of read_order_timeline.
type timelineRow struct {
	OrderID     string    `json:"order_id"`
	EntryID     string    `json:"entry_id"`
	Seq         int64     `json:"command_seq"`
	Index       int       `json:"entry_index"`
	Kind        string    `json:"kind"`
	Type        string    `json:"type"`
	StreamType  string    `json:"stream_type"`
	StreamID    string    `json:"stream_id"`
	Version     *int64    `json:"stream_version"`
	Position    *int64    `json:"global_position"`
	Status      *string   `json:"status"`
	Reason      *string   `json:"reason"`
	Causation   *string   `json:"causation_id"`
	Correlation string    `json:"correlation_id"`
	Actor       string    `json:"actor"`
	SagaStep    *string   `json:"saga_step"`
	At          time.Time `json:"at"`
}

// null is s, or SQL NULL when empty.
func null(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
