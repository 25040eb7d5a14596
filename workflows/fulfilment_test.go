package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
	"github.com/orderflow/orderflow/workflows"
)

var input = workflows.Input{
	OrderID: "o1", CustomerID: "c1", WalletID: "w1", Currency: "EUR", Total: 3500, CorrelationID: "corr",
	Lines:           []order.Line{{SKU: "a", Quantity: 1, UnitPrice: 1000}, {SKU: "b", Quantity: 1, UnitPrice: 2500}},
	ShippingAddress: order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"},
}

// saga runs the workflow with every activity mocked to succeed, except
// those the test overrides, and records the order of activity calls.
type saga struct {
	t     *testing.T
	env   *testsuite.TestWorkflowEnvironment
	mu    sync.Mutex
	calls []string
	keys  []string
}

func newSaga(t *testing.T) *saga {
	var suite testsuite.WorkflowTestSuite
	s := &saga{t: t, env: suite.NewTestWorkflowEnvironment()}
	s.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: workflows.WorkflowID(input.OrderID)})
	workflows.Register(s.env, &activities.Activities{})
	return s
}

func (s *saga) record(name string, step activities.Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, name)
	s.keys = append(s.keys, step.Key)
}

// mockOpts narrow or delay one mocked activity.
type mockOpts struct {
	when  func(any) bool
	once  bool
	after time.Duration
}

// on mocks activity name: it records "name[:sku]" and returns err.
func (s *saga) on(name string, err error, o mockOpts) {
	var ret any
	label := func(arg any) string {
		if l, ok := arg.(activities.Line); ok {
			return name + ":" + l.SKU
		}
		return name
	}
	switch name {
	case "ReserveStock", "ReleaseStock", "CommitStock":
		ret = func(_ context.Context, a activities.Line) error { s.record(label(a), a.Step); return err }
	case "AuthorisePayment", "VoidPayment", "CapturePayment", "RefundPayment":
		ret = func(_ context.Context, a activities.Payment) error { s.record(label(a), a.Step); return err }
	case "ConfirmOrder", "MarkOrderShipped", "CompleteOrder", "CancelOrder", "WriteOffOrder":
		ret = func(_ context.Context, a activities.OrderChange) error { s.record(label(a), a.Step); return err }
	case "ScheduleShipment", "FailShipment":
		ret = func(_ context.Context, a activities.Parcel) error { s.record(label(a), a.Step); return err }
	case "RecordDispatch":
		ret = func(_ context.Context, a activities.Dispatch) error { s.record(label(a), a.Step); return err }
	}
	c := s.env.OnActivity(name, mock.Anything, mock.MatchedBy(func(arg any) bool { return o.when == nil || o.when(arg) })).Return(ret)
	if o.once {
		c.Once()
	}
	if o.after > 0 {
		c.After(o.after)
	}
}

var allActivities = []string{"ReserveStock", "ReleaseStock", "CommitStock", "AuthorisePayment", "VoidPayment", "CapturePayment",
	"RefundPayment", "ConfirmOrder", "MarkOrderShipped", "CompleteOrder", "CancelOrder", "WriteOffOrder", "ScheduleShipment", "FailShipment", "RecordDispatch"}

func (s *saga) defaults() {
	for _, a := range allActivities {
		s.on(a, nil, mockOpts{})
	}
	// Unless a test runs the stages (stages), each stage fails and the
	// saga goes step by step, which most tests look at.
	s.env.OnActivity("RunForwardStage", mock.Anything, mock.Anything).Return(errors.New("stage not run in this test"))
	s.env.OnActivity("RunFinishStage", mock.Anything, mock.Anything).Return(errors.New("stage not run in this test"))
	s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) (string, error) {
		s.record("BookWithCarrier", p.Step)
		return "TRACK-1", nil
	})
	s.withdraw(true)
}

// carrierAnswers mocks the carrier call: its n-th call fails with
// errs[n], and once errs are used up it takes the parcel (TRACK-1).
func (s *saga) carrierAnswers(errs ...error) {
	s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) (string, error) {
		s.record("BookWithCarrier", p.Step)
		if n := len(s.keysOf("BookWithCarrier")); n <= len(errs) {
			return "", errs[n-1]
		}
		return "TRACK-1", nil
	})
}

// withdraw mocks the carrier's answer to a withdrawal.
func (s *saga) withdraw(withdrawn bool) {
	s.env.OnActivity("WithdrawFromCarrier", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) (bool, error) {
		s.record("WithdrawFromCarrier", p.Step)
		return withdrawn, nil
	})
}

// update sends an update at delay and returns what became of it.
func (s *saga) update(delay time.Duration, name string, arg any) *updateResult {
	r := &updateResult{}
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(name, fmt.Sprintf("%s-%s", name, delay), &testsuite.TestUpdateCallback{
			OnAccept: func() { r.accepted = true }, OnReject: func(err error) { r.rejected = err },
			OnComplete: func(v any, err error) { r.completed, r.err = true, err },
		}, arg)
	}, delay)
	return r
}

type updateResult struct {
	accepted, completed bool
	rejected, err       error
}

// code is the type of an update's refusal.
func code(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Type()
	}
	return ""
}

// progress runs the progress query (from a delayed callback: it reports
// with Errorf, and the caller asserts on what it returned).
func (s *saga) progress() workflows.Progress {
	s.t.Helper()
	var p workflows.Progress
	v, err := s.env.QueryWorkflow(workflows.QueryProgress)
	if err == nil {
		err = v.Get(&p)
	}
	if err != nil {
		s.t.Errorf("progress query: %v", err)
	}
	return p
}

func (s *saga) run(in workflows.Input) workflows.Progress {
	s.t.Helper()
	s.env.ExecuteWorkflow(workflows.Name, in)
	if !s.env.IsWorkflowCompleted() {
		s.t.Fatal("workflow did not complete")
	}
	var p workflows.Progress
	if err := s.env.GetWorkflowResult(&p); err != nil {
		s.t.Fatalf("workflow failed: %v", err)
	}
	return p
}

func (s *saga) want(calls ...string) {
	s.t.Helper()
	if strings.Join(s.calls, " ") != strings.Join(calls, " ") {
		s.t.Fatalf("activities\n got %v\nwant %v", s.calls, calls)
	}
}

func business(code string) error {
	return temporal.NewNonRetryableApplicationError(code+" happened", code, nil)
}

func sku(name string) func(any) bool {
	return func(arg any) bool { l, ok := arg.(activities.Line); return ok && l.SKU == name }
}

func TestHappyPathRunsEveryStepInOrder(t *testing.T) {
	s := newSaga(t)
	s.defaults()
	p := s.run(input)
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "BookWithCarrier", "RecordDispatch",
		"CapturePayment", "MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder")
	if p.Status != workflows.StatusCompleted || p.TrackingNumber != "TRACK-1" {
		t.Fatalf("progress %+v", p)
	}
	// Every command goes out under a key in the namespace clients cannot use.
	for i, k := range s.keys {
		if want := "saga:" + workflows.WorkflowID("o1") + "."; !strings.HasPrefix(k, want) {
			t.Fatalf("%s sent with key %q, want the prefix %q", s.calls[i], k, want)
		}
	}
}

// (Here the stage before the carrier fails and the saga goes step by step:
// the compensations of the stage's first group — reservations and
// authorisation — were registered before it, each a no-op when its step
// was not done.)
func TestFailuresCompensateInReverse(t *testing.T) {
	cases := []struct {
		name       string
		fail       string
		when       func(any) bool
		failedStep string
		want       []string
	}{
		{"out of stock on the second line", "ReserveStock", sku("b"), "reserve_stock:b",
			[]string{"ReserveStock:a", "ReserveStock:b", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
		{"insufficient funds", "AuthorisePayment", nil, "authorise_payment",
			[]string{"ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSaga(t)
			s.on(c.fail, business("boom"), mockOpts{when: c.when, once: true})
			s.defaults()
			p := s.run(input)
			s.want(c.want...)
			if p.Status != workflows.StatusCompensated || p.FailedStep != c.failedStep || !strings.Contains(p.Reason, "boom") {
				t.Fatalf("progress %+v", p)
			}
		})
	}
}

func TestCarrierRejectionFailsTheShipmentAndCompensates(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) (string, error) {
		s.record("BookWithCarrier", p.Step)
		return "", business("carrier_rejected")
	})
	s.defaults()
	p := s.run(input)
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "BookWithCarrier",
		"FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Status != workflows.StatusCompensated || p.FailedStep != "dispatch_shipment" {
		t.Fatalf("progress %+v", p)
	}
}

// The carrier is first called as a local activity (VersionFastCarrier): its
// answer, the parcel taken or refused, is the only call; anything else is
// no answer, and the regular activity asks again under the same key.
func TestTheCarrierIsCalledOnceAsALocalActivityWhenItAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer error
		calls  []bool // local or not, in order
		status string
	}{
		{"taken", nil, []bool{true}, workflows.StatusCompleted},
		{"refused", business(activities.ErrTypeCarrierRefuse), []bool{true}, workflows.StatusCompensated},
		{"no answer", context.DeadlineExceeded, []bool{true, false}, workflows.StatusCompleted},
		{"an error that says nothing of the parcel", errors.New("connection reset"), []bool{true, false}, workflows.StatusCompleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSaga(t)
			var local []bool
			s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).Return(func(ctx context.Context, p activities.Parcel) (string, error) {
				s.record("BookWithCarrier", p.Step)
				local = append(local, activity.GetInfo(ctx).IsLocalActivity)
				if len(local) == 1 && tc.answer != nil {
					return "", tc.answer
				}
				return "TRACK-1", nil
			})
			s.defaults()
			p := s.run(input)
			keys := s.keysOf("BookWithCarrier")
			if p.Status != tc.status || fmt.Sprint(local) != fmt.Sprint(tc.calls) || keys[0] != keys[len(keys)-1] {
				t.Fatalf("progress %+v, carrier calls local %v keys %v, want %v", p, local, keys, tc.calls)
			}
		})
	}
}

func TestInfrastructureErrorsAreRetried(t *testing.T) {
	s := newSaga(t)
	s.on("AuthorisePayment", errors.New("connection refused"), mockOpts{once: true})
	s.defaults()
	if p := s.run(input); p.Status != workflows.StatusCompleted {
		t.Fatalf("progress %+v", p)
	}
	if strings.Count(strings.Join(s.calls, " "), "AuthorisePayment") != 2 {
		t.Fatalf("calls %v", s.calls)
	}
}

// slowCarrier makes the carrier take d of workflow time: its first call,
// a local activity bounded by CarrierFastTimeout, gets no answer at once
// (the test environment does not time local activities out), the regular
// activity after it answers after d.
func (s *saga) slowCarrier(d time.Duration) {
	calls := 0
	after := func() time.Duration {
		if calls++; calls == 1 {
			return 0
		}
		return d
	}
	s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).AfterFn(after).Return(func(ctx context.Context, p activities.Parcel) (string, error) {
		s.record("BookWithCarrier", p.Step)
		if activity.GetInfo(ctx).IsLocalActivity {
			return "", context.DeadlineExceeded
		}
		return "TRACK-1", nil
	})
}

func TestCustomerCancelWhileTheCarrierWorksWithdrawsAndCompensates(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.defaults()
	cancel := s.update(10*time.Minute, workflows.UpdateCancel, "changed my mind")
	p := s.run(input)
	if !cancel.accepted || !cancel.completed || cancel.err != nil {
		t.Fatalf("cancel %+v %v calls %v", cancel, cancel.err, s.calls)
	}
	if p.Status != workflows.StatusCompensated || p.Reason != "cancelled by the customer: changed my mind" || p.Carrier != "withdrawn" {
		t.Fatalf("progress %+v", p)
	}
	calls := strings.Join(s.calls, " ")
	if strings.Contains(calls, "CapturePayment") || !strings.HasSuffix(calls, "WithdrawFromCarrier FailShipment VoidPayment ReleaseStock:b ReleaseStock:a CancelOrder") {
		t.Fatalf("calls %v", s.calls)
	}
}

func TestCancelWhenTheCarrierHasTheParcelIsRefusedAndTheSagaCompletes(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.withdraw(false)
	s.defaults()
	cancel := s.update(10*time.Minute, workflows.UpdateCancel, "changed my mind")
	p := s.run(input)
	if !cancel.accepted || code(cancel.err) != workflows.ErrShipped {
		t.Fatalf("cancel %+v", cancel)
	}
	if p.Status != workflows.StatusCompleted || p.Carrier != "taken" || strings.Contains(strings.Join(s.calls, " "), "Release") {
		t.Fatalf("progress %+v calls %v", p, s.calls)
	}
}

// From VersionFastCarrier a cancel before the carrier asks the carrier to
// withdraw first (carrierTookIt): a lost workflow task may have run the
// carrier's first call.
func TestCancelBeforeTheCarrierAsksTheCarrierThenCompensates(t *testing.T) {
	s := newSaga(t)
	s.on("AuthorisePayment", nil, mockOpts{after: time.Hour})
	s.defaults()
	cancel := s.update(10*time.Minute, workflows.UpdateCancel, "too slow")
	again := s.update(20*time.Minute, workflows.UpdateCancel, "really")
	p := s.run(input)
	if !cancel.accepted || cancel.err != nil || p.Status != workflows.StatusCompensated {
		t.Fatalf("cancel %+v progress %+v", cancel, p)
	}
	// A second cancel is refused as pending (409), not taken for a finished
	// saga (which would send CancelOrder to the order behind its back).
	if code(again.rejected) != workflows.ErrCancelling {
		t.Fatalf("second cancel %+v", again)
	}
	// The stage registered the compensations of its first group first
	// (each a no-op when nothing was done).
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "WithdrawFromCarrier", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Carrier != "withdrawn" || p.Reason != "cancelled by the customer: too slow" {
		t.Fatalf("progress %+v", p)
	}
}

// The workflow task that ran the forward stage and the carrier's first call
// was lost (a worker killed; a cancel of the workflow, which fails the
// completing task), and the run met a cancel before the carrier on its way
// again: the carrier has the parcel under the saga's key, so nothing is
// undone, the cancel is refused as shipped, and the saga finishes.
func TestACancelBeforeTheCarrierWhenTheCarrierHasTheParcelUndoesNothing(t *testing.T) {
	for _, canceller := range []string{"customer", "operator", "operator's compensate decision"} {
		t.Run(canceller, func(t *testing.T) {
			s := newSaga(t)
			if canceller == "operator's compensate decision" {
				// The run met a database outage and stopped for an operator.
				s.on("AuthorisePayment", errors.New("connection refused"), mockOpts{})
			} else {
				s.on("AuthorisePayment", nil, mockOpts{after: time.Hour})
			}
			s.withdraw(false)
			s.defaults()
			var cancel *updateResult
			switch canceller {
			case "customer":
				cancel = s.update(10*time.Minute, workflows.UpdateCancel, "changed my mind")
			case "operator":
				s.env.RegisterDelayedCallback(s.env.CancelWorkflow, 10*time.Minute)
			default:
				s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionCompensate, Reason: "db down"})
			}
			p := s.run(input)
			if cancel != nil && (!cancel.accepted || code(cancel.err) != workflows.ErrShipped) {
				t.Fatalf("cancel %+v", cancel)
			}
			calls := strings.Join(s.calls, " ")
			// The held AuthorisePayment is recorded whenever its mock's
			// delay ends, which races with the saga's later steps: the
			// order checked is that of the steps after the withdrawal.
			after := strings.Join(slices.DeleteFunc(slices.Clone(s.calls), func(c string) bool { return c == "AuthorisePayment" }), " ")
			if p.Status != workflows.StatusCompleted || p.Carrier != "taken" || p.TrackingNumber != "TRACK-1" ||
				strings.Contains(calls, "Release") || strings.Contains(calls, "Void") || !strings.Contains(after, "WithdrawFromCarrier BookWithCarrier RecordDispatch CapturePayment") {
				t.Fatalf("progress %+v calls %v", p, s.calls)
			}
		})
	}
}

func TestAReasonThatCannotReachAnEventIsRefused(t *testing.T) {
	// (Invalid UTF-8 cannot arrive: JSON payloads carry valid text, and the
	// API refuses a body that is not.)
	for _, reason := range []string{"x\x00", strings.Repeat("é", workflows.MaxReason+1), " "} {
		s := newSaga(t)
		s.slowCarrier(time.Hour)
		s.defaults()
		cancel := s.update(10*time.Minute, workflows.UpdateCancel, reason)
		p := s.run(input)
		if cancel.accepted || cancel.rejected == nil || p.Status != workflows.StatusCompleted {
			t.Fatalf("reason %q: cancel %+v progress %+v", reason, cancel, p)
		}
	}
}

func TestAnOperatorCancelDuringDispatchWithdrawsAndCompensates(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.defaults()
	s.env.RegisterDelayedCallback(s.env.CancelWorkflow, 10*time.Minute)
	p := s.run(input)
	if p.Status != workflows.StatusCompensated || p.Reason != "cancelled by an operator" || p.Carrier != "withdrawn" {
		t.Fatalf("progress %+v", p)
	}
	if want := []string{"compensate:fail_shipment", "compensate:void_payment", "compensate:release_stock:b", "compensate:release_stock:a",
		"compensate:cancel_order"}; strings.Join(p.Compensated, " ") != strings.Join(want, " ") {
		t.Fatalf("compensated %v, want %v", p.Compensated, want)
	}
}

func TestAnOperatorCancelAfterTheCarrierChangesNothing(t *testing.T) {
	s := newSaga(t)
	s.on("CapturePayment", nil, mockOpts{after: time.Hour})
	s.defaults()
	s.env.RegisterDelayedCallback(s.env.CancelWorkflow, 10*time.Minute)
	if p := s.run(input); p.Status != workflows.StatusCompleted || strings.Contains(strings.Join(s.calls, " "), "Release") {
		t.Fatalf("progress %+v calls %v", p, s.calls)
	}
}

func TestCancelAfterShipmentIsRefused(t *testing.T) {
	s := newSaga(t)
	s.on("CapturePayment", nil, mockOpts{after: time.Hour})
	s.defaults()
	cancel := s.update(10*time.Minute, workflows.UpdateCancel, "too late")
	p := s.run(input)
	if cancel.accepted || code(cancel.rejected) != workflows.ErrShipped || p.Status != workflows.StatusCompleted {
		t.Fatalf("cancel %+v progress %+v", cancel, p)
	}
}

func TestShippingDeadlineIsATimerNotATimeout(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(48 * time.Hour)
	s.defaults()
	p := s.run(input) // default deadline: 24 h
	if p.Status != workflows.StatusCompensated || p.FailedStep != "dispatch_shipment" || !strings.Contains(p.Reason, "shipping_deadline_passed") {
		t.Fatalf("progress %+v", p)
	}
}

func TestACaptureRefusedAfterDispatchWaitsForAnOperatorAndIsWrittenOff(t *testing.T) {
	s := newSaga(t)
	s.on("CapturePayment", business("no_hold"), mockOpts{once: true})
	s.defaults()
	var waiting workflows.Progress
	s.env.RegisterDelayedCallback(func() { waiting = s.progress() }, 30*time.Minute)
	early := s.update(30*time.Minute, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionCompensate, Reason: "undo it"})
	resolve := s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionWriteOff, Reason: "hold voided by mistake"})
	p := s.run(input)
	if waiting.Status != workflows.StatusNeedsAttention || waiting.Attention == nil || waiting.Attention.Step != "capture_payment" ||
		strings.Join(waiting.Attention.Options, ",") != "retry,write_off" || !strings.Contains(waiting.Attention.Error, "no_hold") {
		t.Fatalf("while waiting: %+v", waiting)
	}
	if code(early.rejected) != workflows.ErrActionNotAllowed || !resolve.accepted {
		t.Fatalf("compensate after dispatch: %+v; write-off: %+v", early, resolve)
	}
	// Nothing is undone: the stock is committed, the hold released, the
	// order written off.
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "BookWithCarrier", "RecordDispatch",
		"CapturePayment", "VoidPayment", "CommitStock:a", "CommitStock:b", "WriteOffOrder")
	if p.Status != workflows.StatusWrittenOff || p.Reason != "written off: hold voided by mistake" || len(p.Decisions) != 1 || p.Attention != nil {
		t.Fatalf("progress %+v", p)
	}
}

func TestAStepRefusedAfterDispatchCanBeRetried(t *testing.T) {
	s := newSaga(t)
	s.on("CompleteOrder", business("order_placed"), mockOpts{once: true})
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "fixed", Operator: "ops-1"})
	p := s.run(input)
	if p.Status != workflows.StatusCompleted || len(p.Decisions) != 1 || !strings.Contains(p.Decisions[0], "retry at complete_order by ops-1") {
		t.Fatalf("progress %+v", p)
	}
	if strings.Count(strings.Join(s.calls, " "), "CompleteOrder") != 2 {
		t.Fatalf("calls %v", s.calls)
	}
}

func TestAKeyCollisionIsNoRefusal(t *testing.T) {
	s := newSaga(t)
	s.on("AuthorisePayment", temporal.NewNonRetryableApplicationError("reused", activities.ErrTypeKeyCollision, nil), mockOpts{once: true})
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "key released"})
	if p := s.run(input); p.Status != workflows.StatusCompleted {
		t.Fatalf("a key collision was taken for a refusal: %+v, calls %v", p, s.calls)
	}
}

func TestACompensationThatKeepsFailingWaitsForAnOperator(t *testing.T) {
	s := newSaga(t)
	fixed := false
	s.env.OnActivity("FailShipment", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) error {
		s.record("FailShipment", p.Step)
		if !fixed {
			return errors.New("database unreachable")
		}
		return nil
	})
	s.env.OnActivity("BookWithCarrier", mock.Anything, mock.Anything).Return("", business("carrier_rejected"))
	s.defaults()
	var waiting workflows.Progress
	s.env.RegisterDelayedCallback(func() { waiting = s.progress(); fixed = true }, time.Hour)
	s.update(time.Hour+time.Minute, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "database back"})
	p := s.run(input)
	if waiting.Status != workflows.StatusNeedsAttention || waiting.Attention.Step != "compensate:fail_shipment" ||
		strings.Join(waiting.Attention.Options, ",") != "retry,skip" {
		t.Fatalf("while waiting: %+v", waiting)
	}
	// Retried with backoff within the step's deadline, then held; the
	// compensations after it ran once the operator retried.
	if n := strings.Count(strings.Join(s.calls, " "), "FailShipment"); n < 5 || n > 200 {
		t.Fatalf("FailShipment ran %d times", n)
	}
	if p.Status != workflows.StatusCompensated || len(p.Compensated) != 5 || len(p.Skipped) != 0 {
		t.Fatalf("progress %+v", p)
	}
}

func TestAStuckStepBeforeTheCarrierCanBeCompensated(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("ConfirmOrder", mock.Anything, mock.Anything).Return(errors.New("database unreachable"))
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionCompensate, Reason: "order data broken"})
	p := s.run(input)
	if p.Status != workflows.StatusCompensated || p.FailedStep != "confirm_order" || p.Reason != "compensated by an operator: order data broken" {
		t.Fatalf("progress %+v", p)
	}
}

func TestACustomerCancelEndsTheWaitOfAStuckStep(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("ConfirmOrder", mock.Anything, mock.Anything).Return(errors.New("database unreachable"))
	s.defaults()
	cancel := s.update(time.Hour, workflows.UpdateCancel, "waited too long")
	p := s.run(input)
	if !cancel.accepted || p.Status != workflows.StatusCompensated || p.Reason != "cancelled by the customer: waited too long" {
		t.Fatalf("cancel %+v progress %+v", cancel, p)
	}
}

func TestRepairCompensatesWhenTheCarrierWithdraws(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{OrderStatus: order.StatusConfirmed, ShipmentStatus: "scheduled"}, nil)
	s.defaults()
	in := input
	in.Repair = true
	p := s.run(in)
	// The ended run's reservations and authorisation are sent again under
	// their keys first (settled: one still in flight cannot land after the
	// compensation that undoes it), then undone.
	s.want("WithdrawFromCarrier", "ReserveStock:a", "ReserveStock:b", "AuthorisePayment",
		"FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Status != workflows.StatusCompensated || !p.Repair || !strings.HasPrefix(p.Reason, "repaired") {
		t.Fatalf("progress %+v", p)
	}
}

func TestRepairCompletesWhenTheCarrierHasTheParcel(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{
		OrderStatus: order.StatusConfirmed, ShipmentStatus: "dispatched", TrackingNumber: "T-9"}, nil)
	s.defaults()
	in := input
	in.Repair = true
	p := s.run(in)
	// The dispatch is recorded again under its key (a no-op when the ended
	// run recorded it).
	s.want("RecordDispatch", "CapturePayment", "MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder")
	if p.Status != workflows.StatusCompleted || p.TrackingNumber != "T-9" {
		t.Fatalf("progress %+v", p)
	}
}

func TestProgressQueryReportsTheCurrentStep(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.defaults()
	var p workflows.Progress
	s.env.RegisterDelayedCallback(func() { p = s.progress() }, 10*time.Minute)
	s.run(input)
	if p.Step != "dispatch_shipment" || p.Status != workflows.StatusShipping {
		t.Fatalf("progress while shipping %+v", p)
	}
}

// The carrier call retried after an infrastructure error carries the same
// dispatch key, so the carrier answers with the same booking.
func TestARetriedDispatchCarriesTheSameKey(t *testing.T) {
	s := newSaga(t)
	s.carrierAnswers(errors.New("carrier unreachable"))
	s.defaults()
	p := s.run(input)
	var keys []string
	for i, c := range s.calls {
		if c == "BookWithCarrier" {
			keys = append(keys, s.keys[i])
		}
	}
	if p.Status != workflows.StatusCompleted || len(keys) != 2 || keys[0] != keys[1] ||
		keys[0] != "saga:"+workflows.WorkflowID(input.OrderID)+".dispatch_shipment" {
		t.Fatalf("progress %+v, dispatch keys %v", p, keys)
	}
}

// keysOf returns the keys the named activity was called with, in order.
func (s *saga) keysOf(name string) []string {
	var keys []string
	for i, c := range s.calls {
		if c == name {
			keys = append(keys, s.keys[i])
		}
	}
	return keys
}

// The point of no return is the carrier's answer: recording it is a step
// of its own, and its failure — a refusal, a collision, anything — stops
// the saga for an operator (retry or write off) and undoes nothing.
func TestAFailureToRecordTheDispatchNeverCompensates(t *testing.T) {
	for name, err := range map[string]error{
		"refused":   business("shipment_failed"),
		"collision": temporal.NewNonRetryableApplicationError("reused", activities.ErrTypeKeyCollision, nil),
		"invalid":   temporal.NewNonRetryableApplicationError("bad id", activities.ErrTypeInvalid, nil),
	} {
		t.Run(name, func(t *testing.T) {
			s := newSaga(t)
			s.on("RecordDispatch", err, mockOpts{once: true})
			s.defaults()
			var waiting workflows.Progress
			s.env.RegisterDelayedCallback(func() { waiting = s.progress() }, 30*time.Minute)
			s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "fixed"})
			p := s.run(input)
			if waiting.Attention == nil || waiting.Attention.Step != "record_dispatch" || strings.Join(waiting.Attention.Options, ",") != "retry,write_off" {
				t.Fatalf("while waiting: %+v", waiting)
			}
			s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "BookWithCarrier", "RecordDispatch",
				"RecordDispatch", "CapturePayment", "MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder")
			if p.Status != workflows.StatusCompleted {
				t.Fatalf("progress %+v", p)
			}
		})
	}
}

// A carrier call that fails other than by the carrier's refusal says
// nothing of the parcel: no compensation; the operator's retry asks the
// carrier again under the same key.
func TestACarrierFailureThatIsNoRefusalIsNeverCompensated(t *testing.T) {
	s := newSaga(t)
	s.carrierAnswers(temporal.NewNonRetryableApplicationError("unexpected answer", "carrier_protocol", nil))
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "carrier fixed"})
	p := s.run(input)
	keys := s.keysOf("BookWithCarrier")
	if p.Status != workflows.StatusCompleted || len(keys) != 2 || keys[0] != keys[1] {
		t.Fatalf("progress %+v, carrier keys %v, calls %v", p, keys, s.calls)
	}
}

// An id the order gave that a command refuses as invalid cannot be fixed
// by waiting: before the carrier, the saga compensates.
func TestAnInvalidCommandBeforeTheCarrierCompensates(t *testing.T) {
	s := newSaga(t)
	s.on("ScheduleShipment", temporal.NewNonRetryableApplicationError("shipment id too long", activities.ErrTypeInvalid, nil), mockOpts{})
	s.defaults()
	p := s.run(input)
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment",
		"FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Status != workflows.StatusCompensated || p.FailedStep != "schedule_shipment" {
		t.Fatalf("progress %+v", p)
	}
}

// An operator's retry after a refused command is a new attempt: the same
// key would only replay the logged refusal.
func TestARetryAfterARefusalSendsANewAttempt(t *testing.T) {
	s := newSaga(t)
	s.on("CapturePayment", business("no_hold"), mockOpts{once: true})
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "re-authorised"})
	p := s.run(input)
	keys := s.keysOf("CapturePayment")
	wid := workflows.WorkflowID(input.OrderID)
	if p.Status != workflows.StatusCompleted || len(keys) != 2 || keys[0] != "saga:"+wid+".capture_payment" || keys[1] != "saga:"+wid+".capture_payment.2" {
		t.Fatalf("progress %+v, capture keys %v", p, keys)
	}
}

// An infrastructure failure is retried under the same key: the command
// may have been applied.
func TestARetryAfterAnInfrastructureFailureKeepsTheKey(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("CompleteOrder", mock.Anything, mock.Anything).Return(func(_ context.Context, o activities.OrderChange) error {
		s.record("CompleteOrder", o.Step)
		if len(s.keysOf("CompleteOrder")) == 1 {
			return temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_START_TO_CLOSE, nil)
		}
		return nil
	})
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "back"})
	p := s.run(input)
	keys := s.keysOf("CompleteOrder")
	if p.Status != workflows.StatusCompleted || len(keys) < 2 || keys[0] != keys[len(keys)-1] {
		t.Fatalf("progress %+v, keys %v", p, keys)
	}
}

// A repair run answers a cancel with what it finds: accepted when the
// carrier withdraws (the order is cancelled for the customer's reason),
// refused when the carrier has the parcel — never accepted and ignored.
func TestARepairRunAnswersACancelWithItsReadingOfTheCarrier(t *testing.T) {
	for _, withdrawn := range []bool{true, false} {
		t.Run(fmt.Sprint("withdrawn=", withdrawn), func(t *testing.T) {
			s := newSaga(t)
			s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).After(time.Minute).Return(
				activities.Inspection{OrderStatus: order.StatusConfirmed, ShipmentStatus: "scheduled"}, nil)
			s.withdraw(withdrawn)
			s.defaults()
			cancel := s.update(time.Second, workflows.UpdateCancel, "changed my mind")
			in := input
			in.Repair = true
			p := s.run(in)
			if withdrawn && (!cancel.completed || cancel.err != nil || p.Status != workflows.StatusCompensated ||
				p.Reason != "cancelled by the customer: changed my mind") {
				t.Fatalf("cancel %+v, progress %+v", cancel, p)
			}
			if !withdrawn && (cancel.err == nil || code(cancel.err) != workflows.ErrShipped || p.Status != workflows.StatusCompleted) {
				t.Fatalf("cancel %+v, progress %+v", cancel, p)
			}
		})
	}
}

// A repair of a run recorded before VersionGuarded uses that run's keys:
// the carrier is asked for the booking the run made, and its commands are
// not sent twice under other keys.
func TestARepairOfALegacyRunUsesItsKeys(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{OrderStatus: order.StatusConfirmed, ShipmentStatus: "scheduled"}, nil)
	s.withdraw(false)
	s.defaults()
	in := input
	in.Repair, in.LegacyKeys = true, true
	p := s.run(in)
	if p.Status != workflows.StatusCompleted {
		t.Fatalf("progress %+v", p)
	}
	for i, k := range s.keys {
		if k != "" {
			t.Fatalf("%s ran with key %q: a legacy run's steps have none (activities.CommandID)", s.calls[i], k)
		}
	}
}

// stages makes the stages succeed (recorded as one call each) unless
// failForward or failFinish.
func (s *saga) stages(failForward, failFinish bool) {
	s.env.OnActivity("RunForwardStage", mock.Anything, mock.Anything).Return(func(_ context.Context, st activities.ForwardStage) error {
		s.record("RunForwardStage", st.Confirm.Step)
		if failForward {
			return business("out_of_stock")
		}
		return nil
	})
	s.env.OnActivity("RunFinishStage", mock.Anything, mock.Anything).Return(func(_ context.Context, st activities.FinishStage) error {
		s.record("RunFinishStage", st.Complete.Step)
		if failFinish {
			return business("no_hold")
		}
		return nil
	})
}

// A stage sends its steps together: the happy path is two local
// activities and the carrier, each stage's steps with the keys they have
// one by one.
func TestStagesRunTheStepsTogether(t *testing.T) {
	s := newSaga(t)
	var forward activities.ForwardStage
	var finish activities.FinishStage
	s.env.OnActivity("RunForwardStage", mock.Anything, mock.Anything).Return(func(_ context.Context, st activities.ForwardStage) error {
		forward = st
		s.record("RunForwardStage", st.Confirm.Step)
		return nil
	})
	s.env.OnActivity("RunFinishStage", mock.Anything, mock.Anything).Return(func(_ context.Context, st activities.FinishStage) error {
		finish = st
		s.record("RunFinishStage", st.Complete.Step)
		return nil
	})
	s.defaults()
	p := s.run(input)
	s.want("RunForwardStage", "BookWithCarrier", "RunFinishStage")
	wid := workflows.WorkflowID(input.OrderID)
	if p.Status != workflows.StatusCompleted || len(forward.Reserve) != 2 || forward.Reserve[1].Step.Key != "saga:"+wid+".reserve_stock:b" ||
		forward.Authorise.Amount != 3500 || finish.Record.TrackingNumber != "TRACK-1" || len(finish.Commit) != 2 ||
		finish.Capture.Step.Key != "saga:"+wid+".capture_payment" {
		t.Fatalf("progress %+v\nforward %+v\nfinish %+v", p, forward, finish)
	}
}

// A stage that fails is run again step by step: the steps it applied are
// answered from the log under the same keys, and the one that failed is
// handled as it always was (here compensated, or held for an operator).
func TestAFailedStageGoesOnStepByStep(t *testing.T) {
	s := newSaga(t)
	s.stages(true, false)
	s.on("ReserveStock", business("out_of_stock"), mockOpts{when: sku("b"), once: true})
	s.defaults()
	p := s.run(input)
	// Every compensation of the stage's first group runs: the
	// authorisation may have been applied in it, so the hold is voided
	// though the step by step run stopped before authorising. The
	// shipment was never scheduled (the second group was not reached).
	s.want("RunForwardStage", "ReserveStock:a", "ReserveStock:b", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Status != workflows.StatusCompensated || p.FailedStep != "reserve_stock:b" {
		t.Fatalf("progress %+v", p)
	}

	s = newSaga(t)
	s.stages(false, true)
	s.on("CapturePayment", business("no_hold"), mockOpts{once: true})
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "re-authorised"})
	p = s.run(input)
	s.want("RunForwardStage", "BookWithCarrier", "RunFinishStage", "RecordDispatch", "CapturePayment", "CapturePayment",
		"MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder")
	if p.Status != workflows.StatusCompleted {
		t.Fatalf("progress %+v", p)
	}
}

// A carrier that refuses when asked again after a failure that was no
// refusal does not have the parcel: the saga compensates (it used to stop
// for an operator again, whose retries could only be refused).
func TestACarrierRefusalOnARetryCompensates(t *testing.T) {
	s := newSaga(t)
	protocol := temporal.NewNonRetryableApplicationError("unexpected answer", "carrier_protocol", nil)
	// The fast call and the regular one both fail so; the operator's
	// retry gets the refusal.
	s.carrierAnswers(protocol, protocol, business(activities.ErrTypeCarrierRefuse))
	s.defaults()
	s.update(time.Hour, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "carrier fixed"})
	p := s.run(input)
	if p.Status != workflows.StatusCompensated || p.FailedStep != "dispatch_shipment" || len(s.keysOf("BookWithCarrier")) != 3 {
		t.Fatalf("progress %+v, calls %v", p, s.calls)
	}
}

// A repair never compensates without the carrier's word: the ended run's
// carrier call may have booked after the terminate with no shipment event
// at all (the shipment's status says nothing of the carrier), so the repair
// withdraws first; taken, it is the point of no return and nothing is
// undone. (It compensated at once when the shipment was not scheduled.)
func TestARepairAsksTheCarrierWhateverTheShipmentSays(t *testing.T) {
	for _, c := range []struct {
		name     string
		shipment shipment.Status
		taken    bool
		want     []string
	}{
		{"no shipment, withdrawn", "", false, []string{"WithdrawFromCarrier", "ReserveStock:a", "ReserveStock:b", "AuthorisePayment",
			"FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
		{"no shipment, taken", "", true, []string{"WithdrawFromCarrier", "BookWithCarrier", "RecordDispatch", "CapturePayment",
			"MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder"}},
		{"failed by an operator, taken", shipment.StatusFailed, true, []string{"WithdrawFromCarrier", "BookWithCarrier", "RecordDispatch",
			"CapturePayment", "MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSaga(t)
			s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{OrderStatus: order.StatusConfirmed, ShipmentStatus: c.shipment}, nil)
			s.withdraw(!c.taken)
			s.carrierAnswers()
			s.defaults()
			in := input
			in.Repair = true
			p := s.run(in)
			s.want(c.want...)
			if c.taken && p.Status != workflows.StatusCompleted || !c.taken && p.Status != workflows.StatusCompensated {
				t.Fatalf("progress %+v", p)
			}
		})
	}
}

// A repair of an order already cancelled withdraws the ended run's booking
// before it settles the rest: no parcel leaves for a cancelled order.
func TestARepairOfACancelledOrderWithdrawsFromTheCarrier(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{OrderStatus: order.StatusCancelled}, nil)
	s.withdraw(true)
	s.defaults()
	in := input
	in.Repair = true
	p := s.run(in)
	if len(s.calls) == 0 || s.calls[0] != "WithdrawFromCarrier" {
		t.Fatalf("calls %v", s.calls)
	}
	if p.Status != workflows.StatusCompensated {
		t.Fatalf("progress %+v", p)
	}
}

// The carrier has the parcel of an order already cancelled (the ended run
// booked after the terminate): nothing is undone behind its back — the
// repair waits for an operator, who has the parcel returned and retries;
// only then does it compensate.
func TestARepairOfACancelledOrderWhoseParcelTheCarrierTookUndoesNothing(t *testing.T) {
	s := newSaga(t)
	s.env.OnActivity("InspectOrder", mock.Anything, mock.Anything).Return(activities.Inspection{OrderStatus: order.StatusCancelled}, nil)
	asked := 0
	s.env.OnActivity("WithdrawFromCarrier", mock.Anything, mock.Anything).Return(func(_ context.Context, p activities.Parcel) (bool, error) {
		s.record("WithdrawFromCarrier", p.Step)
		asked++
		return asked > 1, nil // taken, then given back
	})
	s.defaults()
	var waiting workflows.Progress
	s.env.RegisterDelayedCallback(func() { waiting = s.progress() }, time.Minute)
	s.update(2*time.Minute, workflows.UpdateResolve, workflows.Resolution{Action: workflows.ActionRetry, Reason: "the carrier returned it"})
	in := input
	in.Repair = true
	p := s.run(in)
	if waiting.Status != workflows.StatusNeedsAttention || waiting.Attention == nil || waiting.Attention.Step != "withdraw_from_carrier" || waiting.Carrier != "taken" {
		t.Fatalf("while the carrier had it: %+v", waiting)
	}
	if len(s.calls) < 2 || s.calls[0] != "WithdrawFromCarrier" || s.calls[1] != "WithdrawFromCarrier" {
		t.Fatalf("something was undone before the carrier gave the parcel back: %v", s.calls)
	}
	if p.Status != workflows.StatusCompensated || p.Carrier != "withdrawn" {
		t.Fatalf("progress %+v", p)
	}
}
