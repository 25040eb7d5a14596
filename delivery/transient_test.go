package delivery_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
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

// batchRun publishes n messages of a run of its own and consumes them with
// a set-based handler (HandleBatch, then Handle one by one when a batch
// fails) on a pool of its own named appName (application_name), with
// MaxRetries 2, until every message was applied (or poisoned, when
// wantPoisoned). apply writes a message's row in tx.
func batchRun(t *testing.T, n int, appName string, wantPoisoned int,
	apply func(ctx context.Context, tx pgx.Tx, m *message.Message, alone bool) error) (pool *pgxpool.Pool, runID string, ids []string) {
	t.Helper()
	ctx := context.Background()
	pool = pgtest.Pool(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS delivery_test_applied (id text PRIMARY KEY, n serial)`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	consumer, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()

	runID = uuid.NewString()
	var msgs []*message.Message
	for range n {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("test_run", runID)
		msgs, ids = append(msgs, m), append(ids, m.UUID)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, msgs...) }); err != nil {
		t.Fatal(err)
	}
	mine := func(m *message.Message) bool { return m.Metadata.Get("test_run") == runID }
	router, err := delivery.NewRouter(consumer, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 2,
		RetryInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		delivery.Handler{Name: "transient-" + runID, ConsumerGroup: "transient-" + runID, Topic: topic,
			Handle: func(ctx context.Context, m *message.Message) error {
				if !mine(m) {
					return nil
				}
				tx, err := delivery.Tx(ctx)
				if err != nil {
					return err
				}
				return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return apply(ctx, sp, m, true) })
			},
			HandleBatch: func(ctx context.Context, tx pgx.Tx, ms []*message.Message) error {
				for _, m := range ms {
					if !mine(m) {
						continue
					}
					if err := apply(ctx, tx, m, false); err != nil {
						return err
					}
				}
				return nil
			}})
	if err != nil {
		t.Fatal(err)
	}
	defer runRouter(t, router)()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		applied := count(t, pool, `SELECT count(*) FROM delivery_test_applied WHERE id = ANY($1)`, ids)
		if applied+len(poisoned(t, pool, runID)) == n && len(poisoned(t, pool, runID)) >= wantPoisoned {
			return pool, runID, ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d applied, poisoned %v", applied, n, poisoned(t, pool, runID))
		}
	}
}

func insertApplied(ctx context.Context, tx pgx.Tx, m *message.Message) error {
	_, err := tx.Exec(ctx, `INSERT INTO delivery_test_applied (id) VALUES ($1)`, m.UUID)
	return err
}

// The consumer's own backend is terminated in the middle of a batch
// (pg_terminate_backend of the connection named by its application_name,
// as a PostgreSQL restart or an operator would) more often than the
// retries allow: the message is retried on a fresh connection until it
// goes through, applied once, never poisoned, and the messages around it
// are applied in order.
func TestAConsumerWhoseConnectionIsTerminatedMidBatchRetriesAndDelivers(t *testing.T) {
	appName := "delivery-test-" + uuid.NewString()[:8]
	const kills = 6 // more than MaxRetries (2) in the batch and one by one
	kill, killed := make(chan struct{}), make(chan error)
	killer := pgtest.Pool(t)
	go func() {
		for range kill {
			var err error
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				var n int
				err = killer.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
					WHERE application_name = $1 AND state LIKE 'idle in transaction%'`, appName).Scan(&n)
				if err != nil || n == 1 || time.Now().After(deadline) {
					if err == nil && n != 1 {
						err = errors.New("the consumer's backend was never idle in a transaction")
					}
					break
				}
			}
			killed <- err
		}
	}()
	defer close(kill)
	var mu sync.Mutex
	var bad string
	attempts := 0
	pool, runID, ids := batchRun(t, 5, appName, 0, func(ctx context.Context, tx pgx.Tx, m *message.Message, alone bool) error {
		mu.Lock()
		if bad == "" {
			bad = m.UUID // the first message of the run: mid-batch, before the others
		}
		hit := m.UUID == bad && attempts < kills
		if m.UUID == bad {
			attempts++
		}
		mu.Unlock()
		if hit {
			// The consumer waits in its transaction while its backend is
			// terminated; its next statement meets the dead connection.
			kill <- struct{}{}
			if err := <-killed; err != nil {
				t.Error(err)
			}
		}
		return insertApplied(ctx, tx, m)
	})
	if p := poisoned(t, pool, runID); len(p) != 0 {
		t.Fatalf("a lost connection was poisoned: %v", p)
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery_test_applied WHERE id = ANY($1)`, ids); n != len(ids) {
		t.Fatalf("%d of %d applied", n, len(ids))
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != kills+1 {
		t.Fatalf("the message was attempted %d times, want %d (killed %d times)", attempts, kills+1, kills)
	}
}

// A statement timeout in the handler's transaction (statement_timeout set
// low, a slow statement) more often than the retries allow: it is the
// database's moment, retried until it passes, never poisoned.
func TestAStatementTimeoutIsRetriedNotPoisoned(t *testing.T) {
	const timeouts = 6 // more than MaxRetries (2)
	var mu sync.Mutex
	attempts := map[string]int{}
	pool, runID, ids := batchRun(t, 3, "delivery-test-"+uuid.NewString()[:8], 0, func(ctx context.Context, tx pgx.Tx, m *message.Message, alone bool) error {
		mu.Lock()
		attempts[m.UUID]++
		slow := attempts[m.UUID] <= timeouts
		mu.Unlock()
		if slow {
			if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = '20ms'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_sleep(0.5)`); err != nil {
				return err // 57014 query_canceled
			}
		}
		return insertApplied(ctx, tx, m)
	})
	if p := poisoned(t, pool, runID); len(p) != 0 {
		t.Fatalf("statement timeouts were poisoned: %v", p)
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery_test_applied WHERE id = ANY($1)`, ids); n != len(ids) {
		t.Fatalf("%d of %d applied", n, len(ids))
	}
}

// A handler's own refusal (a domain rule, not the database) is still
// poisoned after its retries, and the messages after it go on.
func TestAHandlersRefusalIsStillPoisonedAfterItsRetries(t *testing.T) {
	var mu sync.Mutex
	var bad string
	alone := 0
	pool, runID, ids := batchRun(t, 3, "delivery-test-"+uuid.NewString()[:8], 1, func(ctx context.Context, tx pgx.Tx, m *message.Message, one bool) error {
		mu.Lock()
		if bad == "" {
			bad = m.UUID
		}
		refuse := m.UUID == bad
		if refuse && one {
			alone++
		}
		mu.Unlock()
		if refuse {
			return errors.New("order refused: a rule of the domain")
		}
		return insertApplied(ctx, tx, m)
	})
	p := poisoned(t, pool, runID)
	if len(p) != 1 || p[bad] != "order refused: a rule of the domain" {
		t.Fatalf("poisoned %v, want %s refused", p, bad)
	}
	if n := count(t, pool, `SELECT count(*) FROM delivery_test_applied WHERE id = ANY($1)`, ids); n != len(ids)-1 {
		t.Fatalf("%d of %d applied", n, len(ids)-1)
	}
	mu.Lock()
	defer mu.Unlock()
	if alone != 3 { // the first attempt and MaxRetries (2) more
		t.Fatalf("the refused message was handled alone %d times, want 3", alone)
	}
}
