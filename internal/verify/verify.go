// Package verify checks orderflow's invariants against the database (and
// Temporal): after a load or a fault, nothing may be lost, duplicated,
// dangling or overdrawn. Each failed check names exactly what is wrong.
package verify

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/domain/inventory"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/projections"
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
