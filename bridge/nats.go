// Package bridge forwards orderflow's Watermill topics to an outside broker:
// NATS JetStream. Each topic is read by its own consumer group
// ("nats_bridge") and published with the message UUID as JetStream's
// Nats-Msg-Id, so a redelivery inside the stream's duplicate window is
// dropped by the broker.
//
// The bridge outlives NATS: it starts whether NATS answers or not, the
// client reconnects for as long as it takes, and while NATS is away the
// messages wait in the outbox (the consumer group's offset does not move)
// and are retried with backoff, never poisoned, then forwarded in commit
// order once NATS is back. It logs once that NATS is away and once that it
// is back.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/outbox"
)

// ConsumerGroup is the bridge's consumer group on every topic: permanent.
const ConsumerGroup = "nats_bridge"

// Headers the bridge adds to a message's metadata (which rides as headers,
// one per key) on NATS.
const (
	// HeaderMsgID is JetStream's deduplication header: the message UUID.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderWatermillUUID is the message UUID again, under the name
	// watermill-nats's NATSMarshaler reads it from: a Watermill subscriber
	// on NATS gets the same msg.UUID as one on the SQL topics.
	HeaderWatermillUUID = "_watermill_message_uuid"
)

// Defaults of Config.
const (
	DefaultReconnectWait   = 2 * time.Second
	DefaultReconnectJitter = time.Second
	DefaultPublishTimeout  = 5 * time.Second
	// DefaultMaxAge keeps a week of messages on each stream.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultMaxBytes bounds each stream to 1 GiB (the oldest go first).
	DefaultMaxBytes = 1 << 30
	// DefaultDuplicateWindow is how long JetStream remembers a Nats-Msg-Id:
	// a message forwarded again within it (the bridge's ack in PostgreSQL
	// was lost, a restart) is dropped. JetStream's own default is 2 minutes.
	DefaultDuplicateWindow = time.Hour
)

// StreamLimits are set on every stream the bridge creates or finds.
type StreamLimits struct {
	MaxAge          time.Duration // 0: no age limit
	MaxBytes        int64         // 0 or -1: no size limit
	DuplicateWindow time.Duration // must not exceed MaxAge when that is set
}

// Config configures the bridge; zero fields take the defaults above.
type Config struct {
	URL string
	// ReconnectWait and ReconnectJitter space the client's attempts to
	// reach NATS again: every ReconnectWait plus up to ReconnectJitter,
	// for as long as it takes (no attempt budget).
	ReconnectWait   time.Duration
	ReconnectJitter time.Duration
	// PublishTimeout bounds one publish (its JetStream ack included).
	PublishTimeout time.Duration
	// BatchSize is how many messages one consumer transaction forwards
	// (each acknowledged by JetStream before the next is sent); 0: the
	// router's SetBatchSize.
	BatchSize int
	Limits    StreamLimits
	Logger    *slog.Logger
}

func (c *Config) defaults() {
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.ReconnectJitter < 0 {
		c.ReconnectJitter = 0
	} else if c.ReconnectJitter == 0 {
		c.ReconnectJitter = DefaultReconnectJitter
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// ErrAway is a publish refused because NATS is not connected.
var ErrAway = errors.New("NATS is away")

// Bridge is the NATS side of the bridge: one connection, the streams it
// made sure of, and its state for readiness and metrics.
type Bridge struct {
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream

	mu       sync.Mutex
	streams  map[string]bool   // streams created or updated since the connection was made
	lastErr  map[string]string // the last publish failure logged, by topic
	away     atomic.Int64      // unix nanoseconds since NATS is away, 0 while connected
	forwards atomic.Uint64
	reconn   atomic.Uint64
}

// New connects to NATS, or keeps trying in the background: NATS being
// unreachable is no error here (only a URL that cannot work is).
func New(cfg Config) (*Bridge, error) {
	cfg.defaults()
	if cfg.Limits.MaxAge > 0 && cfg.Limits.DuplicateWindow > cfg.Limits.MaxAge {
		return nil, fmt.Errorf("NATS duplicate window %s exceeds the streams' max age %s", cfg.Limits.DuplicateWindow, cfg.Limits.MaxAge)
	}
	b := &Bridge{cfg: cfg, log: cfg.Logger.With("component", "nats_bridge", "url", redacted(cfg.URL)), streams: map[string]bool{}, lastErr: map[string]string{}}
	b.away.Store(time.Now().UnixNano())
	nc, err := nats.Connect(cfg.URL,
		nats.Name("orderflow-bridge"),
		nats.Timeout(5*time.Second),
		// Outlive NATS: no reconnect budget, and a first connection that
		// fails is retried like a lost one.
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectJitter(cfg.ReconnectJitter, cfg.ReconnectJitter),
		// No buffering while away: a publish fails at once and the message
		// waits in the outbox instead, where it is durable.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) { b.back("NATS connected") }),
		nats.ReconnectHandler(func(*nats.Conn) { b.reconn.Add(1); b.back("NATS is back: forwarding resumes") }),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if !c.IsClosed() { // closing is no outage
				b.gone(err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { b.log.Info("NATS connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { b.log.Warn("NATS error", "err", err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("NATS client for %s: %w", redacted(cfg.URL), err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream client for %s: %w", redacted(cfg.URL), err)
	}
	if nc.IsConnected() {
		if b.away.Swap(0) != 0 {
			b.log.Info("NATS connected")
		}
	} else {
		b.log.Warn("NATS is away: messages wait in the outbox and are forwarded once it answers", "reconnect_wait", cfg.ReconnectWait)
	}
	return b, nil
}

// redacted is a NATS URL (or a comma-separated list) without passwords, for logs.
func redacted(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// gone records the start of an outage, and logs it once.
func (b *Bridge) gone(err error) {
	if b.away.CompareAndSwap(0, time.Now().UnixNano()) {
		b.log.Warn("NATS is away: messages wait in the outbox and are forwarded once it is back", "err", err)
	}
}

// back records the end of an outage, and logs it once.
func (b *Bridge) back(msg string) {
	b.mu.Lock()
	clear(b.streams) // NATS may have restarted without its streams
	clear(b.lastErr)
	b.mu.Unlock()
	if since := b.away.Swap(0); since != 0 {
		b.log.Info(msg, "away", time.Since(time.Unix(0, since)).Round(time.Millisecond))
	}
}

// Status is the bridge's state, for readiness and metrics.
type Status struct {
	Connected bool
	// AwaySince is when NATS went away (zero while connected).
	AwaySince  time.Time
	Forwarded  uint64 // messages NATS acknowledged since start
	Reconnects uint64 // connections regained after a loss
}

// Status reports the bridge's state.
func (b *Bridge) Status() Status {
	s := Status{Connected: b.nc.IsConnected(), Forwarded: b.forwards.Load(), Reconnects: b.reconn.Load()}
	if since := b.away.Load(); since != 0 && !s.Connected {
		s.AwaySince = time.Unix(0, since)
	}
	return s
}

// Check is a readiness check: nil while NATS is connected.
func (b *Bridge) Check(context.Context) error {
	if s := b.Status(); !s.Connected {
		return fmt.Errorf("%w for %s", ErrAway, time.Since(s.AwaySince).Round(time.Second))
	}
	return nil
}

// Close drains nothing (every message not acknowledged by NATS is still in
// the outbox) and closes the connection.
func (b *Bridge) Close() error {
	b.nc.Close()
	return nil
}

// Handlers are the bridge's delivery handlers, one per topic of
// outbox.Topics: set-based, so that a publish that fails ends the
// consumer's transaction at once (committing what was forwarded before it)
// and the consumer waits outside any transaction, holding no other
// consumer back. On NATS the subject and the JetStream stream are both
// named after the topic.
func (b *Bridge) Handlers() []delivery.Handler {
	var hs []delivery.Handler
	for _, topic := range outbox.Topics {
		hs = append(hs, delivery.Handler{
			Name: "nats_bridge_" + topic, ConsumerGroup: ConsumerGroup, Topic: topic, BatchSize: b.cfg.BatchSize,
			HandleBatch: func(ctx context.Context, _ pgx.Tx, msgs []*message.Message) error {
				// One at a time, each acknowledged before the next: the
				// stream keeps commit order even when a publish fails.
				for _, m := range msgs {
					if err := b.publish(ctx, topic, m); err != nil {
						return err
					}
				}
				return nil
			},
			Handle: func(ctx context.Context, m *message.Message) error { return b.publish(ctx, topic, m) },
		})
	}
	return hs
}

// publish forwards m to topic's stream. Every failure is transient: NATS
// away, a stream it refuses, a publish it does not acknowledge are none of
// the message's fault, and poisoning it would drop it from NATS for good.
// It is retried, quietly: the bridge logs an outage once, and any other
// failure once for as long as it repeats.
func (b *Bridge) publish(ctx context.Context, topic string, m *message.Message) error {
	if !b.nc.IsConnected() {
		return delivery.Unavailable(ErrAway)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	if err := b.ensureStream(ctx, topic); err != nil {
		return b.failed(topic, fmt.Errorf("stream %s: %w", topic, err))
	}
	out := nats.NewMsg(topic)
	out.Data = m.Payload
	out.Header.Set(HeaderWatermillUUID, m.UUID)
	for k, v := range m.Metadata {
		out.Header.Set(k, v)
	}
	if _, err := b.js.PublishMsg(ctx, out, jetstream.WithMsgID(m.UUID)); err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			b.forgetStream(topic) // deleted behind our back: made again next time
		}
		return b.failed(topic, fmt.Errorf("publish to %s: %w", topic, err))
	}
	b.forwards.Add(1)
	return nil
}

// failed logs err unless it repeats the topic's last one, or NATS is away
// (logged once already), and marks it for quiet retries.
func (b *Bridge) failed(topic string, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		// The same message fails the same way every time: poison, for an
		// operator to see, instead of holding the topic back for ever.
		return delivery.Permanent(err)
	}
	if b.nc.IsConnected() {
		b.mu.Lock()
		repeated := b.lastErr[topic] == err.Error()
		b.lastErr[topic] = err.Error()
		b.mu.Unlock()
		if !repeated {
			b.log.Warn("forwarding to NATS fails: retrying until it succeeds", "topic", topic, "err", err)
		}
	}
	return delivery.Unavailable(err)
}

// ensureStream creates the topic's stream, or sets the configured limits
// on the one there, once per connection rather than per publish.
func (b *Bridge) ensureStream(ctx context.Context, topic string) error {
	b.mu.Lock()
	done := b.streams[topic]
	b.mu.Unlock()
	if done {
		return nil
	}
	l := b.cfg.Limits
	maxBytes := l.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: topic, Subjects: []string{topic}, Storage: jetstream.FileStorage,
		MaxAge: l.MaxAge, MaxBytes: maxBytes, Duplicates: l.DuplicateWindow,
	})
	if err != nil {
		// A stream made elsewhere with settings that cannot change (its
		// storage, say) is used as it is.
		if _, lookErr := b.js.Stream(ctx, topic); lookErr != nil {
			return err
		}
		b.log.Warn("the stream exists with settings the bridge cannot change: limits not applied", "stream", topic, "err", err)
	}
	b.mu.Lock()
	b.streams[topic] = true
	b.mu.Unlock()
	return nil
}

func (b *Bridge) forgetStream(topic string) {
	b.mu.Lock()
	delete(b.streams, topic)
	b.mu.Unlock()
}
