package verify

// The money checks: every wallet's balance from independent truths (the
// payment provider's own ledger, operators' recorded credits, the saga's
// captures and refunds), and every order line priced by the catalogue.

import (
	"context"
	"fmt"
	"time"

	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
)

// money is what the money checks read, once.
type money struct {
	// succeeded are the provider's succeeded payments, by orderflow's
	// payment id (from its own ledger: the simulated provider's tables).
	succeeded map[string]providerPayment
	// credits, captured and refunded are each wallet's, from its events.
	paid      map[string]map[string]int64 // wallet → payment id → amount credited (summed)
	operators map[string]int64            // wallet → operators' credits
	unsourced map[string][]string         // wallet → credits naming no payment and no reason
	captured  map[string]int64
	refunded  map[string]int64
	// prices are each SKU's price events, in commit order.
	prices map[string][]priceSet
	// placed are the order.placed events.
	placed []placement
}

type providerPayment struct {
	wallet string
	amount int64
}

type priceSet struct {
	inventory.PriceSet
	at time.Time
}

type placement struct {
	order.Placed
	at time.Time
}

// concurrentPrice bounds how long before an order's commit a price it did
// not use may have been set: the order is priced when it is decided, a
// moment before its commit, and a price committed in that moment is not
// the one the order saw.
const concurrentPrice = 5 * time.Second

func (c *Checker) loadMoney(ctx context.Context) (*money, error) {
	m := &money{succeeded: map[string]providerPayment{}, paid: map[string]map[string]int64{}, operators: map[string]int64{},
		unsourced: map[string][]string{}, captured: map[string]int64{}, refunded: map[string]int64{}, prices: map[string][]priceSet{}}
	// The provider's ledger, settled as of now: a payment past its
	// decision time has the outcome the provider decided for it.
	rows, err := c.Pool.Query(ctx, `SELECT payment_id, wallet_id, amount FROM payment_sim_intents
		WHERE status = 'succeeded' OR (status = 'processing' AND outcome = 'succeeded' AND decide_at <= now())`)
	if err != nil {
		return nil, fmt.Errorf("read the payment provider's ledger: %w", err)
	}
	for rows.Next() {
		var id string
		var p providerPayment
		if err := rows.Scan(&id, &p.wallet, &p.amount); err != nil {
			rows.Close()
			return nil, err
		}
		m.succeeded[id] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Every money event committed (not only those older than the oldest
	// transaction still open anywhere on the server, as a reader in commit
	// order sees), decoded by the registry with its upcasters.
	types := []string{wallet.ToppedUp{}.EventType(), wallet.HoldCaptured{}.EventType(), wallet.CaptureRefunded{}.EventType(),
		inventory.PriceSet{}.EventType(), order.Placed{}.EventType()}
	rows, err = c.Pool.Query(ctx, `SELECT stream_id, event_type, schema_version, data, recorded_at FROM events
		WHERE event_type = ANY($1) ORDER BY global_position`, types)
	if err != nil {
		return nil, fmt.Errorf("read money events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e eventstore.Envelope
		var data []byte
		if err := rows.Scan(&e.StreamID, &e.EventType, &e.SchemaVersion, &data, &e.RecordedAt); err != nil {
			return nil, err
		}
		if e.Event, _, _, err = c.Store.Registry().Decode(e.EventType, e.SchemaVersion, data); err != nil {
			return nil, fmt.Errorf("%s of %s: %w", e.EventType, e.StreamID, err)
		}
		m.add(e)
	}
	return m, rows.Err()
}

func (m *money) add(e eventstore.Envelope) {
	id, at := e.StreamID, e.RecordedAt
	switch ev := e.Event.(type) {
	case wallet.ToppedUp:
		switch {
		case ev.PaymentID != "":
			if m.paid[id] == nil {
				m.paid[id] = map[string]int64{}
			}
			m.paid[id][ev.PaymentID] += ev.Amount
		case ev.Reason != "":
			m.operators[id] += ev.Amount
		default:
			m.unsourced[id] = append(m.unsourced[id], fmt.Sprintf("%d at %s", ev.Amount, at.UTC().Format(time.RFC3339)))
		}
	case wallet.HoldCaptured:
		m.captured[id] += ev.Amount
	case wallet.CaptureRefunded:
		m.refunded[id] += ev.Amount
	case inventory.PriceSet:
		m.prices[id] = append(m.prices[id], priceSet{ev, at})
	case order.Placed:
		m.placed = append(m.placed, placement{ev, at})
	}
}

// walletsFromPayments: every wallet's balance is its confirmed payments
// (each as the provider's ledger has it, credited once) and operators'
// recorded credits, less captures, plus refunds; no credit names neither a
// payment nor a reason; every payment the provider took is credited.
func walletsFromPayments(f *facts, m *money) []string {
	var fails []string
	credited := map[string]bool{}
	for _, id := range sortedKeys(f.wallets) {
		w := f.wallets[id]
		var payments int64
		for pid, amount := range m.paid[id] {
			credited[pid] = true
			p, ok := m.succeeded[pid]
			switch {
			case !ok:
				fails = append(fails, fmt.Sprintf("wallet %s: credited %d for payment %s, which the payment provider never took", id, amount, pid))
			case p.wallet != id || p.amount != amount:
				fails = append(fails, fmt.Sprintf("wallet %s: credited %d for payment %s, which the provider took as %d into wallet %s", id, amount, pid, p.amount, p.wallet))
			}
			payments += amount
		}
		for _, u := range m.unsourced[id] {
			fails = append(fails, fmt.Sprintf("wallet %s: a credit of %s names no payment and no operator's reason", id, u))
		}
		if want := payments + m.operators[id] - m.captured[id] + m.refunded[id]; w.Balance != want {
			fails = append(fails, fmt.Sprintf("wallet %s: balance %d, but payments %d + operators' credits %d - captures %d + refunds %d = %d",
				id, w.Balance, payments, m.operators[id], m.captured[id], m.refunded[id], want))
		}
	}
	for _, pid := range sortedKeys(m.succeeded) {
		if p := m.succeeded[pid]; !credited[pid] {
			fails = append(fails, fmt.Sprintf("payment %s: the provider took %d for wallet %s, never credited", pid, p.amount, p.wallet))
		}
	}
	return fails
}

// linesPricedByCatalogue: each line of each order carries the price its
// SKU had in the catalogue when the order was placed (the version it names,
// of that amount and currency, recorded before the order; a later one only
// if it was set in the moment the order was being decided).
func linesPricedByCatalogue(_ *facts, m *money) []string {
	var fails []string
	for _, o := range m.placed {
		for _, l := range o.Lines {
			if l.PriceVersion == 0 {
				fails = append(fails, fmt.Sprintf("order %s: line %s has no catalogue price (unit price %d from the request)", o.OrderID, l.SKU, l.UnitPrice))
				continue
			}
			var used, next *priceSet
			for i, p := range m.prices[l.SKU] {
				if p.Version == l.PriceVersion {
					used = &m.prices[l.SKU][i]
				} else if used != nil && next == nil {
					next = &m.prices[l.SKU][i]
				}
			}
			switch {
			case used == nil || used.at.After(o.at):
				fails = append(fails, fmt.Sprintf("order %s: line %s names price version %d, which the catalogue did not have before the order", o.OrderID, l.SKU, l.PriceVersion))
			case used.UnitPrice != l.UnitPrice || used.Currency != o.Currency:
				fails = append(fails, fmt.Sprintf("order %s: line %s at %d %s, but price version %d is %d %s", o.OrderID, l.SKU, l.UnitPrice, o.Currency, l.PriceVersion, used.UnitPrice, used.Currency))
			case next != nil && next.at.Before(o.at.Add(-concurrentPrice)):
				fails = append(fails, fmt.Sprintf("order %s: line %s at price version %d, though version %d was set at %s, before the order (%s)",
					o.OrderID, l.SKU, l.PriceVersion, next.Version, next.at.UTC().Format(time.RFC3339), o.at.UTC().Format(time.RFC3339)))
			}
		}
	}
	return fails
}

// paymentsInFlight lists what the payment provider has yet to tell:
// decided payments whose webhooks are not delivered yet.
func (c *Checker) paymentsInFlight(ctx context.Context) ([]string, error) {
	var undelivered, undecided int
	err := c.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM payment_sim_events WHERE delivered_at IS NULL),
		(SELECT count(*) FROM payment_sim_intents WHERE status = 'processing' AND decide_at <= now())`).Scan(&undelivered, &undecided)
	if err != nil {
		return nil, fmt.Errorf("the payment provider's deliveries: %w", err)
	}
	if undelivered+undecided == 0 {
		return nil, nil
	}
	return []string{fmt.Sprintf("the payment provider has %d webhooks undelivered and %d payments undecided past their time", undelivered, undecided)}, nil
}
