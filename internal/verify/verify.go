// Package verify checks orderflow's invariants against the database (and
// Temporal): after a load or a fault, nothing may be lost, duplicated,
// dangling or overdrawn. Each failed check names exactly what is wrong.
package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Checker runs the checks.
type Checker struct {
	Pool   *pgxpool.Pool
	Store  *eventstore.Store
	Reader *projections.Reader
	// Temporal, when set, checks every order against its saga.
	Temporal client.Client
	// Settle bounds the wait for consumers and sagas to finish first.
	Settle time.Duration
}

// Report lists the failures of every check.
type Report struct {
	Checks   []Check
	Orders   int
	Wallets  int
	Products int
}

// Check is one invariant and what violates it.
type Check struct {
	Name     string
	Failures []string
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if len(c.Failures) > 0 {
			return false
		}
	}
	return true
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified %d orders, %d wallets, %d products\n", r.Orders, r.Wallets, r.Products)
	for _, c := range r.Checks {
		if len(c.Failures) == 0 {
			fmt.Fprintf(&b, "  ok    %s\n", c.Name)
			continue
		}
		fmt.Fprintf(&b, "  FAIL  %s (%d)\n", c.Name, len(c.Failures))
		for i, f := range c.Failures {
			if i == 20 {
				fmt.Fprintf(&b, "        ... and %d more\n", len(c.Failures)-20)
				break
			}
			fmt.Fprintf(&b, "        %s\n", f)
		}
	}
	return b.String()
}

func (r *Report) add(name string, failures []string) {
	r.Checks = append(r.Checks, Check{Name: name, Failures: failures})
}

// facts is what the checks judge, read once: every stream replayed from
// its events, and the carrier's own bookings settled as of now.
type facts struct {
	orders    map[string]order.State // every order, by id
	terminal  map[string]order.Status
	wallets   map[string]wallet.State
	items     map[string]inventory.State
	shipments map[string]shipment.State // by order id
	// bookings are the carrier's, by order id (shipment "shp-<order id>").
	bookings map[string][]booking
	// sagas is what Temporal says of each order's saga (with Temporal only).
	sagas map[string]sagaView
	// versions are the wallets' and items' stream versions, by id.
	versions map[string]int64
}

// booking is one of the carrier's bookings, as the carrier answers for it
// now: a pending booking past its ready time is taken (the simulated
// carrier decides lazily, on its next call; every call from now on would
// answer "taken").
type booking struct {
	key, state string
	readyAt    time.Time
}

// taken counts the parcels the carrier has for the order.
func (f *facts) taken(id string) int {
	n := 0
	for _, b := range f.bookings[id] {
		if b.state == "taken" {
			n++
		}
	}
	return n
}

// shipped: the order's end says the goods left (and were paid, or written off).
func shipped(st order.Status) bool {
	return st == order.StatusCompleted || st == order.StatusWrittenOff
}

// check is one invariant: a function of the facts returning what violates
// it (each failure naming the order, wallet or sku and the amounts).
type check struct {
	name string
	run  func(*facts) []string
}

// checks are verify's invariants over the facts, in the report's order.
// A new invariant is a function here and one line in this list (the money
// checks, over what loadMoney read, are in money.go).
func checks() []check {
	return []check{
		{"the carrier took a parcel exactly for each completed or written-off order", carrierTookExactlyShipped},
		{"every dispatch orderflow recorded is a parcel the carrier took", dispatchesTakenByCarrier},
		{"wallet read models equal a replay of the event log", nil}, // with the read models (Run)
		{"stock read models equal a replay of the event log", nil},  // with the read models (Run)
		{"no wallet overdrawn, no stock negative", notOverdrawn},
		{"no hold or reservation left for a terminal order", nothingLeftForTerminal},
		{"holds, captures and reservations only for orders that exist", onlyForExistingOrders},
		{"money captured only for a parcel the carrier took", capturedOnlyForTaken},
		{"the amount captured is each order's total when shipped, nothing otherwise", capturedIsTotal},
		{"stock committed is each order's lines when shipped, nothing otherwise", committedIsLines},
	}
}

// Run waits for delivery and sagas to settle (bounded), then checks.
func (c *Checker) Run(ctx context.Context) (*Report, error) {
	r := &Report{}
	r.add("nothing is left undelivered in the outbox", c.settle(ctx))

	f, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	r.Orders, r.Wallets, r.Products = len(f.orders), len(f.wallets), len(f.items)

	var orderFails, sagaFails, running []string
	for _, id := range sortedKeys(f.orders) {
		st := f.orders[id].Status
		if _, ok := f.terminal[id]; !ok {
			orderFails = append(orderFails, fmt.Sprintf("order %s is still %s", id, st))
		}
		if saga := f.sagas[id]; saga.running != "" {
			running = append(running, fmt.Sprintf("order %s (%s): its saga is still running, at %s", id, st, saga.running))
		} else if fail := saga.matches(id, st); fail != "" {
			sagaFails = append(sagaFails, fail)
		}
	}
	r.add("every accepted order reached a terminal state", orderFails)
	startFails, err := c.sagasStarted(ctx, f)
	if err != nil {
		return nil, err
	}
	r.add("every order's saga was started", startFails)
	if c.Temporal != nil {
		r.add("every saga has finished", running)
		r.add("every order's state matches its saga", sagaFails)
	}
	walletFails, stockFails := c.readModels(ctx, f)
	for _, ch := range checks() {
		switch {
		case ch.run != nil:
			r.add(ch.name, ch.run(f))
		case strings.HasPrefix(ch.name, "wallet read models"):
			r.add(ch.name, walletFails)
		default:
			r.add(ch.name, stockFails)
		}
	}

	projFails, err := c.projectionsComplete(ctx, sortedKeys(f.orders))
	if err != nil {
		return nil, err
	}
	r.add("no event missing or duplicated in any projection", projFails)
	dupFails, err := c.oneEffectPerCommand(ctx)
	if err != nil {
		return nil, err
	}
	r.add("no command id produced two sets of events", dupFails)
	topicFails, err := asyncapi.CheckTopics(ctx, c.Pool)
	if err != nil {
		return nil, err
	}
	r.add("every message on every topic matches the AsyncAPI document", topicFails)
	m, err := c.loadMoney(ctx)
	if err != nil {
		return nil, err
	}
	r.add("every wallet's balance is its confirmed payments and operators' credits, less captures, plus refunds", walletsFromPayments(f, m))
	r.add("every order line is priced by the catalogue as of its placement", linesPricedByCatalogue(f, m))
	return r, nil
}

// load reads the facts: every stream replayed, the carrier's bookings, and
// (with Temporal) each order's saga.
func (c *Checker) load(ctx context.Context) (*facts, error) {
	streams, err := c.streams(ctx)
	if err != nil {
		return nil, err
	}
	f := &facts{orders: map[string]order.State{}, terminal: map[string]order.Status{}, wallets: map[string]wallet.State{},
		items: map[string]inventory.State{}, shipments: map[string]shipment.State{}, sagas: map[string]sagaView{}, versions: map[string]int64{}}
	for _, id := range streams[order.StreamType] {
		// The saga first, then the order: a saga's commands precede its
		// end, so an order read after a finished saga has its outcome,
		// even while other sagas still run.
		f.sagas[id] = c.describeSaga(ctx, id)
		o := order.New(id)
		if err := c.Store.Load(ctx, o); err != nil {
			return nil, fmt.Errorf("load order %s: %w", id, err)
		}
		st := o.State().(order.State)
		f.orders[id] = st
		switch st.Status {
		case order.StatusCompleted, order.StatusCancelled, order.StatusRejected, order.StatusWrittenOff:
			f.terminal[id] = st.Status
		}
	}
	for _, id := range streams[wallet.StreamType] {
		w := wallet.New(id)
		if err := c.Store.Load(ctx, w); err != nil {
			return nil, fmt.Errorf("load wallet %s: %w", id, err)
		}
		f.wallets[id], f.versions[id] = w.State().(wallet.State), w.Version()
	}
	for _, sku := range streams[inventory.StreamType] {
		it := inventory.New(sku)
		if err := c.Store.Load(ctx, it); err != nil {
			return nil, fmt.Errorf("load sku %s: %w", sku, err)
		}
		f.items[sku], f.versions[sku] = it.State().(inventory.State), it.Version()
	}
	for _, id := range streams[shipment.StreamType] {
		s := shipment.New(id)
		if err := c.Store.Load(ctx, s); err != nil {
			return nil, fmt.Errorf("load shipment %s: %w", id, err)
		}
		st := s.State().(shipment.State)
		oid := st.OrderID
		if oid == "" {
			oid = strings.TrimPrefix(id, "shp-")
		}
		f.shipments[oid] = st
	}
	if f.bookings, err = c.carrierBookings(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// readModels compares the wallets' and items' read models with their
// replays.
func (c *Checker) readModels(ctx context.Context, f *facts) (walletFails, stockFails []string) {
	for _, id := range sortedKeys(f.wallets) {
		st := f.wallets[id]
		got, err := c.Reader.Wallet(ctx, id)
		if err != nil {
			walletFails = append(walletFails, fmt.Sprintf("wallet %s: %v", id, err))
			continue
		}
		if v := f.versions[id]; got.Balance != st.Balance || got.Held != st.Held || got.Version != v {
			walletFails = append(walletFails, fmt.Sprintf("wallet %s: read model balance %d held %d v%d, events balance %d held %d v%d",
				id, got.Balance, got.Held, got.Version, st.Balance, st.Held, v))
		}
	}
	for _, sku := range sortedKeys(f.items) {
		st := f.items[sku]
		got, err := c.Reader.Product(ctx, sku)
		if err != nil {
			stockFails = append(stockFails, fmt.Sprintf("sku %s: %v", sku, err))
			continue
		}
		if v := f.versions[sku]; got.OnHand != st.OnHand || got.Reserved != st.Reserved || got.Version != v {
			stockFails = append(stockFails, fmt.Sprintf("sku %s: read model on hand %d reserved %d v%d, events on hand %d reserved %d v%d",
				sku, got.OnHand, got.Reserved, got.Version, st.OnHand, st.Reserved, v))
		}
	}
	return walletFails, stockFails
}

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

// settle waits until every consumer group of every topic has consumed it
// and no saga runs; what still waits at the deadline (or could not be
// read) is a failure.
func (c *Checker) settle(ctx context.Context) []string {
	deadline := time.Now().Add(c.Settle)
	for {
		waiting, err := c.undelivered(ctx)
		if err != nil {
			waiting = []string{err.Error()}
		}
		paying, err := c.paymentsInFlight(ctx)
		if err != nil {
			paying = []string{err.Error()}
		}
		waiting = append(waiting, paying...)
		busy, err := c.sagasBusy(ctx)
		if err != nil {
			waiting = append(waiting, fmt.Sprintf("sagas: %v", err))
		}
		if (len(waiting) == 0 && !busy) || time.Now().After(deadline) || ctx.Err() != nil {
			return waiting
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sagasBusy reports sagas still running that wait for no operator
// (Temporal's visibility store, which trails them by a moment).
func (c *Checker) sagasBusy(ctx context.Context) (bool, error) {
	if c.Temporal == nil {
		return false, nil
	}
	res, err := c.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus = "Running" AND %s != %q`, workflows.Name,
			workflows.AttrOrderStatus.GetName(), workflows.StatusNeedsAttention)})
	if err != nil {
		return false, fmt.Errorf("count running sagas: %w", err)
	}
	return res.GetCount() > 0, nil
}

func (c *Checker) undelivered(ctx context.Context) ([]string, error) {
	var out []string
	backlogs, err := outbox.Backlogs(ctx, c.Pool)
	if err != nil {
		return nil, fmt.Errorf("outbox backlogs: %w", err)
	}
	for _, b := range backlogs {
		if b.Messages > 0 && b.Topic != outbox.PoisonTopic {
			out = append(out, fmt.Sprintf("%s: consumer group %s has %d messages waiting", b.Topic, b.ConsumerGroup, b.Messages))
		}
	}
	var pending int64
	if err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM saga_starts WHERE started_at IS NULL`).Scan(&pending); err != nil {
		return nil, fmt.Errorf("saga_starts: %w", err)
	}
	if pending > 0 {
		out = append(out, fmt.Sprintf("saga_starts: %d sagas queued but not started", pending))
	}
	// Every consumer group's poison, the projections' and the others'
	// (the saga starter's: an order whose saga never starts).
	poison, err := projections.UnresolvedPoison(ctx, c.Pool)
	if err != nil {
		return nil, fmt.Errorf("poison messages: %w", err)
	}
	for _, h := range sortedKeys(poison) {
		out = append(out, fmt.Sprintf("%s: %d unresolved poison messages (orderflow poison list -unresolved; poison replay OFFSET)", h, poison[h]))
	}
	return out, nil
}

// sagasStarted names each order whose saga never started, once delivery
// settled: no saga_starts row (the saga starter never queued it — its
// order.placed poisoned, say), a start queued that never left the inbox,
// or (with Temporal) no workflow at all.
func (c *Checker) sagasStarted(ctx context.Context, f *facts) ([]string, error) {
	rows, _ := c.Pool.Query(ctx, `SELECT order_id, started_at IS NOT NULL FROM saga_starts`)
	started := map[string]bool{}
	var id string
	var ok bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &ok}, func() error { started[id] = ok; return nil }); err != nil {
		return nil, fmt.Errorf("saga_starts: %w", err)
	}
	var out []string
	for _, id := range sortedKeys(f.orders) {
		st := f.orders[id].Status
		ok, queued := started[id]
		switch {
		case !queued:
			out = append(out, fmt.Sprintf("order %s (%s): its saga was never queued (no saga_starts row: is its order.placed poisoned in %s? orderflow poison list -unresolved)",
				id, st, sagas.StarterGroup))
		case !ok:
			out = append(out, fmt.Sprintf("order %s (%s): its saga is queued but was never started", id, st))
		case c.Temporal != nil && f.sagas[id].problem == noSaga:
			out = append(out, fmt.Sprintf("order %s (%s): its saga was started but Temporal has no workflow %s", id, st, workflows.WorkflowID(id)))
		}
	}
	return out, nil
}

func (c *Checker) streams(ctx context.Context) (map[string][]string, error) {
	rows, err := c.Pool.Query(ctx, `SELECT DISTINCT stream_type, stream_id FROM events ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	type row struct{ Type, ID string }
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	out := map[string][]string{}
	for _, r := range all {
		out[r.Type] = append(out[r.Type], r.ID)
	}
	return out, nil
}

// noSaga is the problem of an order Temporal has no saga of.
const noSaga = "it has no saga"

// sagaView is what Temporal says of an order's saga.
type sagaView struct {
	// problem is what is wrong whatever the order's state (no saga, one
	// waiting for an operator, one ended without an outcome), to follow
	// "order <id> (<status>): ".
	problem string
	// running is the status of a saga that has not finished.
	running string
	p       workflows.Progress
	checked bool
}

// describeSaga reads the order's saga: its state, and the outcome of a
// finished one.
func (c *Checker) describeSaga(ctx context.Context, id string) sagaView {
	if c.Temporal == nil {
		return sagaView{}
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := sagas.Client{C: c.Temporal}
	state, err := client.State(qctx, id)
	switch {
	case errors.Is(err, sagas.ErrNoSaga):
		return sagaView{problem: noSaga}
	case err != nil:
		return sagaView{problem: fmt.Sprintf("saga: %v", err)}
	case state.Status == workflows.StatusNeedsAttention && state.ClosedAt == nil:
		return sagaView{problem: fmt.Sprintf("its saga waits for an operator at %s (GET /orders/%s/saga, then POST /orders/%s/saga/resolve)",
			state.FailedStep, id, id)}
	case state.ClosedAt == nil:
		return sagaView{running: state.Status}
	case state.Unfinished():
		return sagaView{problem: fmt.Sprintf("its saga ended %s without an outcome; `orderflow sagas repair -order %s` finishes it",
			state.RunStatus, id)}
	}
	v := sagaView{checked: true}
	if err := c.Temporal.GetWorkflow(qctx, workflows.WorkflowID(id), state.RunID).Get(qctx, &v.p); err != nil {
		return sagaView{problem: fmt.Sprintf("saga: %v", err)}
	}
	return v
}

// matches compares the order's state with its finished saga.
func (v sagaView) matches(id string, st order.Status) string {
	switch {
	case v.problem != "":
		return fmt.Sprintf("order %s (%s): %s", id, st, v.problem)
	case !v.checked:
		return ""
	case v.p.Status == workflows.StatusCompleted && st != order.StatusCompleted,
		v.p.Status == workflows.StatusCompensated && st != order.StatusCancelled,
		v.p.Status == workflows.StatusWrittenOff && st != order.StatusWrittenOff,
		v.p.Status != workflows.StatusCompleted && v.p.Status != workflows.StatusCompensated && v.p.Status != workflows.StatusWrittenOff:
		return fmt.Sprintf("order %s is %s but its saga ended %s (%s)", id, st, v.p.Status, v.p.Reason)
	}
	return ""
}

// carrierBookings reads the carrier's own bookings, by order, settled as of
// now: a booking still pending past its ready time is taken, as the
// simulated carrier would answer any call about it from now on (it
// decides lazily, when asked; a booking made by a run nobody waits for is
// never asked again). Withdrawals of keys never booked name no shipment.
func (c *Checker) carrierBookings(ctx context.Context) (map[string][]booking, error) {
	rows, err := c.Pool.Query(ctx, `
		SELECT substr(shipment_id, 5), dispatch_key,
		       CASE WHEN state = 'pending' AND ready_at <= now() THEN 'taken' ELSE state END, ready_at
		FROM carrier_sim_bookings WHERE shipment_id LIKE 'shp-%' ORDER BY dispatch_key`)
	if err != nil {
		return nil, fmt.Errorf("carrier bookings: %w", err)
	}
	out := map[string][]booking{}
	var id string
	var b booking
	_, err = pgx.ForEachRow(rows, []any{&id, &b.key, &b.state, &b.readyAt}, func() error {
		out[id] = append(out[id], b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("carrier bookings: %w", err)
	}
	return out, nil
}

// projectionsComplete compares every read-model row with its stream, and
// every order's timeline with the command log.
func (c *Checker) projectionsComplete(ctx context.Context, orders []string) ([]string, error) {
	var out []string
	for _, q := range []struct{ table, key, stream string }{
		{"read_orders", "order_id", order.StreamType}, {"read_wallets", "wallet_id", wallet.StreamType}, {"read_inventory", "sku", inventory.StreamType},
	} {
		rows, _ := c.Pool.Query(ctx, fmt.Sprintf(`SELECT s.stream_id, s.version, coalesce(r.version, 0)
			FROM (SELECT stream_id, max(stream_version) AS version FROM events WHERE stream_type = $1 GROUP BY stream_id) s
			LEFT JOIN %s r ON r.%s = s.stream_id WHERE coalesce(r.version, 0) <> s.version`, q.table, q.key), q.stream)
		type row struct {
			ID        string
			Want, Got int64
		}
		bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row]) // the query's error too
		if err != nil {
			return nil, fmt.Errorf("%s against the event log: %w", q.table, err)
		}
		for _, b := range bad {
			out = append(out, fmt.Sprintf("%s %s is at version %d, its stream at %d", q.table, b.ID, b.Got, b.Want))
		}
	}
	// The timeline holds each event of an order's commands exactly once
	// (a command refused on an order that did not exist belongs to none).
	rows, _ := c.Pool.Query(ctx, `
		WITH per_order AS (
		    SELECT CASE WHEN stream_type = 'order' THEN stream_id
		                ELSE coalesce(nullif(payload->>'order_id', ''), nullif(metadata->>'order_id', '')) END AS order_id,
		           cardinality(event_ids) AS events, 1 AS commands
		    FROM commands
		    WHERE NOT (stream_type = 'order' AND status = 'rejected' AND stream_version = 0)),
		want AS (SELECT order_id, sum(events) AS events, sum(commands) AS commands FROM per_order WHERE order_id IS NOT NULL GROUP BY order_id),
		got AS (SELECT order_id, count(*) FILTER (WHERE kind = 'event') AS events, count(*) FILTER (WHERE kind = 'command') AS commands
		        FROM read_order_timeline GROUP BY order_id)
		SELECT want.order_id, want.events, coalesce(got.events, 0), want.commands, coalesce(got.commands, 0)
		FROM want LEFT JOIN got USING (order_id)
		WHERE want.events <> coalesce(got.events, 0) OR want.commands <> coalesce(got.commands, 0)`)
	type trow struct {
		ID                             string
		WantEv, GotEv, WantCmd, GotCmd int64
	}
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[trow]) // the query's error too
	if err != nil {
		return nil, fmt.Errorf("timelines against the command log: %w", err)
	}
	for _, b := range bad {
		out = append(out, fmt.Sprintf("timeline of order %s has %d events and %d commands, the logs %d and %d", b.ID, b.GotEv, b.GotCmd, b.WantEv, b.WantCmd))
	}
	return out, nil
}

// oneEffectPerCommand checks that the events caused by each command are
// exactly those its log row names.
func (c *Checker) oneEffectPerCommand(ctx context.Context) ([]string, error) {
	rows, _ := c.Pool.Query(ctx, `
		SELECT e.causation_id, count(*), coalesce(max(cardinality(c.event_ids)), -1)
		FROM events e LEFT JOIN commands c ON c.command_id = e.causation_id
		GROUP BY e.causation_id
		HAVING count(*) <> coalesce(max(cardinality(c.event_ids)), -1)
		    OR bool_or(NOT (e.event_id = ANY(coalesce(c.event_ids, '{}'))))`)
	type row struct {
		Command      string
		Events, Logs int64
	}
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row]) // the query's error too
	if err != nil {
		return nil, fmt.Errorf("events against the command log: %w", err)
	}
	var out []string
	for _, b := range bad {
		out = append(out, fmt.Sprintf("command %s caused %d events, its log row names %d", b.Command, b.Events, b.Logs))
	}
	return out, nil
}
