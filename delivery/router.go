// Package delivery runs Watermill handlers over the watermill-sql topics:
// one subscriber and consumer group per handler, in the subscriber's own
// transaction, with retries, a poison topic and graceful shutdown.
// Projections, the saga starter and the broker bridge are its handlers.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
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
	"golang.org/x/sync/errgroup"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/tracing"
)

// ErrTransient marks a failure of something outside (a broker, Temporal)
// in a handler: the message is not poisoned but redelivered until it goes
// through. The database's own transient failures (dbfailure.Transient: a
// lost connection, a deadlock, a timeout, a restart) are treated so
// without the mark.
var ErrTransient = errors.New("transient failure")

// Transient wraps err as ErrTransient.
func Transient(err error) error { return fmt.Errorf("%w: %w", ErrTransient, err) }

// ErrUnavailable marks a transient failure whose cause, an outside system
// known to be away, the handler reports itself (once per outage): the
// consumer retries it with backoff for as long as it takes, never poisons
// it, and logs its attempts at debug level only.
var ErrUnavailable = errors.New("unavailable")

// Unavailable wraps err as ErrTransient and ErrUnavailable.
func Unavailable(err error) error { return fmt.Errorf("%w: %w: %w", ErrTransient, ErrUnavailable, err) }

// ErrPermanent marks a failure that no retry can mend before an operator
// acts (an event whose stream's earlier event is poisoned): the batch
// consumer poisons the message at once instead of retrying it.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err as ErrPermanent.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Handler consumes one topic as one consumer group. Projections, the saga
// starter and the broker bridge are all Handlers on one router.
type Handler struct {
	// Name identifies the handler in logs and on poison messages.
	Name string
	// ConsumerGroup is permanent: renaming it replays the whole topic.
	ConsumerGroup string
	Topic         string
	// Handle runs inside the subscriber's transaction (Tx); an error is
	// retried and, after the retries, the message goes to the poison topic.
	Handle func(ctx context.Context, msg *message.Message) error
	// HandleBatch, when set, applies a batch of messages (in order) inside
	// tx, set-based, and the topic is consumed a batch per transaction
	// (batchConsumer) rather than by a Watermill subscriber; a batch that
	// fails is handled again message by message with Handle, where a
	// failure is retried MaxRetries times (none if ErrPermanent), each
	// attempt in a transaction of its own, then poisoned — unless it is
	// transient (ErrTransient, dbfailure.Transient), which is retried with
	// backoff for as long as it lasts and never poisoned.
	HandleBatch func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error
	// BatchSize, with HandleBatch, is how many messages one transaction
	// takes; 0: RouterConfig.SetBatchSize.
	BatchSize int
	// Read, with HandleBatch, reads the next batch in tx: up to limit
	// messages after the group's position, in commit order, from
	// transactions older than any still running. Nil: the rows of the
	// topic's table. A topic whose table is a view reads its source
	// (commandlog.Rows, for the commands topic's).
	Read func(ctx context.Context, tx commitorder.Querier, after commitorder.Cursor, limit int) ([]wsql.Row, error)
}

// RouterConfig tunes delivery.
type RouterConfig struct {
	// PollInterval is how long a subscriber sleeps after finding its topic
	// empty: the lower bound of projection lag when idle. watermill-sql's default
	// (1 s) is far too slow for read-your-writes; 50 ms costs one indexed
	// query per topic and consumer group per interval.
	PollInterval time.Duration
	// BatchSize is how many messages one subscriber transaction takes. The
	// batch shares one transaction with the handlers' writes and the offset
	// ack, so it bounds both round trips and how long that transaction (which
	// holds back every subscriber's xmin horizon) stays open.
	BatchSize int
	// SetBatchSize is how many messages a set-based handler (HandleBatch)
	// takes per transaction. Large batches catch up faster (a read walks
	// the topic's index from the group's position); a batch of 4,000 is applied in about 0.1 s
	// on 2 cores, which bounds how long its transaction holds the horizon.
	SetBatchSize int
	// AckDeadline nacks a message whose handler hangs, so the transaction ends.
	AckDeadline time.Duration
	// MaxRetries is how often a failing message is retried (with exponential
	// backoff from RetryInterval) before it goes to the poison topic. A
	// transient failure counts for nothing: it is retried (backoff from
	// RetryInterval, capped, jittered) until it passes.
	MaxRetries    int
	RetryInterval time.Duration
	// Wake, when set, is raised with the topics of outbox rows that commit
	// in this process (or on a NOTIFY from another): an idle subscriber of
	// one of them polls at once instead of sleeping out PollInterval.
	Wake   *outbox.Signal
	Logger *slog.Logger
	// Observe, when set, is told of every message handled: the handler and
	// the error (nil: applied) — telemetry.Metrics.Message.
	Observe func(handler string, err error)
}

// Defaults of RouterConfig (the service's flags start from them too).
const (
	DefaultPollInterval = 50 * time.Millisecond
	DefaultBatchSize    = 100
	DefaultSetBatchSize = 4000
)

func (c *RouterConfig) defaults() {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.SetBatchSize <= 0 {
		c.SetBatchSize = DefaultSetBatchSize
	}
	if c.AckDeadline <= 0 {
		c.AckDeadline = 10 * time.Second
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 50 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Router runs the handlers: a Watermill router with a watermill-sql
// subscriber per message handler, and a batch consumer per set-based one.
type Router struct {
	pool    *pgxpool.Pool
	wm      *message.Router // nil without message handlers
	batches []*batchConsumer
	running chan struct{}
	stopped atomic.Bool
}

// Run runs every handler until ctx ends; cancelling ctx shuts them down
// gracefully (in-flight batches finish or roll back, nothing is lost).
func (r *Router) Run(ctx context.Context) error {
	defer r.stopped.Store(true)
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range r.batches {
		if err := b.start(ctx); err != nil {
			return err
		}
		g.Go(func() error { return b.run(gctx) })
	}
	if r.wm != nil {
		g.Go(func() error { return r.wm.Run(gctx) })
		go func() {
			select {
			case <-r.wm.Running():
				close(r.running)
			case <-gctx.Done():
			}
		}()
	} else {
		close(r.running)
	}
	return g.Wait()
}

// Running is closed once every handler consumes.
func (r *Router) Running() <-chan struct{} { return r.running }

// IsRunning reports whether every handler consumes (readiness).
func (r *Router) IsRunning() bool {
	select {
	case <-r.running:
		return !r.stopped.Load() && (r.wm == nil || !r.wm.IsClosed())
	default:
		return false
	}
}

// NewRouter builds the router of handlers. Run it with Run(ctx).
func NewRouter(pool *pgxpool.Pool, cfg RouterConfig, handlers ...Handler) (*Router, error) {
	cfg.defaults()
	r := &Router{pool: pool, running: make(chan struct{})}
	var single []Handler
	for _, h := range handlers {
		if h.HandleBatch != nil {
			r.batches = append(r.batches, newBatchConsumer(pool, cfg, h))
		} else {
			single = append(single, h)
		}
	}
	if len(single) == 0 {
		return r, nil
	}
	wm, err := newWatermillRouter(pool, cfg, single)
	r.wm = wm
	return r, err
}

// newWatermillRouter builds a Watermill router with one watermill-sql
// subscriber per handler.
func newWatermillRouter(pool *pgxpool.Pool, cfg RouterConfig, handlers []Handler) (*message.Router, error) {
	wlog := watermill.NewSlogLoggerWithLevelMapping(cfg.Logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueueWithFilter(txPublisher{}, outbox.PoisonTopic, func(err error) bool {
		return !transient(err)
	})
	if err != nil {
		return nil, err
	}
	// Outermost first: a message that still fails after the retries is
	// written to the poison topic in the same transaction as the ack.
	router.AddMiddleware(
		poison,
		keepTransient,
		middleware.Retry{
			MaxRetries: cfg.MaxRetries, InitialInterval: cfg.RetryInterval, MaxInterval: 2 * time.Second,
			// No logger: logged() reports each failed attempt once, with the
			// message's correlation id.
			Multiplier: 2, RandomizationFactor: 0.2,
		}.Middleware,
		middleware.Recoverer,
	)
	for _, h := range handlers {
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
			ConsumerGroup:  h.ConsumerGroup,
			PollInterval:   cfg.PollInterval,
			ResendInterval: cfg.RetryInterval,
			RetryInterval:  time.Second,
			BackoffManager: newWakeBackoff(cfg, h.Topic),
			AckDeadline:    &cfg.AckDeadline,
			SchemaAdapter:  wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: cfg.BatchSize},
			OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		}, wlog)
		if err != nil {
			return nil, fmt.Errorf("subscriber %s: %w", h.Name, err)
		}
		router.AddConsumerHandler(h.Name, h.Topic, sub, logged(cfg.Logger, cfg.Observe, h))
	}
	return router, nil
}

// keepTransient keeps a message whose context ended while it was retried
// (its ack deadline, or shutdown) out of the poison topic: the retry
// middleware then returns the context's error, which has lost the
// handler's ErrTransient, and the subscriber's transaction is gone, so the
// message can be neither handled nor poisoned now. It is read again.
func keepTransient(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil && !errors.Is(err, ErrTransient) && msg.Context().Err() != nil {
			err = Transient(err)
		}
		return out, err
	}
}

// wakeBackoff is watermill-sql's backoff with a wake-up: a subscriber that
// found nothing waits for the next commit (or PollInterval) and polls again,
// at most once per wakeGap so that a stream of commits is read in batches,
// not one poll per commit. A commit is only visible once every older
// transaction has ended (watermill-sql's xid8 rule), so after a wake that
// found nothing it looks again after 2, 4 and 8 ms; when those find
// nothing either, an older transaction holds the commit back, and it waits
// for the next commit of any topic (that one's, perhaps), then for its own
// topic's again.
type wakeBackoff struct {
	wsql.BackoffManager
	poll     time.Duration
	wake     *outbox.Signal
	topic    string          // the consumer's: a commit to another topic does not wake it
	armed    <-chan struct{} // the topic's, taken before the last query
	anyArmed <-chan struct{} // any commit's, taken before the last query
	quick    int             // quick looks left after a wake
	behind   bool            // the quick looks found nothing
}

const wakeGap = 5 * time.Millisecond

// newWakeBackoff is the backoff of every consumer, Watermill's subscribers
// and the batch consumers alike.
func newWakeBackoff(cfg RouterConfig, topic string) *wakeBackoff {
	return &wakeBackoff{BackoffManager: wsql.NewDefaultBackoffManager(cfg.PollInterval, time.Second), poll: cfg.PollInterval, wake: cfg.Wake, topic: topic}
}

func (b *wakeBackoff) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if b.wake == nil {
		return b.BackoffManager.HandleError(logger, noMsg, err)
	}
	armed, anyArmed := b.armed, b.anyArmed
	b.armed, b.anyArmed = b.wake.C(b.topic), b.wake.Any()
	if err != nil || !noMsg {
		b.quick, b.behind = 0, false
		return b.BackoffManager.HandleError(logger, noMsg, err)
	}
	if b.quick > 0 {
		b.quick--
		b.behind = b.quick == 0
		return 2 * time.Millisecond << (2 - b.quick)
	}
	if armed == nil {
		armed, anyArmed = b.armed, b.anyArmed
	}
	quick := 3
	if b.behind {
		b.behind, armed, quick = false, anyArmed, 0
	}
	polled := time.Now()
	select {
	case <-armed:
		b.armed, b.anyArmed = b.wake.C(b.topic), b.wake.Any()
		b.quick = quick
		return max(0, wakeGap-time.Since(polled))
	case <-time.After(b.poll):
		return 0
	}
}

// logged runs h in a span continuing the trace the message carries, with
// the message's correlation id in every log line.
func logged(log *slog.Logger, observe func(string, error), h Handler) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := tracing.Extract(msg.Context(), msg.Metadata.Get(outbox.MetaTraceParent))
		ctx, span := tracing.Tracer().Start(ctx, h.Name+" "+h.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.system", "watermill"), attribute.String("messaging.destination.name", h.Topic),
				attribute.String("messaging.consumer.group.name", h.ConsumerGroup), attribute.String("event.type", msg.Metadata.Get(outbox.MetaEventType))))
		defer span.End()
		err := h.Handle(ctx, msg)
		if observe != nil {
			observe(h.Name, err)
		}
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			level := slog.LevelWarn
			if errors.Is(err, ErrUnavailable) { // its handler says so once per outage
				level = slog.LevelDebug
			}
			log.Log(ctx, level, "handler failed", "handler", h.Name, "topic", h.Topic, "message", msg.UUID,
				"event_type", msg.Metadata.Get(outbox.MetaEventType), "correlation_id", msg.Metadata.Get(outbox.MetaCorrelationID), "err", err)
		}
		return err
	}
}

// Tx is the watermill-sql subscriber's transaction carried by msg's context:
// writes made in it commit with the consumer's offset, or not at all.
func Tx(ctx context.Context) (pgx.Tx, error) {
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return tx, nil // a batch consumer's
	}
	tx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return nil, errors.New("no subscriber transaction in the message context")
	}
	switch t := tx.(type) {
	case *wsql.PgxTx:
		return t.Tx, nil
	case wsql.PgxTx:
		return t.Tx, nil
	}
	return nil, fmt.Errorf("subscriber transaction is %T, not pgx", tx)
}

// txPublisher writes poison messages in the subscriber's own transaction, so
// a message is either handled, or poisoned, and acknowledged in one commit.
type txPublisher struct{}

func (txPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		tx, err := Tx(m.Context())
		if err != nil {
			return err
		}
		if err := outbox.PublishTo(m.Context(), tx, topic, m); err != nil {
			return err
		}
	}
	return nil
}

func (txPublisher) Close() error { return nil }

// Replay runs h's Handle on msg again, inside a savepoint of tx (which
// Tx finds in the handler's context, as a consumer's): a poison message
// replayed by an operator, committed with whatever tx records of it.
func Replay(ctx context.Context, tx pgx.Tx, h Handler, msg *message.Message) error {
	if h.Handle == nil {
		return fmt.Errorf("handler %s handles no single message", h.Name)
	}
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		hctx := context.WithValue(ctx, txKey{}, sp)
		msg.SetContext(hctx)
		return safely(func() error { return h.Handle(hctx, msg) })
	})
}
