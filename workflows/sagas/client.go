// Package sagas is the client side of the fulfilment saga: the Watermill
// handler that queues a saga for every placed order, the launcher that
// starts them on Temporal, the calls the API makes to running sagas (cancel,
// progress, state) and the namespace set-up. The workflow itself, in
// package workflows, stays deterministic code only.
package sagas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/tracing"
	"github.com/orderflow/orderflow/workflows"
)

// StarterGroup is the saga starter's consumer group on order_events: permanent.
const StarterGroup = "saga_starter"

// Starter is the Watermill handler that queues a saga for every placed
// order: it records the start in the saga_starts inbox, in the consumer's
// transaction, so the offset is acknowledged only with the start recorded.
// Launcher starts them. It consumes a batch per transaction (HandleBatch):
// a message that fails is retried outside the transaction that holds the
// group's offset, and then poisoned, so it holds back no other consumer.
func Starter(shippingDeadline time.Duration) delivery.Handler {
	return delivery.Handler{Name: StarterGroup, ConsumerGroup: StarterGroup, Topic: outbox.Topic(order.StreamType),
		Handle: func(ctx context.Context, msg *message.Message) error {
			tx, err := delivery.Tx(ctx)
			if err != nil {
				return err
			}
			// The start continues this handling's trace (tracing.Inject).
			return queue(ctx, tx, msg, tracing.Inject(ctx), shippingDeadline)
		},
		HandleBatch: func(ctx context.Context, tx pgx.Tx, msgs []*message.Message) error {
			for _, msg := range msgs {
				// One message continues its trace in ctx; in a larger
				// batch each start continues its own order's trace.
				traceparent := msg.Metadata.Get(outbox.MetaTraceParent)
				if len(msgs) == 1 {
					traceparent = tracing.Inject(ctx)
				}
				if err := queue(ctx, tx, msg, traceparent, shippingDeadline); err != nil {
					return err
				}
			}
			return nil
		}}
}

// queue records the saga start of an order.placed message in tx (other
// events of the topic are no start). The notification is delivered when
// tx commits: it wakes the launcher at once.
func queue(ctx context.Context, tx pgx.Tx, msg *message.Message, traceparent string, shippingDeadline time.Duration) error {
	if msg.Metadata.Get(outbox.MetaEventType) != (order.Placed{}).EventType() {
		return nil
	}
	var p order.Placed
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		return delivery.Permanent(fmt.Errorf("order.placed payload: %w", err))
	}
	in := workflows.Input{OrderID: p.OrderID, CustomerID: p.CustomerID, WalletID: p.WalletID, Currency: p.Currency, Lines: p.Lines,
		Total: p.Total, ShippingAddress: p.ShippingAddress, CorrelationID: msg.Metadata.Get(outbox.MetaCorrelationID),
		Actor: msg.Metadata.Get(outbox.MetaActor), ShippingDeadline: shippingDeadline}
	_, err := tx.Exec(ctx, `WITH queued AS (
		INSERT INTO saga_starts (order_id, input, traceparent) VALUES ($1, $2, nullif($3, '')) ON CONFLICT (order_id) DO NOTHING RETURNING 1)
		SELECT pg_notify('`+startsChannel+`', '') FROM queued`, p.OrderID, in, traceparent)
	return err
}

// startsChannel is the PostgreSQL notification channel of new saga starts.
const startsChannel = "orderflow_saga_starts"

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
	go outbox.Listen(ctx, l.Pool, startsChannel, raise, l.Log)
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

// Client asks running sagas about their progress and to cancel.
type Client struct {
	C client.Client
	// Pool, when set, lets a customer's cancel of an order whose saga
	// ended without an outcome start its repair run (which answers it).
	Pool *pgxpool.Pool
}

// ErrNoSaga means no saga runs for the order (none started, or finished).
var ErrNoSaga = errors.New("no running saga for this order")

// ErrSagaStarting: the order is placed and its saga not started yet (the
// launcher is about to): a cancel is to be sent again in a moment.
var ErrSagaStarting = errors.New("the order's saga is starting")

// RefusedError is the saga refusing an update: a cancel once the carrier
// has the parcel, a decision it is not waiting for, text it cannot store.
type RefusedError struct{ Code, Message string }

func (e *RefusedError) Error() string { return e.Message }

// CancelOrder is a customer's cancel of an order, through the one door
// that decides it: the running saga (which may have to ask the carrier
// first). A saga that ended without an outcome (terminated) is repaired,
// and the repair run answers with its reading of the carrier. ErrNoSaga:
// the saga finished with an outcome, which stands; ErrSagaStarting: none
// runs yet.
//
// updateID, when not empty, makes the cancel idempotent: Temporal answers a
// cancel sent again under the same id with the first one's outcome.
func (s Client) CancelOrder(ctx context.Context, orderID, reason, updateID string) (workflows.Progress, error) {
	p, err := s.update(ctx, orderID, workflows.UpdateCancel, reason, updateID)
	if !errors.Is(err, ErrNoSaga) {
		return p, err
	}
	st, err := s.State(ctx, orderID)
	switch {
	case errors.Is(err, ErrNoSaga):
		// Not started yet, or its runs are past the namespace's
		// retention: the inbox says which.
		if started, err := Started(ctx, s.Pool, orderID); err != nil || !started {
			return p, errors.Join(ErrSagaStarting, err)
		}
	case err != nil:
		return p, err
	case !st.Unfinished():
		return p, ErrNoSaga
	}
	if s.Pool == nil {
		return p, ErrNoSaga
	}
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if err := Repair(ctx, s.Pool, s.C, orderID); err != nil && !errors.Is(err, ErrNothingToRepair) && !errors.As(err, &already) {
		return p, err
	}
	return s.update(ctx, orderID, workflows.UpdateCancel, reason, updateID)
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

// Resolve gives an operator's decision to a saga in NEEDS_ATTENTION; it
// returns once the saga has taken it (or refused it, *RefusedError).
func (s Client) Resolve(ctx context.Context, orderID string, r workflows.Resolution) (workflows.Progress, error) {
	return s.update(ctx, orderID, workflows.UpdateResolve, r, "")
}

func (s Client) update(ctx context.Context, orderID, name string, arg any, updateID string) (workflows.Progress, error) {
	if updateID == "" {
		updateID = uuid.NewString()
	}
	// The workflow task that runs an update can fail when an event lands
	// at the same moment (the carrier's answer to a withdrawal): the
	// server then answers WorkflowNotReady. The same update id again is
	// the same update, so it is sent again, briefly.
	opts := client.UpdateWorkflowOptions{
		UpdateID:   updateID,
		WorkflowID: workflows.WorkflowID(orderID), UpdateName: name, Args: []any{arg},
		WaitForStage: client.WorkflowUpdateStageAccepted,
	}
	run := func() (p workflows.Progress, err error) {
		h, err := s.C.UpdateWorkflow(ctx, opts)
		if err != nil {
			return p, err
		}
		// Accepted: the saga has it. Its answer may come later than ctx
		// allows (the carrier is slow to answer a withdrawal).
		if err := h.Get(ctx, &p); err != nil && ctx.Err() != nil {
			return p, ErrPending
		} else if err != nil {
			return p, err
		}
		return p, nil
	}
	p, err := run()
	var notReady *serviceerror.WorkflowNotReady
	for attempt := 1; errors.As(err, &notReady) && attempt <= 5 && ctx.Err() == nil; attempt++ {
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		p, err = run()
	}
	if errors.Is(err, ErrPending) {
		return workflows.Progress{}, err
	} else if err != nil {
		return workflows.Progress{}, s.mapErr(err)
	}
	return p, nil
}

// ErrPending: the saga accepted the update and has not answered within
// the caller's time; the answer shows in its progress.
var ErrPending = errors.New("the saga accepted and has not answered yet")

func (s Client) mapErr(err error) error {
	var notFound *serviceerror.NotFound
	var app *temporal.ApplicationError
	switch {
	case errors.As(err, &notFound):
		return ErrNoSaga
	case errors.As(err, &app) && app.Type() == workflows.ErrSagaFinished:
		return ErrNoSaga
	case errors.As(err, &app):
		return &RefusedError{Code: app.Type(), Message: app.Message()}
	}
	return err
}

// State is what the Temporal server knows of a saga without asking the
// workflow (no worker involved, so it is fast even under load).
type State struct {
	OrderID    string     `json:"order_id"`
	WorkflowID string     `json:"workflow_id"`
	RunID      string     `json:"run_id,omitempty"`
	RunStatus  string     `json:"run_status"`
	Status     string     `json:"status"`
	FailedStep string     `json:"failed_step,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	ClosedAt   *time.Time `json:"closed_at,omitempty"`
}

// State describes the order's saga from its search attributes.
func (s Client) State(ctx context.Context, orderID string) (State, error) {
	d, err := s.C.DescribeWorkflowExecution(ctx, workflows.WorkflowID(orderID), "")
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return State{}, ErrNoSaga
		}
		return State{}, err
	}
	st := stateOf(d.GetWorkflowExecutionInfo())
	st.OrderID = orderID
	return st, nil
}

func stateOf(info *workflowpb.WorkflowExecutionInfo) State {
	st := State{WorkflowID: info.GetExecution().GetWorkflowId(), RunID: info.GetExecution().GetRunId(), RunStatus: info.GetStatus().String(), StartedAt: info.GetStartTime().AsTime()}
	if info.GetCloseTime() != nil {
		t := info.GetCloseTime().AsTime()
		st.ClosedAt = &t
	}
	fields := info.GetSearchAttributes().GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	_ = dc.FromPayload(fields[workflows.AttrOrderID.GetName()], &st.OrderID)
	_ = dc.FromPayload(fields[workflows.AttrOrderStatus.GetName()], &st.Status)
	if p, ok := fields[workflows.AttrFailedStep.GetName()]; ok {
		_ = dc.FromPayload(p, &st.FailedStep)
	}
	return st
}

// byStatus is the visibility query of the sagas whose OrderStatus is status.
func byStatus(status string) string {
	return fmt.Sprintf("%s = %q AND WorkflowType = %q", workflows.AttrOrderStatus.GetName(), status, workflows.Name)
}

// Count returns how many sagas have OrderStatus status (running ones only:
// a finished saga keeps its last status).
func (s Client) Count(ctx context.Context, status string) (int64, error) {
	res, err := s.C.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: byStatus(status) + ` AND ExecutionStatus = "Running"`})
	return res.GetCount(), err
}

// List returns up to limit sagas whose OrderStatus is status, newest first
// (Temporal's visibility store: it trails the sagas by a moment).
func (s Client) List(ctx context.Context, status string, limit int) ([]State, error) {
	var out []State
	var token []byte
	for len(out) < limit {
		res, err := s.C.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:    byStatus(status),
			PageSize: int32(min(limit-len(out), 1000)), NextPageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, info := range res.GetExecutions() {
			out = append(out, stateOf(info))
		}
		if token = res.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	return out, nil
}

// Progress returns the saga's progress, running or finished.
func (s Client) Progress(ctx context.Context, orderID string) (workflows.Progress, error) {
	v, err := s.C.QueryWorkflow(ctx, workflows.WorkflowID(orderID), "", workflows.QueryProgress)
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return workflows.Progress{}, ErrNoSaga
		}
		return workflows.Progress{}, err
	}
	var p workflows.Progress
	return p, v.Get(&p)
}

// EnsureNamespace makes namespace exist with at least the given retention
// and the saga's search attributes, adding what is missing at runtime.
func EnsureNamespace(ctx context.Context, c client.Client, namespace string, retention time.Duration) error {
	ws := c.WorkflowService()
	desc, err := ws.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: namespace})
	var notFound *serviceerror.NamespaceNotFound
	if errors.As(err, &notFound) {
		_, err = ws.RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
			Namespace: namespace, WorkflowExecutionRetentionPeriod: durationpb.New(retention)})
		if err != nil {
			return fmt.Errorf("register namespace %s: %w", namespace, err)
		}
	} else if err != nil {
		return fmt.Errorf("describe namespace %s: %w", namespace, err)
	} else if desc.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration() < retention {
		_, err = ws.UpdateNamespace(ctx, &workflowservice.UpdateNamespaceRequest{Namespace: namespace,
			Config: &namespacepb.NamespaceConfig{WorkflowExecutionRetentionTtl: durationpb.New(retention)}})
		if err != nil {
			return fmt.Errorf("set retention of %s: %w", namespace, err)
		}
	}
	ops := c.OperatorService()
	have, err := ops.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes: %w", err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range workflows.SearchAttributes() {
		if _, ok := have.GetCustomAttributes()[name]; !ok {
			missing[name] = typ
		}
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = ops.AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: missing})
	if err != nil {
		return fmt.Errorf("add search attributes: %w", err)
	}
	return nil
}

// Unfinished reports whether the saga's latest run closed without a
// business outcome: terminated, timed out or cancelled from outside, or
// failed (as runs recorded before VersionGuarded did when they ended in
// NEEDS_ATTENTION). Its order may hold stock, money or a booking.
func (st State) Unfinished() bool {
	return st.RunStatus != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING.String() &&
		st.RunStatus != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED.String()
}

// ErrNothingToRepair: the order's saga runs, or ended with an outcome.
var ErrNothingToRepair = errors.New("the saga is running or ended with a business outcome")

// Repair starts a repair run for an order whose saga is Unfinished: the
// same workflow id — so the same step keys, and what the ended run did is
// not done twice — and the input of the first start, with Repair set. The
// run reads the order from the event log and completes or compensates it.
func Repair(ctx context.Context, pool *pgxpool.Pool, c client.Client, orderID string) error {
	st, err := Client{C: c}.State(ctx, orderID)
	if errors.Is(err, ErrNoSaga) {
		// Its runs are past the namespace's retention: repaired like an
		// ended one, if it was started at all.
		if started, serr := Started(ctx, pool, orderID); serr != nil || !started {
			return errors.Join(err, serr)
		}
	} else if err != nil {
		return err
	} else if !st.Unfinished() {
		return fmt.Errorf("order %s: %w (%s, %s)", orderID, ErrNothingToRepair, st.RunStatus, st.Status)
	}
	var in workflows.Input
	if err := pool.QueryRow(ctx, `SELECT input FROM saga_starts WHERE order_id = $1`, orderID).Scan(&in); err != nil {
		return fmt.Errorf("order %s: the saga's input: %w", orderID, err)
	}
	legacy := false
	if st.WorkflowID != "" {
		if legacy, err = legacyKeys(ctx, c, st.WorkflowID, st.RunID); err != nil {
			return fmt.Errorf("order %s: the ended run's keys: %w", orderID, err)
		}
	}
	in.Repair, in.LegacyKeys = true, legacy
	_, err = c.ExecuteWorkflow(ctx, startOptions(in, enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE), workflows.Name, in)
	return err
}

// legacyKeys reports whether a run sent its commands under the keys of
// the runs recorded before workflows.VersionGuarded (LegacyKeys).
func legacyKeys(ctx context.Context, c client.Client, workflowID, runID string) (bool, error) {
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return false, err
		}
		events = append(events, e)
	}
	return LegacyKeys(events), nil
}

// LegacyKeys reports whether the run whose history this is sent its
// commands (and booked the carrier) under the keys of the runs recorded
// before workflows.VersionGuarded: its version marker says so, or no marker
// came before its first step (the first version), or it repaired such a run
// itself.
func LegacyKeys(events []*historypb.HistoryEvent) bool {
	dc := converter.GetDefaultDataConverter()
	for _, e := range events {
		if started := e.GetWorkflowExecutionStartedEventAttributes(); started != nil {
			var in workflows.Input
			if p := started.GetInput().GetPayloads(); len(p) > 0 && dc.FromPayload(p[0], &in) == nil && in.LegacyKeys {
				return true
			}
		}
		m := e.GetMarkerRecordedEventAttributes()
		if m != nil && m.GetMarkerName() == "Version" {
			var change string
			var v workflow.Version
			if dc.FromPayloads(m.GetDetails()["change-id"], &change) == nil && change == workflows.ChangeID &&
				dc.FromPayloads(m.GetDetails()["version"], &v) == nil {
				return v < workflows.VersionGuarded
			}
		}
		if e.GetActivityTaskScheduledEventAttributes() != nil || m != nil {
			return true // a step before any version marker: the first version
		}
	}
	return false
}

// Unfinished lists the sagas whose latest run ended without a business
// outcome (terminated, timed out, cancelled from outside, failed), whatever
// their order's status, from Temporal's visibility store: the orders that
// may hold stock, money or a booking no run looks after.
//
// Orders not at an end in the read model whose saga was started but has no
// run left (past the namespace's retention) are listed too, with the run
// status "GONE".
func Unfinished(ctx context.Context, pool *pgxpool.Pool, c client.Client) ([]State, error) {
	var out []State
	seen := map[string]bool{}
	var token []byte
	for {
		res, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:    fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus != "Running" AND ExecutionStatus != "Completed"`, workflows.Name),
			PageSize: 1000, NextPageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, info := range res.GetExecutions() {
			wid := info.GetExecution().GetWorkflowId()
			if seen[wid] {
				continue
			}
			seen[wid] = true
			orderID, ok := strings.CutPrefix(wid, workflows.WorkflowID(""))
			if !ok {
				continue
			}
			// The latest run decides: a repaired order has a newer one.
			st, err := (Client{C: c}).State(ctx, orderID)
			if err != nil {
				return nil, fmt.Errorf("order %s: %w", orderID, err)
			}
			if st.Unfinished() {
				out = append(out, st)
			}
		}
		if token = res.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	rows, _ := pool.Query(ctx, `SELECT r.order_id FROM read_orders r JOIN saga_starts s USING (order_id)
		WHERE r.status IN ('placed', 'confirmed', 'shipped') AND s.started_at IS NOT NULL ORDER BY r.placed_at`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if seen[workflows.WorkflowID(id)] {
			continue
		}
		if _, err := (Client{C: c}).State(ctx, id); errors.Is(err, ErrNoSaga) {
			out = append(out, State{OrderID: id, WorkflowID: workflows.WorkflowID(id), RunStatus: "GONE"})
		} else if err != nil {
			return nil, fmt.Errorf("order %s: %w", id, err)
		}
	}
	slices.SortFunc(out, func(a, b State) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}
