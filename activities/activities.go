// Package activities holds the fulfilment saga's activities: each sends one
// command through the same command bus as the REST API, with an idempotency
// key derived from the workflow and the step — in a namespace no client can
// write to — so a retried activity never applies twice. A business refusal
// fails the activity for good, with the domain's reason code as its type;
// anything else (the database, the network) is retried by Temporal.
package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
)

// Activities are registered on the worker; their method names are the
// activity names in the Temporal UI.
type Activities struct {
	Bus     *commands.Bus
	Store   *eventstore.Store
	Carrier Carrier
	// Keys opens the sealed shipping address for the carrier, the one
	// place outside the API that needs it in clear.
	Keys *personal.Keys
}

// Step says which saga step sends a command and on whose behalf.
type Step struct {
	OrderID       string `json:"order_id"`
	Step          string `json:"step"`
	CorrelationID string `json:"correlation_id"`
	// Key is the command's idempotency key (SagaKey). Runs recorded before
	// the saga's keys were reserved have none and use CommandID.
	Key string `json:"key,omitempty"`
	// OnBehalfOf is who placed the order.
	OnBehalfOf string `json:"on_behalf_of,omitempty"`
}

// key is the step's idempotency key.
func (s Step) key(workflowID string) string {
	if s.Key != "" {
		return s.Key
	}
	return CommandID(workflowID, s.Step)
}

// Error types of the activities' non-retryable failures besides the
// domain's reason codes. A key collision and an invalid command are no
// business refusal: the saga does not compensate for them but stops for an
// operator. The carrier's refusal and a withdrawn booking are refusals.
const (
	ErrTypeKeyCollision  = "key_collision"
	ErrTypeInvalid       = "invalid_command"
	ErrTypeWithdrawn     = "carrier_withdrawn"
	ErrTypeCarrierRefuse = "carrier_rejected"
)

// send dispatches one command of the saga. Rejections whose code is in
// done mean the effect is already there (or nothing is left to undo).
func (a *Activities) send(ctx context.Context, s Step, cmd commands.Command, done ...string) (commandlog.Record, error) {
	rec, err := a.Bus.Dispatch(ctx, a.request(ctx, s, cmd))
	return a.outcome(ctx, s, cmd, rec, err, done)
}

// request is the bus request of one step's command.
func (a *Activities) request(ctx context.Context, s Step, cmd commands.Command) commands.Request {
	info := activity.GetInfo(ctx)
	return commands.Request{
		CommandID:     s.key(info.WorkflowExecution.ID),
		Internal:      true,
		Command:       cmd,
		CorrelationID: s.CorrelationID,
		CausationID:   info.WorkflowExecution.ID,
		Actor:         "saga:" + info.WorkflowExecution.ID,
		OnBehalfOf:    s.OnBehalfOf,
		Metadata:      map[string]string{"saga_step": s.Step, "order_id": s.OrderID, "workflow_id": info.WorkflowExecution.ID},
	}
}

// outcome is what a step's command came to, as the saga sees it.
func (a *Activities) outcome(ctx context.Context, s Step, cmd commands.Command, rec commandlog.Record, err error, done []string) (commandlog.Record, error) {
	typ := cmd.CommandType()
	key := s.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	var rejected *commands.RejectedError
	if errors.As(err, &rejected) {
		if slices.Contains(done, rejected.Record.ReasonCode) {
			return rejected.Record, nil
		}
		return rec, temporal.NewNonRetryableApplicationError(rejected.Error(), rejected.Record.ReasonCode, nil)
	}
	if errors.Is(err, commands.ErrKeyReused) {
		// A step run again (a local activity whose workflow task did not
		// complete) may carry other text than its first run, e.g. a
		// compensation's reason after an update arrived in between: the
		// step's key says it was applied already, so its recorded outcome
		// stands. Another command type under the key is no step of ours:
		// a collision, never a business refusal (the saga stops for an
		// operator instead of compensating).
		if prior, perr := a.Bus.Log().Get(ctx, key); perr == nil && prior.Type == typ {
			if prior.Status == commandlog.StatusRejected && !slices.Contains(done, prior.ReasonCode) {
				return prior, temporal.NewNonRetryableApplicationError(prior.Reason, prior.ReasonCode, nil)
			}
			return prior, nil
		}
		return rec, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeKeyCollision, nil)
	}
	var payloadErr *commands.PayloadError
	if errors.As(err, &payloadErr) || errors.Is(err, commands.ErrUnknownType) {
		return rec, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalid, nil)
	}
	return rec, err
}

// stepCommand is one step of a stage and its command.
type stepCommand struct {
	step Step
	cmd  commands.Command
}

// sendAll sends independent steps together (Bus.DispatchAll: one group
// commit when the committer is free) and returns the first failure, in
// the steps' order.
func (a *Activities) sendAll(ctx context.Context, steps ...stepCommand) error {
	reqs := make([]commands.Request, len(steps))
	for i, s := range steps {
		reqs[i] = a.request(ctx, s.step, s.cmd)
	}
	recs, errs := a.Bus.DispatchAll(ctx, reqs...)
	for i, s := range steps {
		if _, err := a.outcome(ctx, s.step, s.cmd, recs[i], errs[i], nil); err != nil {
			return fmt.Errorf("%s: %w", s.step.Step, err)
		}
	}
	return nil
}

// ForwardStage is the saga's steps before the carrier, sent together.
type ForwardStage struct {
	Reserve   []Line      `json:"reserve"`
	Authorise Payment     `json:"authorise"`
	Confirm   OrderChange `json:"confirm"`
	Schedule  Parcel      `json:"schedule"`
}

// RunForwardStage sends the steps before the carrier in two group
// commits: every reservation with the authorisation, then — once all of
// them were applied — the confirmation with the shipment's schedule. A
// step not applied fails the stage: the saga then runs the stage step by
// step, where each step applied here is answered from the command log
// under its key, so nothing is applied twice.
func (a *Activities) RunForwardStage(ctx context.Context, s ForwardStage) error {
	var first []stepCommand
	for _, l := range s.Reserve {
		first = append(first, stepCommand{l.Step, commands.ReserveStock{SKU: l.SKU, OrderID: l.OrderID, Quantity: l.Quantity}})
	}
	p := s.Authorise
	first = append(first, stepCommand{p.Step, commands.AuthoriseHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency}})
	if err := a.sendAll(ctx, first...); err != nil {
		return err
	}
	return a.sendAll(ctx, stepCommand{s.Confirm.Step, commands.ConfirmOrder{OrderID: s.Confirm.OrderID}},
		stepCommand{s.Schedule.Step, commands.ScheduleShipment{ShipmentID: s.Schedule.ShipmentID, OrderID: s.Schedule.OrderID, Address: s.Schedule.Address}})
}

// FinishStage is the saga's steps after the carrier took the parcel.
type FinishStage struct {
	Record      Dispatch    `json:"record"`
	Capture     Payment     `json:"capture"`
	MarkShipped OrderChange `json:"mark_shipped"`
	Commit      []Line      `json:"commit"`
	Complete    OrderChange `json:"complete"`
}

// RunFinishStage sends the steps after the carrier took the parcel in
// three group commits: the dispatch's record; the capture, the order's
// shipment and every line's stock; then the order's completion. As with the
// forward stage, a step not applied fails the stage and the saga goes on
// step by step.
func (a *Activities) RunFinishStage(ctx context.Context, s FinishStage) error {
	d, p := s.Record, s.Capture
	// The record first, alone: money is captured only for a dispatch on
	// record, as step by step.
	if err := a.sendAll(ctx, stepCommand{d.Step, commands.DispatchShipment{ShipmentID: d.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: d.TrackingNumber}}); err != nil {
		return err
	}
	first := []stepCommand{
		{p.Step, commands.CaptureHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount}},
		{s.MarkShipped.Step, commands.MarkOrderShipped{OrderID: s.MarkShipped.OrderID, ShipmentID: s.MarkShipped.ShipmentID}},
	}
	for _, l := range s.Commit {
		first = append(first, stepCommand{l.Step, commands.CommitStock{SKU: l.SKU, OrderID: l.OrderID}})
	}
	if err := a.sendAll(ctx, first...); err != nil {
		return err
	}
	return a.sendAll(ctx, stepCommand{s.Complete.Step, commands.CompleteOrder{OrderID: s.Complete.OrderID}})
}

// SagaKey is the idempotency key of a saga step's command: the workflow id
// and the step in the namespace only orderflow's own requests may use
// (commands.ReservedPrefix), hashed when too long for a command id.
func SagaKey(workflowID, step string) string {
	id := commands.ReservedPrefix + workflowID + "." + step
	if commands.ValidID(id) {
		return id
	}
	return commands.ReservedPrefix + uuid.NewSHA1(uuid.NameSpaceURL, []byte(workflowID+"."+step)).String()
}

// CommandID is the key of the runs recorded before SagaKey: the same
// parts in the clients' namespace. Kept so those runs finish with the keys
// they started with.
func CommandID(workflowID, step string) string {
	id := workflowID + "." + step
	if commands.ValidID(id) {
		return id
	}
	return "saga." + uuid.NewSHA1(uuid.NameSpaceURL, []byte(id)).String()
}

// Line is one SKU to reserve, release or commit.
type Line struct {
	Step
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

func (a *Activities) ReserveStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.ReserveStock{SKU: l.SKU, OrderID: l.OrderID, Quantity: l.Quantity})
	return err
}

// ReleaseStock is a compensation: a reservation that never happened is a
// no-op, and stock that already left the warehouse stays gone.
func (a *Activities) ReleaseStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.ReleaseStock{SKU: l.SKU, OrderID: l.OrderID}, "reservation_committed")
	return err
}

func (a *Activities) CommitStock(ctx context.Context, l Line) error {
	_, err := a.send(ctx, l.Step, commands.CommitStock{SKU: l.SKU, OrderID: l.OrderID})
	return err
}

// Payment names an amount on the customer's wallet.
type Payment struct {
	Step
	WalletID string `json:"wallet_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

func (a *Activities) AuthorisePayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.AuthoriseHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount, Currency: p.Currency})
	return err
}

// VoidPayment is a compensation; after a capture the refund has done its work.
func (a *Activities) VoidPayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.VoidHold{WalletID: p.WalletID, OrderID: p.OrderID}, "hold_captured")
	return err
}

func (a *Activities) CapturePayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.CaptureHold{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount})
	return err
}

// RefundPayment is a compensation; nothing captured is nothing to refund.
func (a *Activities) RefundPayment(ctx context.Context, p Payment) error {
	_, err := a.send(ctx, p.Step, commands.RefundCapture{WalletID: p.WalletID, OrderID: p.OrderID, Amount: p.Amount}, "nothing_captured")
	return err
}

// OrderChange confirms, ships, completes or cancels the order.
type OrderChange struct {
	Step
	ShipmentID string `json:"shipment_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func (a *Activities) ConfirmOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.ConfirmOrder{OrderID: o.OrderID})
	return err
}

func (a *Activities) MarkOrderShipped(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.MarkOrderShipped{OrderID: o.OrderID, ShipmentID: o.ShipmentID})
	return err
}

func (a *Activities) CompleteOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.CompleteOrder{OrderID: o.OrderID})
	return err
}

// WriteOffOrder closes an order whose parcel left but whose sale could not
// be finished, on an operator's decision.
func (a *Activities) WriteOffOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.WriteOffOrder{OrderID: o.OrderID, Reason: o.Reason})
	return err
}

// CancelOrder is the last compensation: the order says why it did not happen.
func (a *Activities) CancelOrder(ctx context.Context, o OrderChange) error {
	_, err := a.send(ctx, o.Step, commands.CancelOrder{OrderID: o.OrderID, Reason: o.Reason})
	return err
}

// Parcel is a shipment of the order.
type Parcel struct {
	Step
	ShipmentID string        `json:"shipment_id"`
	Address    order.Address `json:"address"`
	// CustomerID's key opens the address, which travels sealed.
	CustomerID string `json:"customer_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Steps are the steps whose retried attempts InspectOrder counts.
	Steps []string `json:"steps,omitempty"`
}

func (a *Activities) ScheduleShipment(ctx context.Context, p Parcel) error {
	_, err := a.send(ctx, p.Step, commands.ScheduleShipment{ShipmentID: p.ShipmentID, OrderID: p.OrderID, Address: p.Address})
	return err
}

// openAddress returns the parcel's address in clear for the carrier. An
// address whose key was destroyed (the customer was forgotten) cannot be
// shipped to: the carrier refuses it, and the saga compensates.
func (a *Activities) openAddress(ctx context.Context, p Parcel) (order.Address, error) {
	if a.Keys == nil {
		return p.Address, nil
	}
	open := a.Keys.For(p.CustomerID)
	to := p.Address
	for _, f := range to.PersonalFields() {
		v, err := open.Open(ctx, *f)
		if errors.Is(err, personal.ErrErased) {
			return to, temporal.NewNonRetryableApplicationError("the shipping address was erased (the customer was forgotten)", ErrTypeCarrierRefuse, nil)
		}
		if err != nil {
			return to, err
		}
		*f = v
	}
	return to, nil
}

// DispatchWithCarrier hands the parcel to the carrier under the step's key
// and records the dispatch, in one activity: the saga's runs recorded
// before VersionDoors call it. Newer runs call BookWithCarrier and record
// the answer in a step of its own (RecordDispatch), so that no failure of
// the recording is taken for the carrier's refusal.
func (a *Activities) DispatchWithCarrier(ctx context.Context, p Parcel) (string, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	to, err := a.openAddress(ctx, p)
	if err != nil {
		return "", err
	}
	tracking, err := a.callCarrier(ctx, key, p.ShipmentID, to)
	if err != nil {
		return "", err
	}
	_, err = a.send(ctx, p.Step, commands.DispatchShipment{ShipmentID: p.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: tracking})
	return tracking, err
}

// BookWithCarrier hands the parcel to the carrier under the dispatch key
// and returns the tracking number once the carrier has taken it; it
// records nothing. Its only non-retryable failures are the carrier's
// refusals (carrier_rejected, carrier_withdrawn): the carrier does not
// have the parcel. Anything else is retried under the same key, so the
// carrier answers for the parcel it booked.
//
// An address that can no longer be opened (the customer was forgotten)
// is not taken for a refusal: an earlier attempt may have booked the
// parcel. The carrier is asked by key alone; it answers for a booking it
// has, and refuses to book anew without an address.
func (a *Activities) BookWithCarrier(ctx context.Context, p Parcel) (string, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	to, err := a.openAddress(ctx, p)
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		to, err = order.Address{}, nil
	}
	if err != nil {
		return "", err
	}
	return a.callCarrier(ctx, key, p.ShipmentID, to)
}

// callCarrier books the parcel and waits for the carrier, heartbeating;
// its refusals are final (non-retryable, typed), anything else is retried.
func (a *Activities) callCarrier(ctx context.Context, key, shipmentID string, to order.Address) (string, error) {
	tracking, err := heartbeating(ctx, func(ctx context.Context) (string, error) {
		return a.Carrier.Dispatch(ctx, key, shipmentID, to)
	})
	switch {
	case errors.Is(err, ErrCarrierRejected):
		return "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeCarrierRefuse, nil)
	case errors.Is(err, ErrWithdrawn):
		return "", temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeWithdrawn, nil)
	case err != nil:
		return "", fmt.Errorf("carrier: %w", err)
	}
	return tracking, nil
}

// Dispatch is the carrier's answer to record on the shipment.
type Dispatch struct {
	Step
	ShipmentID     string `json:"shipment_id"`
	TrackingNumber string `json:"tracking_number"`
}

// RecordDispatch records that the carrier took the parcel (past the point
// of no return: a failure here never compensates).
func (a *Activities) RecordDispatch(ctx context.Context, d Dispatch) error {
	_, err := a.send(ctx, d.Step, commands.DispatchShipment{ShipmentID: d.ShipmentID, Carrier: a.Carrier.Name(), TrackingNumber: d.TrackingNumber})
	return err
}

// WithdrawFromCarrier asks the carrier not to take the parcel booked under
// the dispatch step's key (p.Step is that step) and reports whether it
// could: false means the carrier has the parcel. It heartbeats, so that a
// worker that died during the call is noticed.
func (a *Activities) WithdrawFromCarrier(ctx context.Context, p Parcel) (bool, error) {
	key := p.key(activity.GetInfo(ctx).WorkflowExecution.ID)
	answer, err := heartbeating(ctx, func(ctx context.Context) (string, error) {
		withdrawn, err := a.Carrier.Withdraw(ctx, key)
		if withdrawn {
			return answerWithdrawn, err
		}
		return "", err
	})
	return answer == answerWithdrawn, err
}

const answerWithdrawn = "withdrawn"

// Inspection is what the event log says of an order and its shipment, for
// a saga that repairs a run ended without a business outcome.
type Inspection struct {
	OrderStatus    order.Status    `json:"order_status"`
	ShipmentStatus shipment.Status `json:"shipment_status,omitempty"`
	TrackingNumber string          `json:"tracking_number,omitempty"`
	// Attempts counts, per step of p.Steps, the attempts an operator's
	// retries added (the keys SagaKey(workflow, step.N) in the log): the
	// repair sends each step under its latest attempt's key.
	Attempts map[string]int `json:"attempts,omitempty"`
}

// MaxAttempts bounds the attempts of a step an inspection looks for.
const MaxAttempts = 20

// InspectOrder reads the order and its shipment from the event store.
func (a *Activities) InspectOrder(ctx context.Context, p Parcel) (Inspection, error) {
	o, s := order.New(p.OrderID), shipment.New(p.ShipmentID)
	if err := a.Store.Load(ctx, o); err != nil {
		return Inspection{}, err
	}
	if err := a.Store.Load(ctx, s); err != nil {
		return Inspection{}, err
	}
	st := s.State().(shipment.State)
	ins := Inspection{OrderStatus: o.Status(), ShipmentStatus: st.Status, TrackingNumber: st.TrackingNumber}
	wid := activity.GetInfo(ctx).WorkflowExecution.ID
	keys := map[string][2]any{}
	var ids []string
	for _, step := range p.Steps {
		for n := 2; n <= MaxAttempts; n++ {
			key := SagaKey(wid, fmt.Sprintf("%s.%d", step, n))
			keys[key] = [2]any{step, n}
			ids = append(ids, key)
		}
	}
	if len(ids) == 0 {
		return ins, nil
	}
	logged, err := a.Bus.Log().Logged(ctx, ids)
	if err != nil {
		return Inspection{}, err
	}
	for _, id := range logged {
		step, n := keys[id][0].(string), keys[id][1].(int)
		if ins.Attempts == nil {
			ins.Attempts = map[string]int{}
		}
		ins.Attempts[step] = max(ins.Attempts[step], n-1)
	}
	return ins, nil
}

// FailShipment is a compensation for a scheduled shipment.
func (a *Activities) FailShipment(ctx context.Context, p Parcel) error {
	_, err := a.send(ctx, p.Step, commands.FailShipment{ShipmentID: p.ShipmentID, Reason: p.Reason}, "shipment_not_found")
	return err
}

// heartbeating runs call while telling Temporal every few seconds that the
// worker is still alive, so a dead worker's carrier call is retried after
// the heartbeat timeout instead of the whole activity timeout; the SDK
// throttles the heartbeats it actually sends.
func heartbeating(ctx context.Context, call func(context.Context) (string, error)) (string, error) {
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(ctx)
		done <- result{v, err}
	}()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r.v, r.err
		case <-tick.C:
			activity.RecordHeartbeat(ctx)
		}
	}
}
