// Package workflows holds the order-fulfilment saga, a Temporal workflow:
// reserve stock for every line, authorise the total on the customer's
// wallet, confirm the order, ship it through the carrier, capture the
// payment, complete the order — and, when a step before the carrier fails
// or the customer cancels in time, undo what was done, in reverse order.
// Once the carrier has the parcel nothing is undone: a failure after it
// stops the saga for an operator, who retries the step or writes it off.
//
// Its files: fulfilment.go holds its types, versions and entry point;
// forward.go the steps before and after the carrier; carrier.go the
// carrier, its withdrawal and the customer's cancel; decisions.go
// compensation and operators' decisions; repair.go the repair of an ended
// run; visibility.go what operators see of a run (its search attributes,
// summary, current details and metrics). legacy.go is the saga as it ran
// before VersionGuarded, frozen for the runs recorded then.
package workflows

import (
	"errors"
	"time"

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
	ErrReasonRequired   = "reason_required"
)

// ErrCarrierHasParcel: a repair found the carrier holding the parcel of an
// order already cancelled (an operator has it returned, then retries).
const ErrCarrierHasParcel = "carrier_has_parcel"

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
	// VersionFastCarrier: the carrier is first called as a local activity,
	// bounded by CarrierFastTimeout, inside the workflow task that ran the
	// stage before it: a carrier that answers at once (the usual case)
	// costs no activity task, timer or second workflow task, and the whole
	// saga is one workflow task. A carrier that is slow or fails in a way
	// that says nothing of the parcel is then called as before, a regular
	// activity under the same key (the carrier answers a key once).
	VersionFastCarrier = workflow.Version(6)
)

// Timeouts and retries. A step is a command through the bus (milliseconds);
// an infrastructure error (the database restarting) is retried with backoff
// for up to StepDeadline, then the saga waits for an operator.
const (
	StepAttemptTimeout = 10 * time.Second
	// StageTimeout bounds a stage's local activity: longer than the bus
	// takes to learn what became of a commit whose connection was lost.
	StageTimeout = 2 * time.Minute
	StepDeadline = 10 * time.Minute
	// CarrierTimeout bounds one call to the carrier; it heartbeats every
	// few seconds, so a worker that died is noticed after CarrierHeartbeat.
	// The carrier is retried until the shipping deadline.
	CarrierTimeout   = 5 * time.Minute
	CarrierHeartbeat = 10 * time.Second
	// CarrierFastTimeout bounds the carrier's first call, a local activity
	// (VersionFastCarrier): a customer's cancel sent meanwhile waits for
	// it, since the workflow task that would take the cancel is running.
	CarrierFastTimeout = time.Second
	// WithdrawTimeout bounds one withdrawal call and WithdrawDeadline all
	// of its retries; past it the saga waits for an operator.
	WithdrawTimeout  = time.Minute
	WithdrawDeadline = 5 * time.Minute
)

// errCancelled ends the forward path when the customer cancels.
var errCancelled = errors.New("cancelled")

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
	v := workflow.GetVersion(ctx, ChangeID, VersionRegular, VersionFastCarrier)
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
		if !f.carrierTookIt(ctx, err) {
			return f.compensate(ctx, err)
		}
		// The carrier has the parcel: its call under the same key gives
		// the tracking number, and the saga finishes.
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		if err := f.dispatch(dctx); err != nil {
			return f.compensate(ctx, err)
		}
	}
	return f.finish(ctx)
}
