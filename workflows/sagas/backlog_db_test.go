package sagas

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// The backlog counts the orders placed that the starter has not queued
// yet, and only those: it reads the order topic's index from the starter's
// position, never every order the topic holds.
func TestTheBacklogCountsThePlacedOrdersAheadOfTheStarter(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	publish := func(eventType string, n int) {
		t.Helper()
		var msgs []*message.Message
		for range n {
			m := message.NewMessage(uuid.NewString(), []byte(`{}`))
			m.Metadata.Set(outbox.MetaEventType, eventType)
			msgs = append(msgs, m)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, outbox.Topic(order.StreamType), msgs...) }); err != nil {
			t.Fatal(err)
		}
	}
	placed := (order.Placed{}).EventType()
	queued := func() int64 {
		t.Helper()
		f, err := (&Backlog{Pool: pool, TTL: 1}).Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return f.Queued
	}
	publish(placed, 2)
	if q := queued(); q != 2 { // no starter yet: every order is ahead of it
		t.Fatalf("queued %d before the starter ran, want 2", q)
	}
	publish(placed, 500)
	// The starter has queued everything so far.
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_offsets_order_events (consumer_group, offset_acked, last_processed_transaction_id)
		SELECT $1, "offset", transaction_id FROM watermill_order_events ORDER BY transaction_id DESC, "offset" DESC LIMIT 1`, StarterGroup); err != nil {
		t.Fatal(err)
	}
	publish(placed, 3)
	publish("order.cancelled", 4)
	if q := queued(); q != 3 {
		t.Fatalf("queued %d, want the 3 orders placed after the starter's position", q)
	}
	if _, err := pool.Exec(ctx, `ANALYZE watermill_order_events`); err != nil {
		t.Fatal(err)
	}
	var tx string
	var offset int64
	if err := pool.QueryRow(ctx, `SELECT last_processed_transaction_id::text, offset_acked FROM watermill_offsets_order_events WHERE consumer_group = $1`, StarterGroup).Scan(&tx, &offset); err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, `EXPLAIN `+countSQL, 60.0, 10.0, tx, offset)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if text := strings.Join(plan, "\n"); strings.Contains(text, "Seq Scan on watermill_order_events") {
		t.Fatalf("the count scans the whole order topic:\n%s", text)
	}
}
