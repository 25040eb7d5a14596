package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/eventstore"
)

// The commands topic's messages are read from the command log (its table
// is a view over it): each is what commandlog.Message builds from the
// logged command and its events — the same id, the same payload members
// (omitted ones omitted), the same metadata — and it is there as soon as
// the command commits, with no message written beside the log row.
func TestTheCommandsTopicIsTheLog(t *testing.T) {
	ctx := context.Background()
	b, pool := newBus(t)
	wallet := openWallet(t, b, 100)
	accepted := mustDispatch(t, b, commands.Request{Principal: ops, CommandID: "cmd-" + uuid.NewString(), Type: "TopUpWallet",
		Payload: json.RawMessage(`{"wallet_id":"` + wallet + `","amount":700,"reason":"test \"funds\" ü"}`), CorrelationID: "corr-7",
		CausationID: "cause-7", Metadata: map[string]string{"saga_step": "test"}})
	held := req("auth-"+uuid.NewString(), "AuthoriseHold", commands.AuthoriseHold{WalletID: wallet, OrderID: "o1", Amount: 5000, Currency: "EUR"})
	held.Principal, held.Internal = nil, true
	_, err := b.Dispatch(ctx, held)
	if rej := (*commands.RejectedError)(nil); !errors.As(err, &rej) {
		t.Fatalf("want a rejection: %v", err)
	}
	var kind string
	if err := pool.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE relname = 'watermill_commands'`).Scan(&kind); err != nil || kind != "v" {
		t.Fatalf("watermill_commands is of kind %q (%v), want a view", kind, err)
	}
	// Nor may a clean-up of the outbox delete the log through the view.
	for _, sql := range []string{`DELETE FROM watermill_commands`, `UPDATE watermill_commands SET transaction_id = '1'`,
		`INSERT INTO watermill_commands (uuid, payload, metadata, transaction_id) VALUES ('x', '{}', '{}', '1')`} {
		if _, err := pool.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "view over the command log") {
			t.Fatalf("%s: %v, want it refused", sql, err)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM commands WHERE command_id = $1`, accepted.CommandID); n != 1 {
		t.Fatalf("the command is logged %d times", n)
	}
	for _, id := range []string{accepted.CommandID, held.CommandID} {
		rec, err := b.Log().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rows, _ := pool.Query(ctx, `SELECT event_id, event_type, stream_type, stream_id, stream_version, global_position, recorded_at
			FROM events WHERE event_id = ANY($1) ORDER BY global_position`, rec.EventIDs)
		envs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Envelope, error) {
			var e eventstore.Envelope
			return e, r.Scan(&e.EventID, &e.EventType, &e.StreamType, &e.StreamID, &e.StreamVersion, &e.GlobalPosition, &e.RecordedAt)
		})
		if err != nil || len(envs) != len(rec.EventIDs) {
			t.Fatalf("events of %s: %v %v", id, envs, err)
		}
		want, err := commandlog.Message(rec, envs)
		if err != nil {
			t.Fatal(err)
		}
		var gotUUID, gotTx, wantTx string
		var payload []byte
		var meta map[string]string
		if err := pool.QueryRow(ctx, `SELECT uuid, payload, metadata, transaction_id::text FROM watermill_commands WHERE "offset" = $1`,
			rec.Seq).Scan(&gotUUID, &payload, &meta, &gotTx); err != nil {
			t.Fatalf("no commands-topic message for %s: %v", id, err)
		}
		if err := pool.QueryRow(ctx, `SELECT transaction_id::text FROM commands WHERE command_id = $1`, id).Scan(&wantTx); err != nil || gotTx != wantTx {
			t.Fatalf("message in transaction %s, command in %s (%v)", gotTx, wantTx, err)
		}
		if gotUUID != want.UUID {
			t.Fatalf("message id %s, want %s", gotUUID, want.UUID)
		}
		if got, wantMeta := timeless(t, meta), timeless(t, want.Metadata); !maps.Equal(got, wantMeta) {
			t.Fatalf("metadata\n got %v\nwant %v", got, wantMeta)
		}
		if got, wantKeys := keys(t, payload), keys(t, want.Payload); !slices.Equal(got, wantKeys) {
			t.Fatalf("payload members\n got %v\nwant %v", got, wantKeys)
		}
		if got, wantLogged := normal(t, payload), normal(t, want.Payload); got != wantLogged {
			t.Fatalf("payload\n got %s\nwant %s", got, wantLogged)
		}
		// The batch consumers read the log with Rows: the same message.
		var read []wsql.Row
		// The visibility horizon is the cluster's: another test package's
		// transaction may hold the command back a moment.
		for deadline := time.Now().Add(10 * time.Second); len(read) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if read, err = commandlog.Rows(ctx, pool, commitorder.Cursor{TransactionID: rec.TransactionID, Seq: rec.Seq - 1}, 1); err != nil {
				t.Fatal(err)
			}
		}
		if len(read) != 1 || read[0].Offset != rec.Seq || read[0].Msg.UUID != want.UUID || !maps.Equal(read[0].Msg.Metadata, want.Metadata) {
			t.Fatalf("Rows read %+v, want the message at %d", read, rec.Seq)
		}
		if got, wantLogged := normal(t, read[0].Msg.Payload), normal(t, want.Payload); got != wantLogged {
			t.Fatalf("Rows' payload\n got %s\nwant %s", got, wantLogged)
		}
		// DecodeLogged takes the command Rows kept with the message: what
		// its payload decodes to.
		kept, err := commandlog.DecodeLogged(read[0].Msg)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := commandlog.DecodeLogged(message.NewMessage(read[0].Msg.UUID, read[0].Msg.Payload))
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(kept)
		b, _ := json.Marshal(parsed)
		if string(a) != string(b) || kept.ReasonKind != "" || kept.TransactionID != 0 || kept.MessageUUID != uuid.Nil {
			t.Fatalf("kept %+v\n%s\nparsed\n%s", kept, a, b)
		}
	}
}

// timeless returns md with its recorded_at checked as a time and dropped:
// the view writes six digits of fraction where Go trims its zeros.
func timeless(t *testing.T, md map[string]string) map[string]string {
	t.Helper()
	out := maps.Clone(md)
	at, err := time.Parse(time.RFC3339Nano, out["recorded_at"])
	if err != nil {
		t.Fatalf("recorded_at %q: %v", out["recorded_at"], err)
	}
	out["recorded_at"] = at.UTC().Format(time.RFC3339Nano)
	return out
}

func keys(t *testing.T, payload []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

// normal decodes a commands-topic payload and encodes it again, its times
// in UTC and the command's payload with its members sorted.
func normal(t *testing.T, payload []byte) string {
	t.Helper()
	var l commandlog.Logged
	if err := json.Unmarshal(payload, &l); err != nil {
		t.Fatal(err)
	}
	return normalLogged(t, l)
}

func normalLogged(t *testing.T, l commandlog.Logged) string {
	t.Helper()
	var p any
	if err := json.Unmarshal(l.Payload, &p); err != nil {
		t.Fatal(err)
	}
	l.Payload, _ = json.Marshal(p)
	l.RecordedAt = l.RecordedAt.UTC()
	for i := range l.Events {
		l.Events[i].RecordedAt = l.Events[i].RecordedAt.UTC()
	}
	out, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
