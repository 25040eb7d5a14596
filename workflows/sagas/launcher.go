package sagas

// The launcher: it starts the workflows of the starts queued in the
// saga_starts inbox, outside any database transaction, at the pace sagas
// finish (a bounded number run at once), and records in the inbox when
// each was started and seen to finish.

import (
	"context"
	"errors"
	"time"

	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/tracing"
	"github.com/orderflow/orderflow/workflows"
)

// Launcher starts the queued sagas, outside any database transaction. The
// workflow id derives from the order id and duplicates are refused, so a
// start repeated after a crash (or by a second worker) starts nothing new;
// a crash between the order's commit and the start loses nothing, the row
// waits in the inbox. It wakes when a start is queued (LISTEN on a
// connection of its own) and polls every Interval as well.
//
// It starts sagas at the rate they finish: at most MaxRunning of the sagas
// it started run at once; each holds its slot until the launcher sees it
// close (and records finished_at) or for Window at most. Past the window a
// saga waits for the carrier or an operator, not for the worker's CPU. The
// starts beyond wait in the inbox, where the API's admission control
// (Backlog) counts them.
type Launcher struct {
	Pool   *pgxpool.Pool
	Client client.Client
	Log    *slog.Logger
	// Interval is the idle poll of the inbox, in case a notification is
	// missed (the listening connection was being re-established).
	Interval time.Duration
	// Parallel is how many starts are in flight at once.
	Parallel int
	// MaxRunning bounds the sagas this launcher started and has not seen
	// finish (DefaultMaxRunning when 0).
	MaxRunning int
	// Window is how long a started saga holds its slot at most
	// (DefaultWindow when 0).
	Window time.Duration
}

// Defaults of Launcher (and of the service's flags).
const (
	DefaultMaxRunning = 16
	DefaultWindow     = 30 * time.Second
)

// Run launches until ctx ends.
func (l Launcher) Run(ctx context.Context) error {
	if l.Interval <= 0 {
		l.Interval = time.Second
	}
	if l.Parallel <= 0 {
		l.Parallel = 16
	}
	if l.MaxRunning <= 0 {
		l.MaxRunning = DefaultMaxRunning
	}
	if l.Window <= 0 {
		l.Window = DefaultWindow
	}
	wake := make(chan struct{}, 1)
	raise := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	go outbox.Listen(ctx, l.Pool, startsChannel, func(string) { raise() }, l.Log)
	r := &running{slots: make(chan struct{}, l.MaxRunning), starts: make(chan struct{}, l.Parallel), freed: raise,
		finished: make(chan string, l.MaxRunning), starting: map[string]bool{}}
	var watchers sync.WaitGroup
	defer watchers.Wait()
	go l.recordFinished(ctx, r.finished)
	// Sagas started before a restart still run: they take their slots again.
	if err := l.rewatch(ctx, r, &watchers); err != nil && ctx.Err() == nil {
		l.Log.Warn("saga launcher: running sagas", "err", err)
	}
	for {
		n, err := l.launch(ctx, r, &watchers)
		if err != nil && ctx.Err() == nil {
			l.Log.Warn("saga launcher", "err", err)
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(l.Interval):
		}
	}
}

// running is the launcher's slots: one per saga it is starting or started
// and has not seen finish.
type running struct {
	slots    chan struct{}
	starts   chan struct{} // starts in flight (Parallel)
	freed    func()        // wakes the launcher
	finished chan string   // order ids of sagas seen closed

	mu       sync.Mutex
	starting map[string]bool
}

func (r *running) free() int { return cap(r.slots) - len(r.slots) }

func (r *running) release() { <-r.slots; r.freed() }

// inFlight lists the starts under way (the next batch skips them).
func (r *running) inFlight() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.starting))
	for id := range r.starting {
		ids = append(ids, id)
	}
	return ids
}

func (r *running) mark(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.starting[id] = true
	} else {
		delete(r.starting, id)
	}
}

// rewatch takes a slot for each saga started within the window and not
// seen finished (the launcher restarted while they ran).
func (l Launcher) rewatch(ctx context.Context, r *running, watchers *sync.WaitGroup) error {
	rows, _ := l.Pool.Query(ctx, `SELECT order_id, started_at FROM saga_starts WHERE finished_at IS NULL
		AND started_at > now() - make_interval(secs => $1) ORDER BY started_at DESC LIMIT $2`, l.Window.Seconds(), l.MaxRunning)
	type started struct {
		OrderID string
		At      time.Time
	}
	found, err := pgx.CollectRows(rows, pgx.RowToStructByPos[started])
	for _, s := range found {
		r.slots <- struct{}{}
		watchers.Add(1)
		go l.watch(ctx, r, watchers, s.OrderID, s.At.Add(l.Window))
	}
	return err
}

// watch holds a slot until the saga closes or until, at the latest.
func (l Launcher) watch(ctx context.Context, r *running, watchers *sync.WaitGroup, orderID string, until time.Time) {
	defer watchers.Done()
	defer r.release()
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	for ctx.Err() == nil {
		// A long poll for the close event (the SDK repeats it until then).
		err := l.Client.GetWorkflow(ctx, workflows.WorkflowID(orderID), "").Get(ctx, nil)
		var unavailable *serviceerror.Unavailable
		var exhausted *serviceerror.ResourceExhausted
		var deadline *serviceerror.DeadlineExceeded
		switch {
		case ctx.Err() != nil:
			return // past the window, or shutting down: not seen finished
		case errors.As(err, &unavailable), errors.As(err, &exhausted), errors.As(err, &deadline):
			// Temporal is busy or away: the saga is not known to be closed.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// Closed, whatever its outcome (a failed saga's error included).
		select {
		case r.finished <- orderID:
		case <-ctx.Done():
		}
		return
	}
}

// recordFinished sets finished_at of the sagas seen closed, a batch at a time.
func (l Launcher) recordFinished(ctx context.Context, finished <-chan string) {
	for {
		var ids []string
		select {
		case <-ctx.Done():
			return
		case id := <-finished:
			ids = append(ids, id)
		}
	more:
		for len(ids) < 500 {
			select {
			case id := <-finished:
				ids = append(ids, id)
			default:
				break more
			}
		}
		if _, err := l.Pool.Exec(ctx, `UPDATE saga_starts SET finished_at = now() WHERE order_id = ANY($1)`, ids); err != nil && ctx.Err() == nil {
			l.Log.Warn("saga launcher: record finished sagas", "err", err)
		}
	}
}

type pending struct {
	OrderID     string
	Input       workflows.Input
	TraceParent string
}

// launch starts a batch of pending sagas, as many as there are free
// slots, and returns how many starts it began. Each start takes its slot
// first, so a saga never runs unaccounted, and records itself when done:
// a slow start holds back no other.
func (l Launcher) launch(ctx context.Context, r *running, watchers *sync.WaitGroup) (int, error) {
	free := min(r.free(), 100)
	if free == 0 {
		return 0, nil // a finishing saga wakes the launcher
	}
	rows, _ := l.Pool.Query(ctx, `SELECT order_id, input, coalesce(traceparent, '') FROM saga_starts WHERE started_at IS NULL
		AND (attempts = 0 OR enqueued_at < now() - make_interval(secs => least(attempts, 30)))
		AND order_id <> ALL($2) ORDER BY enqueued_at LIMIT $1`, free, r.inFlight())
	batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pending])
	if err != nil || len(batch) == 0 {
		return 0, err
	}
	for _, p := range batch {
		r.slots <- struct{}{}
		r.mark(p.OrderID, true)
		watchers.Add(1)
		go func() {
			r.starts <- struct{}{}
			err := l.start(ctx, p)
			<-r.starts
			if err == nil {
				_, err = l.Pool.Exec(ctx, `UPDATE saga_starts SET started_at = now(), last_error = NULL WHERE order_id = $1`, p.OrderID)
			} else {
				// Temporal is unreachable or slow: try again later, with backoff.
				if _, uerr := l.Pool.Exec(ctx, `UPDATE saga_starts SET attempts = attempts + 1, last_error = $2,
					enqueued_at = now() WHERE order_id = $1`, p.OrderID, err.Error()); uerr != nil {
					err = errors.Join(err, uerr)
				}
				if ctx.Err() == nil {
					l.Log.Warn("saga launcher: start", "order_id", p.OrderID, "err", err)
				}
			}
			r.mark(p.OrderID, false)
			if err != nil {
				// Not started: it is retried.
				watchers.Done()
				r.release()
				return
			}
			// Started now, or already (a start whose record failed, or
			// another launcher's): it runs, so it holds a slot here too.
			l.watch(ctx, r, watchers, p.OrderID, time.Now().Add(l.Window))
		}()
	}
	return len(batch), nil
}

// start starts one saga; an already started one counts as started.
func (l Launcher) start(ctx context.Context, p pending) error {
	ctx, cancel := context.WithTimeout(tracing.Extract(ctx, p.TraceParent), 10*time.Second)
	defer cancel()
	_, err := l.Client.ExecuteWorkflow(ctx, startOptions(p.Input, enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE), workflows.Name, p.Input)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return nil
	}
	return err
}

func startOptions(in workflows.Input, reuse enumspb.WorkflowIdReusePolicy) client.StartWorkflowOptions {
	summary, details := workflows.Summary(in)
	return client.StartWorkflowOptions{
		// Shown in the Temporal UI's list and on the run's page.
		StaticSummary: summary, StaticDetails: details,
		ID: workflows.WorkflowID(in.OrderID), TaskQueue: workflows.TaskQueue,
		WorkflowIDReusePolicy:    reuse,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		// The worker shares this client: the first workflow task comes back
		// in the start's response instead of a trip through matching.
		EnableEagerStart: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AttrOrderID.ValueSet(in.OrderID),
			workflows.AttrCustomerID.ValueSet(in.CustomerID), workflows.AttrOrderStatus.ValueSet(workflows.StatusPlaced)),
	}
}

// Started reports whether the order's saga was started (its start left
// the inbox); false without a pool.
func Started(ctx context.Context, pool *pgxpool.Pool, orderID string) (bool, error) {
	if pool == nil {
		return false, nil
	}
	var started bool
	err := pool.QueryRow(ctx, `SELECT started_at IS NOT NULL FROM saga_starts WHERE order_id = $1`, orderID).Scan(&started)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return started, err
}
