package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/internal/dbfailure"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/tracing"
)

// batchConsumer consumes a topic as a consumer group a batch per
// transaction, for a Handler with HandleBatch. Watermill's router hands a
// handler one message at a time; a set-based handler needs the batch. The
// SQL is watermill-sql's own (the schema adapter's select for the group,
// which locks the group's offset row, and the offsets adapter's ack), so
// the offsets, the consumer group and everything that reads them are the
// same as a Watermill subscriber's, and the two may even take turns.
type batchConsumer struct {
	pool    *pgxpool.Pool
	cfg     RouterConfig
	h       Handler
	schema  wsql.DefaultPostgreSQLSchema
	offsets wsql.DefaultPostgreSQLOffsetsAdapter
	handle  message.NoPublishHandlerFunc // Handle, traced and observed
	failing failing
}

func newBatchConsumer(pool *pgxpool.Pool, cfg RouterConfig, h Handler) *batchConsumer {
	size := cfg.SetBatchSize
	if h.BatchSize > 0 {
		size = h.BatchSize
	}
	return &batchConsumer{pool: pool, cfg: cfg, h: h, schema: wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: size},
		handle: logged(cfg.Logger, cfg.Observe, h)}
}

// start records the group's zero offset (as a Watermill subscriber does
// before subscribing: the select locks that row).
func (c *batchConsumer) start(ctx context.Context) error {
	qs, err := c.offsets.BeforeSubscribingQueries(wsql.BeforeSubscribingQueriesParams{Topic: c.h.Topic, ConsumerGroup: c.h.ConsumerGroup})
	if err != nil {
		return err
	}
	for _, q := range qs {
		if _, err := c.pool.Exec(ctx, q.Query, q.Args...); err != nil {
			return fmt.Errorf("consumer group %s of %s: %w", c.h.ConsumerGroup, c.h.Topic, err)
		}
	}
	return nil
}

// pending reports whether the topic holds a visible row after the
// group's offset: one indexed read, outside any transaction. A poll that
// finds nothing then costs one query, where the group's transaction takes
// four round trips, a transaction id and a commit (its lock of the offset
// row is a write). The offset is read from its row each time, never
// remembered: a row may move back (an operator's rewind; a batch and its
// ack lost together in a server crash, for a read model commits without
// waiting for the WAL flush), and what lies after it is delivered again.
//
// It is written as the first row in the index's order, not EXISTS: the
// planner, guessing a third of the table follows, expects EXISTS to meet a
// row at once in a sequential scan, which then reads every row when none
// follows; the ORDER BY makes the index the only cheap way.
func (c *batchConsumer) pending(ctx context.Context) (bool, error) {
	var one int
	q := c.pendingQuery()
	err := c.pool.QueryRow(ctx, q.Query, q.Args...).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (c *batchConsumer) pendingQuery() wsql.Query {
	return wsql.Query{Query: `SELECT 1 FROM ` + c.schema.MessagesTable(c.h.Topic) + `
		WHERE (transaction_id, "offset") > (SELECT last_processed_transaction_id, coalesce(offset_acked, 0) FROM ` + c.offsets.MessagesOffsetsTable(c.h.Topic) + `
			WHERE consumer_group = $1)
		    AND ` + commitorder.Visible + `
		ORDER BY transaction_id, "offset" LIMIT 1`, Args: []any{c.h.ConsumerGroup}}
}

// run consumes until ctx ends, waiting between reads as a Watermill
// subscriber does (wakeBackoff): at once after a batch, for a commit of
// this process or PollInterval after an empty read, a second after an
// error.
func (c *batchConsumer) run(ctx context.Context) error {
	backoff := newWakeBackoff(c.cfg, c.h.Topic)
	wlog := watermill.NewSlogLogger(c.cfg.Logger).With(watermill.LogFields{"handler": c.h.Name, "topic": c.h.Topic}) // logs the errors
	for ctx.Err() == nil {
		n, err := 0, error(nil)
		if yes, peekErr := c.pending(ctx); peekErr != nil || yes {
			n, err = c.step(ctx) // a failed look is the transaction's to report
		}
		if ctx.Err() != nil {
			return nil
		}
		var retry *retryLater
		if errors.As(err, &retry) {
			sleep(ctx, retry.wait) // outside any transaction: the other consumers go on
			continue
		}
		sleep(ctx, backoff.HandleError(wlog, n == 0, err))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// step applies the next batch in one transaction with the ack. When the
// batch fails, it is handled again message by message (oneByOne).
func (c *batchConsumer) step(ctx context.Context) (int, error) {
	n, err := c.inTx(ctx, func(tx pgx.Tx, rows []wsql.Row) (int, error) {
		if len(rows) == 0 {
			return 0, nil
		}
		msgs := make([]*message.Message, len(rows))
		for i, r := range rows {
			msgs[i] = r.Msg
		}
		ctx, span := c.span(ctx, msgs)
		defer span.End()
		if err := safely(func() error { return c.h.HandleBatch(ctx, tx, msgs) }); err != nil {
			span.SetStatus(codes.Error, err.Error())
			return 0, &batchError{err}
		}
		return len(rows), c.ack(ctx, tx, rows[len(rows)-1], rows)
	})
	var be *batchError
	if errors.As(err, &be) {
		c.cfg.Logger.Debug("batch failed: one message at a time", "handler", c.h.Name, "err", be.err)
		return c.inTx(ctx, c.oneByOne)
	}
	if err == nil && c.cfg.Observe != nil {
		for range n {
			c.cfg.Observe(c.h.Name, nil)
		}
	}
	return n, err
}

// span traces a batch: a batch of one continues its message's trace, as a
// message handler does; a larger one links to each message's trace.
func (c *batchConsumer) span(ctx context.Context, msgs []*message.Message) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "watermill"), attribute.String("messaging.destination.name", c.h.Topic),
			attribute.String("messaging.consumer.group.name", c.h.ConsumerGroup), attribute.Int("messaging.batch.message_count", len(msgs)))}
	if len(msgs) == 1 {
		ctx = tracing.Extract(ctx, msgs[0].Metadata.Get(outbox.MetaTraceParent))
	} else {
		for _, m := range msgs[:min(len(msgs), maxLinks)] {
			if sc := trace.SpanContextFromContext(tracing.Extract(ctx, m.Metadata.Get(outbox.MetaTraceParent))); sc.IsValid() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
			}
		}
	}
	return tracing.Tracer().Start(ctx, c.h.Name+" "+c.h.Topic, opts...)
}

// maxLinks bounds the links of a batch's span.
const maxLinks = 128

type batchError struct{ err error }

func (e *batchError) Error() string { return e.err.Error() }

// inTx reads the group's next batch in a transaction (watermill-sql's
// isolation level) and commits what f did with it.
func (c *batchConsumer) inTx(ctx context.Context, f func(tx pgx.Tx, rows []wsql.Row) (int, error)) (int, error) {
	// A read model is derived: its commit need not wait for the WAL flush
	// (it would queue behind the commands' own). A crash can lose a batch
	// only together with its ack, in the same transaction, and the next
	// read starts from the offset row, so the batch is delivered again.
	// Set with the BEGIN, in its round trip.
	tx, err := c.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL synchronous_commit = off"})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	lock, err := c.offsets.NextOffsetQuery(wsql.NextOffsetQueryParams{Topic: c.h.Topic, ConsumerGroup: c.h.ConsumerGroup})
	if err != nil {
		return 0, err
	}
	var at wsql.XID8
	var offset *int64
	if err := tx.QueryRow(ctx, lock.Query, lock.Args...).Scan(&offset, &at); err != nil {
		if errors.Is(err, pgx.ErrNoRows) { // no offset row: nothing to lock, nothing read (as watermill-sql)
			return 0, nil
		}
		return 0, err
	}
	after := commitorder.Cursor{TransactionID: uint64(at)}
	if offset != nil {
		after.Seq = *offset
	}
	rows, err := c.read(ctx, tx, after)
	if err != nil {
		return 0, err
	}
	n, err := f(tx, rows)
	if err != nil && !errors.As(err, new(*retryLater)) {
		return n, err
	}
	// A message to retry later: what came before it commits now.
	if cErr := tx.Commit(ctx); cErr != nil {
		var retry *retryLater
		if errors.As(err, &retry) {
			// The connection is lost with the message: nothing of this
			// transaction committed, and it is all read again after the
			// message's own wait.
			return 0, &retryLater{wait: retry.wait, err: errors.Join(retry.err, cErr)}
		}
		return 0, cErr
	}
	return n, err
}

// read reads the group's next batch after its offset, at: the handler's
// Read, or the rows of the topic's table (selectQuery).
func (c *batchConsumer) read(ctx context.Context, tx pgx.Tx, at commitorder.Cursor) ([]wsql.Row, error) {
	if c.h.Read != nil {
		return c.h.Read(ctx, tx, at, c.schema.SubscribeBatchSize)
	}
	q := c.selectQuery(at)
	// Planned for these values each time (an unnamed statement), never
	// once for any (a prepared statement's generic plan, which guesses).
	res, err := tx.Query(ctx, q.Query, append([]any{pgx.QueryExecModeCacheDescribe}, q.Args...)...)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var rows []wsql.Row
	for res.Next() {
		r, err := c.schema.UnmarshalMessage(wsql.UnmarshalMessageParams{Row: res})
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, res.Err()
}

// selectQuery reads the group's next batch after at, the group's offset,
// read and locked (the offsets adapter's NextOffsetQuery) in the same
// transaction: watermill-sql's select (DefaultPostgreSQLSchema.SelectQuery),
// the same rows in the same order, but with the offset passed as values
// and its condition written as one row comparison, (transaction_id,
// offset) > (at), which is what watermill-sql's "same transaction and a
// later offset, or a later transaction" means. PostgreSQL takes a row
// comparison with known values as a bound of the primary key's index scan
// and sees from the index how few rows follow, so a read walks the index
// from the group's position and stops after the batch. Watermill-sql's
// OR is no index bound: each read fetched every pending row and sorted
// them for the first SubscribeBatchSize, and a backlog of wide messages
// (the commands topic's) sorted on disk. Nor is a comparison with the
// offset row read in the same statement: its values are known only as the
// query runs, the planner guesses that a third of the table follows, and
// for a batch larger than that (a young topic; the timeline's 4,000) it
// chose to scan the whole topic and sort it, on every poll.
func (c *batchConsumer) selectQuery(at commitorder.Cursor) wsql.Query {
	return wsql.Query{Query: `SELECT "offset", transaction_id, uuid, payload, metadata FROM ` + c.schema.MessagesTable(c.h.Topic) + `
		WHERE (transaction_id, "offset") > ($1::text::xid8, $2)
		    AND ` + commitorder.Visible + `
		ORDER BY transaction_id ASC, "offset" ASC
		LIMIT ` + strconv.Itoa(c.schema.SubscribeBatchSize), Args: at.Args()}
}

func (c *batchConsumer) ack(ctx context.Context, tx pgx.Tx, last wsql.Row, rows []wsql.Row) error {
	q, err := c.offsets.AckMessageQuery(wsql.AckMessageQueryParams{Topic: c.h.Topic, LastRow: last, Rows: rows, ConsumerGroup: c.h.ConsumerGroup})
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, q.Query, q.Args...)
	return err
}

// oneByOne handles rows through Handle, each in a savepoint of this
// transaction: the ones that apply are acked with it. A message that fails
// is not retried here, for nothing may sleep while this transaction holds
// the group's offset row (and, open, every reader's horizon): the
// transaction commits what came before it and the consumer reads it again
// after a wait. A transient failure (dbfailure.Transient: the connection
// lost, a deadlock, a serialization failure, a lock or statement timeout,
// a server restarting) is the database's, not the message's: it is retried
// with a capped, jittered backoff for as long as it lasts and never counts
// toward poison. Any other failure is the handler's own (a refusal, a
// message it cannot decode, a bug): once it has failed MaxRetries times
// more, or at once when no retry can mend it (ErrPermanent), the message
// goes to the poison topic in the transaction that acks it, and the
// messages after it go on.
func (c *batchConsumer) oneByOne(tx pgx.Tx, rows []wsql.Row) (int, error) {
	ctx := context.Background()
	done := 0
	var retry error
	for _, r := range rows {
		m := r.Msg
		err := c.handleAlone(ctx, tx, m)
		if err == nil {
			c.failing = failing{}
			done++
			continue
		}
		if c.failing.id != m.UUID {
			c.failing = failing{id: m.UUID}
		}
		if transient(err) {
			c.failing.transient++
			retry = &retryLater{wait: dbfailure.Backoff(c.failing.transient, c.cfg.RetryInterval, maxTransientWait), err: err}
			// A handler that reports an outside system away (ErrUnavailable)
			// logs the outage once itself: its retries are debug only.
			level := slog.LevelWarn
			if errors.Is(err, ErrUnavailable) {
				level = slog.LevelDebug
			}
			c.cfg.Logger.Log(ctx, level, "transient failure: the message is retried", slog.String("handler", c.h.Name), slog.String("message", m.UUID),
				slog.Int("attempt", c.failing.transient), slog.Any("err", err))
			break
		}
		if c.failing.attempts++; c.failing.attempts <= c.cfg.MaxRetries && !errors.Is(err, ErrPermanent) {
			retry = &retryLater{wait: min(c.cfg.RetryInterval<<(c.failing.attempts-1), maxRetryWait), err: err}
			break
		}
		c.failing = failing{}
		m.Metadata.Set(middleware.ReasonForPoisonedKey, err.Error())
		m.Metadata.Set(middleware.PoisonedTopicKey, c.h.Topic)
		m.Metadata.Set(middleware.PoisonedHandlerKey, c.h.Name)
		m.Metadata.Set(middleware.PoisonedSubscriberKey, "batch")
		if err := outbox.PublishTo(ctx, tx, outbox.PoisonTopic, m); err != nil {
			return 0, err
		}
		c.cfg.Logger.Error("message poisoned", slog.String("handler", c.h.Name), slog.String("message", m.UUID), slog.Any("err", err))
		done++
	}
	if done > 0 {
		if err := c.ack(ctx, tx, rows[done-1], rows[:done]); err != nil {
			return 0, err
		}
	}
	return done, retry
}

// transient reports a failure to retry for as long as it lasts: the
// database's (dbfailure.Transient) or an outside party's (ErrTransient),
// unless the handler said no retry can mend it (ErrPermanent).
func transient(err error) bool {
	return !errors.Is(err, ErrPermanent) && (errors.Is(err, ErrTransient) || dbfailure.Transient(err))
}

// handleAlone runs Handle on m in a savepoint of tx: a failure leaves the
// transaction as it was, so the others can still be applied and acked.
func (c *batchConsumer) handleAlone(ctx context.Context, tx pgx.Tx, m *message.Message) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	m.SetContext(context.WithValue(ctx, txKey{}, sp))
	if err := safely(func() error { return c.handle(m) }); err != nil {
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return errors.Join(err, rbErr)
		}
		return err
	}
	return sp.Commit(ctx)
}

// failing is the message at the head of the group that failed last, and
// how often: its retries are counted across transactions.
type failing struct {
	id        string
	attempts  int // the handler's own failures: MaxRetries, then poison
	transient int // transient failures: retried, never poison
}

// maxRetryWait caps the backoff between a failing message's attempts.
const maxRetryWait = 2 * time.Second

// maxTransientWait caps the backoff while the database fails transiently
// (a restart lasts seconds; a consumer need not poll it faster).
const maxTransientWait = 5 * time.Second

// retryLater is a failed message to read again after wait.
type retryLater struct {
	wait time.Duration
	err  error
}

func (e *retryLater) Error() string { return e.err.Error() }
func (e *retryLater) Unwrap() error { return e.err }

// safely turns a panic of f into its error, as Watermill's Recoverer does
// for a message handler: one bad message must not stop the consumer.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic occurred: %v", r)
		}
	}()
	return f()
}

// txKey carries the batch consumer's transaction for Tx.
type txKey struct{}
