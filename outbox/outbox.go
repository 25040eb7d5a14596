// Package outbox writes events to Watermill SQL topics inside the command's
// own transaction (watermill-sql/v4 with the pgx adapter), so an event is
// published if and only if it is stored. Subscribers get them at least once,
// in commit order.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/eventstore"
)

// Metadata keys of every message; the payload is the event's JSON.
const (
	MetaEventID        = "event_id"
	MetaEventType      = "event_type"
	MetaSchemaVersion  = "schema_version"
	MetaStreamType     = "stream_type"
	MetaStreamID       = "stream_id"
	MetaStreamVersion  = "stream_version"
	MetaGlobalPosition = "global_position"
	MetaRecordedAt     = "recorded_at"
	MetaCorrelationID  = "correlation_id"
	MetaCausationID    = "causation_id"
	MetaActor          = "actor"
	MetaOnBehalfOf     = "on_behalf_of"
	MetaCustomerID     = "customer_id"
	// MetaTraceParent is the W3C trace context of the command that wrote
	// the event: consumers continue its trace.
	MetaTraceParent = "traceparent"
)

// Topic is the Watermill topic of a stream type; its tables are
// watermill_<topic> and watermill_offsets_<topic> (created by migrations).
func Topic(streamType string) string { return streamType + "_events" }

// SchemaAdapter is the watermill-sql schema shared by the publisher and
// subscribers. Auto-initialisation stays off: migrations create the tables.
var SchemaAdapter = wsql.DefaultPostgreSQLSchema{}

// CommandsTopic carries every logged command with the events it caused.
const CommandsTopic = "commands"

// Topics are every topic the service publishes to (poison aside).
var Topics = []string{Topic("order"), Topic("inventory"), Topic("wallet"), Topic("shipment"), Topic("payment"), CommandsTopic}

// PoisonTopic holds messages a consumer gave up on after its retries.
const PoisonTopic = "poison"

// PublishTo writes msgs to topic in tx.
func PublishTo(ctx context.Context, tx pgx.Tx, topic string, msgs ...*message.Message) error {
	pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: SchemaAdapter}, nil)
	if err != nil {
		return fmt.Errorf("outbox publisher: %w", err)
	}
	for _, m := range msgs {
		m.SetContext(ctx)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		return fmt.Errorf("outbox publish to %s: %w", topic, err)
	}
	return nil
}

// Queue queues the inserts of one message per event, grouped by topic in
// order, on b: a command sends them with its other writes in one round
// trip.
func Queue(b *pgx.Batch, envs []eventstore.Envelope) error {
	for start := 0; start < len(envs); {
		end := start + 1
		for end < len(envs) && envs[end].StreamType == envs[start].StreamType {
			end++
		}
		msgs := make([]*message.Message, 0, end-start)
		for _, e := range envs[start:end] {
			msgs = append(msgs, Message(e))
		}
		if err := QueueTo(b, Topic(envs[start].StreamType), msgs...); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// QueueTo queues the insert of msgs into topic on b. The SQL and its
// arguments are Watermill's own (the schema adapter's insert query), so
// the rows are those its publisher would write.
func QueueTo(b *pgx.Batch, topic string, msgs ...*message.Message) error {
	if !topicName.MatchString(topic) {
		return fmt.Errorf("outbox: topic %q is not [a-z_]+", topic)
	}
	q, err := SchemaAdapter.InsertQuery(wsql.InsertQueryParams{Topic: topic, Msgs: msgs})
	if err != nil {
		return fmt.Errorf("outbox insert into %s: %w", topic, err)
	}
	b.Queue(q.Query, q.Args...)
	return nil
}

// Envelope rebuilds the event envelope from a message of an event topic; the
// event is left undecoded (Event is nil).
func Envelope(m *message.Message) (eventstore.Envelope, error) {
	md := m.Metadata
	id, err := uuid.Parse(md.Get(MetaEventID))
	if err != nil {
		return eventstore.Envelope{}, fmt.Errorf("message %s: event_id: %w", m.UUID, err)
	}
	e := eventstore.Envelope{
		EventID: id, StreamType: md.Get(MetaStreamType), StreamID: md.Get(MetaStreamID), EventType: md.Get(MetaEventType),
		CorrelationID: md.Get(MetaCorrelationID), CausationID: md.Get(MetaCausationID), Actor: md.Get(MetaActor),
		OnBehalfOf: md.Get(MetaOnBehalfOf), CustomerID: md.Get(MetaCustomerID), TraceParent: md.Get(MetaTraceParent),
		Data: json.RawMessage(m.Payload),
	}
	var errs []error
	num := func(key string, dst *int64) {
		v, err := strconv.ParseInt(md.Get(key), 10, 64)
		*dst = v
		errs = append(errs, err)
	}
	num(MetaStreamVersion, &e.StreamVersion)
	num(MetaGlobalPosition, &e.GlobalPosition)
	var sv int64
	num(MetaSchemaVersion, &sv)
	e.SchemaVersion = int(sv)
	e.RecordedAt, err = time.Parse(time.RFC3339Nano, md.Get(MetaRecordedAt))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return eventstore.Envelope{}, fmt.Errorf("message %s: metadata: %w", m.UUID, err)
	}
	return e, nil
}

// Message is the Watermill message of an event: its UUID is the event id,
// so consumers and brokers can deduplicate redeliveries by message id.
func Message(e eventstore.Envelope) *message.Message {
	m := message.NewMessage(e.EventID.String(), message.Payload(e.Data))
	m.Metadata = message.Metadata{
		MetaEventID:        e.EventID.String(),
		MetaEventType:      e.EventType,
		MetaSchemaVersion:  strconv.Itoa(e.SchemaVersion),
		MetaStreamType:     e.StreamType,
		MetaStreamID:       e.StreamID,
		MetaStreamVersion:  strconv.FormatInt(e.StreamVersion, 10),
		MetaGlobalPosition: strconv.FormatInt(e.GlobalPosition, 10),
		MetaRecordedAt:     e.RecordedAt.Format(time.RFC3339Nano),
		MetaCorrelationID:  e.CorrelationID,
		MetaCausationID:    e.CausationID,
		MetaActor:          e.Actor,
	}
	if e.OnBehalfOf != "" {
		m.Metadata[MetaOnBehalfOf] = e.OnBehalfOf
	}
	if e.CustomerID != "" {
		m.Metadata[MetaCustomerID] = e.CustomerID
	}
	if e.TraceParent != "" {
		m.Metadata[MetaTraceParent] = e.TraceParent
	}
	return m
}

var topicName = regexp.MustCompile(`^[a-z_]+$`)

// TopicEnd returns the position of the last message of topic (zero when
// empty): where a consumer that has caught up stands. Not a place to start
// reading from (a transaction still running may yet commit messages below
// it): see TailFrom.
func TopicEnd(ctx context.Context, pool *pgxpool.Pool, topic string) (uint64, int64, error) {
	if !topicName.MatchString(topic) {
		return 0, 0, fmt.Errorf("topic %q: topics are [a-z_]+", topic)
	}
	var txid string
	var offset int64
	err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(transaction_id), '0')::text, coalesce(max("offset"), 0)
		FROM watermill_%s WHERE transaction_id = (SELECT max(transaction_id) FROM watermill_%[1]s)`, topic)).Scan(&txid, &offset)
	if err != nil {
		return 0, 0, err
	}
	tx, err := commitorder.ParseXID(txid)
	return tx, offset, err
}

// TailFrom is where a reader of topic starts (ReadTopic after it): from
// "beginning", from "end" (what commits from now on: commitorder.Now, so a
// transaction still running is not skipped), or from a message offset
// (that message included).
func TailFrom(ctx context.Context, pool *pgxpool.Pool, topic, from string) (uint64, int64, error) {
	switch from {
	case "beginning":
		return 0, 0, nil
	case "end":
		c, err := commitorder.Now(ctx, pool)
		return c.TransactionID, c.Seq, err
	}
	o, err := strconv.ParseInt(from, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("-from %q: want beginning, end or an offset", from)
	}
	tx, err := MessageTx(ctx, pool, topic, o)
	return tx, o - 1, err // just before the message at that offset
}

// MessageTx returns the transaction id of the message at offset in topic.
func MessageTx(ctx context.Context, pool *pgxpool.Pool, topic string, offset int64) (uint64, error) {
	if !topicName.MatchString(topic) {
		return 0, fmt.Errorf("topic %q: topics are [a-z_]+", topic)
	}
	c, found, err := commitorder.At(ctx, pool, "watermill_"+topic, `"offset"`, offset)
	if err == nil && !found {
		err = fmt.Errorf("no message at offset %d of %s", offset, topic)
	}
	return c.TransactionID, err
}

// AckedSQL selects a consumer group's position in topic (tx, off): the
// last message it acknowledged, or the start when it has none. group is
// SQL (a parameter such as "$2").
func AckedSQL(topic, group string) string {
	return fmt.Sprintf(`SELECT coalesce(max(last_processed_transaction_id), '0'::xid8) AS tx, coalesce(max(offset_acked), 0) AS off
		FROM watermill_offsets_%s WHERE consumer_group = %s`, topic, group)
}

// Consumer returns where a consumer group stands in topic: the last
// message it acknowledged (Seq is its offset; zero: none). With hold, the
// group waits until q (a transaction) ends: the offset row is updated, not
// only locked, because watermill-sql reads in REPEATABLE READ, so a
// consumer that took its snapshot before q commits fails on this row and
// starts over with a fresh snapshot, instead of applying messages over
// rows it cannot see.
func Consumer(ctx context.Context, q commitorder.Querier, topic, group string, hold bool) (commitorder.Cursor, error) {
	if !topicName.MatchString(topic) {
		return commitorder.Cursor{}, fmt.Errorf("topic %q: topics are [a-z_]+", topic)
	}
	var offset int64
	var txid string
	var err error
	if hold {
		if _, err := q.Exec(ctx, fmt.Sprintf(`INSERT INTO watermill_offsets_%s (consumer_group, offset_acked, last_processed_transaction_id)
			VALUES ($1, 0, '0') ON CONFLICT (consumer_group) DO NOTHING`, topic), group); err != nil {
			return commitorder.Cursor{}, err
		}
		err = q.QueryRow(ctx, fmt.Sprintf(`UPDATE watermill_offsets_%s SET offset_acked = offset_acked WHERE consumer_group = $1
			RETURNING offset_acked, last_processed_transaction_id::text`, topic), group).Scan(&offset, &txid)
	} else {
		err = q.QueryRow(ctx, `SELECT off, tx::text FROM (`+AckedSQL(topic, "$1")+`) a`, group).Scan(&offset, &txid)
	}
	if err != nil {
		return commitorder.Cursor{}, err
	}
	tx, err := commitorder.ParseXID(txid)
	return commitorder.Cursor{TransactionID: tx, Seq: offset}, err
}

// MessageAt returns the message of topic at c (its transaction and offset).
func MessageAt(ctx context.Context, q commitorder.Querier, topic string, c commitorder.Cursor) (Stored, error) {
	if !topicName.MatchString(topic) {
		return Stored{}, fmt.Errorf("topic %q: topics are [a-z_]+", topic)
	}
	rows, _ := q.Query(ctx, fmt.Sprintf(`SELECT "offset", transaction_id::text AS txid, uuid, created_at, payload, metadata
		FROM watermill_%s WHERE transaction_id = $1::text::xid8 AND "offset" = $2`, topic), c.Args()...)
	s, err := pgx.CollectExactlyOneRow(rows, scanStored)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stored{}, fmt.Errorf("no message at offset %d of %s", c.Seq, topic)
	}
	return s, err
}

// Stored is a message as it sits in a topic table.
type Stored struct {
	Offset        int64
	TransactionID uint64
	UUID          string
	CreatedAt     time.Time
	Payload       json.RawMessage
	Metadata      map[string]string
}

// ReadTopic returns up to limit messages of topic after (transaction id,
// offset) in the order consumers get them, only from transactions older than
// any still running, like a watermill-sql subscriber, but without a consumer
// group: it changes nothing.
func ReadTopic(ctx context.Context, pool *pgxpool.Pool, topic string, afterTx uint64, afterOffset int64, limit int) ([]Stored, error) {
	if !topicName.MatchString(topic) {
		return nil, fmt.Errorf("topic %q: topics are [a-z_]+", topic)
	}
	rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT "offset", transaction_id::text AS txid, uuid, created_at, payload, metadata
		FROM watermill_%s WHERE %s AND %s %s LIMIT $3`, topic, commitorder.After(`"offset"`, 1), commitorder.Visible, commitorder.Order(`"offset"`)),
		commitorder.FormatXID(afterTx), afterOffset, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanStored)
}

func scanStored(r pgx.CollectableRow) (Stored, error) {
	var s Stored
	var txid string
	var payload, md []byte
	err := r.Scan(&s.Offset, &txid, &s.UUID, &s.CreatedAt, &payload, &md)
	if err != nil {
		return s, err
	}
	if s.TransactionID, err = commitorder.ParseXID(txid); err != nil {
		return s, err
	}
	s.Payload = payload
	return s, json.Unmarshal(md, &s.Metadata)
}

// Backlog is how many messages of a topic a consumer group has not acked.
type Backlog struct {
	Topic, ConsumerGroup string
	Messages             int64
}

// Backlogs returns the backlog of every consumer group of every topic: what
// the outbox still has to deliver.
func Backlogs(ctx context.Context, q commitorder.Querier) ([]Backlog, error) {
	var out []Backlog
	for _, t := range append(Topics, PoisonTopic) {
		rows, _ := q.Query(ctx, fmt.Sprintf(`SELECT o.consumer_group, (SELECT count(*) FROM watermill_%[1]s m
			WHERE (m.transaction_id, m."offset") > (o.last_processed_transaction_id, o.offset_acked))
			FROM watermill_offsets_%[1]s o`, t))
		b, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Backlog, error) {
			b := Backlog{Topic: t}
			return b, row.Scan(&b.ConsumerGroup, &b.Messages)
		})
		if err != nil {
			return nil, fmt.Errorf("backlog of %s: %w", t, err)
		}
		out = append(out, b...)
	}
	return out, nil
}
