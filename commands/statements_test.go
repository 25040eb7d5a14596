package commands_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// statementCounter is a pgx tracer that counts what a pool sends to
// PostgreSQL: round trips (a query, or a pipelined batch), statements
// (each query of a batch counted) and lookups of one command id in the
// command log.
type statementCounter struct {
	roundTrips, statements, lookups atomic.Int64
}

// lookupSQL is how commandlog.Log.Get reads one command by id.
const lookupSQL = "FROM commands WHERE command_id = $1"

func (c *statementCounter) count(sql string) {
	c.statements.Add(1)
	if strings.Contains(sql, lookupSQL) {
		c.lookups.Add(1)
	}
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.roundTrips.Add(1)
	c.count(d.SQL)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.roundTrips.Add(1)
	return ctx
}

func (c *statementCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.count(d.SQL)
}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// counts is what one dispatch sent.
type counts struct{ roundTrips, statements, lookups int64 }

func (c *statementCounter) reset() {
	c.roundTrips.Store(0)
	c.statements.Store(0)
	c.lookups.Store(0)
}

func (c *statementCounter) read() counts {
	return counts{c.roundTrips.Load(), c.statements.Load(), c.lookups.Load()}
}

// newCountedBus is newBus on a pool whose statements c counts; admit is
// the bus's admission (nil: every command admitted).
func newCountedBus(t testing.TB, admit func(context.Context, string) error) (*commands.Bus, *statementCounter) {
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &statementCounter{}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50, CacheSize: 1000})
	return commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 50, Admit: admit}), c
}

// The database work of one command on each path through the bus, with the
// aggregate cache warm and every statement prepared. A command id is looked
// up in the command log at most once, whatever path it takes: a retry
// refused by admission, one whose If-Match is stale, one that meets a
// precondition that no longer holds, one whose twin committed first.
func TestEachPathLooksTheCommandLogUpAtMostOnce(t *testing.T) {
	var overloaded atomic.Bool
	admit := func(context.Context, string) error {
		if overloaded.Load() {
			return &commands.OverloadedError{Reason: "test: refusing new commands"}
		}
		return nil
	}
	b, c := newCountedBus(t, admit)
	ctx := context.Background()
	w := openWallet(t, b, 1000)
	sku := "sku-" + uuid.NewString()
	mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 5, Currency: "EUR"}))
	topUp := func(key string) commands.Request {
		return req(key, "TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"})
	}
	place := func(key string) commands.Request {
		return req(key, "PlaceOrder", commands.PlaceOrder{CustomerID: "c1", WalletID: w, Currency: "EUR",
			Lines: []commands.OrderLine{{SKU: sku, Quantity: 1, UnitPrice: 5}}, ShippingAddress: order.Address{Name: "A", Line1: "1", City: "X", PostalCode: "1", Country: "FR"}})
	}
	// Warm up: every statement of every path prepared once.
	for range 2 {
		k := "warm-" + uuid.NewString()
		mustDispatch(t, b, topUp(k))
		mustDispatch(t, b, topUp(k))
		mustDispatch(t, b, place(""))
	}

	paths := []struct {
		name  string
		setup func() commands.Request
		over  bool
	}{
		{"new, no key", func() commands.Request { return topUp("") }, false},
		{"new, with key", func() commands.Request { return topUp("k-" + uuid.NewString()) }, false},
		{"replay of a key", func() commands.Request {
			r := topUp("k-" + uuid.NewString())
			mustDispatch(t, b, r)
			return r
		}, false},
		{"replay, If-Match stale", func() commands.Request {
			r := topUp("k-" + uuid.NewString())
			v := mustDispatch(t, b, r).StreamVersion - 1
			r.ExpectedVersion = &v
			return r
		}, false},
		{"replay, admission refuses", func() commands.Request {
			r := topUp("k-" + uuid.NewString())
			mustDispatch(t, b, r)
			return r
		}, true},
		{"replay, the price it was placed at changed", func() commands.Request {
			r := place("p-" + uuid.NewString())
			mustDispatch(t, b, r)
			mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 5 + int64(len(r.CommandID)), Currency: "EUR"}))
			return r // placed at the old price
		}, false},
		{"new PlaceOrder (sealed address, wallet and price read)", func() commands.Request { return place("p-" + uuid.NewString()) }, false},
	}
	for _, p := range paths {
		mustDispatch(t, b, req("", "SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 5, Currency: "EUR"}))
		r := p.setup()
		overloaded.Store(p.over)
		c.reset()
		rec, err := b.Dispatch(ctx, r)
		got := c.read()
		overloaded.Store(false)
		if err != nil || rec.Replayed != strings.HasPrefix(p.name, "replay") {
			t.Fatalf("%s: %+v %v", p.name, rec, err)
		}
		t.Logf("%-55s round trips %d, statements %d, command-log lookups %d", p.name, got.roundTrips, got.statements, got.lookups)
		if got.lookups > 1 {
			t.Errorf("%s: the command log was looked up %d times", p.name, got.lookups)
		}
	}
}
