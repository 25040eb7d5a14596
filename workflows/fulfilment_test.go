package workflows_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/domain/order"
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
}

func newSaga(t *testing.T) *saga {
	var suite testsuite.WorkflowTestSuite
	s := &saga{t: t, env: suite.NewTestWorkflowEnvironment()}
	workflows.Register(s.env, &activities.Activities{})
	return s
}

func (s *saga) record(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, name)
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
		ret = func(_ context.Context, a activities.Line) error { s.record(label(a)); return err }
	case "AuthorisePayment", "VoidPayment", "CapturePayment", "RefundPayment":
		ret = func(_ context.Context, a activities.Payment) error { s.record(label(a)); return err }
	case "ConfirmOrder", "MarkOrderShipped", "CompleteOrder", "CancelOrder":
		ret = func(_ context.Context, a activities.OrderChange) error { s.record(label(a)); return err }
	case "ScheduleShipment", "FailShipment":
		ret = func(_ context.Context, a activities.Parcel) error { s.record(label(a)); return err }
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
	"RefundPayment", "ConfirmOrder", "MarkOrderShipped", "CompleteOrder", "CancelOrder", "ScheduleShipment", "FailShipment"}

func (s *saga) defaults() {
	for _, a := range allActivities {
		s.on(a, nil, mockOpts{})
	}
	s.env.OnActivity("DispatchWithCarrier", mock.Anything, mock.Anything).Return(func(context.Context, activities.Parcel) (string, error) {
		s.record("DispatchWithCarrier")
		return "TRACK-1", nil
	})
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
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "DispatchWithCarrier",
		"CapturePayment", "MarkOrderShipped", "CommitStock:a", "CommitStock:b", "CompleteOrder")
	if p.Status != workflows.StatusCompleted || p.TrackingNumber != "TRACK-1" {
		t.Fatalf("progress %+v", p)
	}
}

func TestFailuresCompensateInReverse(t *testing.T) {
	cases := []struct {
		name       string
		fail       string
		when       func(any) bool
		failedStep string
		want       []string
	}{
		{"out of stock on the second line", "ReserveStock", sku("b"), "reserve_stock:b",
			[]string{"ReserveStock:a", "ReserveStock:b", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
		{"insufficient funds", "AuthorisePayment", nil, "authorise_payment",
			[]string{"ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
		{"capture refused", "CapturePayment", nil, "capture_payment",
			[]string{"ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "DispatchWithCarrier",
				"CapturePayment", "RefundPayment", "FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder"}},
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
	s.env.OnActivity("DispatchWithCarrier", mock.Anything, mock.Anything).Return(func(context.Context, activities.Parcel) (string, error) {
		s.record("DispatchWithCarrier")
		return "", business("carrier_rejected")
	})
	s.defaults()
	p := s.run(input)
	s.want("ReserveStock:a", "ReserveStock:b", "AuthorisePayment", "ConfirmOrder", "ScheduleShipment", "DispatchWithCarrier",
		"FailShipment", "VoidPayment", "ReleaseStock:b", "ReleaseStock:a", "CancelOrder")
	if p.Status != workflows.StatusCompensated || p.FailedStep != "dispatch_shipment" {
		t.Fatalf("progress %+v", p)
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

// slowCarrier makes the carrier take d of workflow time.
func (s *saga) slowCarrier(d time.Duration) {
	s.env.OnActivity("DispatchWithCarrier", mock.Anything, mock.Anything).After(d).Return(func(context.Context, activities.Parcel) (string, error) {
		s.record("DispatchWithCarrier")
		return "TRACK-1", nil
	})
}

func TestCustomerCancelBeforeShipmentCompensates(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.defaults()
	var accepted bool
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(workflows.UpdateCancel, "u1", &testsuite.TestUpdateCallback{
			OnAccept: func() { accepted = true }, OnReject: func(err error) { t.Errorf("rejected: %v", err) }, OnComplete: func(any, error) {},
		}, "changed my mind")
	}, 10*time.Minute)
	p := s.run(input)
	if !accepted || p.Status != workflows.StatusCompensated || p.Reason != "cancelled by the customer: changed my mind" {
		t.Fatalf("accepted %v progress %+v", accepted, p)
	}
	if strings.Contains(strings.Join(s.calls, " "), "CapturePayment") || !strings.HasSuffix(strings.Join(s.calls, " "), "FailShipment VoidPayment ReleaseStock:b ReleaseStock:a CancelOrder") {
		t.Fatalf("calls %v", s.calls)
	}
}

func TestCancelAfterShipmentIsRefused(t *testing.T) {
	s := newSaga(t)
	s.on("CapturePayment", nil, mockOpts{after: time.Hour})
	s.defaults()
	var refused error
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(workflows.UpdateCancel, "u1", &testsuite.TestUpdateCallback{
			OnAccept: func() { t.Error("accepted after shipment") }, OnReject: func(err error) { refused = err }, OnComplete: func(any, error) {},
		}, "too late")
	}, 10*time.Minute)
	p := s.run(input)
	var app *temporal.ApplicationError
	if !errors.As(refused, &app) || app.Type() != workflows.ErrShipped || p.Status != workflows.StatusCompleted {
		t.Fatalf("refused %v progress %+v", refused, p)
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

func TestProgressQueryReportsTheCurrentStep(t *testing.T) {
	s := newSaga(t)
	s.slowCarrier(time.Hour)
	s.defaults()
	s.env.RegisterDelayedCallback(func() {
		v, err := s.env.QueryWorkflow(workflows.QueryProgress)
		if err != nil {
			t.Fatal(err)
		}
		var p workflows.Progress
		if err := v.Get(&p); err != nil || p.Step != "dispatch_shipment" || p.Status != workflows.StatusShipping {
			t.Errorf("progress while shipping %+v %v", p, err)
		}
	}, 10*time.Minute)
	s.run(input)
}
