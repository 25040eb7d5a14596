package sagas

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/outbox"
)

// Backlog reads the sagas' backlog as the API's admission control sees it:
// the starts queued (in the saga_starts inbox, or placed orders the starter
// has yet to queue), the sagas started within
// Window and not seen finished by their launcher, and the pace at which
// the launchers start sagas (they start one as one finishes, so once they
// are saturated it is the pace at which sagas finish). It is read from the
// database, so every API process sees every worker's, and kept for TTL, so
// that a burst of orders costs one count.
type Backlog struct {
	Pool   *pgxpool.Pool
	Window time.Duration
	TTL    time.Duration
	// Slots is how many sagas the launchers keep running: after a quiet
	// spell their first starts fill the free slots at once, which is no
	// pace (Pace).
	Slots int64

	mu   sync.Mutex // held by the one counting
	last atomic.Pointer[Figures]
	// admitted counts the orders this process let through: those since
	// the last count began are added to it (a count under load can take
	// long, and many orders arrive meanwhile).
	admitted atomic.Int64
}

// Figures are one count of the backlog.
type Figures struct {
	Queued  int64   // starts waiting in the inbox
	Running int64   // started within Window, not seen finished
	PerSec  float64 // sagas started per second, over PaceOver (or since the first start, when sooner)
	at      time.Time
	base    int64 // admitted when the count began
}

// Admitted notes an order let through.
func (b *Backlog) Admitted() { b.admitted.Add(1) }

// since adds the orders admitted since f was counted.
func (b *Backlog) since(f *Figures) Figures {
	out := *f
	out.Queued += b.admitted.Load() - f.base
	return out
}

// Defaults of Backlog.
const (
	DefaultBacklogTTL = 200 * time.Millisecond
	// PaceOver is how far back the starts are counted for the pace.
	PaceOver = 10 * time.Second
)

// Read returns the figures, at most TTL old. While one caller counts, the
// others take the last count (never waiting behind the database).
func (b *Backlog) Read(ctx context.Context) (Figures, error) {
	ttl := cmp.Or(b.TTL, DefaultBacklogTTL)
	fresh := func() (*Figures, bool) {
		f := b.last.Load()
		return f, f != nil && time.Since(f.at) < ttl
	}
	if f, ok := fresh(); ok {
		return b.since(f), nil
	}
	if !b.mu.TryLock() {
		if f := b.last.Load(); f != nil {
			return b.since(f), nil
		}
		b.mu.Lock() // the first count: wait for it
	}
	defer b.mu.Unlock()
	if f, ok := fresh(); ok {
		return b.since(f), nil
	}
	f := Figures{base: b.admitted.Load()}
	var started int64
	var since float64 // seconds since the oldest start within PaceOver
	// Queued: the inbox's waiting starts, and the orders placed that the
	// starter has not queued yet (its consumer group lags under load). The
	// starter's position is read first and passed as a value: joined to
	// the offsets row instead, it is known only when the query runs, and
	// the planner scanned every order the topic ever had, decoding each
	// one's metadata, on every count. Both reads see one snapshot, so an
	// order the starter queues between them is not counted twice.
	err := pgx.BeginTxFunc(ctx, b.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var starterTx string
		var starterOffset int64
		err := tx.QueryRow(ctx, `SELECT last_processed_transaction_id::text, coalesce(offset_acked, 0) FROM watermill_offsets_`+outbox.Topic(order.StreamType)+`
			WHERE consumer_group = $1`, StarterGroup).Scan(&starterTx, &starterOffset)
		if errors.Is(err, pgx.ErrNoRows) { // the starter has not run yet: every order is ahead of it
			starterTx, err = "0", nil
		}
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, countSQL, cmp.Or(b.Window, DefaultWindow).Seconds(), PaceOver.Seconds(), starterTx, starterOffset).
			Scan(&f.Queued, &f.Running, &started, &since)
	})
	if err != nil {
		return Figures{}, fmt.Errorf("count the sagas' backlog: %w", err)
	}
	f.PerSec, f.at = Pace(started, since, b.Slots), time.Now()
	b.last.Store(&f)
	return b.since(&f), nil
}

// countSQL counts the backlog with the window ($1) and pace period ($2)
// in seconds, after the starter's position ($3, $4).
var countSQL = `SELECT (SELECT count(*) FROM saga_starts WHERE started_at IS NULL AND attempts < 3)
		+ (SELECT count(*) FROM watermill_` + outbox.Topic(order.StreamType) + ` m
			WHERE (m.transaction_id, m."offset") > ($3::text::xid8, $4)
			AND m.metadata->>'` + outbox.MetaEventType + `' = '` + (order.Placed{}).EventType() + `'),
		(SELECT count(*) FROM saga_starts WHERE finished_at IS NULL AND started_at > now() - make_interval(secs => $1)),
		(SELECT count(*) FROM saga_starts WHERE started_at > now() - make_interval(secs => $2)),
		(SELECT coalesce(extract(epoch FROM now() - min(started_at))::float8, 0) FROM saga_starts WHERE started_at > now() - make_interval(secs => $2))`

// Pace is the sagas started per second: started within PaceOver, the
// first of them since seconds ago. Over PaceOver — or, when the first
// start is more recent (a cold start, or after a quiet spell), the starts
// beyond the slots' first fill over the time since the first start, if
// that is more: divided by PaceOver, the launchers' first seconds read as
// a tenth of their pace, and orders were refused while they were working
// off a backlog they had just begun (three refusals in the first second
// of 24 orders/s on a fresh dev that takes 30); counting the fill, which
// is slots starts at once, as a pace would admit a queue that waits many
// times Wait. At least a second.
func Pace(started int64, since float64, slots int64) float64 {
	steady := float64(started) / PaceOver.Seconds()
	if since >= PaceOver.Seconds() {
		return steady
	}
	return max(steady, float64(started-slots)/max(1, since))
}

// Admission refuses new orders while the starts queued in the inbox would
// wait longer than Wait at the pace sagas are started now (the launchers
// keep a bounded number running, so the queue is where a backlog grows):
// the bus asks it before anything of a PlaceOrder is decided or logged,
// whichever way the order came (POST /orders, POST /commands, a retry).
// A queue under Min is always admitted (a cold start, when no pace is
// measured yet).
type Admission struct {
	Backlog *Backlog
	Wait    time.Duration
	Min     int64
	// Slots is how many sagas the launchers keep running at once.
	Slots int64
	// RetryAfter is what a refused client is told to wait.
	RetryAfter time.Duration
}

// Full reports whether f is a backlog that refuses orders: as many starts
// queued as the launchers' free slots (or Min) take at once, and the next
// order beyond those would wait longer than Wait at the current pace. Free slots count, so a burst after
// a quiet spell (no pace measured) is admitted while the launchers idle.
func (a *Admission) Full(f Figures) bool {
	free := max(a.Min, a.Slots-f.Running)
	return f.Queued >= free && float64(f.Queued-free+1) > f.PerSec*a.Wait.Seconds()
}

// Admit implements commands.Options.Admit.
func (a *Admission) Admit(ctx context.Context, commandType string) error {
	if commandType != (commands.PlaceOrder{}).CommandType() {
		return nil
	}
	f, err := a.Backlog.Read(ctx)
	if err != nil {
		// The database is not answering: the command itself will say so.
		return nil
	}
	if a.Full(f) {
		return &commands.OverloadedError{RetryAfter: a.RetryAfter,
			Reason: "orders are arriving faster than they are fulfilled; place the order again after Retry-After"}
	}
	a.Backlog.Admitted()
	return nil
}
