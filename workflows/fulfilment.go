// Package workflows holds the order-fulfilment saga, a Temporal workflow:
// reserve stock for every line, authorise the total on the customer's
// wallet, confirm the order, ship it through the carrier, capture the
// payment, complete the order — and, when a step fails or the customer
// cancels before shipment, undo what was done, in reverse order.
package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/domain/order"
)

// a names the saga's activities in workflow code (the SDK's usual way: a
// nil receiver whose method values name the registered methods).
var a *activities.Activities

const (
	// TaskQueue is where the worker polls.
	TaskQueue = "order-fulfilment"
	// Name is the workflow type in the Temporal UI.
	Name = "OrderFulfilment"
	// QueryProgress returns the saga's Progress.
	QueryProgress = "progress"
	// UpdateCancel asks the saga to cancel the order (with a reason); it is
	// refused once the order has shipped.
	UpdateCancel = "cancel"
	// DefaultShippingDeadline is how long the carrier may take to dispatch.
	DefaultShippingDeadline = 24 * time.Hour
)

// WorkflowID is the saga's id: one saga per order, so a second start is refused.
func WorkflowID(orderID string) string { return "order-fulfilment:" + orderID }

// Search attributes kept up to date for operators (Temporal UI filters such
// as OrderStatus="COMPENSATED").
var (
	AttrOrderID     = temporal.NewSearchAttributeKeyKeyword("OrderId")
	AttrCustomerID  = temporal.NewSearchAttributeKeyKeyword("CustomerId")
	AttrOrderStatus = temporal.NewSearchAttributeKeyKeyword("OrderStatus")
	AttrFailedStep  = temporal.NewSearchAttributeKeyKeyword("FailedStep")
)

// SearchAttributes are the custom search attributes the namespace needs.
func SearchAttributes() map[string]enumspb.IndexedValueType {
	return map[string]enumspb.IndexedValueType{
		AttrOrderID.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD, AttrCustomerID.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		AttrOrderStatus.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD, AttrFailedStep.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
}

// Saga statuses (the OrderStatus search attribute).
const (
	StatusPlaced             = "PLACED"
	StatusReservingStock     = "RESERVING_STOCK"
	StatusAuthorisingPayment = "AUTHORISING_PAYMENT"
	StatusConfirmed          = "CONFIRMED"
	StatusShipping           = "SHIPPING"
	StatusShipped            = "SHIPPED"
	StatusCompleted          = "COMPLETED"
	StatusCompensating       = "COMPENSATING"
	StatusCompensated        = "COMPENSATED"
	// StatusNeedsAttention: a step after the point of no return or a
	// compensation failed for good; an operator has to look.
	StatusNeedsAttention = "NEEDS_ATTENTION"
)

// Input starts a saga: the placed order.
type Input struct {
	OrderID         string        `json:"order_id"`
	CustomerID      string        `json:"customer_id"`
	WalletID        string        `json:"wallet_id"`
	Currency        string        `json:"currency"`
	Lines           []order.Line  `json:"lines"`
	Total           int64         `json:"total"`
	ShippingAddress order.Address `json:"shipping_address"`
	// CorrelationID is carried into every command of the saga.
	CorrelationID string `json:"correlation_id"`
	// ShippingDeadline bounds the carrier step (a business deadline, kept
	// with a timer); zero means DefaultShippingDeadline.
	ShippingDeadline time.Duration `json:"shipping_deadline,omitempty"`
}

// Progress is what the query returns and the workflow's result.
type Progress struct {
	Status         string   `json:"status"`
	Step           string   `json:"step"`
	FailedStep     string   `json:"failed_step,omitempty"`
	Reason         string   `json:"reason,omitempty"`
	TrackingNumber string   `json:"tracking_number,omitempty"`
	Compensated    []string `json:"compensated,omitempty"`
}

// errCancelled ends the forward path when the customer cancels.
var errCancelled = errors.New("cancelled")

// ErrShipped refuses a cancel after shipment.
const ErrShipped = "order_shipped"

// The saga's history versions (workflow.GetVersion). Runs recorded with
// VersionRegular — every step a regular activity — replay and finish on
// that path; new runs take VersionLocal: every step that only sends a
// command through the bus is a local activity (a marker in the history, no
// trip through matching), the carrier stays a regular activity, and the
// search attributes are written only where the saga waits and where it ends.
const (
	changeLocalActivities = "local-activities"
	VersionRegular        = workflow.DefaultVersion
	VersionLocal          = workflow.Version(1)
)

// Timeouts and retries of the steps on VersionLocal. A step is a command
// through the bus (milliseconds); an infrastructure error (the database
// restarting) is retried with backoff for up to StepDeadline, a business
// refusal not at all.
const (
	StepAttemptTimeout = 10 * time.Second
	StepDeadline       = 10 * time.Minute
	// CarrierTimeout bounds one call to the carrier; it heartbeats every
	// few seconds, so a worker that died is noticed after CarrierHeartbeat.
	CarrierTimeout   = 5 * time.Minute
	CarrierHeartbeat = 10 * time.Second
)

type fulfilment struct {
	in       Input
	p        Progress
	version  workflow.Version
	written  [2]string // the OrderStatus and FailedStep last upserted
	undo     []compensation
	cancel   string // the customer's reason, once asked
	cancelCh workflow.Channel
	shipped  bool // the carrier has the parcel: no more cancelling
	done     bool
}

type compensation struct {
	step string
	run  func(ctx workflow.Context) error
}

// OrderFulfilment is the saga.
func OrderFulfilment(ctx workflow.Context, in Input) (Progress, error) {
	if in.ShippingDeadline <= 0 {
		in.ShippingDeadline = DefaultShippingDeadline
	}
	f := &fulfilment{in: in, cancelCh: workflow.NewChannel(ctx)}
	// First, before any command: old histories have no marker here.
	f.version = workflow.GetVersion(ctx, changeLocalActivities, VersionRegular, VersionLocal)
	if f.version != VersionRegular {
		// The launcher starts the run with OrderStatus=PLACED.
		f.written = [2]string{StatusPlaced, ""}
	}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return f.p, nil }); err != nil {
		return f.p, err
	}
	err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateCancel, func(ctx workflow.Context, reason string) (Progress, error) {
		f.cancel = reason
		f.cancelCh.SendAsync(reason)
		return f.p, nil
	}, workflow.UpdateHandlerOptions{Validator: func(reason string) error {
		switch {
		case strings.TrimSpace(reason) == "":
			return temporal.NewApplicationError("a cancellation needs a reason", "reason_required")
		case f.shipped:
			return temporal.NewApplicationError("the order has shipped and can no longer be cancelled", ErrShipped)
		case f.done || f.cancel != "" || f.p.Status == StatusCompensating:
			return temporal.NewApplicationError("the order is already being cancelled or is finished", "saga_finished")
		}
		return nil
	}})
	if err != nil {
		return f.p, err
	}
	f.status(ctx, StatusPlaced, "")

	if f.version == VersionRegular {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			// Infrastructure errors retry with backoff, without limit: business
			// failures are non-retryable application errors from the activities.
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		})
	} else {
		ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout: StepAttemptTimeout, ScheduleToCloseTimeout: StepDeadline,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second},
		})
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: CarrierTimeout, HeartbeatTimeout: CarrierHeartbeat,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		})
	}
	err = f.forward(ctx)
	switch {
	case err == nil:
		f.done = true
		f.status(ctx, StatusCompleted, "done")
		return f.p, nil
	case f.shipped && !errors.Is(err, errCancelled):
		// Past the point of no return nothing is undone: the goods are gone.
		f.done = true
		f.fail(ctx, err)
		f.status(ctx, StatusNeedsAttention, f.p.Step)
		return f.p, err
	}
	return f.compensate(ctx, err)
}

// step runs one forward step unless a cancel came first.
func (f *fulfilment) step(ctx workflow.Context, name, status string, run func(workflow.Context) error) error {
	if f.cancel != "" {
		return errCancelled
	}
	f.status(ctx, status, name)
	return run(ctx)
}

// before registers the compensation of the step about to run: it is
// registered first, so a step that half-happened is undone too (every
// compensation is a no-op when there is nothing to undo).
func (f *fulfilment) before(name string, run func(workflow.Context) error) {
	f.undo = append(f.undo, compensation{step: "compensate:" + name, run: run})
}

// call runs one step's activity: a local activity on VersionLocal, a
// regular one on the runs recorded before.
func (f *fulfilment) call(ctx workflow.Context, activity, arg any) error {
	if f.version == VersionRegular {
		return workflow.ExecuteActivity(ctx, activity, arg).Get(ctx, nil)
	}
	return workflow.ExecuteLocalActivity(ctx, activity, arg).Get(ctx, nil)
}

func (f *fulfilment) at(step string) activities.Step {
	return activities.Step{OrderID: f.in.OrderID, Step: step, CorrelationID: f.in.CorrelationID}
}

func (f *fulfilment) forward(ctx workflow.Context) error {
	in := f.in
	f.before("cancel_order", func(ctx workflow.Context) error {
		return f.call(ctx, a.CancelOrder, activities.OrderChange{Step: f.at("compensate:cancel_order"), Reason: f.p.Reason})
	})
	for _, l := range in.Lines {
		line := activities.Line{Step: f.at("reserve_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}
		f.before("release_stock:"+l.SKU, func(ctx workflow.Context) error {
			undo := line
			undo.Step = f.at("compensate:release_stock:" + l.SKU)
			return f.call(ctx, a.ReleaseStock, undo)
		})
		if err := f.step(ctx, line.Step.Step, StatusReservingStock, func(ctx workflow.Context) error {
			return f.call(ctx, a.ReserveStock, line)
		}); err != nil {
			return err
		}
	}
	pay := activities.Payment{Step: f.at("authorise_payment"), WalletID: in.WalletID, Amount: in.Total, Currency: in.Currency}
	f.before("void_payment", func(ctx workflow.Context) error {
		undo := pay
		undo.Step = f.at("compensate:void_payment")
		return f.call(ctx, a.VoidPayment, undo)
	})
	if err := f.step(ctx, "authorise_payment", StatusAuthorisingPayment, func(ctx workflow.Context) error {
		return f.call(ctx, a.AuthorisePayment, pay)
	}); err != nil {
		return err
	}
	if err := f.step(ctx, "confirm_order", StatusConfirmed, func(ctx workflow.Context) error {
		return f.call(ctx, a.ConfirmOrder, activities.OrderChange{Step: f.at("confirm_order")})
	}); err != nil {
		return err
	}
	parcel := activities.Parcel{Step: f.at("schedule_shipment"), ShipmentID: "shp-" + in.OrderID, Address: in.ShippingAddress}
	f.before("fail_shipment", func(ctx workflow.Context) error {
		undo := parcel
		undo.Step, undo.Reason = f.at("compensate:fail_shipment"), "order not fulfilled: "+f.p.Reason
		return f.call(ctx, a.FailShipment, undo)
	})
	if err := f.step(ctx, "schedule_shipment", StatusShipping, func(ctx workflow.Context) error {
		return f.call(ctx, a.ScheduleShipment, parcel)
	}); err != nil {
		return err
	}
	if err := f.step(ctx, "dispatch_shipment", StatusShipping, func(ctx workflow.Context) error {
		return f.dispatch(ctx, parcel)
	}); err != nil {
		return err
	}
	f.shipped = true
	f.status(ctx, StatusShipped, "dispatch_shipment")

	capture := pay
	capture.Step = f.at("capture_payment")
	f.before("refund_payment", func(ctx workflow.Context) error {
		undo := pay
		undo.Step = f.at("compensate:refund_payment")
		return f.call(ctx, a.RefundPayment, undo)
	})
	f.status(ctx, StatusShipped, "capture_payment")
	if err := f.call(ctx, a.CapturePayment, capture); err != nil {
		// A capture refused for good is undone like an earlier failure: the
		// payment never happened, so the order is not fulfilled.
		f.shipped = false
		return err
	}
	f.status(ctx, StatusShipped, "mark_shipped")
	if err := f.call(ctx, a.MarkOrderShipped, activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: parcel.ShipmentID}); err != nil {
		return err
	}
	for _, l := range in.Lines {
		f.status(ctx, StatusShipped, "commit_stock:"+l.SKU)
		if err := f.call(ctx, a.CommitStock, activities.Line{Step: f.at("commit_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}); err != nil {
			return err
		}
	}
	f.status(ctx, StatusShipped, "complete_order")
	return f.call(ctx, a.CompleteOrder, activities.OrderChange{Step: f.at("complete_order")})
}

// dispatch waits for the carrier, for the customer's cancel, or for the
// shipping deadline (a timer: a business deadline, not a workflow timeout),
// whichever comes first.
func (f *fulfilment) dispatch(ctx workflow.Context, parcel activities.Parcel) error {
	actCtx, stop := workflow.WithCancel(ctx)
	defer stop()
	p := parcel
	p.Step = f.at("dispatch_shipment")
	if f.version != VersionRegular {
		f.publish(ctx) // SHIPPING, while the carrier works
	}
	dispatched := workflow.ExecuteActivity(actCtx, a.DispatchWithCarrier, p)
	timerCtx, stopTimer := workflow.WithCancel(ctx)
	defer stopTimer()
	deadline := workflow.NewTimer(timerCtx, f.in.ShippingDeadline)
	var err error
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(dispatched, func(fut workflow.Future) { err = fut.Get(ctx, &f.p.TrackingNumber) })
	sel.AddReceive(f.cancelCh, func(c workflow.ReceiveChannel, more bool) { c.Receive(ctx, nil); err = errCancelled })
	sel.AddFuture(deadline, func(workflow.Future) {
		err = temporal.NewNonRetryableApplicationError(fmt.Sprintf("the carrier did not dispatch within %s", f.in.ShippingDeadline), "shipping_deadline_passed", nil)
	})
	sel.Select(ctx)
	return err
}

// compensate undoes every registered step in reverse on a disconnected
// context, so that a cancelled workflow still cleans up.
func (f *fulfilment) compensate(ctx workflow.Context, cause error) (Progress, error) {
	f.fail(ctx, cause)
	f.status(ctx, StatusCompensating, f.p.Step)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var failed error
	for i := len(f.undo) - 1; i >= 0; i-- {
		c := f.undo[i]
		f.p.Step = c.step
		if err := c.run(dctx); err != nil {
			failed = errors.Join(failed, fmt.Errorf("%s: %w", c.step, err))
			continue
		}
		f.p.Compensated = append(f.p.Compensated, c.step)
	}
	f.done = true
	if failed != nil {
		f.status(dctx, StatusNeedsAttention, f.p.Step)
		return f.p, failed
	}
	f.status(dctx, StatusCompensated, "compensated")
	return f.p, nil
}

// fail records why the forward path stopped.
func (f *fulfilment) fail(ctx workflow.Context, err error) {
	var app *temporal.ApplicationError
	switch {
	case errors.Is(err, errCancelled):
		f.p.Reason = "cancelled by the customer: " + f.cancel
	case temporal.IsCanceledError(err):
		f.p.Reason = "cancelled by an operator"
	case errors.As(err, &app):
		f.p.Reason = app.Message()
		if app.Type() != "" && !strings.HasPrefix(f.p.Reason, app.Type()) {
			f.p.Reason = app.Type() + ": " + f.p.Reason
		}
	default:
		f.p.Reason = err.Error()
	}
	if !errors.Is(err, errCancelled) {
		f.p.FailedStep = f.p.Step
	}
}

// status records progress. The runs recorded before VersionLocal upserted
// the search attributes at every call; VersionLocal writes them (each write
// is a history event and a visibility update) only where the workflow
// waits — for the carrier — and when it ends: between those points the
// steps run as local activities inside one workflow task, and the
// intermediate values would never be seen. The progress query has the
// current step at any time.
func (f *fulfilment) status(ctx workflow.Context, status, step string) {
	f.p.Status, f.p.Step = status, step
	switch {
	case f.version == VersionRegular:
		f.upsert(ctx)
	case status == StatusCompleted || status == StatusCompensated || status == StatusNeedsAttention:
		f.publish(ctx)
	}
}

// publish writes the search attributes when they changed since last time.
func (f *fulfilment) publish(ctx workflow.Context) {
	if f.written != [2]string{f.p.Status, f.p.FailedStep} {
		f.upsert(ctx)
	}
}

func (f *fulfilment) upsert(ctx workflow.Context) {
	f.written = [2]string{f.p.Status, f.p.FailedStep}
	updates := []temporal.SearchAttributeUpdate{
		AttrOrderID.ValueSet(f.in.OrderID), AttrCustomerID.ValueSet(f.in.CustomerID), AttrOrderStatus.ValueSet(f.p.Status),
	}
	if f.p.FailedStep != "" {
		updates = append(updates, AttrFailedStep.ValueSet(f.p.FailedStep))
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "err", err)
	}
}
