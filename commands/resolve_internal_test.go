package commands

import (
	"context"
	"errors"
	"testing"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// After a crash before its COMMIT reached the WAL, PostgreSQL may give a
// group's transaction id to another transaction: that one's "committed"
// is not the group's. resolve believes a commit only with the group's own
// log row under the id, and takes an id the server has not reached for a
// rolled-back group.
func TestAResolvedCommitIsTheGroupsOwn(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	c := &committer{pool: pool}
	var committed string
	// Another transaction, committed under an id: no log row of ours.
	if err := pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	xid, err := commitorder.ParseXID(committed)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("connection lost at COMMIT")
	var retry *retryGroup
	if err := c.resolve(xid, 0, "never-logged", cause); !errors.As(err, &retry) {
		t.Fatalf("another transaction's commit under the group's id: %v, want the group retried", err)
	}
	// An id the server has not reached (it restarted before the group's
	// transaction was written anywhere).
	if err := c.resolve(xid+1_000_000, 0, "never-logged", cause); !errors.As(err, &retry) {
		t.Fatalf("an id in the future: %v, want the group retried", err)
	}
	// The group's own row under the id: committed.
	var own string
	if err := pool.QueryRow(ctx, `INSERT INTO commands (command_id, command_type, payload, status, stream_type, stream_id, stream_version,
		event_ids, correlation_id, causation_id, actor, metadata, recorded_at, message_uuid)
		VALUES ('resolve-own', 'T', '{}', 'accepted', 's', 's1', 0, '{}', 'c', '', 'a', '{}', now(), gen_random_uuid()) RETURNING transaction_id::text`).Scan(&own); err != nil {
		t.Fatal(err)
	}
	ownXID, err := commitorder.ParseXID(own)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.resolve(ownXID, 0, "resolve-own", cause); err != nil {
		t.Fatalf("the group's own commit: %v", err)
	}
}
