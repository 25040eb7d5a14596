package commandlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// EventRef names one event a command caused.
type EventRef struct {
	EventID        uuid.UUID `json:"event_id"`
	EventType      string    `json:"event_type"`
	StreamType     string    `json:"stream_type"`
	StreamID       string    `json:"stream_id"`
	StreamVersion  int64     `json:"stream_version"`
	GlobalPosition int64     `json:"global_position"`
	RecordedAt     time.Time `json:"recorded_at"`
}

// Logged is a command with the events it caused: the payload of a message on
// the commands topic, and what the command log's live stream sends.
type Logged struct {
	Record
	Events []EventRef `json:"events"`
}

// Metadata keys of a commands-topic message.
const (
	MetaCommandID   = "command_id"
	MetaCommandType = "command_type"
	MetaStatus      = "status"
	MetaSeq         = "seq"
)

// commandNamespace derives message UUIDs from command ids, which may be
// longer than Watermill's 36-character uuid column.
var commandNamespace = uuid.MustParse("6f1d0c52-8d55-4a3c-9f0e-2b7a4f7e9c11")

// MessageUUID is the commands-topic message id of a command: stable, so
// consumers deduplicate by it.
func MessageUUID(commandID string) string {
	return uuid.NewSHA1(commandNamespace, []byte(commandID)).String()
}

func refs(envs []eventstore.Envelope) []EventRef {
	out := make([]EventRef, 0, len(envs))
	for _, e := range envs {
		out = append(out, EventRef{EventID: e.EventID, EventType: e.EventType, StreamType: e.StreamType, StreamID: e.StreamID,
			StreamVersion: e.StreamVersion, GlobalPosition: e.GlobalPosition, RecordedAt: e.RecordedAt})
	}
	return out
}

// Message is the command's message on the commands topic as the view
// watermill_commands serves it from the log (migration 00011, which builds
// the same in SQL: TestTheCommandsTopicIsTheLog compares the two). Nothing
// writes it: the batch consumers read the log (Rows) and build it here.
func Message(rec Record, envs []eventstore.Envelope) (*message.Message, error) {
	return messageOf(Logged{Record: rec, Events: refs(envs)})
}

func messageOf(l Logged) (*message.Message, error) {
	// The id stored with the command, as the view gives it.
	id := l.MessageUUID.String()
	if l.MessageUUID == uuid.Nil {
		id = MessageUUID(l.CommandID)
	}
	// What the payload decodes to, kept with the message (DecodeLogged):
	// without the fields it does not carry (its command payload is the
	// same JSON, perhaps spaced otherwise).
	l.ReasonKind, l.TransactionID, l.MessageUUID = "", 0, uuid.Nil
	if len(l.Metadata) == 0 {
		l.Metadata = nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // as json.Marshal but for <, > and &, which JSON needs no escape for
	if err := enc.Encode(l); err != nil {
		return nil, err
	}
	rec := l.Record
	m := message.NewMessage(id, bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	m.SetContext(context.WithValue(context.Background(), loggedKey{}, &l))
	m.Metadata = message.Metadata{
		MetaCommandID:             rec.CommandID,
		MetaCommandType:           rec.Type,
		MetaStatus:                rec.Status,
		MetaSeq:                   strconv.FormatInt(rec.Seq, 10),
		outbox.MetaStreamType:     rec.StreamType,
		outbox.MetaStreamID:       rec.StreamID,
		outbox.MetaGlobalPosition: strconv.FormatInt(rec.GlobalPosition, 10),
		outbox.MetaCorrelationID:  rec.CorrelationID,
		outbox.MetaCausationID:    rec.CausationID,
		outbox.MetaActor:          rec.Actor,
		outbox.MetaRecordedAt:     rec.RecordedAt.Format(time.RFC3339Nano),
	}
	return m, nil
}

// Rows reads the commands topic's next messages in q (a batch consumer's
// transaction) from the log: up to limit commands after the position
// after, in commit order, from transactions older than any still running
// (the rows the view watermill_commands would give, in its order), each
// with its offset (the seq) and transaction id for the ack. The messages
// are built here rather than by the view's SQL, which costs the database
// several times more per message.
func Rows(ctx context.Context, q commitorder.Querier, after commitorder.Cursor, limit int) ([]wsql.Row, error) {
	// Planned for these values each time (an unnamed statement): a generic
	// plan guesses how many rows follow and may scan the whole log.
	rows, _ := q.Query(ctx, selectSQL+`WHERE `+commitorder.After("seq", 1)+` AND `+commitorder.Visible+` `+commitorder.Order("seq")+` LIMIT $3`,
		append([]any{pgx.QueryExecModeCacheDescribe}, append(after.Args(), limit)...)...)
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	// The batch's events are those of its transactions: one range of the
	// events' commit-order index, read in order, where looking each up by
	// its id reads a random page of another index per event.
	from, to := commitorder.FormatXID(recs[0].TransactionID), commitorder.FormatXID(recs[len(recs)-1].TransactionID)
	evRows, _ := q.Query(ctx, refsSQL+`WHERE transaction_id BETWEEN $1::text::xid8 AND $2::text::xid8`, pgx.QueryExecModeCacheDescribe, from, to)
	cmds, err := collectRefs(recs, evRows)
	if err != nil {
		return nil, err
	}
	out := make([]wsql.Row, len(cmds))
	for i, c := range cmds {
		m, err := messageOf(c)
		if err != nil {
			return nil, err
		}
		out[i] = wsql.Row{Offset: c.Seq, UUID: []byte(m.UUID), Payload: m.Payload, Msg: m,
			ExtraData: map[string]any{"transaction_id": wsql.XID8(c.TransactionID)}}
	}
	return out, nil
}

// loggedKey carries, in the context of a message built here, the command
// it was built from.
type loggedKey struct{}

// DecodeLogged reads a commands-topic message. One built here (Rows) still
// carries its command in its context, unless a handler gave it another,
// and is not parsed again: the payload would decode to the same value.
func DecodeLogged(m *message.Message) (Logged, error) {
	if l, ok := m.Context().Value(loggedKey{}).(*Logged); ok {
		return *l, nil
	}
	var l Logged
	if err := json.Unmarshal(m.Payload, &l); err != nil {
		return l, fmt.Errorf("command message %s: %w", m.UUID, err)
	}
	return l, nil
}
