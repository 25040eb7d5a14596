// Package workflows holds the order-fulfilment saga, a Temporal workflow:
// reserve stock for every line, authorise the total on the customer's
// wallet, confirm the order, ship it through the carrier, capture the
// payment, complete the order — and, when a step before the carrier fails
// or the customer cancels in time, undo what was done, in reverse order.
// Once the carrier has the parcel nothing is undone: a failure after it
// stops the saga for an operator, who retries the step or writes it off.
package workflows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
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
	// UpdateCancel asks the saga to cancel the order (with a reason). It is
	// refused once the carrier has the parcel; while the carrier works, the
	// saga asks the carrier to withdraw and answers with what it said.
	UpdateCancel = "cancel"
	// UpdateResolve is an operator's decision for a saga in
	// NEEDS_ATTENTION (a Resolution).
	UpdateResolve = "resolve"
	// DefaultShippingDeadline is how long the carrier may take to dispatch.
	DefaultShippingDeadline = 24 * time.Hour
	// MaxReason bounds the text of a cancel or a decision (as the API does).
	MaxReason = 500
)

// WorkflowID is the saga's id: one saga per order, so a second start is refused.
func WorkflowID(orderID string) string { return "order-fulfilment:" + orderID }

// Search attributes kept up to date for operators (Temporal UI filters such
// as OrderStatus="NEEDS_ATTENTION").
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
	// StatusWrittenOff: the parcel left, the sale could not be finished,
	// and an operator wrote the order off.
	StatusWrittenOff = "WRITTEN_OFF"
	// StatusNeedsAttention: a step failed for good where the saga may not
	// decide alone; it waits for an operator's Resolution (runs recorded
	// before VersionGuarded ended in it instead).
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
	// Actor placed the order: the saga's commands are recorded as the
	// saga's, on the actor's behalf.
	Actor string `json:"actor,omitempty"`
	// ShippingDeadline bounds the carrier step (a business deadline, kept
	// with a timer); zero means DefaultShippingDeadline.
	ShippingDeadline time.Duration `json:"shipping_deadline,omitempty"`
	// Repair starts a run that finishes what an ended run left (one that
	// an operator terminated): it reads the order from the event log, then
	// completes it if the carrier has the parcel and compensates it if not.
	Repair bool `json:"repair,omitempty"`
	// LegacyKeys: the run being repaired was recorded before
	// VersionGuarded and sent its commands (and booked the carrier) under
	// the keys of that time (activities.CommandID): the repair uses them.
	LegacyKeys bool `json:"legacy_keys,omitempty"`
}

// Progress is what the query returns and the workflow's result.
type Progress struct {
	Status         string   `json:"status"`
	Step           string   `json:"step"`
	FailedStep     string   `json:"failed_step,omitempty"`
	Reason         string   `json:"reason,omitempty"`
	TrackingNumber string   `json:"tracking_number,omitempty"`
	Compensated    []string `json:"compensated,omitempty"`
	// Skipped are compensations an operator settled by hand.
	Skipped []string `json:"skipped,omitempty"`
	// Attention is set while the saga waits for an operator.
	Attention *Attention `json:"attention,omitempty"`
	// Decisions are the operators' resolutions, oldest first.
	Decisions []string `json:"decisions,omitempty"`
	// Carrier says what the carrier answered to a withdrawal, if one was
	// asked: "withdrawn" or "taken".
	Carrier string `json:"carrier,omitempty"`
	Repair  bool   `json:"repair,omitempty"`
}

// Attention is a step the saga stopped at for an operator.
type Attention struct {
	Step    string    `json:"step"`
	Error   string    `json:"error"`
	Options []string  `json:"options"`
	Since   time.Time `json:"since"`
}

// Resolution is an operator's decision for a saga in NEEDS_ATTENTION.
type Resolution struct {
	Action   string `json:"action"`
	Reason   string `json:"reason"`
	Operator string `json:"operator,omitempty"`
}

// What an operator may decide, depending on where the saga stopped.
const (
	// ActionRetry runs the failed step again (the cause is fixed).
	ActionRetry = "retry"
	// ActionCompensate gives up before the carrier and undoes what was done.
	ActionCompensate = "compensate"
	// ActionSkip counts a compensation as done by hand and goes on.
	ActionSkip = "skip"
	// ActionWriteOff closes the order after the carrier took the parcel:
	// the stock is committed, an uncaptured hold is voided, the order
	// records the write-off.
	ActionWriteOff = "write_off"
)

// Codes of refused updates.
const (
	ErrShipped          = "order_shipped"
	ErrSagaFinished     = "saga_finished"
	ErrCancelling       = "already_cancelling"
	ErrNotWaiting       = "not_waiting"
	ErrActionNotAllowed = "action_not_allowed"
	ErrInvalidText      = "invalid_text"
)

// The carrier's answers to a withdrawal (Progress.Carrier).
const (
	answerWithdrawn = "withdrawn"
	answerTaken     = "taken"
)

// The saga's history versions (workflow.GetVersion, under one change id
// whose name dates from version 1). Runs recorded with an older version
// replay and finish on their own path (legacy.go).
const (
	// ChangeID names the saga's version marker (its name dates from
	// version 1).
	ChangeID = "local-activities"
	// VersionRegular: every step a regular activity.
	VersionRegular = workflow.DefaultVersion
	// VersionLocal: steps are local activities, the carrier a regular one.
	VersionLocal = workflow.Version(1)
	// VersionGuarded: step keys in the reserved namespace; no compensation
	// once the carrier has the parcel; a cancel during dispatch asks the
	// carrier to withdraw; bounded retries that stop for an operator.
	VersionGuarded = workflow.Version(2)
	// VersionWithdrawActivity: the withdrawal a cancel asks for is a
	// regular activity. As a local activity it ran inside the workflow
	// task that accepted the cancel: when that task failed (an event
	// landed meanwhile), the server dropped the update but the carrier had
	// withdrawn, and the saga compensated as if the carrier had refused.
	// A regular activity is scheduled only once the task, and with it the
	// update's acceptance, is recorded.
	VersionWithdrawActivity = workflow.Version(3)
	// VersionDoors: the carrier call (BookWithCarrier, which only books and
	// waits) and the recording of its answer (record_dispatch, after the
	// point of no return) are separate steps; an invalid command before the
	// carrier compensates; an operator's retry after a logged failure sends
	// the step under a new attempt key; the withdrawal is bounded and
	// heartbeats; a repair run answers a cancel with its reading of the
	// carrier and uses the keys of the run it repairs.
	VersionDoors = workflow.Version(4)
	// VersionStages: the steps before the carrier run as one local
	// activity (RunForwardStage), and those after it as another
	// (RunFinishStage), each sending its commands in two group commits.
	// A stage that fails is run again step by step, as before: every step
	// it applied is answered from the command log under the same key.
	VersionStages = workflow.Version(5)
)

// Timeouts and retries. A step is a command through the bus (milliseconds);
// an infrastructure error (the database restarting) is retried with backoff
// for up to StepDeadline, then the saga waits for an operator.
const (
	StepAttemptTimeout = 10 * time.Second
	StepDeadline       = 10 * time.Minute
	// CarrierTimeout bounds one call to the carrier; it heartbeats every
	// few seconds, so a worker that died is noticed after CarrierHeartbeat.
	// The carrier is retried until the shipping deadline.
	CarrierTimeout   = 5 * time.Minute
	CarrierHeartbeat = 10 * time.Second
	// WithdrawTimeout bounds one withdrawal call and WithdrawDeadline all
	// of its retries; past it the saga waits for an operator.
	WithdrawTimeout  = time.Minute
	WithdrawDeadline = 5 * time.Minute
)

// errCancelled ends the forward path when the customer cancels.
var errCancelled = errors.New("cancelled")

// decided is an operator's resolution other than retry.
type decided struct{ Resolution }

func (d *decided) Error() string { return d.Action + ": " + d.Reason }

type phase int

const (
	phaseForward     phase = iota // before the carrier: a cancel is taken at the next step
	phaseDispatching              // the carrier works: a cancel asks it to withdraw
	phaseShipped                  // the carrier has the parcel: no cancel, no compensation
	phaseCompensating
	phaseDone
	// phaseRepairing: a repair run reads the order and the carrier; a
	// cancel waits for what it finds.
	phaseRepairing
)

type fulfilment struct {
	v        workflow.Version
	in       Input
	wid      string
	p        Progress
	written  [2]string // the OrderStatus and FailedStep last upserted
	undo     []namedStep
	phase    phase
	cancel   string           // the customer's reason, once the cancel holds
	asked    string           // a cancel waiting for the carrier's answer
	answer   string           // the carrier's answer to it
	asks     workflow.Channel // cancels asked while the carrier works
	decision *Resolution      // an operator's, while Attention is set
	// attempts counts the operators' retries of a step whose command was
	// refused (or collided): each retry is a new command under a new key.
	attempts map[string]int
}

// namedStep is a step (forward, compensation or write-off) and its run.
type namedStep struct {
	step string
	run  func(ctx workflow.Context) error
}

// OrderFulfilment is the saga.
func OrderFulfilment(ctx workflow.Context, in Input) (Progress, error) {
	if in.ShippingDeadline <= 0 {
		in.ShippingDeadline = DefaultShippingDeadline
	}
	// First, before any command: old histories have no marker here.
	v := workflow.GetVersion(ctx, ChangeID, VersionRegular, VersionStages)
	if v < VersionGuarded {
		return runLegacy(ctx, in, v)
	}
	f := &fulfilment{v: v, in: in, wid: workflow.GetInfo(ctx).WorkflowExecution.ID, asks: workflow.NewChannel(ctx),
		written:  [2]string{StatusPlaced, ""}, // the launcher starts the run with OrderStatus=PLACED
		attempts: map[string]int{}}
	f.p = Progress{Status: StatusPlaced, Repair: in.Repair}
	workflow.GetMetricsHandler(ctx).Counter(MetricStarted).Inc(1)
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return f.p, nil }); err != nil {
		return f.p, err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateCancel, f.onCancel,
		workflow.UpdateHandlerOptions{Validator: f.validateCancel}); err != nil {
		return f.p, err
	}
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateResolve, f.onResolve,
		workflow.UpdateHandlerOptions{Validator: f.validateResolve}); err != nil {
		return f.p, err
	}
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: StepAttemptTimeout, ScheduleToCloseTimeout: StepDeadline,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second},
	})
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: CarrierTimeout, HeartbeatTimeout: CarrierHeartbeat,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
	})
	if in.Repair {
		if v >= VersionDoors {
			f.phase = phaseRepairing
		}
		return f.repair(ctx)
	}
	if err := f.forward(ctx); err != nil {
		return f.compensate(ctx, err)
	}
	return f.finish(ctx)
}

// validateCancel refuses a cancel the saga cannot honour, before it is
// written to the history.
func (f *fulfilment) validateCancel(reason string) error {
	if err := checkText(reason); err != nil {
		return err
	}
	switch {
	case f.phase == phaseShipped:
		return temporal.NewApplicationError("the carrier has the parcel; the order can no longer be cancelled", ErrShipped)
	case f.phase == phaseDone:
		return temporal.NewApplicationError("the saga has finished", ErrSagaFinished)
	case f.phase == phaseCompensating || f.cancel != "" || f.asked != "":
		return temporal.NewApplicationError("the order is already being cancelled", ErrCancelling)
	}
	return nil
}

// onCancel takes the customer's cancel. Before the carrier it holds at
// once (the forward path stops at its next step); while the carrier works
// it holds only if the carrier withdraws, and the answer says which.
func (f *fulfilment) onCancel(ctx workflow.Context, reason string) (Progress, error) {
	if f.phase == phaseRepairing {
		return f.cancelRepair(ctx, reason)
	}
	if f.phase == phaseForward {
		f.cancel = reason
		return f.p, nil
	}
	if f.phase != phaseDispatching {
		return f.p, f.validateCancel(reason) // the carrier answered in between
	}
	f.asked, f.answer = reason, ""
	f.asks.SendAsync(reason)
	if err := workflow.Await(ctx, func() bool { return f.answer != "" }); err != nil {
		return f.p, err
	}
	f.asked = ""
	if f.answer == answerTaken {
		return f.p, temporal.NewApplicationError("the carrier had already taken the parcel; the order can no longer be cancelled", ErrShipped)
	}
	return f.p, nil
}

// cancelRepair answers a cancel sent to a repair run with what the repair
// finds: accepted when it compensates (the carrier does not have the
// parcel), refused when it finishes the order (the carrier has it, or the
// order reached its end). Never accepted and then ignored.
func (f *fulfilment) cancelRepair(ctx workflow.Context, reason string) (Progress, error) {
	f.asked, f.answer = reason, ""
	if err := workflow.Await(ctx, func() bool { return f.answer != "" }); err != nil {
		return f.p, err
	}
	f.asked = ""
	if f.answer == answerTaken {
		return f.p, temporal.NewApplicationError("the order can no longer be cancelled: "+f.p.Status, ErrShipped)
	}
	return f.p, nil
}

// answerCancel settles a cancel waiting for the carrier; the first answer
// stands.
func (f *fulfilment) answerCancel(answer string) {
	if f.asked != "" && f.answer == "" {
		f.answer = answer
		if answer == answerWithdrawn {
			f.cancel = f.asked
		}
	}
}

func (f *fulfilment) validateResolve(r Resolution) error {
	if err := checkText(r.Reason); err != nil {
		return err
	}
	switch {
	case f.p.Attention == nil || f.decision != nil:
		return temporal.NewApplicationError("the saga is not waiting for an operator", ErrNotWaiting)
	case !slices.Contains(f.p.Attention.Options, r.Action):
		return temporal.NewApplicationError(fmt.Sprintf("at %s an operator may decide %s, not %q",
			f.p.Attention.Step, strings.Join(f.p.Attention.Options, " or "), r.Action), ErrActionNotAllowed)
	}
	return nil
}

func (f *fulfilment) onResolve(_ workflow.Context, r Resolution) (Progress, error) {
	f.decision = &r
	return f.p, nil
}

// checkText refuses text that cannot reach an event: what a customer or an
// operator writes ends up in the order's or the shipment's events.
func checkText(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return temporal.NewApplicationError("a reason is required", "reason_required")
	case !utf8.ValidString(s):
		return temporal.NewApplicationError("the reason is not valid UTF-8", ErrInvalidText)
	case strings.ContainsRune(s, 0):
		return temporal.NewApplicationError("the reason contains a NUL character", ErrInvalidText)
	case utf8.RuneCountInString(s) > MaxReason:
		return temporal.NewApplicationError(fmt.Sprintf("the reason is longer than %d characters", MaxReason), ErrInvalidText)
	}
	return nil
}

// clip makes text the saga composes safe for an event: valid UTF-8, no
// NUL, at most MaxReason characters.
func clip(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if r := []rune(s); len(r) > MaxReason {
		s = string(r[:MaxReason-1]) + "…"
	}
	return s
}

// at is the step's command context. Its key is the saga's key of the step
// — the keys of the time for a repair of a run recorded before
// VersionGuarded — and, after an operator retried a refused command, that
// of the new attempt.
func (f *fulfilment) at(step string) activities.Step {
	s := activities.Step{OrderID: f.in.OrderID, Step: step, CorrelationID: f.in.CorrelationID, OnBehalfOf: f.in.Actor}
	switch n := f.attempts[step]; {
	case f.in.LegacyKeys && n == 0:
		// activities.CommandID, the key a run of that time used.
	case n > 0:
		s.Key = activities.SagaKey(f.wid, fmt.Sprintf("%s.%d", step, n+1))
	default:
		s.Key = activities.SagaKey(f.wid, step)
	}
	return s
}

// call runs one step's local activity.
func call(ctx workflow.Context, activity, arg, result any) error {
	return workflow.ExecuteLocalActivity(ctx, activity, arg).Get(ctx, result)
}

// refused reports a business refusal: a non-retryable application error
// from the domain (out of stock, no funds, carrier refusal). Timeouts,
// exhausted retries and key collisions are not: no customer's choice, no
// compensation — an operator looks. An invalid command (an id the order
// gave that does not fit) is one from VersionDoors on: before the carrier
// nothing is gained by waiting, the order cannot be fulfilled as placed.
func (f *fulfilment) refused(err error) bool {
	if !logged(err) {
		return false
	}
	var app *temporal.ApplicationError
	errors.As(err, &app)
	return app.Type() != activities.ErrTypeKeyCollision && (f.v >= VersionDoors || app.Type() != activities.ErrTypeInvalid)
}

// carrierRefused reports the carrier's own refusal of the parcel (or of a
// booking withdrawn before): the one failure of the carrier call that says
// the carrier does not have it.
func carrierRefused(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && (app.Type() == activities.ErrTypeCarrierRefuse || app.Type() == activities.ErrTypeWithdrawn)
}

// logged reports a failure that is the command's recorded outcome (a
// refusal, a collision, an invalid command): sending it again under the
// same key can only get the same answer.
func logged(err error) bool {
	var timeout *temporal.TimeoutError
	var app *temporal.ApplicationError
	return !errors.As(err, &timeout) && errors.As(err, &app) && app.NonRetryable()
}

// do runs one step until it succeeds. A business refusal is returned when
// refusalsStop is false (before the carrier the caller compensates);
// anything else stops the saga for an operator, who may choose among
// options: retry runs the step again, another choice is returned as
// *decided. A customer's cancel ends the wait too where compensating is
// an option.
func (f *fulfilment) do(ctx workflow.Context, step string, run func(workflow.Context) error, refusalsStop bool, options ...string) error {
	for {
		err := run(ctx)
		if err == nil || (!refusalsStop && f.refused(err)) || temporal.IsCanceledError(err) {
			return err
		}
		r, aerr := f.attend(ctx, step, err, options)
		if aerr != nil {
			return aerr
		}
		if r.Action != ActionRetry {
			return &decided{r}
		}
		// (Never the carrier's: its booking key must not change, or the
		// carrier would take a second parcel.)
		if f.v >= VersionDoors && logged(err) && step != "dispatch_shipment" {
			// The refused attempt stays in the log; the retry is a new
			// command (the cause was fixed, e.g. the hold re-authorised).
			f.attempts[step]++
		}
	}
}

// attend waits for an operator (or a customer's cancel, where compensating
// is allowed) with the saga in NEEDS_ATTENTION.
func (f *fulfilment) attend(ctx workflow.Context, step string, cause error, options []string) (Resolution, error) {
	status := f.p.Status
	f.p.Status = StatusNeedsAttention
	f.p.Attention = &Attention{Step: step, Error: clip(reasonOf(cause)), Options: options, Since: workflow.Now(ctx)}
	f.publish(ctx)
	workflow.GetLogger(ctx).Warn("saga needs attention", "step", step, "error", cause)
	kind, _, _ := strings.Cut(step, ":") // reserve_stock:<sku> counts as reserve_stock
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"step": kind}).Counter(MetricAttention).Inc(1)
	canCancel := slices.Contains(options, ActionCompensate)
	err := workflow.Await(ctx, func() bool { return f.decision != nil || (canCancel && f.cancel != "") })
	var r Resolution
	switch {
	case f.decision != nil:
		r = *f.decision
		who := r.Operator
		if who == "" {
			who = "an operator"
		}
		f.p.Decisions = append(f.p.Decisions, fmt.Sprintf("%s at %s by %s: %s", r.Action, step, who, r.Reason))
	case err == nil:
		err = errCancelled // the customer's cancel ended the wait
	}
	f.decision, f.p.Attention, f.p.Status = nil, nil, status
	f.publish(ctx)
	return r, err
}

// stage is a step before the carrier and the compensation registered before
// it runs (so a step that half-happened is undone too: every compensation
// is a no-op when there is nothing to undo).
type stage struct {
	name, status string
	run          func(workflow.Context) error
	undo         string
	compensate   func(workflow.Context) error
}

func (f *fulfilment) stages() []stage {
	in := f.in
	out := []stage{{undo: "cancel_order", compensate: func(ctx workflow.Context) error {
		return call(ctx, a.CancelOrder, activities.OrderChange{Step: f.at("compensate:cancel_order"), Reason: clip(f.p.Reason)}, nil)
	}}}
	for _, l := range in.Lines {
		step := "reserve_stock:" + l.SKU
		out = append(out, stage{name: step, status: StatusReservingStock,
			run: func(ctx workflow.Context) error {
				return call(ctx, a.ReserveStock, activities.Line{Step: f.at(step), SKU: l.SKU, Quantity: l.Quantity}, nil)
			},
			undo: "release_stock:" + l.SKU, compensate: func(ctx workflow.Context) error {
				undo := activities.Line{Step: f.at("compensate:release_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity}
				return call(ctx, a.ReleaseStock, undo, nil)
			}})
	}
	out = append(out, stage{name: "authorise_payment", status: StatusAuthorisingPayment,
		run: func(ctx workflow.Context) error {
			return call(ctx, a.AuthorisePayment, f.payment("authorise_payment"), nil)
		},
		undo: "void_payment", compensate: func(ctx workflow.Context) error {
			return call(ctx, a.VoidPayment, f.payment("compensate:void_payment"), nil)
		}},
		stage{name: "confirm_order", status: StatusConfirmed, run: func(ctx workflow.Context) error {
			return call(ctx, a.ConfirmOrder, activities.OrderChange{Step: f.at("confirm_order")}, nil)
		}},
		stage{name: "schedule_shipment", status: StatusShipping,
			run: func(ctx workflow.Context) error {
				return call(ctx, a.ScheduleShipment, f.parcel("schedule_shipment"), nil)
			},
			undo: "fail_shipment", compensate: func(ctx workflow.Context) error {
				undo := f.parcel("compensate:fail_shipment")
				undo.Reason = clip("order not fulfilled: " + f.p.Reason)
				return call(ctx, a.FailShipment, undo, nil)
			}})
	return out
}

// stage runs a stage's local activity once (no retries: a stage that
// fails is run again step by step by the caller) and reports whether every
// step of it was applied.
func (f *fulfilment) stage(ctx workflow.Context, run, arg any) bool {
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: StepAttemptTimeout, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	return workflow.ExecuteLocalActivity(ctx, run, arg).Get(ctx, nil) == nil
}

// forwardStage is the steps before the carrier, with the keys the steps
// have when run one by one.
func (f *fulfilment) forwardStage() activities.ForwardStage {
	s := activities.ForwardStage{Authorise: f.payment("authorise_payment"), Confirm: activities.OrderChange{Step: f.at("confirm_order")},
		Schedule: f.parcel("schedule_shipment")}
	for _, l := range f.in.Lines {
		s.Reserve = append(s.Reserve, activities.Line{Step: f.at("reserve_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity})
	}
	return s
}

// finishStage is the steps after the carrier took the parcel.
func (f *fulfilment) finishStage() activities.FinishStage {
	shipmentID := "shp-" + f.in.OrderID
	s := activities.FinishStage{
		Record:      activities.Dispatch{Step: f.at("record_dispatch"), ShipmentID: shipmentID, TrackingNumber: f.p.TrackingNumber},
		Capture:     f.payment("capture_payment"),
		MarkShipped: activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: shipmentID},
		Complete:    activities.OrderChange{Step: f.at("complete_order")},
	}
	for _, l := range f.in.Lines {
		s.Commit = append(s.Commit, activities.Line{Step: f.at("commit_stock:" + l.SKU), SKU: l.SKU, Quantity: l.Quantity})
	}
	return s
}

// register adds a stage's compensation, if it has one, to those to undo.
func (f *fulfilment) register(s stage) {
	if s.compensate != nil {
		f.undo = append(f.undo, namedStep{step: "compensate:" + s.undo, run: s.compensate})
	}
}

func (f *fulfilment) payment(step string) activities.Payment {
	return activities.Payment{Step: f.at(step), WalletID: f.in.WalletID, Amount: f.in.Total, Currency: f.in.Currency}
}

func (f *fulfilment) parcel(step string) activities.Parcel {
	return activities.Parcel{Step: f.at(step), ShipmentID: "shp-" + f.in.OrderID, Address: f.in.ShippingAddress, CustomerID: f.in.CustomerID}
}

// forward runs the steps up to and including the carrier. An error means
// compensate: a refusal, the customer's cancel, an operator's choice.
func (f *fulfilment) forward(ctx workflow.Context) error {
	staged := f.v >= VersionStages && f.cancel == ""
	if staged {
		// The whole stage at once, every compensation registered first:
		// any step of it may have been applied when it fails.
		for _, s := range f.stages() {
			f.register(s)
		}
		f.p.Status, f.p.Step = StatusReservingStock, "reserve_stock:"+f.in.Lines[0].SKU
		if f.stage(ctx, a.RunForwardStage, f.forwardStage()) {
			f.p.Status, f.p.Step = StatusConfirmed, "schedule_shipment"
			if f.cancel != "" {
				return errCancelled
			}
			return f.dispatch(ctx)
		}
	}
	for _, s := range f.stages() {
		if !staged {
			f.register(s)
		}
		if s.run == nil {
			continue
		}
		if f.cancel != "" {
			return errCancelled
		}
		f.p.Status, f.p.Step = s.status, s.name
		if err := f.do(ctx, s.name, s.run, false, ActionRetry, ActionCompensate); err != nil {
			return err
		}
	}
	if f.cancel != "" {
		return errCancelled
	}
	return f.dispatch(ctx)
}

// dispatch hands the parcel to the carrier and waits for it. The customer's
// cancel, an operator's cancel of the workflow, or the shipping deadline (a
// timer: a business deadline, not a workflow timeout) ask the carrier to
// withdraw: if it does, the saga compensates; if it has the parcel, the
// saga waits for the dispatch and goes on past the point of no return.
func (f *fulfilment) dispatch(ctx workflow.Context) error {
	f.phase, f.p.Status, f.p.Step = phaseDispatching, StatusShipping, "dispatch_shipment"
	f.publish(ctx) // SHIPPING, while the carrier works
	// The carrier call and the wait outlive a cancel of the workflow: the
	// carrier is asked first.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	actCtx, stopCarrier := workflow.WithCancel(dctx)
	defer stopCarrier()
	p := f.parcel("dispatch_shipment")
	var dispatched workflow.Future
	if f.v >= VersionDoors {
		dispatched = workflow.ExecuteActivity(actCtx, a.BookWithCarrier, p)
	} else {
		dispatched = workflow.ExecuteActivity(actCtx, a.DispatchWithCarrier, p)
	}
	timerCtx, stopTimer := workflow.WithCancel(dctx)
	defer stopTimer()
	deadline := workflow.NewTimer(timerCtx, f.in.ShippingDeadline)
	deadlinePassed, cancelled, taken := false, false, false
	for {
		var result error
		var stop error // why to ask the carrier to withdraw
		done := false
		sel := workflow.NewSelector(dctx)
		sel.AddFuture(dispatched, func(fut workflow.Future) { done, result = true, fut.Get(dctx, &f.p.TrackingNumber) })
		if !taken {
			sel.AddReceive(f.asks, func(c workflow.ReceiveChannel, _ bool) { c.Receive(dctx, nil); stop = errCancelled })
			if !deadlinePassed {
				sel.AddFuture(deadline, func(workflow.Future) {
					deadlinePassed = true
					stop = temporal.NewNonRetryableApplicationError(fmt.Sprintf("the carrier did not dispatch within %s", f.in.ShippingDeadline), "shipping_deadline_passed", nil)
				})
			}
			if !cancelled {
				sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) { cancelled, stop = true, temporal.NewCanceledError() })
			}
		}
		sel.Select(dctx)
		if done {
			if result != nil && f.v >= VersionDoors && !carrierRefused(result) {
				// Not the carrier's refusal: it may have the parcel. Never
				// compensated on that; an operator has the carrier asked
				// again (the same key gets the same answer).
				result = f.retryCarrier(dctx, result)
			}
			if result != nil {
				f.answerCancel(answerWithdrawn) // refused by the carrier: the order is cancelled anyway
				return result
			}
			f.phase = phaseShipped
			f.answerCancel(answerTaken)
			return nil
		}
		withdrawn, err := f.withdraw(dctx)
		if err != nil {
			return err
		}
		if withdrawn {
			f.p.Carrier = answerWithdrawn
			f.answerCancel(answerWithdrawn)
			return stop
		}
		// The carrier has the parcel: from here on, nothing is undone.
		taken, f.phase, f.p.Carrier = true, phaseShipped, answerTaken
		f.answerCancel(answerTaken)
	}
}

// retryCarrier stops for an operator after the carrier call failed in a
// way that says nothing of the parcel; each retry asks the carrier again
// under the same key, until it answers: with the parcel's tracking number
// (nil), or with its refusal, which the caller compensates.
func (f *fulfilment) retryCarrier(ctx workflow.Context, cause error) error {
	for {
		if _, err := f.attend(ctx, "dispatch_shipment", cause, []string{ActionRetry}); err != nil {
			return err
		}
		cause = workflow.ExecuteActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
		if cause == nil || carrierRefused(cause) {
			return cause
		}
	}
}

// withdraw asks the carrier not to take the parcel. From VersionDoors the
// call heartbeats and is bounded: a carrier that does not answer within
// WithdrawDeadline stops the saga for an operator.
func (f *fulfilment) withdraw(ctx workflow.Context) (bool, error) {
	var withdrawn bool
	if f.v >= VersionDoors {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: WithdrawTimeout, HeartbeatTimeout: CarrierHeartbeat, ScheduleToCloseTimeout: WithdrawDeadline,
			RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second},
		})
	}
	err := f.do(ctx, "withdraw_from_carrier", func(ctx workflow.Context) error {
		if f.v < VersionWithdrawActivity {
			return call(ctx, a.WithdrawFromCarrier, f.parcel("dispatch_shipment"), &withdrawn)
		}
		return workflow.ExecuteActivity(ctx, a.WithdrawFromCarrier, f.parcel("dispatch_shipment")).Get(ctx, &withdrawn)
	}, true, ActionRetry)
	return withdrawn, err
}

// finish runs the steps after the carrier took the parcel. Nothing here is
// ever compensated, and a cancel of the workflow changes nothing (the
// goods are gone): a step that fails for good waits for an operator, who
// retries it or writes the order off.
func (f *fulfilment) finish(ctx workflow.Context) (Progress, error) {
	ctx, _ = workflow.NewDisconnectedContext(ctx)
	f.phase, f.p.Status = phaseShipped, StatusShipped
	var steps []namedStep
	if f.v >= VersionDoors {
		// The carrier's answer, recorded past the point of no return.
		steps = append(steps, namedStep{"record_dispatch", func(ctx workflow.Context) error {
			return call(ctx, a.RecordDispatch, activities.Dispatch{Step: f.at("record_dispatch"), ShipmentID: "shp-" + f.in.OrderID,
				TrackingNumber: f.p.TrackingNumber}, nil)
		}})
	}
	steps = append(steps, []namedStep{
		{"capture_payment", func(ctx workflow.Context) error {
			return call(ctx, a.CapturePayment, f.payment("capture_payment"), nil)
		}},
		{"mark_shipped", func(ctx workflow.Context) error {
			return call(ctx, a.MarkOrderShipped, activities.OrderChange{Step: f.at("mark_shipped"), ShipmentID: "shp-" + f.in.OrderID}, nil)
		}},
	}...)
	steps = append(steps, f.commitStock("commit_stock:")...)
	steps = append(steps, namedStep{"complete_order", func(ctx workflow.Context) error {
		return call(ctx, a.CompleteOrder, activities.OrderChange{Step: f.at("complete_order")}, nil)
	}})
	if f.v >= VersionStages {
		f.p.Step = steps[0].step
		if f.stage(ctx, a.RunFinishStage, f.finishStage()) {
			steps = nil
		}
	}
	for _, s := range steps {
		f.p.Step = s.step
		err := f.do(ctx, s.step, s.run, true, ActionRetry, ActionWriteOff)
		var d *decided
		if errors.As(err, &d) {
			return f.writeOff(ctx, d.Resolution)
		} else if err != nil {
			return f.p, err
		}
	}
	f.end(ctx, StatusCompleted, "done")
	return f.p, nil
}

// writeOff closes the order on an operator's decision: the goods left, so
// the stock is committed; what was not captured is released; the order
// records the write-off and its reason.
func (f *fulfilment) writeOff(ctx workflow.Context, r Resolution) (Progress, error) {
	f.p.FailedStep, f.p.Reason = f.p.Step, clip("written off: "+r.Reason)
	f.p.Status = StatusShipped
	steps := []namedStep{{"write_off:void_payment", func(ctx workflow.Context) error {
		return call(ctx, a.VoidPayment, f.payment("write_off:void_payment"), nil)
	}}}
	steps = append(steps, f.commitStock("write_off:commit_stock:")...)
	steps = append(steps, namedStep{"write_off:order", func(ctx workflow.Context) error {
		return call(ctx, a.WriteOffOrder, activities.OrderChange{Step: f.at("write_off:order"), Reason: f.p.Reason}, nil)
	}})
	f.settle(ctx, steps)
	f.end(ctx, StatusWrittenOff, "written_off")
	return f.p, nil
}

// compensate undoes every registered step in reverse on a disconnected
// context, so that a cancelled workflow still cleans up. A compensation
// that keeps failing waits for an operator (retry, or skip it as settled
// by hand); it never stops the others for good.
func (f *fulfilment) compensate(ctx workflow.Context, cause error) (Progress, error) {
	f.fail(cause)
	f.phase, f.p.Status = phaseCompensating, StatusCompensating
	f.answerCancel(answerWithdrawn)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	undo := slices.Clone(f.undo)
	slices.Reverse(undo)
	f.p.Compensated = f.settle(dctx, undo)
	f.end(dctx, StatusCompensated, "compensated")
	return f.p, nil
}

// settle runs steps that must all happen (compensations, a write-off): one
// that keeps failing waits for an operator, who retries it or skips it as
// settled by hand (listed in Skipped). It returns the steps done.
func (f *fulfilment) settle(ctx workflow.Context, steps []namedStep) []string {
	var done []string
	for _, s := range steps {
		f.p.Step = s.step
		if err := f.do(ctx, s.step, s.run, true, ActionRetry, ActionSkip); err != nil {
			f.p.Skipped = append(f.p.Skipped, s.step)
			continue
		}
		done = append(done, s.step)
	}
	return done
}

// commitStock is the step that takes every line's reservation out of the
// warehouse, under prefix (commit_stock: or write_off:commit_stock:).
func (f *fulfilment) commitStock(prefix string) []namedStep {
	var out []namedStep
	for _, l := range f.in.Lines {
		step := prefix + l.SKU
		out = append(out, namedStep{step, func(ctx workflow.Context) error {
			return call(ctx, a.CommitStock, activities.Line{Step: f.at(step), SKU: l.SKU, Quantity: l.Quantity}, nil)
		}})
	}
	return out
}

// repair finishes what an ended run left, from the event log: nothing if
// the order reached its end, forward if the carrier has the parcel (asked
// again under the same key), compensation otherwise.
func (f *fulfilment) repair(ctx workflow.Context) (Progress, error) {
	var seen activities.Inspection
	f.p.Step = "inspect_order"
	if err := f.do(ctx, "inspect_order", func(ctx workflow.Context) error {
		return call(ctx, a.InspectOrder, f.parcel("inspect_order"), &seen)
	}, true, ActionRetry); err != nil {
		return f.p, err
	}
	for _, s := range f.stages() {
		f.register(s)
	}
	switch seen.OrderStatus {
	case order.StatusCompleted:
		f.end(ctx, StatusCompleted, "done")
		return f.p, nil
	case order.StatusCancelled, order.StatusRejected:
		f.p.Step = ""
		return f.compensate(ctx, f.repairCause("repaired: the order was "+string(seen.OrderStatus)))
	case order.StatusWrittenOff:
		f.end(ctx, StatusWrittenOff, "written_off")
		return f.p, nil
	}
	taken := seen.ShipmentStatus == shipment.StatusDispatched || seen.ShipmentStatus == shipment.StatusDelivered
	if !taken && seen.ShipmentStatus == shipment.StatusScheduled {
		withdrawn, err := f.withdraw(ctx)
		if err != nil {
			return f.p, err
		}
		taken = !withdrawn
	}
	if !taken {
		f.p.Carrier, f.p.Step = answerWithdrawn, ""
		return f.compensate(ctx, f.repairCause("repaired: the saga ended before the carrier took the parcel"))
	}
	f.p.Carrier = answerTaken
	if f.v >= VersionDoors {
		// Past the point of no return: a cancel waiting for the repair's
		// reading is refused now, not when the order is finished.
		f.phase = phaseShipped
		f.answerCancel(answerTaken)
	}
	if seen.TrackingNumber == "" {
		// The carrier took it but the dispatch was never recorded: the same
		// key gets the same tracking number, and the dispatch is recorded.
		f.p.Step = "dispatch_shipment"
		if err := f.do(ctx, "dispatch_shipment", func(ctx workflow.Context) error {
			if f.v >= VersionDoors {
				return workflow.ExecuteActivity(ctx, a.BookWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
			}
			return workflow.ExecuteActivity(ctx, a.DispatchWithCarrier, f.parcel("dispatch_shipment")).Get(ctx, &f.p.TrackingNumber)
		}, true, ActionRetry); err != nil {
			return f.p, err
		}
	} else {
		f.p.TrackingNumber = seen.TrackingNumber
	}
	return f.finish(ctx)
}

// repairCause is why a repair compensates: the customer's cancel when one
// waits for the repair's reading (from VersionDoors), the repair's own
// finding otherwise.
func (f *fulfilment) repairCause(finding string) error {
	if f.v >= VersionDoors && f.asked != "" {
		f.cancel = f.asked
		return errCancelled
	}
	return errors.New(finding)
}

// fail records why the forward path stopped.
func (f *fulfilment) fail(err error) {
	var d *decided
	switch {
	case errors.Is(err, errCancelled):
		f.p.Reason = clip("cancelled by the customer: " + f.cancel)
		return
	case errors.As(err, &d):
		f.p.Reason = clip("compensated by an operator: " + d.Reason)
	default:
		f.p.Reason = clip(reasonOf(err))
	}
	if f.p.Step != "" {
		f.p.FailedStep = f.p.Step
	}
}

// reasonOf says why a step failed, in words for the order's events.
func reasonOf(err error) string {
	var app *temporal.ApplicationError
	switch {
	case temporal.IsCanceledError(err):
		return "cancelled by an operator"
	case errors.As(err, &app):
		reason := app.Message()
		if app.Type() != "" && !strings.HasPrefix(reason, app.Type()) {
			reason = app.Type() + ": " + reason
		}
		return reason
	}
	return err.Error()
}

// end records the saga's outcome.
func (f *fulfilment) end(ctx workflow.Context, status, step string) {
	f.phase, f.p.Status, f.p.Step = phaseDone, status, step
	f.answerCancel(answerTaken)
	f.publish(ctx)
	// The SDK's metrics handler records nothing while replaying.
	m := workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"outcome": status})
	m.Counter(MetricFinished).Inc(1)
	m.Timer(MetricDuration).Record(workflow.Now(ctx).Sub(workflow.GetInfo(ctx).WorkflowStartTime))
}

// The saga's metrics, through the Temporal SDK's metrics handler.
const (
	MetricStarted   = "orderflow_sagas_started"
	MetricFinished  = "orderflow_sagas_finished"
	MetricDuration  = "orderflow_saga_duration"
	MetricAttention = "orderflow_saga_attention_requests"
)

// Summary is the run's static summary and details in the Temporal UI: who
// ordered what, so an operator reads the list without opening each run.
func Summary(in Input) (summary, details string) {
	what := "order"
	if in.Repair {
		what = "repair of order"
	}
	summary = fmt.Sprintf("%s %s · customer %s · %d line(s) · %s", what, in.OrderID, in.CustomerID, len(in.Lines), money.New(in.Total, in.Currency))
	var b strings.Builder
	fmt.Fprintf(&b, "**Order** %s for customer %s, wallet %s, total %s (minor units)\n\n", in.OrderID, in.CustomerID, in.WalletID, money.New(in.Total, in.Currency))
	for _, l := range in.Lines {
		fmt.Fprintf(&b, "- %s × %d at %d\n", l.SKU, l.Quantity, l.UnitPrice)
	}
	return clip(summary), b.String()
}

// show keeps the run's current details in the Temporal UI up to date (no
// history event: the UI asks the workflow when it shows the run).
func (f *fulfilment) show(ctx workflow.Context) {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s** at `%s`", f.p.Status, f.p.Step)
	if a := f.p.Attention; a != nil {
		fmt.Fprintf(&b, "\n\n**Waiting for an operator** at `%s` since %s: %s\n\nAllowed: %s (POST /orders/%s/saga/resolve)",
			a.Step, a.Since.Format(time.RFC3339), a.Error, strings.Join(a.Options, ", "), f.in.OrderID)
	}
	if f.p.Reason != "" {
		fmt.Fprintf(&b, "\n\nReason: %s", f.p.Reason)
	}
	if f.p.TrackingNumber != "" {
		fmt.Fprintf(&b, "\n\nTracking number: %s", f.p.TrackingNumber)
	}
	if f.p.Carrier != "" {
		fmt.Fprintf(&b, "\n\nCarrier asked to withdraw: %s", f.p.Carrier)
	}
	for _, d := range f.p.Decisions {
		fmt.Fprintf(&b, "\n\n- %s", d)
	}
	workflow.SetCurrentDetails(ctx, b.String())
}

// publish writes the search attributes when they changed since last time.
// They are written only where the saga waits (for the carrier, for an
// operator) and where it ends: between those points the steps run as local
// activities inside one workflow task, and the intermediate values would
// never be seen. The progress query has the current step at any time.
func (f *fulfilment) publish(ctx workflow.Context) {
	f.show(ctx)
	failed := f.p.FailedStep
	if f.p.Attention != nil {
		failed = f.p.Attention.Step
	}
	if f.written == [2]string{f.p.Status, failed} {
		return
	}
	unset := failed == "" && f.written[1] != ""
	f.written = [2]string{f.p.Status, failed}
	writeAttrs(ctx, f.in, f.p.Status, failed, unset)
}

// writeAttrs upserts the saga's search attributes.
func writeAttrs(ctx workflow.Context, in Input, status, failedStep string, unsetFailed bool) {
	updates := []temporal.SearchAttributeUpdate{
		AttrOrderID.ValueSet(in.OrderID), AttrCustomerID.ValueSet(in.CustomerID), AttrOrderStatus.ValueSet(status),
	}
	if failedStep != "" {
		updates = append(updates, AttrFailedStep.ValueSet(failedStep))
	} else if unsetFailed {
		updates = append(updates, AttrFailedStep.ValueUnset())
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "err", err)
	}
}
