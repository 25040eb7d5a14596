package delivery

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

// A batch larger than a third of its topic (a young topic; the timeline's
// 4,000) still reads the topic's index from the group's position: planned
// on the offset row alone, which is known only when the query runs, the
// read was a sequential scan of every row the topic ever had, and a sort,
// on every poll.
func TestABatchReadWalksTheIndexFromTheGroupsPosition(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	const topic = "shipment_events"
	var msgs []*message.Message
	for range 600 {
		msgs = append(msgs, message.NewMessage(uuid.NewString(), []byte(`{"a":"`+strings.Repeat("x", 500)+`"}`)))
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.PublishTo(ctx, tx, topic, msgs...) }); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE watermill_shipment_events`); err != nil {
		t.Fatal(err)
	}
	h := Handler{Name: "plan", ConsumerGroup: "plan-" + uuid.NewString(), Topic: topic, BatchSize: 4000,
		HandleBatch: func(context.Context, pgx.Tx, []*message.Message) error { return nil }}
	c := newBatchConsumer(pool, RouterConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, h)
	if err := c.start(ctx); err != nil {
		t.Fatal(err)
	}
	// The group has applied all but the last message.
	var at commitorder.Cursor
	if err := pool.QueryRow(ctx, `UPDATE watermill_offsets_shipment_events o SET last_processed_transaction_id = m.transaction_id, offset_acked = m."offset" - 1
		FROM (SELECT transaction_id, "offset" FROM watermill_shipment_events ORDER BY transaction_id DESC, "offset" DESC LIMIT 1) m
		WHERE o.consumer_group = $1 RETURNING m.transaction_id, m."offset" - 1`, h.ConsumerGroup).Scan(&at.TransactionID, &at.Seq); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	explain := func(name string, q wsql.Query) {
		t.Helper()
		rows, _ := tx.Query(ctx, `EXPLAIN `+q.Query, q.Args...)
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "Seq Scan on watermill_shipment_events") || !strings.Contains(text, "Scan using watermill_shipment_events_pkey") {
			t.Fatalf("%s is not an index range scan:\n%s", name, text)
		}
	}
	// The batch read is planned for its values each time (an unnamed
	// statement); the idle look is prepared, and after five runs
	// PostgreSQL may plan it once for any parameters (a generic plan).
	explain("the batch read", c.selectQuery(at))
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		explain("the idle look ("+mode+")", c.pendingQuery())
	}
}
