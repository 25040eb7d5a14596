package sagas

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
)

// Backlog is the sagas' backlog as the API's admission control sees it:
// the starts queued in the saga_starts inbox plus the sagas started within
// Window and not seen finished by their launcher. It is read from the
// database, so every API process sees every worker's, and kept for TTL, so
// that a burst of orders costs one count.
type Backlog struct {
	Pool   *pgxpool.Pool
	Window time.Duration
	TTL    time.Duration

	mu   sync.Mutex // held by the one counting
	last atomic.Pointer[snapshot]
}

type snapshot struct {
	n  int64
	at time.Time
}

// DefaultBacklogTTL is how long a count of the backlog is used.
const DefaultBacklogTTL = 200 * time.Millisecond

// Count returns the backlog, at most TTL old. While one caller counts, the
// others take the last count (never waiting behind the database).
func (b *Backlog) Count(ctx context.Context) (int64, error) {
	ttl := cmp.Or(b.TTL, DefaultBacklogTTL)
	fresh := func() (*snapshot, bool) {
		s := b.last.Load()
		return s, s != nil && time.Since(s.at) < ttl
	}
	if s, ok := fresh(); ok {
		return s.n, nil
	}
	if !b.mu.TryLock() {
		if s := b.last.Load(); s != nil {
			return s.n, nil
		}
		b.mu.Lock() // the first count: wait for it
	}
	defer b.mu.Unlock()
	if s, ok := fresh(); ok {
		return s.n, nil
	}
	var n int64
	err := b.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM saga_starts WHERE started_at IS NULL)
		+ (SELECT count(*) FROM saga_starts WHERE finished_at IS NULL AND started_at > now() - make_interval(secs => $1))`,
		cmp.Or(b.Window, DefaultWindow).Seconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count the sagas' backlog: %w", err)
	}
	b.last.Store(&snapshot{n: n, at: time.Now()})
	return n, nil
}

// Admission refuses new orders while the sagas' backlog is at Max or
// beyond: the bus asks it before anything of a PlaceOrder is decided or
// logged, whichever door the order came through.
type Admission struct {
	Backlog *Backlog
	Max     int64
	// RetryAfter is what a refused client is told to wait.
	RetryAfter time.Duration
}

// Admit implements commands.Options.Admit.
func (a *Admission) Admit(ctx context.Context, commandType string) error {
	if commandType != (commands.PlaceOrder{}).CommandType() {
		return nil
	}
	n, err := a.Backlog.Count(ctx)
	if err != nil {
		// The database is not answering: the command itself will say so.
		return nil
	}
	if n >= a.Max {
		return &commands.OverloadedError{RetryAfter: a.RetryAfter,
			Reason: "orders are arriving faster than they are fulfilled; place the order again after Retry-After"}
	}
	return nil
}
