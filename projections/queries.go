package projections

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/outbox"
)

// Reader answers queries from the read models only.
type Reader struct{ pool *pgxpool.Pool }

// NewReader returns a Reader on pool.
func NewReader(pool *pgxpool.Pool) *Reader { return &Reader{pool: pool} }

// ErrNotFound is returned when a read model has no such row.
var ErrNotFound = errors.New("not found in the read model")

// Order is one row of the orders read model.
type Order struct {
	OrderID         string          `json:"order_id"`
	CustomerID      string          `json:"customer_id"`
	WalletID        string          `json:"wallet_id"`
	Status          string          `json:"status"`
	Currency        string          `json:"currency"`
	Lines           []order.Line    `json:"lines"`
	Total           int64           `json:"total"`
	ShippingAddress json.RawMessage `json:"shipping_address"`
	Reason          string          `json:"reason,omitempty"`
	Version         int64           `json:"version"`
	Position        int64           `json:"position"`
	PlacedAt        time.Time       `json:"placed_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
}

const orderColumns = `SELECT order_id, customer_id, wallet_id, status, currency, lines, total, shipping_address,
	coalesce(reason, ''), version, position, placed_at, updated_at FROM read_orders `

func scanOrder(row pgx.CollectableRow) (Order, error) {
	var o Order
	err := row.Scan(&o.OrderID, &o.CustomerID, &o.WalletID, &o.Status, &o.Currency, &o.Lines, &o.Total, &o.ShippingAddress,
		&o.Reason, &o.Version, &o.Position, &o.PlacedAt, &o.UpdatedAt)
	o.PlacedAt, o.UpdatedAt = o.PlacedAt.UTC(), o.UpdatedAt.UTC()
	return o, err
}

// Order returns one order.
func (r *Reader) Order(ctx context.Context, id string) (Order, error) {
	rows, _ := r.pool.Query(ctx, orderColumns+`WHERE order_id = $1`, id)
	return one(pgx.CollectExactlyOneRow(rows, scanOrder))
}

// OrderFilter selects orders; Cursor is the opaque value of a previous page.
type OrderFilter struct {
	CustomerID string
	Status     string
	Limit      int
	Cursor     string
}

// ErrBadCursor is returned for a cursor this service did not hand out.
var ErrBadCursor = errors.New("malformed cursor")

// Orders lists orders, newest first, a page at a time; next is empty on the last page.
func (r *Reader) Orders(ctx context.Context, f OrderFilter) (orders []Order, next string, err error) {
	var cond []string
	var args []any
	if f.CustomerID != "" {
		args = append(args, f.CustomerID)
		cond = append(cond, fmt.Sprintf("customer_id = $%d", len(args)))
	}
	if f.Status != "" {
		args = append(args, f.Status)
		cond = append(cond, fmt.Sprintf("status = $%d", len(args)))
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		args = append(args, at, id)
		cond = append(cond, fmt.Sprintf("(placed_at, order_id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	where := ""
	if len(cond) > 0 {
		where = "WHERE " + strings.Join(cond, " AND ")
	}
	args = append(args, f.Limit+1)
	rows, _ := r.pool.Query(ctx, orderColumns+where+fmt.Sprintf(" ORDER BY placed_at DESC, order_id DESC LIMIT $%d", len(args)), args...)
	orders, err = pgx.CollectRows(rows, scanOrder)
	if err != nil {
		return nil, "", err
	}
	if len(orders) > f.Limit {
		orders = orders[:f.Limit]
		last := orders[len(orders)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.PlacedAt.Format(time.RFC3339Nano) + "|" + last.OrderID))
	}
	return orders, next, nil
}

func decodeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", ErrBadCursor
	}
	return at, id, nil
}

// TimelineEntry is one command or event of an order.
type TimelineEntry struct {
	// Cursor pages: entries after it come on the next page.
	Cursor         string    `json:"cursor"`
	Kind           string    `json:"kind"`
	Type           string    `json:"type"`
	ID             string    `json:"id"`
	StreamType     string    `json:"stream_type"`
	StreamID       string    `json:"stream_id"`
	StreamVersion  *int64    `json:"stream_version,omitempty"`
	GlobalPosition *int64    `json:"global_position,omitempty"`
	Status         string    `json:"status,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	CausationID    string    `json:"causation_id,omitempty"`
	CorrelationID  string    `json:"correlation_id"`
	Actor          string    `json:"actor"`
	SagaStep       string    `json:"saga_step,omitempty"`
	At             time.Time `json:"at"`
}

// Timeline returns every command and event of an order, in order; each
// event's causation_id is the command that caused it, and a command's is the
// event or step that caused it.
// Timeline returns up to limit entries of an order after the entry whose
// Cursor is after ("" for the first page).
func (r *Reader) Timeline(ctx context.Context, orderID, after string, limit int) ([]TimelineEntry, error) {
	var seq int64
	var index int
	if after != "" {
		if _, err := fmt.Sscanf(after, "%d.%d", &seq, &index); err != nil {
			return nil, ErrBadCursor
		}
	}
	rows, _ := r.pool.Query(ctx, `SELECT kind, type, entry_id, stream_type, stream_id, stream_version, global_position,
		coalesce(status, ''), coalesce(reason, ''), coalesce(causation_id, ''), correlation_id, actor, coalesce(saga_step, ''), at,
		command_seq, entry_index
		FROM read_order_timeline WHERE order_id = $1 AND (command_seq, entry_index) > ($2, $3)
		ORDER BY command_seq, entry_index LIMIT $4`, orderID, seq, index, limit)
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TimelineEntry, error) {
		var e TimelineEntry
		var seq int64
		var index int
		err := row.Scan(&e.Kind, &e.Type, &e.ID, &e.StreamType, &e.StreamID, &e.StreamVersion, &e.GlobalPosition,
			&e.Status, &e.Reason, &e.CausationID, &e.CorrelationID, &e.Actor, &e.SagaStep, &e.At, &seq, &index)
		e.Cursor = fmt.Sprintf("%d.%d", seq, index)
		_, e.ID, _ = strings.Cut(e.ID, ":")
		e.At = e.At.UTC()
		return e, err
	})
	if err == nil && len(entries) == 0 && after == "" {
		err = ErrNotFound
	}
	return entries, err
}

// Product is one SKU's price and stock. A SKU with no price (PriceVersion
// 0) is not for sale.
type Product struct {
	SKU          string    `json:"sku"`
	UnitPrice    *int64    `json:"unit_price,omitempty"`
	Currency     *string   `json:"currency,omitempty"`
	PriceVersion int64     `json:"price_version"`
	OnHand       int64     `json:"on_hand"`
	Reserved     int64     `json:"reserved"`
	Available    int64     `json:"available"`
	Version      int64     `json:"version"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Product returns one SKU's stock.
func (r *Reader) Product(ctx context.Context, sku string) (Product, error) {
	rows, _ := r.pool.Query(ctx, `SELECT sku, unit_price, currency, price_version, on_hand, reserved, available, version, updated_at FROM read_inventory WHERE sku = $1`, sku)
	return one(pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (Product, error) {
		var p Product
		err := row.Scan(&p.SKU, &p.UnitPrice, &p.Currency, &p.PriceVersion, &p.OnHand, &p.Reserved, &p.Available, &p.Version, &p.UpdatedAt)
		p.UpdatedAt = p.UpdatedAt.UTC()
		return p, err
	}))
}

// Wallet is one wallet's balance.
type Wallet struct {
	WalletID   string `json:"wallet_id"`
	CustomerID string `json:"customer_id"`
	Name       string `json:"name,omitempty"`
	Currency   string `json:"currency"`
	Balance    int64  `json:"balance"`
	Held       int64  `json:"held"`
	Available  int64  `json:"available"`
	// Status is active or suspended (with SuspendedReason).
	Status          string    `json:"status"`
	SuspendedReason string    `json:"suspended_reason,omitempty"`
	Version         int64     `json:"version"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Wallet returns one wallet.
func (r *Reader) Wallet(ctx context.Context, id string) (Wallet, error) {
	rows, _ := r.pool.Query(ctx, `SELECT wallet_id, customer_id, name, currency, balance, held, available,
		CASE WHEN suspended THEN 'suspended' ELSE 'active' END, coalesce(suspended_reason, ''), version, updated_at
		FROM read_wallets WHERE wallet_id = $1`, id)
	return one(pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (Wallet, error) {
		var w Wallet
		err := row.Scan(&w.WalletID, &w.CustomerID, &w.Name, &w.Currency, &w.Balance, &w.Held, &w.Available,
			&w.Status, &w.SuspendedReason, &w.Version, &w.UpdatedAt)
		w.UpdatedAt = w.UpdatedAt.UTC()
		return w, err
	}))
}

func one[T any](v T, err error) (T, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	return v, err
}

// BehindError says a projection did not reach a position in time.
type BehindError struct {
	Projection string
	Position   int64
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("projection %s has not reached position %d yet", e.Projection, e.Position)
}

// WaitFor blocks until p has applied every message of its topic from
// transactions up to and including the one that wrote the event at
// position, or returns *BehindError after timeout. Comparing by transaction
// (not by position) is what makes it right when commits land out of order.
func (r *Reader) WaitFor(ctx context.Context, p Projection, position int64, timeout time.Duration) error {
	if position <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for wait := 5 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		ok, err := r.reached(ctx, p, position)
		if err == nil && ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			return &BehindError{Projection: p.Name, Position: position}
		case <-time.After(wait):
		}
	}
}

func (r *Reader) reached(ctx context.Context, p Projection, position int64) (bool, error) {
	var reached bool
	err := r.pool.QueryRow(ctx, fmt.Sprintf(`
		WITH target AS (SELECT transaction_id FROM events WHERE global_position = $1),
		     acked AS (%[2]s)
		SELECT EXISTS (SELECT 1 FROM target) AND NOT EXISTS (
		    SELECT 1 FROM watermill_%[1]s m, target, acked
		    WHERE m.transaction_id <= target.transaction_id AND (m.transaction_id, m."offset") > (acked.tx, acked.off))`,
		p.Topic(), outbox.AckedSQL(p.Topic(), "$2")), position, p.Name).Scan(&reached)
	return reached, err
}

// Status is one projection's progress.
type Status struct {
	Name        string     `json:"name"`
	Topic       string     `json:"topic"`
	Position    int64      `json:"position"`
	Applied     int64      `json:"applied"`
	LagEvents   int64      `json:"lag_events"`
	LagSeconds  float64    `json:"lag_seconds"`
	Poisoned    int64      `json:"poisoned"`
	LastEventAt *time.Time `json:"last_event_at,omitempty"`
}

// Status reports every projection: its position, how many messages of its
// topic wait for it and for how long the oldest has, and unresolved poison.
func (r *Reader) Status(ctx context.Context) ([]Status, error) {
	var out []Status
	for _, p := range All() {
		s := Status{Name: p.Name, Topic: p.Topic()}
		err := r.pool.QueryRow(ctx, fmt.Sprintf(`
			WITH acked AS (%[2]s),
			     waiting AS (SELECT count(*) AS n, min(m.created_at) AS oldest FROM watermill_%[1]s m, acked
			                 WHERE (m.transaction_id, m."offset") > (acked.tx, acked.off))
			SELECT coalesce(c.position, 0), coalesce(c.applied, 0), c.last_event_at, waiting.n,
			       coalesce(extract(epoch FROM localtimestamp - waiting.oldest), 0)::float8,
			       (SELECT count(*) FROM watermill_poison pm LEFT JOIN poison_resolutions pr ON pr.poison_offset = pm."offset"
			        WHERE pm.metadata->>'handler_poisoned' = $1 AND pr.poison_offset IS NULL)
			FROM waiting LEFT JOIN projection_checkpoints c ON c.projection = $1`, p.Topic(), outbox.AckedSQL(p.Topic(), "$1")), p.Name).
			Scan(&s.Position, &s.Applied, &s.LastEventAt, &s.LagEvents, &s.LagSeconds, &s.Poisoned)
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", p.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// ParsePosition reads a consistency token (a global position).
func ParsePosition(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("position %q is not a non-negative integer", s)
	}
	return v, nil
}

// Payment is one payment into a wallet, as the provider last told it.
type Payment struct {
	PaymentID  string `json:"payment_id"`
	CustomerID string `json:"customer_id"`
	WalletID   string `json:"wallet_id"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	// Status is requested, pending, succeeded or failed (with Reason).
	Status      string    `json:"status"`
	Provider    string    `json:"provider,omitempty"`
	IntentID    string    `json:"intent_id,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
	Version     int64     `json:"version"`
	UpdatedAt   time.Time `json:"updated_at"`
}

const paymentColumns = `SELECT payment_id, customer_id, wallet_id, amount, currency, status, coalesce(provider, ''), coalesce(intent_id, ''),
	coalesce(reason, ''), requested_at, version, updated_at FROM read_payments`

func scanPayment(row pgx.CollectableRow) (Payment, error) {
	var p Payment
	err := row.Scan(&p.PaymentID, &p.CustomerID, &p.WalletID, &p.Amount, &p.Currency, &p.Status, &p.Provider, &p.IntentID, &p.Reason,
		&p.RequestedAt, &p.Version, &p.UpdatedAt)
	p.RequestedAt, p.UpdatedAt = p.RequestedAt.UTC(), p.UpdatedAt.UTC()
	return p, err
}

// Payment returns one payment.
func (r *Reader) Payment(ctx context.Context, id string) (Payment, error) {
	rows, _ := r.pool.Query(ctx, paymentColumns+` WHERE payment_id = $1`, id)
	return one(pgx.CollectExactlyOneRow(rows, scanPayment))
}

// WalletPayments returns a wallet's payments, newest first, at most limit.
func (r *Reader) WalletPayments(ctx context.Context, walletID string, limit int) ([]Payment, error) {
	rows, _ := r.pool.Query(ctx, paymentColumns+` WHERE wallet_id = $1 ORDER BY requested_at DESC, payment_id DESC LIMIT $2`, walletID, limit)
	return pgx.CollectRows(rows, scanPayment)
}
