package outbox_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// orderflow events tail -from end starts where no transaction still
// running is skipped: a message whose transaction began before the tail
// but commits after it is printed.
func TestTailFromEndSkipsNoLateCommit(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	const topic = "shipment_events"
	late, early := message.NewMessage(uuid.NewString(), []byte(`{}`)), message.NewMessage(uuid.NewString(), []byte(`{}`))
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := outbox.PublishTo(ctx, tx, topic, late); err != nil { // the lower transaction id, committed last
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, early) }); err != nil {
		t.Fatal(err)
	}
	atTx, atOffset, err := outbox.TailFrom(ctx, pool, topic, "end")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The read shows a commit once every older transaction on the server
	// has ended (other test packages share it): read until both are there.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		msgs, err := outbox.ReadTopic(ctx, pool, topic, atTx, atOffset, 1000)
		if err != nil {
			t.Fatal(err)
		}
		has := func(id string) bool {
			return slices.ContainsFunc(msgs, func(m outbox.Stored) bool { return m.UUID == id })
		}
		if has(late.UUID) {
			break
		}
		if has(early.UUID) || time.Now().After(deadline) {
			t.Fatalf("the tail skipped the message of the transaction that committed late (%d read)", len(msgs))
		}
	}
}
