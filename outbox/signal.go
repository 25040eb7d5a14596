package outbox

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Signal tells subscribers in this process that outbox rows have committed
// to their topic, so they poll now instead of after their poll interval
// (watermill-sql has no wake-up of its own). A missed signal costs at most
// one poll interval. Per topic: a commit wakes the consumers of what it
// wrote, not every consumer group of the process.
type Signal struct {
	mu sync.Mutex
	ch map[string]chan struct{} // the topics someone waits on; anyTopic, any commit
}

// anyTopic keys the channel every Raise closes (no topic is named "").
const anyTopic = ""

// NewSignal returns a Signal nobody has raised yet.
func NewSignal() *Signal { return &Signal{ch: map[string]chan struct{}{}} }

// Raise wakes everyone waiting on a channel from C for one of topics; no
// topic wakes everyone.
func (s *Signal) Raise(topics ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(topics) == 0 {
		for t, ch := range s.ch {
			close(ch)
			delete(s.ch, t)
		}
		return
	}
	for _, t := range topics {
		s.wake(t)
	}
	s.wake(anyTopic)
}

func (s *Signal) wake(topic string) {
	if ch, ok := s.ch[topic]; ok {
		close(ch)
		delete(s.ch, topic)
	}
}

// Any returns a channel closed by the next Raise, whatever its topics.
func (s *Signal) Any() <-chan struct{} { return s.C(anyTopic) }

// C returns a channel closed by the next Raise of topic: take it before
// looking for rows, wait on it after finding none, and no commit in
// between is missed.
func (s *Signal) C(topic string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.ch[topic]
	if !ok {
		ch = make(chan struct{})
		s.ch[topic] = ch
	}
	return ch
}

// NotifyChannel carries Raise between processes (api → projector, worker).
const NotifyChannel = "orderflow_outbox"

// Notifier forwards commits to other processes with PostgreSQL's NOTIFY,
// outside the commands' transactions (a NOTIFY inside one would serialise
// their commits on the notification queue's lock) and coalesced: while one
// NOTIFY is on its way, further commits make one more, not one each. The
// payload names the topics written since the last one, comma-separated;
// an empty payload (as sent before topics were named) wakes every topic.
type Notifier struct {
	pending chan struct{}
	mu      sync.Mutex
	topics  map[string]bool
	all     bool
}

// NewNotifier sends NOTIFYs on pool until ctx ends.
func NewNotifier(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) *Notifier {
	n := &Notifier{pending: make(chan struct{}, 1), topics: map[string]bool{}}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.pending:
			}
			n.mu.Lock()
			if len(n.topics) == 0 && !n.all { // sent with the last one: an empty payload would wake every topic
				n.mu.Unlock()
				continue
			}
			payload := ""
			if !n.all {
				payload = strings.Join(slices.Sorted(maps.Keys(n.topics)), ",")
			}
			clear(n.topics)
			n.all = false
			n.mu.Unlock()
			if _, err := pool.Exec(ctx, `SELECT pg_notify('`+NotifyChannel+`', $1)`, payload); err != nil && ctx.Err() == nil {
				log.Warn("outbox notify", "err", err)
			}
		}
	}()
	return n
}

// Raise asks for a NOTIFY naming topics; no topic names every topic.
func (n *Notifier) Raise(topics ...string) {
	n.mu.Lock()
	if len(topics) == 0 {
		n.all = true
	}
	for _, t := range topics {
		n.topics[t] = true
	}
	n.mu.Unlock()
	select {
	case n.pending <- struct{}{}:
	default:
	}
}

// NotifiedTopics are the topics a NotifyChannel payload names; none (an
// empty payload) means every topic.
func NotifiedTopics(payload string) []string {
	if payload == "" {
		return nil
	}
	return strings.Split(payload, ",")
}

// Listen calls onNotify with the payload of every NOTIFY on channel
// (NotifyChannel: raise a Signal with NotifiedTopics), on a connection of
// its own, until ctx ends; it reconnects after an error, and then calls
// onNotify with an empty payload, for it may have missed some.
func Listen(ctx context.Context, pool *pgxpool.Pool, channel string, onNotify func(payload string), log *slog.Logger) {
	for ctx.Err() == nil {
		err := func() error {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			// A connection that LISTENs never goes back to the pool.
			pc := conn.Hijack()
			defer pc.Close(context.Background())
			if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
				return err
			}
			onNotify("")
			for {
				n, err := pc.WaitForNotification(ctx)
				if err != nil {
					return err
				}
				onNotify(n.Payload)
			}
		}()
		if ctx.Err() == nil {
			log.Warn("listen for notifications", "channel", channel, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}
