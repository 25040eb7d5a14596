package delivery_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

const topic = "wallet_events"

// run publishes n messages of a run of its own to the topic and consumes
// them with handle, as a consumer group of its own, until every message
// was handled or poisoned.
func run(t *testing.T, n int, handle func(msg *message.Message) error) (pool *pgxpool.Pool, runID string, ids []string) {
	t.Helper()
	pool = pgtest.Pool(t)
	ctx := context.Background()
	runID = uuid.NewString()
	var msgs []*message.Message
	for range n {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("test_run", runID)
		msgs = append(msgs, m)
		ids = append(ids, m.UUID)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, msgs...) }); err != nil {
		t.Fatal(err)
	}
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 2,
		RetryInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		delivery.Handler{Name: "test-" + runID, ConsumerGroup: "test-" + runID, Topic: topic,
			Handle: func(_ context.Context, msg *message.Message) error {
				if msg.Metadata.Get("test_run") != runID {
					return nil
				}
				return handle(msg)
			}})
	if err != nil {
		t.Fatal(err)
	}
	defer runRouter(t, router)()
	// Settled when the group's offset has passed every message of the run.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM watermill_wallet_events m
			LEFT JOIN watermill_offsets_wallet_events o ON o.consumer_group = $1
			WHERE m.metadata->>'test_run' = $2
			  AND (o.consumer_group IS NULL OR (m.transaction_id, m."offset") > (o.last_processed_transaction_id, o.offset_acked))`,
			"test-"+runID, runID).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting == 0 {
			return pool, runID, ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still waiting", waiting)
		}
	}
}

// runRouter runs router until stop, which reports the error it ended with.
func runRouter(t *testing.T, router *delivery.Router) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	<-router.Running()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	}
}

func poisoned(t *testing.T, pool *pgxpool.Pool, runID string) map[string]string {
	t.Helper()
	rows, _ := pool.Query(context.Background(), `SELECT uuid, metadata->>'reason_poisoned' FROM watermill_poison WHERE metadata->>'test_run' = $1`, runID)
	out := map[string]string{}
	var id, reason string
	_, err := pgx.ForEachRow(rows, []any{&id, &reason}, func() error { out[id] = reason; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A handler whose outside dependency fails more often than the retries
// allow, then recovers: nothing is poisoned, every message is applied once.
func TestTransientFailuresAreRedeliveredNotPoisoned(t *testing.T) {
	var mu sync.Mutex
	attempts, applied := map[string]int{}, map[string]int{}
	pool, runID, ids := run(t, 3, func(msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if attempts[msg.UUID]++; attempts[msg.UUID] <= 5 { // more than MaxRetries (2)
			return delivery.Transient(errors.New("broker unreachable"))
		}
		applied[msg.UUID]++
		return nil
	})
	if p := poisoned(t, pool, runID); len(p) != 0 {
		t.Fatalf("transient failures were poisoned: %v", p)
	}
	for _, id := range ids {
		if applied[id] != 1 || attempts[id] != 6 {
			t.Fatalf("message %s: applied %d times after %d attempts", id, applied[id], attempts[id])
		}
	}
}

// A handler that panics on one message: the router survives, the message
// goes to the poison topic with the panic as its reason, the others apply.
func TestAPanickingHandlerPoisonsOnlyItsMessage(t *testing.T) {
	var mu sync.Mutex
	var bad string
	applied := map[string]int{}
	pool, runID, ids := run(t, 3, func(msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if bad == "" {
			bad = msg.UUID
		}
		if msg.UUID == bad {
			panic("nil map in the handler")
		}
		applied[msg.UUID]++
		return nil
	})
	p := poisoned(t, pool, runID)
	if len(p) != 1 || p[bad] == "" {
		t.Fatalf("poisoned %v, want only %s", p, bad)
	}
	for _, id := range ids {
		if id != bad && applied[id] != 1 {
			t.Fatalf("message %s applied %d times", id, applied[id])
		}
	}
}

// A set-based handler gets the topic in batches, in order, each applied
// with its ack in one transaction. A batch holding a message that always
// fails (here a panic) is rolled back and handled one message at a time:
// that message is poisoned, every other one is applied exactly once.
func TestABatchHandlerGetsBatchesAndAFailingBatchGoesOneByOne(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	runID := uuid.NewString()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS delivery_test_applied (id text PRIMARY KEY, n serial)`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var msgs []*message.Message
	for range 250 {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("test_run", runID)
		msgs, ids = append(msgs, m), append(ids, m.UUID)
	}
	bad := ids[137]
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, msgs...) }); err != nil {
		t.Fatal(err)
	}
	apply := func(ctx context.Context, tx pgx.Tx, m *message.Message) error {
		if m.Metadata.Get("test_run") != runID {
			return nil
		}
		if m.UUID == bad {
			panic("a bug for this message")
		}
		_, err := tx.Exec(ctx, `INSERT INTO delivery_test_applied (id) VALUES ($1)`, m.UUID)
		return err
	}
	var mu sync.Mutex
	var batches []int
	var syncs []string // the batches' synchronous_commit: a read model's commit need not wait for the flush
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 1, SetBatchSize: 100,
		RetryInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		delivery.Handler{Name: "batch-" + runID, ConsumerGroup: "batch-" + runID, Topic: topic,
			Handle: func(ctx context.Context, m *message.Message) error {
				tx, err := delivery.Tx(ctx)
				if err != nil {
					return err
				}
				return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return apply(ctx, sp, m) })
			},
			HandleBatch: func(ctx context.Context, tx pgx.Tx, ms []*message.Message) error {
				var mode, isolation string
				if err := tx.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('transaction_isolation')`).Scan(&mode, &isolation); err != nil {
					return err
				}
				if isolation != "repeatable read" { // watermill-sql's: a consumer that raced another fails on the offset row
					mode = "isolation " + isolation
				}
				mu.Lock()
				batches, syncs = append(batches, len(ms)), append(syncs, mode)
				mu.Unlock()
				for _, m := range ms {
					if err := apply(ctx, tx, m); err != nil {
						return err
					}
				}
				return nil
			}})
	if err != nil {
		t.Fatal(err)
	}
	stop := runRouter(t, router)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM delivery_test_applied WHERE id = ANY($1)`, ids).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == len(ids)-1 && len(poisoned(t, pool, runID)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d applied, poisoned %v", n, len(ids)-1, poisoned(t, pool, runID))
		}
	}
	stop()
	if p := poisoned(t, pool, runID); p[bad] == "" {
		t.Fatalf("poisoned %v, want %s", p, bad)
	}
	// In the order published: the serial column numbers the inserts.
	rows, _ := pool.Query(ctx, `SELECT id FROM delivery_test_applied WHERE id = ANY($1) ORDER BY n`, ids)
	order, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == bad })
	if !slices.Equal(order, want) {
		t.Fatal("messages applied out of order")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batches) == 0 || slices.Max(batches) != 100 {
		t.Fatalf("batch sizes %v, want batches of up to 100", batches)
	}
	if slices.ContainsFunc(syncs, func(s string) bool { return s != "off" }) {
		t.Fatalf("synchronous_commit in the batches: %v", syncs)
	}
}

// A message that keeps failing in a set-based handler is retried outside
// any transaction: while it waits, the messages before it are committed,
// and the consumers of other topics and other groups of its own topic see
// the commits that come after it. (Were it retried inside the transaction
// that holds its group's offset row, that transaction would hold every
// reader's horizon, pg_snapshot_xmin, until the message was poisoned.)
func TestAFailingMessageHoldsNoOtherConsumerBack(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	runID := uuid.NewString()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS delivery_test_applied (id text PRIMARY KEY, n serial)`); err != nil {
		t.Fatal(err)
	}
	msg := func() *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("test_run", runID)
		return m
	}
	publish := func(topic string, ms ...*message.Message) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, ms...) }); err != nil {
			t.Fatal(err)
		}
	}
	first, bad, after := msg(), msg(), msg()
	var released atomic.Bool
	var attempts atomic.Int32
	apply := func(ctx context.Context, tx pgx.Tx, m *message.Message) error {
		if m.Metadata.Get("test_run") != runID {
			return nil
		}
		if m.UUID == bad.UUID && !released.Load() {
			attempts.Add(1)
			return errors.New("a bug until it is fixed")
		}
		_, err := tx.Exec(ctx, `INSERT INTO delivery_test_applied (id) VALUES ($1)`, m.UUID)
		return err
	}
	failing := delivery.Handler{Name: "failing-" + runID, ConsumerGroup: "failing-" + runID, Topic: topic,
		Handle: func(ctx context.Context, m *message.Message) error {
			tx, err := delivery.Tx(ctx)
			if err != nil {
				return err
			}
			return apply(ctx, tx, m)
		},
		HandleBatch: func(ctx context.Context, tx pgx.Tx, ms []*message.Message) error {
			for _, m := range ms {
				if err := apply(ctx, tx, m); err != nil {
					return err
				}
			}
			return nil
		}}
	seen := make(chan string, 100)
	record := func(_ context.Context, m *message.Message) error {
		if m.Metadata.Get("test_run") == runID {
			seen <- m.UUID
		}
		return nil
	}
	// Another group of the same topic (set-based) and a Watermill
	// subscriber of another topic.
	peer := delivery.Handler{Name: "peer-" + runID, ConsumerGroup: "peer-" + runID, Topic: topic, Handle: record,
		HandleBatch: func(ctx context.Context, _ pgx.Tx, ms []*message.Message) error {
			for _, m := range ms {
				_ = record(ctx, m)
			}
			return nil
		}}
	other := delivery.Handler{Name: "other-" + runID, ConsumerGroup: "other-" + runID, Topic: "shipment_events", Handle: record}
	publish(topic, first, bad, after)
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 1000,
		RetryInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, failing, peer, other)
	if err != nil {
		t.Fatal(err)
	}
	defer runRouter(t, router)()
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("still waiting for %s (the failing message was tried %d times)", what, attempts.Load())
			}
		}
	}
	applied := func(id string) bool {
		return count(t, pool, `SELECT count(*) FROM delivery_test_applied WHERE id = $1`, id) == 1
	}
	wait("a retry of the failing message", func() bool { return attempts.Load() >= 3 })
	wait("the message before it to be committed", func() bool { return applied(first.UUID) })

	// Commits after the failing message reach the other consumers while
	// it is still failing.
	later, elsewhere := msg(), msg()
	publish(topic, later)
	publish("shipment_events", elsewhere)
	got := map[string]bool{}
	wait("the other consumers", func() bool {
		for {
			select {
			case id := <-seen:
				got[id] = true
				continue
			default:
			}
			return got[later.UUID] && got[elsewhere.UUID]
		}
	})
	if applied(bad.UUID) || applied(after.UUID) || len(poisoned(t, pool, runID)) != 0 {
		t.Fatal("the failing message was resolved before the others went on")
	}
	// Fixed: it applies (not poisoned), then what follows it.
	released.Store(true)
	wait("the fixed message and the ones after it", func() bool { return applied(after.UUID) && applied(later.UUID) })
	rows, _ := pool.Query(ctx, `SELECT id FROM delivery_test_applied WHERE id = ANY($1) ORDER BY n`,
		[]string{first.UUID, bad.UUID, after.UUID, later.UUID})
	order, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{first.UUID, bad.UUID, after.UUID, later.UUID}) || len(poisoned(t, pool, runID)) != 0 {
		t.Fatalf("applied %v, poisoned %v", order, poisoned(t, pool, runID))
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// An idle batch consumer looks for rows without its group's transaction:
// the lock of the offset row that transaction takes is a write (a
// transaction id, WAL, a commit), and idle polls made one per consumer
// group every few milliseconds. Two consumers of one group (two processes)
// still deliver every message once, and a group moved back (an operator's
// rewind; a batch and its ack lost together in a crash of the server) gets
// what follows again, though its consumers saw more.
func TestAnIdleBatchConsumerWritesNothingAndTwoProcessesShareAGroup(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	group := "idle-" + uuid.NewString()
	var mu sync.Mutex
	delivered := map[string]int{}
	apply := func(m *message.Message) {
		if m.Metadata.Get("test_run") == group {
			mu.Lock()
			delivered[m.UUID]++
			mu.Unlock()
		}
	}
	start := func() (stop func()) {
		router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 5 * time.Millisecond, MaxRetries: 0, SetBatchSize: 3,
			RetryInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
			delivery.Handler{Name: group, ConsumerGroup: group, Topic: topic,
				Handle: func(_ context.Context, m *message.Message) error { apply(m); return nil },
				HandleBatch: func(_ context.Context, _ pgx.Tx, ms []*message.Message) error {
					for _, m := range ms {
						apply(m)
					}
					return nil
				}})
		if err != nil {
			t.Fatal(err)
		}
		return runRouter(t, router)
	}
	var ids []string
	publish := func(n int) {
		t.Helper()
		var msgs []*message.Message
		for range n {
			m := message.NewMessage(uuid.NewString(), []byte(`{}`))
			m.Metadata.Set("test_run", group)
			msgs, ids = append(msgs, m), append(ids, m.UUID)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, msgs...) }); err != nil {
			t.Fatal(err)
		}
	}
	// each waits until every message was delivered times times, and no more.
	each := func(times int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			short, over := 0, 0
			for _, id := range ids {
				if n := delivered[id]; n < times {
					short++
				} else if n > times {
					over++
				}
			}
			mu.Unlock()
			if over > 0 {
				t.Fatalf("%d messages delivered more than %d times", over, times)
			}
			if short == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages delivered fewer than %d times", short, len(ids), times)
			}
		}
	}
	stopA := start()
	publish(1)
	each(1)
	locker := func() string {
		t.Helper()
		var xmax string
		if err := pool.QueryRow(ctx, `SELECT xmax::text FROM watermill_offsets_wallet_events WHERE consumer_group = $1`, group).Scan(&xmax); err != nil {
			t.Fatal(err)
		}
		return xmax
	}
	before := locker()
	time.Sleep(300 * time.Millisecond) // some sixty polls
	if after := locker(); after != before {
		t.Fatalf("the idle consumer locked its group's offset row (xmax %s, then %s)", before, after)
	}
	stopB := start()
	for range 10 {
		publish(5)
		time.Sleep(7 * time.Millisecond)
	}
	each(1)
	// Back to the start of the topic: both consumers saw the group past
	// every message, and every message is delivered again.
	if _, err := pool.Exec(ctx, `UPDATE watermill_offsets_wallet_events SET offset_acked = 0, last_processed_transaction_id = '0' WHERE consumer_group = $1`, group); err != nil {
		t.Fatal(err)
	}
	each(2)
	stopA()
	stopB()
}
