package commandlog_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// A command that takes its seq first but commits last is not skipped by a
// client paging the log (GET /commands) with the seq cursor it was given.
func TestListPagesInCommitOrderAndSkipsNoLateCommit(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	log := commandlog.NewLog(pool)
	stream := "late-" + uuid.NewString()
	const insert = `INSERT INTO commands (command_id, command_type, payload, status, stream_type, stream_id, stream_version,
		correlation_id, causation_id, actor, recorded_at, message_uuid) VALUES ($1, 'TopUpWallet', '{}', 'accepted', 'wallet', $2, 1, 'c', 'c', 'a', now(), gen_random_uuid())`
	early, late := uuid.NewString(), uuid.NewString()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, insert, late, stream); err != nil { // takes the lower seq, commits last
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, insert, early, stream); err != nil {
		t.Fatal(err)
	}
	var seen []string
	var cursor int64
	read := func() {
		t.Helper()
		for {
			page, err := log.List(ctx, commandlog.Filter{StreamID: stream, AfterSeq: cursor, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				seen, cursor = append(seen, r.CommandID), r.Seq
			}
			if len(page) < 1 {
				return
			}
		}
	}
	read()
	if len(seen) != 0 {
		t.Fatalf("paged %v while the lower seq's transaction runs, want nothing", seen)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The horizon is the cluster's: another package's transaction running
	// here may hold "early" back a little longer, never skip it.
	for deadline := time.Now().Add(10 * time.Second); len(seen) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		read()
	}
	slices.Sort(seen)
	want := []string{early, late}
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("paged %v, want each of %v once", seen, want)
	}
	if _, err := log.List(ctx, commandlog.Filter{AfterSeq: 1 << 60, Limit: 1}); err != commandlog.ErrNotFound {
		t.Fatalf("a cursor no command has: %v", err)
	}
}
