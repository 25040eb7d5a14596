package migrations_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// Upgrading to the commands topic read from the log (00011) keeps what was
// there: each command keeps its message id, and a consumer group that had
// acked a message stands at that command, in its transaction.
func TestTheCommandsTopicMovesIntoTheLog(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.Files)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	// Two commands of one transaction, each with its message as 00010's
	// writer wrote them, and a group that acked the first.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var txid string
	var seqs [2]int64
	for i, id := range []string{"up-1", "up-2"} {
		if err := tx.QueryRow(ctx, `INSERT INTO commands (command_id, command_type, payload, status, stream_type, stream_id, stream_version,
			correlation_id, causation_id, actor, recorded_at) VALUES ($1, 'TopUpWallet', '{}', 'rejected', 'wallet', 'w', 0, 'c', '', 'a', now())
			RETURNING seq, transaction_id::text`, id).Scan(&seqs[i], &txid); err != nil {
			t.Fatal(err)
		}
	}
	var first int64
	for i, id := range []string{"up-1", "up-2"} {
		var off int64
		if err := tx.QueryRow(ctx, `INSERT INTO watermill_commands (uuid, payload, metadata, transaction_id)
			VALUES ($1, '{}', json_build_object('command_id', $2::text, 'seq', $3::bigint::text), pg_current_xact_id()) RETURNING "offset"`,
			commandlog.MessageUUID(id), id, seqs[i]).Scan(&off); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = off
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO watermill_offsets_commands (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ('g', $1, pg_current_xact_id())`, first); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"up-1", "up-2"} {
		var got string
		if err := pool.QueryRow(ctx, `SELECT uuid FROM watermill_commands WHERE "offset" = $1`, seqs[i]).Scan(&got); err != nil ||
			got != commandlog.MessageUUID(id) {
			t.Fatalf("%s: message id %q (%v), want %s", id, got, err, commandlog.MessageUUID(id))
		}
	}
	var acked int64
	var at string
	if err := pool.QueryRow(ctx, `SELECT offset_acked, last_processed_transaction_id::text FROM watermill_offsets_commands
		WHERE consumer_group = 'g'`).Scan(&acked, &at); err != nil || acked != seqs[0] || at != txid {
		t.Fatalf("group at (%s, %d) %v, want (%s, %d): the first command", at, acked, err, txid, seqs[0])
	}
}
