// The invariants over what each order holds, from the facts Run loads: the
// carrier's own bookings, money held and captured, stock reserved and
// committed, each against how the order ended.

package verify

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
)

// carrierTookExactlyShipped: by the carrier's own bookings (never
// orderflow's record of them), a completed or written-off order's parcel
// was taken once, and a cancelled or rejected order's never — nor is it
// still booked, for the carrier to take later.
func carrierTookExactlyShipped(f *facts) []string {
	var out []string
	for _, id := range sortedKeys(f.terminal) {
		st, n := f.terminal[id], f.taken(id)
		switch {
		case shipped(st) && n == 0:
			out = append(out, fmt.Sprintf("order %s is %s but the carrier never took its parcel", id, st))
		case n > 1:
			out = append(out, fmt.Sprintf("order %s is %s and the carrier took %d parcels for it (bookings %s)", id, st, n, keys(f.bookings[id], "taken")))
		case !shipped(st) && n > 0:
			out = append(out, fmt.Sprintf("order %s is %s but the carrier took its parcel (booking %s)", id, st, keys(f.bookings[id], "taken")))
		}
		if !shipped(st) {
			for _, b := range f.bookings[id] {
				if b.state == "pending" {
					out = append(out, fmt.Sprintf("order %s is %s but its booking %s is still pending with the carrier, which takes it at %s",
						id, st, b.key, b.readyAt.UTC().Format(time.RFC3339)))
				}
			}
		}
	}
	return out
}

// dispatchesTakenByCarrier: a shipment orderflow records as dispatched (or
// delivered) is a parcel the carrier has; an operator's DispatchShipment
// alone is no parcel.
func dispatchesTakenByCarrier(f *facts) []string {
	var out []string
	for _, id := range sortedKeys(f.shipments) {
		s := f.shipments[id]
		if (s.Status == shipment.StatusDispatched || s.Status == shipment.StatusDelivered) && f.taken(id) == 0 {
			out = append(out, fmt.Sprintf("shipment %s of order %s is %s (tracking %s) but the carrier never took its parcel",
				s.ShipmentID, id, s.Status, s.TrackingNumber))
		}
	}
	return out
}

func notOverdrawn(f *facts) []string {
	var out []string
	for _, id := range sortedKeys(f.wallets) {
		if st := f.wallets[id]; st.Balance-st.Held < 0 || st.Balance < 0 {
			out = append(out, fmt.Sprintf("wallet %s: balance %d held %d", id, st.Balance, st.Held))
		}
	}
	for _, sku := range sortedKeys(f.items) {
		if st := f.items[sku]; st.OnHand < 0 || st.OnHand-st.Reserved < 0 {
			out = append(out, fmt.Sprintf("sku %s: on hand %d reserved %d", sku, st.OnHand, st.Reserved))
		}
	}
	return out
}

func nothingLeftForTerminal(f *facts) []string {
	var out []string
	for _, id := range sortedKeys(f.wallets) {
		holds := f.wallets[id].Holds
		for _, o := range sortedKeys(holds) {
			if s, ok := f.terminal[o]; ok {
				out = append(out, fmt.Sprintf("wallet %s holds %d for %s order %s", id, holds[o], s, o))
			}
		}
	}
	for _, sku := range sortedKeys(f.items) {
		res := f.items[sku].Reservations
		for _, o := range sortedKeys(res) {
			if s, ok := f.terminal[o]; ok {
				out = append(out, fmt.Sprintf("sku %s reserves %d for %s order %s", sku, res[o], s, o))
			}
		}
	}
	return out
}

// onlyForExistingOrders: money held or captured and stock reserved or
// committed name an order that exists.
func onlyForExistingOrders(f *facts) []string {
	var out []string
	missing := func(o string) bool { _, ok := f.orders[o]; return !ok }
	for _, id := range sortedKeys(f.wallets) {
		st := f.wallets[id]
		for _, o := range sortedKeys(st.Holds) {
			if missing(o) {
				out = append(out, fmt.Sprintf("wallet %s holds %d for order %s, which does not exist", id, st.Holds[o], o))
			}
		}
		for _, o := range sortedKeys(st.Captured) {
			if missing(o) && st.Captured[o] != 0 {
				out = append(out, fmt.Sprintf("wallet %s captured %d for order %s, which does not exist", id, st.Captured[o], o))
			}
		}
	}
	for _, sku := range sortedKeys(f.items) {
		st := f.items[sku]
		for _, o := range sortedKeys(st.Reservations) {
			if missing(o) {
				out = append(out, fmt.Sprintf("sku %s reserves %d for order %s, which does not exist", sku, st.Reservations[o], o))
			}
		}
		for _, o := range sortedKeys(st.Committed) {
			if missing(o) {
				out = append(out, fmt.Sprintf("sku %s committed %d for order %s, which does not exist", sku, st.Committed[o], o))
			}
		}
	}
	return out
}

// capturedOnlyForTaken: money is taken only for a parcel the carrier has.
func capturedOnlyForTaken(f *facts) []string {
	var out []string
	for _, id := range sortedKeys(f.wallets) {
		captured := f.wallets[id].Captured
		for _, o := range sortedKeys(captured) {
			if captured[o] > 0 && f.taken(o) == 0 {
				out = append(out, fmt.Sprintf("wallet %s captured %d for order %s, whose parcel the carrier never took", id, captured[o], o))
			}
		}
	}
	return out
}

// capturedIsTotal: what an order's wallet kept (captures less refunds) is
// the order's total once completed, nothing once cancelled or rejected,
// and for a written-off order either (a write-off voids only what was not
// captured yet: docs/saga.md). Money is taken from the order's own wallet
// only.
func capturedIsTotal(f *facts) []string {
	var out []string
	net := map[string]int64{}
	for _, w := range sortedKeys(f.wallets) {
		captured := f.wallets[w].Captured
		for _, o := range sortedKeys(captured) {
			net[o] += captured[o]
			if os, ok := f.orders[o]; ok && captured[o] != 0 && os.WalletID != w {
				out = append(out, fmt.Sprintf("wallet %s captured %d for order %s, which pays from wallet %s", w, captured[o], o, os.WalletID))
			}
		}
	}
	for _, id := range sortedKeys(f.terminal) {
		st, total, got := f.terminal[id], f.orders[id].Total, net[id]
		switch {
		case st == order.StatusCompleted && got != total,
			st == order.StatusWrittenOff && got != total && got != 0:
			out = append(out, fmt.Sprintf("order %s is %s with a total of %d %s, but %d was captured (less refunds)", id, st, total, f.orders[id].Currency, got))
		case !shipped(st) && got != 0:
			out = append(out, fmt.Sprintf("order %s is %s, but %d %s was captured (less refunds)", id, st, got, f.orders[id].Currency))
		}
	}
	return out
}

// committedIsLines: the stock that left the warehouse for an order is its
// lines' quantities (by sku) once completed or written off, nothing once
// cancelled or rejected.
func committedIsLines(f *facts) []string {
	committed := map[string]map[string]int64{} // order → sku → quantity
	for _, sku := range sortedKeys(f.items) {
		for o, q := range f.items[sku].Committed {
			if committed[o] == nil {
				committed[o] = map[string]int64{}
			}
			committed[o][sku] += q
		}
	}
	var out []string
	for _, id := range sortedKeys(f.terminal) {
		st := f.terminal[id]
		want := map[string]int64{}
		if shipped(st) {
			for _, l := range f.orders[id].Lines {
				want[l.SKU] += l.Quantity
			}
		}
		skus := sortedKeys(want)
		for sku := range committed[id] {
			if _, ok := want[sku]; !ok {
				skus = append(skus, sku)
			}
		}
		sort.Strings(skus)
		for _, sku := range skus {
			if got := committed[id][sku]; got != want[sku] {
				out = append(out, fmt.Sprintf("order %s is %s: %d of sku %s committed, its lines say %d", id, st, got, sku, want[sku]))
			}
		}
	}
	return out
}

func keys(bs []booking, state string) string {
	var out []string
	for _, b := range bs {
		if b.state == state {
			out = append(out, b.key)
		}
	}
	return strings.Join(out, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
