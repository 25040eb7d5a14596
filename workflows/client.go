package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	enumspb "go.temporal.io/api/enums/v1"
	namespacepb "go.temporal.io/api/namespace/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/outbox"
)

// StarterGroup is the saga starter's consumer group on order_events: permanent.
const StarterGroup = "saga_starter"

// Starter is the Watermill handler that queues a saga for every placed
// order: it records the start in the saga_starts inbox, in the subscriber's
// transaction, so the offset is acknowledged only with the start recorded.
// Launcher starts them.
func Starter(shippingDeadline time.Duration) delivery.Handler {
	return delivery.Handler{Name: StarterGroup, ConsumerGroup: StarterGroup, Topic: outbox.Topic(order.StreamType),
		Handle: func(ctx context.Context, msg *message.Message) error {
			if msg.Metadata.Get(outbox.MetaEventType) != (order.Placed{}).EventType() {
				return nil
			}
			var p order.Placed
			if err := json.Unmarshal(msg.Payload, &p); err != nil {
				return fmt.Errorf("order.placed payload: %w", err)
			}
			in := Input{OrderID: p.OrderID, CustomerID: p.CustomerID, WalletID: p.WalletID, Currency: p.Currency, Lines: p.Lines,
				Total: p.Total, ShippingAddress: p.ShippingAddress, CorrelationID: msg.Metadata.Get(outbox.MetaCorrelationID),
				ShippingDeadline: shippingDeadline}
			tx, err := delivery.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO saga_starts (order_id, input) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING`, p.OrderID, in)
			return err
		}}
}

// Launcher starts the queued sagas, outside any database transaction. The
// workflow id derives from the order id and duplicates are refused, so a
// start repeated after a crash (or by a second worker) starts nothing new;
// a crash between the order's commit and the start loses nothing, the row
// waits in the inbox.
type Launcher struct {
	Pool   *pgxpool.Pool
	Client client.Client
	Log    *slog.Logger
	// Interval is the idle poll of the inbox.
	Interval time.Duration
}

// Run launches until ctx ends.
func (l Launcher) Run(ctx context.Context) error {
	if l.Interval <= 0 {
		l.Interval = 50 * time.Millisecond
	}
	for {
		n, err := l.launch(ctx)
		if err != nil && ctx.Err() == nil {
			l.Log.Warn("saga launcher", "err", err)
		}
		if n > 0 && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.Interval):
		}
	}
}

// launch starts one batch of pending sagas and returns how many it started.
func (l Launcher) launch(ctx context.Context) (int, error) {
	rows, _ := l.Pool.Query(ctx, `SELECT order_id, input FROM saga_starts WHERE started_at IS NULL
		AND (attempts = 0 OR enqueued_at < now() - make_interval(secs => least(attempts, 30)))
		ORDER BY enqueued_at LIMIT 50`)
	type pending struct {
		OrderID string
		Input   Input
	}
	batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pending])
	if err != nil {
		return 0, err
	}
	started := 0
	for _, p := range batch {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := l.Client.ExecuteWorkflow(sctx, client.StartWorkflowOptions{
			ID: WorkflowID(p.OrderID), TaskQueue: TaskQueue,
			WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
			TypedSearchAttributes: temporal.NewSearchAttributes(AttrOrderID.ValueSet(p.OrderID),
				AttrCustomerID.ValueSet(p.Input.CustomerID), AttrOrderStatus.ValueSet(StatusPlaced)),
		}, Name, p.Input)
		cancel()
		var already *serviceerror.WorkflowExecutionAlreadyStarted
		if err != nil && !errors.As(err, &already) {
			// Temporal is unreachable or slow: try again later, with backoff.
			_, uerr := l.Pool.Exec(ctx, `UPDATE saga_starts SET attempts = attempts + 1, last_error = $2,
				enqueued_at = now() WHERE order_id = $1`, p.OrderID, err.Error())
			return started, errors.Join(fmt.Errorf("start saga for order %s: %w", p.OrderID, err), uerr)
		}
		if _, err := l.Pool.Exec(ctx, `UPDATE saga_starts SET started_at = now(), last_error = NULL WHERE order_id = $1`, p.OrderID); err != nil {
			return started, err
		}
		started++
	}
	return started, nil
}

// Sagas asks running sagas about their progress and to cancel.
type Sagas struct{ C client.Client }

// ErrNoSaga means no saga runs for the order (none started, or finished).
var ErrNoSaga = errors.New("no running saga for this order")

// CancelRefusedError is the saga refusing a cancel (the order has shipped).
type CancelRefusedError struct{ Code, Message string }

func (e *CancelRefusedError) Error() string { return e.Message }

// Cancel asks the order's running saga to cancel and compensate. It returns
// once the saga has accepted or refused.
func (s Sagas) Cancel(ctx context.Context, orderID, reason string) (Progress, error) {
	h, err := s.C.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: WorkflowID(orderID), UpdateName: UpdateCancel, Args: []any{reason},
		WaitForStage: client.WorkflowUpdateStageAccepted,
	})
	if err != nil {
		return Progress{}, s.mapErr(err)
	}
	var p Progress
	if err := h.Get(ctx, &p); err != nil {
		return Progress{}, s.mapErr(err)
	}
	return p, nil
}

func (s Sagas) mapErr(err error) error {
	var notFound *serviceerror.NotFound
	var app *temporal.ApplicationError
	switch {
	case errors.As(err, &notFound):
		return ErrNoSaga
	case errors.As(err, &app) && app.Type() == "saga_finished":
		return ErrNoSaga
	case errors.As(err, &app):
		return &CancelRefusedError{Code: app.Type(), Message: app.Message()}
	}
	return err
}

// State is what the Temporal server knows of a saga without asking the
// workflow (no worker involved, so it is fast even under load).
type State struct {
	WorkflowID string     `json:"workflow_id"`
	RunStatus  string     `json:"run_status"`
	Status     string     `json:"status"`
	FailedStep string     `json:"failed_step,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	ClosedAt   *time.Time `json:"closed_at,omitempty"`
}

// State describes the order's saga from its search attributes.
func (s Sagas) State(ctx context.Context, orderID string) (State, error) {
	d, err := s.C.DescribeWorkflowExecution(ctx, WorkflowID(orderID), "")
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return State{}, ErrNoSaga
		}
		return State{}, err
	}
	info := d.GetWorkflowExecutionInfo()
	st := State{WorkflowID: info.GetExecution().GetWorkflowId(), RunStatus: info.GetStatus().String(), StartedAt: info.GetStartTime().AsTime()}
	if info.GetCloseTime() != nil {
		t := info.GetCloseTime().AsTime()
		st.ClosedAt = &t
	}
	fields := info.GetSearchAttributes().GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	_ = dc.FromPayload(fields[AttrOrderStatus.GetName()], &st.Status)
	if p, ok := fields[AttrFailedStep.GetName()]; ok {
		_ = dc.FromPayload(p, &st.FailedStep)
	}
	return st, nil
}

// Progress returns the saga's progress, running or finished.
func (s Sagas) Progress(ctx context.Context, orderID string) (Progress, error) {
	v, err := s.C.QueryWorkflow(ctx, WorkflowID(orderID), "", QueryProgress)
	if err != nil {
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			return Progress{}, ErrNoSaga
		}
		return Progress{}, err
	}
	var p Progress
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
	for name, typ := range SearchAttributes() {
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
