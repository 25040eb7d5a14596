// Package commandlog is the command log: every command with its outcome
// and the events it caused, written in the command's own transaction, read
// by the API and the live streams, and by Watermill subscribers (the
// timeline projection among them) as the commands topic: the table
// watermill_commands of that topic is a view over the log (migration 00011).
package commandlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commitorder"
)

// Status of a logged command.
const (
	StatusAccepted = "accepted"
	StatusRejected = "rejected"
)

// Record is one command in the command log with its outcome.
type Record struct {
	CommandID      string            `json:"command_id"`
	Seq            int64             `json:"seq"`
	Type           string            `json:"type"`
	Payload        json.RawMessage   `json:"payload"`
	Status         string            `json:"status"`
	ReasonKind     string            `json:"-"`
	ReasonCode     string            `json:"reason_code,omitempty"`
	Reason         string            `json:"reason,omitempty"`
	StreamType     string            `json:"stream_type"`
	StreamID       string            `json:"stream_id"`
	StreamVersion  int64             `json:"stream_version"`
	GlobalPosition int64             `json:"global_position,omitempty"`
	EventIDs       []uuid.UUID       `json:"event_ids"`
	CorrelationID  string            `json:"correlation_id"`
	CausationID    string            `json:"causation_id,omitempty"`
	Actor          string            `json:"actor"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	RecordedAt     time.Time         `json:"recorded_at"`
	// TransactionID orders the log by commit, as the event log is ordered.
	TransactionID uint64 `json:"-"`
	// MessageUUID is the id of the command's message on the commands
	// topic (MessageUUID(CommandID), stored with the command).
	MessageUUID uuid.UUID `json:"-"`
	// Replayed is true when this result was recorded earlier under the same command id.
	Replayed bool `json:"replayed"`
}

// Log reads and writes the command log.
type Log struct{ pool *pgxpool.Pool }

// NewLog returns the command log on pool.
func NewLog(pool *pgxpool.Pool) *Log { return &Log{pool: pool} }

// insertSQL logs a group's commands with the seqs the group reserved; a
// command id logged before is a unique violation of commands_pkey.
const insertSQL = `
INSERT INTO commands (seq, command_id, command_type, payload, status, reason_kind, reason_code, reason, stream_type,
    stream_id, stream_version, global_position, event_ids, correlation_id, causation_id, actor, metadata, recorded_at, message_uuid)
OVERRIDING SYSTEM VALUE
SELECT (r->>'seq')::bigint, r->>'id', r->>'type', r->'payload', r->>'status', nullif(r->>'rk', ''), nullif(r->>'rc', ''),
       nullif(r->>'r', ''), r->>'st', r->>'sid', (r->>'sv')::bigint, nullif((r->>'gp')::bigint, 0),
       ARRAY(SELECT jsonb_array_elements_text(r->'events'))::uuid[], r->>'corr', r->>'caus', r->>'actor', r->'md',
       (r->>'at')::timestamptz, (r->>'mu')::uuid
FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(r, n) ORDER BY n`

// logRow is one command of insertSQL.
type logRow struct {
	Seq        int64             `json:"seq"`
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Payload    json.RawMessage   `json:"payload"`
	Status     string            `json:"status"`
	ReasonKind string            `json:"rk"`
	ReasonCode string            `json:"rc"`
	Reason     string            `json:"r"`
	StreamType string            `json:"st"`
	StreamID   string            `json:"sid"`
	Version    int64             `json:"sv"`
	Position   int64             `json:"gp"`
	Events     []uuid.UUID       `json:"events"`
	Corr       string            `json:"corr"`
	Caus       string            `json:"caus"`
	Actor      string            `json:"actor"`
	Metadata   map[string]string `json:"md"`
	At         time.Time         `json:"at"`
	Message    string            `json:"mu"`
}

// QueueInsert queues the insert of recs (their Seq set) on b.
func QueueInsert(b *pgx.Batch, recs []*Record) error {
	rows := make([]logRow, len(recs))
	for i, r := range recs {
		md := r.Metadata
		if md == nil {
			md = map[string]string{}
		}
		rows[i] = logRow{Seq: r.Seq, ID: r.CommandID, Type: r.Type, Payload: r.Payload, Status: r.Status, ReasonKind: r.ReasonKind,
			ReasonCode: r.ReasonCode, Reason: r.Reason, StreamType: r.StreamType, StreamID: r.StreamID, Version: r.StreamVersion,
			Position: r.GlobalPosition, Events: r.EventIDs, Corr: r.CorrelationID, Caus: r.CausationID, Actor: r.Actor, Metadata: md, At: r.RecordedAt,
			Message: MessageUUID(r.CommandID)}
	}
	raw, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	b.Queue(insertSQL, raw)
	return nil
}

const selectSQL = `SELECT command_id, seq, transaction_id::text AS txid, command_type, payload, status, coalesce(reason_kind, ''),
    coalesce(reason_code, ''), coalesce(reason, ''), stream_type, stream_id, stream_version, coalesce(global_position, 0),
    event_ids, correlation_id, causation_id, actor, metadata, recorded_at, message_uuid FROM commands `

func scanRecord(row pgx.CollectableRow) (Record, error) {
	var r Record
	var txid string
	err := row.Scan(&r.CommandID, &r.Seq, &txid, &r.Type, &r.Payload, &r.Status, &r.ReasonKind, &r.ReasonCode, &r.Reason,
		&r.StreamType, &r.StreamID, &r.StreamVersion, &r.GlobalPosition, &r.EventIDs, &r.CorrelationID, &r.CausationID,
		&r.Actor, &r.Metadata, &r.RecordedAt, &r.MessageUUID)
	if err != nil {
		return r, err
	}
	r.RecordedAt = r.RecordedAt.UTC()
	if r.EventIDs == nil {
		r.EventIDs = []uuid.UUID{}
	}
	r.TransactionID, err = commitorder.ParseXID(txid)
	return r, err
}

// ErrNotFound is returned for an unknown command id.
var ErrNotFound = errors.New("command not found")

// Logged returns which of ids are in the log.
func (l *Log) Logged(ctx context.Context, ids []string) ([]string, error) {
	rows, _ := l.pool.Query(ctx, `SELECT command_id FROM commands WHERE command_id = ANY($1)`, ids)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Get returns one command.
func (l *Log) Get(ctx context.Context, id string) (Record, error) {
	rows, _ := l.pool.Query(ctx, selectSQL+`WHERE command_id = $1`, id)
	r, err := pgx.CollectExactlyOneRow(rows, scanRecord)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	return r, err
}

// Filter narrows List; empty fields match everything.
type Filter struct {
	Type       string
	Status     string
	StreamType string
	StreamID   string
	// Actor keeps the commands that principal sent (a customer's own).
	Actor string
	// AfterSeq pages: only commands logged after the one with this seq
	// (0: from the start), in commit order.
	AfterSeq int64
	Limit    int
}

// List returns commands in commit order after f.AfterSeq (ErrNotFound if
// no command has that seq). Like ReadAll it reads only transactions older
// than the oldest one still running, so a page never skips a command that
// commits late with a lower seq.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	after, err := l.CursorAt(ctx, f.AfterSeq)
	if err != nil {
		return nil, err
	}
	cond := []string{commitorder.After("seq", 1), commitorder.Visible}
	args := after.Args()
	add := func(expr string, v any) {
		args = append(args, v)
		cond = append(cond, fmt.Sprintf(expr, len(args)))
	}
	if f.Type != "" {
		add("command_type = $%d", f.Type)
	}
	if f.Status != "" {
		add("status = $%d", f.Status)
	}
	if f.StreamType != "" {
		add("stream_type = $%d", f.StreamType)
	}
	if f.StreamID != "" {
		add("stream_id = $%d", f.StreamID)
	}
	if f.Actor != "" {
		add("actor = $%d", f.Actor)
	}
	args = append(args, f.Limit)
	rows, _ := l.pool.Query(ctx, selectSQL+"WHERE "+strings.Join(cond, " AND ")+fmt.Sprintf(" %s LIMIT $%d", commitorder.Order("seq"), len(args)), args...)
	return pgx.CollectRows(rows, scanRecord)
}

// Cursor returns the place of r in the log, which is in commit order.
func (r Record) Cursor() commitorder.Cursor {
	return commitorder.Cursor{TransactionID: r.TransactionID, Seq: r.Seq}
}

// CursorAt returns the cursor of the command with sequence number seq; 0 is the start.
func (l *Log) CursorAt(ctx context.Context, seq int64) (commitorder.Cursor, error) {
	c, found, err := commitorder.At(ctx, l.pool, "commands", "seq", seq)
	if err == nil && !found {
		err = ErrNotFound
	}
	return c, err
}

// ReadAll returns up to limit commands after c in commit order, with their
// events. Like the event log it reads only transactions older than the
// oldest one still running, so a late commit is never skipped.
func (l *Log) ReadAll(ctx context.Context, c commitorder.Cursor, limit int, f Filter) ([]Logged, error) {
	where := `WHERE ` + commitorder.After("seq", 1) + ` AND ` + commitorder.Visible
	args := c.Args()
	for _, kv := range []struct{ col, v string }{{"command_type", f.Type}, {"status", f.Status}, {"stream_type", f.StreamType}, {"stream_id", f.StreamID}, {"actor", f.Actor}} {
		if kv.v != "" {
			args = append(args, kv.v)
			where += fmt.Sprintf(" AND %s = $%d", kv.col, len(args))
		}
	}
	args = append(args, limit)
	return readLogged(ctx, l.pool, where+fmt.Sprintf(" %s LIMIT $%d", commitorder.Order("seq"), len(args)), args...)
}

// ReadUpTo returns up to limit commands in (after, upTo] in commit order with
// their events, through q (a rebuild reads inside its own transaction).
func (l *Log) ReadUpTo(ctx context.Context, q commitorder.Querier, after, upTo commitorder.Cursor, limit int) ([]Logged, error) {
	return readLogged(ctx, q, `WHERE `+commitorder.After("seq", 1)+` AND `+commitorder.UpTo("seq", 3)+` `+commitorder.Order("seq")+` LIMIT $5`,
		append(append(after.Args(), upTo.Args()...), limit)...)
}

func readLogged(ctx context.Context, q commitorder.Querier, where string, args ...any) ([]Logged, error) {
	rows, _ := q.Query(ctx, selectSQL+where, args...)
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, err
	}
	var ids []uuid.UUID
	for _, r := range recs {
		ids = append(ids, r.EventIDs...)
	}
	if len(ids) == 0 {
		return withEvents(recs, nil), nil
	}
	evRows, _ := q.Query(ctx, refsSQL+`WHERE event_id = ANY($1)`, ids)
	return collectRefs(recs, evRows)
}

// refsSQL selects the references of events (EventRef).
const refsSQL = `SELECT event_id, event_type, stream_type, stream_id, stream_version, global_position, recorded_at FROM events `

// collectRefs returns recs with their events' references, read from rows.
func collectRefs(recs []Record, rows pgx.Rows) ([]Logged, error) {
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (EventRef, error) {
		var e EventRef
		err := row.Scan(&e.EventID, &e.EventType, &e.StreamType, &e.StreamID, &e.StreamVersion, &e.GlobalPosition, &e.RecordedAt)
		e.RecordedAt = e.RecordedAt.UTC()
		return e, err
	})
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]EventRef, len(evs))
	for _, e := range evs {
		byID[e.EventID] = e
	}
	return withEvents(recs, byID), nil
}

func withEvents(recs []Record, byID map[uuid.UUID]EventRef) []Logged {
	out := make([]Logged, 0, len(recs))
	for _, r := range recs {
		lg := Logged{Record: r, Events: make([]EventRef, 0, len(r.EventIDs))}
		for _, id := range r.EventIDs {
			if e, ok := byID[id]; ok { // as the view's join: none is missing but in a damaged log
				lg.Events = append(lg.Events, e)
			}
		}
		out = append(out, lg)
	}
	return out
}
