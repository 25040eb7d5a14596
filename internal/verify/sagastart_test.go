package verify_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// starts is a Temporal that only starts workflows (refusing a duplicate
// id, as REJECT_DUPLICATE does) and whose workflows close at once: what
// the saga launcher needs, without a Temporal server.
type starts struct {
	client.Client // nil: any other call is a bug of the test
	mu            sync.Mutex
	calls         map[string]int // ExecuteWorkflow calls by workflow id
}

func newStarts() *starts { return &starts{calls: map[string]int{}} }

func (s *starts) ExecuteWorkflow(_ context.Context, o client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls[o.ID]++; s.calls[o.ID] > 1 {
		return nil, serviceerror.NewWorkflowExecutionAlreadyStarted("already started", "", "")
	}
	return closedRun{}, nil
}

func (s *starts) GetWorkflow(context.Context, string, string) client.WorkflowRun { return closedRun{} }

func (s *starts) started(workflowID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[workflowID]
}

type closedRun struct{ client.WorkflowRun }

func (closedRun) Get(context.Context, any) error { return nil }

// runLauncher runs the saga launcher on fake until the test ends or the
// returned func is called.
func runLauncher(t *testing.T, pool *pgxpool.Pool, fake *starts) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sagas.Launcher{Pool: pool, Client: fake, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: 20 * time.Millisecond}.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// An order.placed the saga starter poisoned leaves an order answered 201
// whose saga never started: verify names the order (and the starter's
// poison), not only the projections' poison; replaying the poison message
// runs the starter again, and the saga starts once.
func TestAPoisonedSagaStartFailsVerifyUntilItIsReplayed(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	w := &world{t: t, ctx: ctx, pool: pool, store: store, bus: commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})}
	oid := "o-refused-start-" + uuid.NewString()

	// The starter refuses this order's start once (a bug since fixed):
	// with no retries, it is poisoned at once.
	starter := sagas.Starter(24 * time.Hour)
	var refused atomic.Bool
	refuses := func(m *message.Message) bool {
		return !refused.Load() && m.Metadata.Get(outbox.MetaStreamID) == oid && m.Metadata.Get(outbox.MetaEventType) == (order.Placed{}).EventType()
	}
	buggy := starter
	buggy.Handle = func(ctx context.Context, m *message.Message) error {
		if refuses(m) {
			refused.Store(true)
			return errors.New("saga starter: refused (a bug)")
		}
		return starter.Handle(ctx, m)
	}
	buggy.HandleBatch = func(ctx context.Context, tx pgx.Tx, ms []*message.Message) error {
		for _, m := range ms {
			if refuses(m) {
				return errors.New("saga starter: refused (a bug)")
			}
		}
		return starter.HandleBatch(ctx, tx, ms)
	}
	handlers := []delivery.Handler{buggy}
	for _, p := range projections.All() {
		handlers = append(handlers, p.Handler(store.Registry()))
	}
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 0,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, handlers...)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-router.Running()
	fake := newStarts()
	runLauncher(t, pool, fake)

	wid, sku := "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	w.do("OpenWallet", commands.OpenWallet{WalletID: wid, CustomerID: "c", Currency: "EUR"})
	w.do("TopUpWallet", commands.TopUpWallet{WalletID: wid, Amount: 1_000, Reason: "test funds"})
	w.do("ReceiveStock", commands.ReceiveStock{SKU: sku, Quantity: 10})
	w.do("SetPrice", commands.SetPrice{SKU: sku, UnitPrice: 100, Currency: "EUR"})
	w.mustAccept("PlaceOrder", commands.PlaceOrder{OrderID: oid, CustomerID: "c", WalletID: wid, Currency: "EUR",
		Lines:           []commands.OrderLine{{SKU: sku, Quantity: 1, UnitPrice: 100}},
		ShippingAddress: order.Address{Name: "A", Line1: "1", City: "P", PostalCode: "1", Country: "FR"}})
	w.mustAccept("CancelOrder", commands.CancelOrder{OrderID: oid, Reason: "test"})

	reader := projections.NewReader(pool)
	var poisoned projections.Poisoned
	for deadline := time.Now().Add(30 * time.Second); poisoned.Offset == 0; time.Sleep(20 * time.Millisecond) {
		msgs, err := reader.Poison(ctx, true, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Handler == sagas.StarterGroup && m.StreamID == oid {
				poisoned = m
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the saga start was never poisoned")
		}
	}

	checker := &verify.Checker{Pool: pool, Store: store, Reader: reader, Settle: time.Second}
	rep, err := checker.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failures := func(name string) string {
		for _, c := range rep.Checks {
			if c.Name == name {
				return strings.Join(c.Failures, "\n")
			}
		}
		t.Fatalf("no check %q", name)
		return ""
	}
	if f := failures("every order's saga was started"); !strings.Contains(f, "order "+oid+" (cancelled): its saga was never queued") {
		t.Fatalf("verify does not name the order whose saga never started: %q\n%s", f, rep)
	}
	if f := failures("nothing is left undelivered in the outbox"); !strings.Contains(f, sagas.StarterGroup+": 1 unresolved poison messages") {
		t.Fatalf("verify does not count the saga starter's poison: %q", f)
	}
	if n := fake.started(workflows.WorkflowID(oid)); n != 0 {
		t.Fatalf("a saga was started %d times before the replay", n)
	}

	// The operator replays it, with the consumers the process runs.
	if err := projections.ReplayPoison(ctx, pool, store.Registry(), poisoned.Offset, sagas.Starter(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := projections.ReplayPoison(ctx, pool, store.Registry(), poisoned.Offset, sagas.Starter(24*time.Hour)); !errors.Is(err, projections.ErrResolved) {
		t.Fatalf("a second replay: %v, want ErrResolved", err)
	}
	checker.Settle = 30 * time.Second
	if rep, err = checker.Run(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify after the replay: %v\n%s", err, rep)
	}
	time.Sleep(100 * time.Millisecond) // a few more launcher rounds
	if n := fake.started(workflows.WorkflowID(oid)); n != 1 {
		t.Fatalf("the saga was started %d times, want once", n)
	}
	var queued int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM saga_starts WHERE order_id = $1 AND started_at IS NOT NULL`, oid).Scan(&queued); err != nil || queued != 1 {
		t.Fatalf("saga_starts of the order: %d (%v)", queued, err)
	}
}
