package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
	// Replayed is true when this result was recorded earlier under the same command id.
	Replayed bool `json:"replayed"`
}

// Log reads and writes the command log.
type Log struct{ pool *pgxpool.Pool }

// NewLog returns the command log on pool.
func NewLog(pool *pgxpool.Pool) *Log { return &Log{pool: pool} }

const insertSQL = `
INSERT INTO commands (command_id, command_type, payload, status, reason_kind, reason_code, reason, stream_type,
    stream_id, stream_version, global_position, event_ids, correlation_id, causation_id, actor, metadata, recorded_at)
VALUES ($1, $2, $3, $4, nullif($5, ''), nullif($6, ''), nullif($7, ''), $8, $9, $10, nullif($11, 0), $12, $13, $14, $15, $16, $17)
ON CONFLICT (command_id) DO NOTHING
RETURNING seq`

// insert writes rec in tx; inserted is false when the command id is already logged.
func (l *Log) insert(ctx context.Context, tx pgx.Tx, rec *Record) (inserted bool, err error) {
	md := rec.Metadata
	if md == nil {
		md = map[string]string{}
	}
	err = tx.QueryRow(ctx, insertSQL, rec.CommandID, rec.Type, rec.Payload, rec.Status, rec.ReasonKind, rec.ReasonCode,
		rec.Reason, rec.StreamType, rec.StreamID, rec.StreamVersion, rec.GlobalPosition, rec.EventIDs,
		rec.CorrelationID, rec.CausationID, rec.Actor, md, rec.RecordedAt).Scan(&rec.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record command %s: %w", rec.CommandID, err)
	}
	return true, nil
}

const selectSQL = `SELECT command_id, seq, transaction_id::text, command_type, payload, status, coalesce(reason_kind, ''),
    coalesce(reason_code, ''), coalesce(reason, ''), stream_type, stream_id, stream_version, coalesce(global_position, 0),
    event_ids, correlation_id, causation_id, actor, metadata, recorded_at FROM commands `

func scanRecord(row pgx.CollectableRow) (Record, error) {
	var r Record
	var txid string
	err := row.Scan(&r.CommandID, &r.Seq, &txid, &r.Type, &r.Payload, &r.Status, &r.ReasonKind, &r.ReasonCode, &r.Reason,
		&r.StreamType, &r.StreamID, &r.StreamVersion, &r.GlobalPosition, &r.EventIDs, &r.CorrelationID, &r.CausationID,
		&r.Actor, &r.Metadata, &r.RecordedAt)
	r.TransactionID, _ = strconv.ParseUint(txid, 10, 64)
	r.RecordedAt = r.RecordedAt.UTC()
	if r.EventIDs == nil {
		r.EventIDs = []uuid.UUID{}
	}
	return r, err
}

// ErrNotFound is returned for an unknown command id.
var ErrNotFound = errors.New("command not found")

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
	// AfterSeq pages: only commands with a greater seq.
	AfterSeq int64
	Limit    int
}

// List returns commands in the order they were logged (seq).
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	var cond []string
	var args []any
	add := func(expr string, v any) {
		args = append(args, v)
		cond = append(cond, fmt.Sprintf(expr, len(args)))
	}
	add("seq > $%d", f.AfterSeq)
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
	args = append(args, f.Limit)
	rows, _ := l.pool.Query(ctx, selectSQL+"WHERE "+strings.Join(cond, " AND ")+fmt.Sprintf(" ORDER BY seq LIMIT $%d", len(args)), args...)
	return pgx.CollectRows(rows, scanRecord)
}
