package outbox

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Signal tells subscribers in this process that outbox rows have committed,
// so they poll now instead of after their poll interval (watermill-sql has
// no wake-up of its own). A missed signal costs at most one poll interval.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewSignal returns a Signal nobody has raised yet.
func NewSignal() *Signal { return &Signal{ch: make(chan struct{})} }

// Raise wakes everyone waiting on a channel from C.
func (s *Signal) Raise() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

// C returns a channel closed by the next Raise: take it before looking for
// rows, wait on it after finding none, and no commit in between is missed.
func (s *Signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// NotifyChannel carries Raise between processes (api → projector, worker).
const NotifyChannel = "orderflow_outbox"

// Notifier forwards commits to other processes with PostgreSQL's NOTIFY,
// outside the commands' transactions (a NOTIFY inside one would serialise
// their commits on the notification queue's lock) and coalesced: while one
// NOTIFY is on its way, further commits make one more, not one each.
type Notifier struct {
	pending chan struct{}
}

// NewNotifier sends NOTIFYs on pool until ctx ends.
func NewNotifier(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) *Notifier {
	n := &Notifier{pending: make(chan struct{}, 1)}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.pending:
			}
			if _, err := pool.Exec(ctx, `SELECT pg_notify('`+NotifyChannel+`', '')`); err != nil && ctx.Err() == nil {
				log.Warn("outbox notify", "err", err)
			}
		}
	}()
	return n
}

// Raise asks for a NOTIFY.
func (n *Notifier) Raise() {
	select {
	case n.pending <- struct{}{}:
	default:
	}
}

// Listen calls onNotify on every NOTIFY on channel (NotifyChannel: pass a
// Signal's Raise), on a connection of its own, until ctx ends; it
// reconnects after an error.
func Listen(ctx context.Context, pool *pgxpool.Pool, channel string, onNotify func(), log *slog.Logger) {
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
			for {
				if _, err := pc.WaitForNotification(ctx); err != nil {
					return err
				}
				onNotify()
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
