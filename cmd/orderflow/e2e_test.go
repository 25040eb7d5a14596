package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/auth"
	api "github.com/orderflow/orderflow/client"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/httpapi/apitest"
	"github.com/orderflow/orderflow/internal/devruntime/devtemporal"
	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/tracing"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// One embedded Temporal server (in memory) for the whole package.
var temporalAddr string

// spans records every span of the package's runs (the global provider,
// set before anything asks for a tracer).
var spans = tracetest.NewSpanRecorder()

func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	otel.SetTextMapPropagator(tracing.Propagator)
	os.Exit(pgtest.Run(withTemporal{m}))
}

type withTemporal struct{ m *testing.M }

func (w withTemporal) Run() int {
	// The server picks free ports; another process may take one between
	// the pick and the bind, so a failed start is tried again.
	var srv *devtemporal.Server
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if srv, err = devtemporal.Start(devtemporal.Options{Namespace: "default"}); err == nil {
			break
		}
		fmt.Fprintf(os.Stderr, "embedded temporal, attempt %d: %v\n", attempt, err)
	}
	if err != nil {
		return 1
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.WaitReady(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	temporalAddr = srv.Frontend
	if code := w.m.Run(); code != 0 {
		return code
	}
	// The problem codes docs/api.md lists that only these tests produce.
	if err := apitest.CheckSeen(apitest.ExercisedInCmdOrderflow); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return topicsMatchTheContract()
}

// topicsMatchTheContract validates every message the package's tests wrote
// (every event and command of the end-to-end and load tests, and any
// poisoned message) against the AsyncAPI document, read back from the
// topic tables once they all ran.
func topicsMatchTheContract() int {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.RunURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	fails, err := asyncapi.CheckTopics(ctx, pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, "check the topics against the AsyncAPI document:", err)
		return 1
	}
	if len(fails) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d messages on the topics do not match the AsyncAPI document (docs/asyncapi.json):\n  %s\n",
			len(fails), strings.Join(fails, "\n  "))
		return 1
	}
	return 0
}

// system is the whole service wired as in dev: API, projector, saga worker.
type system struct {
	t   *testing.T
	url string
	a   *app
	tc  client.Client
	cfg Config
	// token is an operator's, sent unless a call sets Authorization.
	token string
	// api is the typed client, as the operator; send and call are for
	// requests it would not build (another principal, hostile input).
	api *api.ClientWithResponses
}

// bearer is the Authorization header of p's token, signed with dev's key.
func (s *system) bearer(p auth.Principal) string {
	s.t.Helper()
	key, err := auth.DevKey(s.cfg.DataDir, false)
	if err != nil {
		s.t.Fatal(err)
	}
	tok, err := auth.Issue(key, auth.DevIssuer, auth.DevAudience, p, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return "Bearer " + tok
}

// startSystem starts the system; opts adjust its configuration (its log
// included) before it starts.
func startSystem(t *testing.T, carrierLatency time.Duration, opts ...func(*Config)) *system {
	// Errors only, in the test's log (shown when it fails).
	quiet := slog.New(slog.NewTextHandler(newTestLog(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := Config{
		DatabaseURL: pgtest.URL(t), SnapshotEvery: 100, CommandRetries: 20, MaxBodyBytes: 1 << 20,
		PollInterval: 10 * time.Millisecond, BatchSize: 100, HandlerRetries: 3, ConsistencyTimeout: 30 * time.Second,
		TemporalAddress: temporalAddr, TemporalNamespace: "default", TemporalRetention: 30 * 24 * time.Hour,
		ShippingDeadline: time.Hour, CarrierLatency: carrierLatency, CarrierRejectZip: "00000", log: quiet, oneProcess: true,
		DataDir: t.TempDir(), JWTAudience: auth.DevAudience, JWTAlgorithm: auth.DevAlgorithm,
	}
	for _, o := range opts {
		o(&cfg)
	}
	quiet = cfg.log
	ctx, cancel := context.WithCancel(context.Background())
	s := &system{t: t, cfg: cfg}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			a, err := newApp(ctx, cfg)
			if err != nil {
				return err
			}
			defer a.close()
			tc, err := a.dialTemporal(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			a.sagas = &sagas.Client{C: tc, Pool: a.pool}
			verifier, err := a.verifier(ctx) // dev's: creates the key in the data directory
			if err != nil {
				return err
			}
			if s.token, err = operatorToken(cfg, ""); err != nil {
				return err
			}
			e, err := httpapi.New(httpapi.Config{Pool: a.pool, Bus: a.bus, Store: a.store, Reader: a.reader, Log: quiet,
				Sagas: a.sagas, ConsistencyTimeout: cfg.ConsistencyTimeout, CancelWait: cfg.CancelWait, Verifier: verifier, Observe: a.metrics.HTTP, Ready: a.ready.all})
			if err != nil {
				return err
			}
			srv := httptest.NewServer(e)
			defer srv.Close()
			s.url, s.a, s.tc = srv.URL, a, tc
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return a.runWorker(ctx, tc) })
			g.Go(func() error { return a.runProjector(ctx) })
			close(ready)
			return g.Wait()
		}()
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	s.api = apitest.NewClient(t, s.url, s.token)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("system: %v", err)
		}
	})
	return s
}

// send sends a request as the system's operator unless headers set
// Authorization, and returns the status and the body.
func (s *system) send(method, path, body string, headers ...string) (int, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := apitest.Client(s.t).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}

func (s *system) call(method, path, body string, want int, headers ...string) map[string]any {
	s.t.Helper()
	status, raw := s.send(method, path, body, headers...)
	if status != want {
		s.t.Fatalf("%s %s: %d, want %d: %s", method, path, status, want, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil && len(raw) > 0 {
		s.t.Fatalf("%s %s: body is not JSON: %s", method, path, raw)
	}
	return out
}

// customer opens a wallet with balance and receives stock of one SKU.
func (s *system) customer(balance, stock int) (wallet, sku string) {
	s.t.Helper()
	ctx := context.Background()
	wallet, sku = "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	// A named wallet: its name is personal, sealed on every topic.
	name, reason := "Ada's", "test funds"
	opened, err := s.api.OpenWalletWithResponse(ctx, nil, api.OpenWallet{WalletId: wallet, CustomerId: "c-" + wallet, Currency: "EUR", Name: &name})
	s.created("open the wallet", opened, err)
	topped, err := s.api.TopUpWalletWithResponse(ctx, wallet, nil, api.TopUpWalletJSONRequestBody{Amount: int64(balance), Reason: &reason})
	s.created("top it up", topped, err)
	priced, err := s.api.SetPriceWithResponse(ctx, sku, nil, api.SetPriceJSONRequestBody{UnitPrice: 1000, Currency: "EUR"})
	s.created("price the SKU", priced, err)
	stocked, err := s.api.ReceiveStockWithResponse(ctx, sku, nil, api.ReceiveStockJSONRequestBody{Quantity: int64(stock)})
	s.created("receive stock", stocked, err)
	return wallet, sku
}

// created fails the test unless a command's answer is 201.
func (s *system) created(what string, res interface {
	StatusCode() int
	GetBody() []byte
}, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
	if res.StatusCode() != http.StatusCreated {
		s.t.Fatalf("%s: %d, want 201: %s", what, res.StatusCode(), res.GetBody())
	}
}

// fault makes a change no client's request allows (the hold vanishes beside
// the saga), as a bug or a repair by hand in the database would: it goes
// to the bus as orderflow's own.
func (s *system) fault(c commands.Command) {
	s.t.Helper()
	if _, err := s.a.bus.Dispatch(context.Background(), commands.Request{Internal: true, Actor: "fault", Command: c}); err != nil {
		s.t.Fatalf("%s: %v", c.CommandType(), err)
	}
}

func (s *system) order(wallet, sku string, qty int, postalCode string) string {
	return s.orderWithID("", wallet, sku, qty, postalCode)
}

// orderWithID places an order under the given id; "" lets the API derive it.
func (s *system) orderWithID(id, wallet, sku string, qty int, postalCode string) string {
	s.t.Helper()
	price := int64(1000)
	body := api.PlaceOrder{CustomerId: "c-" + wallet, WalletId: wallet, Currency: "EUR",
		Lines:           []api.OrderLine{{Sku: sku, Quantity: int64(qty), UnitPrice: &price}},
		ShippingAddress: api.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: postalCode, Country: "FR"}}
	if id != "" {
		body.OrderId = &id
	}
	res, err := s.api.PlaceOrderWithResponse(context.Background(), nil, body)
	s.created("place the order", res, err)
	return res.JSON201.StreamId
}

// until polls the saga's progress query until ok holds.
func (s *system) until(orderID, what string, ok func(workflows.Progress) bool) workflows.Progress {
	s.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p, err := s.a.sagas.Progress(context.Background(), orderID)
		if err == nil && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the saga of %s never %s: %+v %v", orderID, what, p, err)
		}
	}
}

// verified runs orderflow verify with the sagas and fails on any finding.
func (s *system) verified() {
	s.t.Helper()
	rep, err := (&verify.Checker{Pool: s.a.pool, Store: s.a.store, Reader: s.a.reader, Temporal: s.tc, Settle: time.Minute}).Run(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	if !rep.OK() {
		s.t.Fatalf("verify:\n%s", rep)
	}
}

// events counts the events of one type in a stream.
func (s *system) events(streamID, eventType string) int {
	s.t.Helper()
	var n int
	if err := s.a.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = $2`,
		streamID, eventType).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// outcome waits for the order's saga to finish.
func (s *system) outcome(orderID string) workflows.Progress {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		var p workflows.Progress
		err := s.tc.GetWorkflow(ctx, workflows.WorkflowID(orderID), "").Get(ctx, &p)
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond) // the starter has not started it yet
			continue
		}
		if err != nil {
			s.t.Fatalf("saga of %s: %v", orderID, err)
		}
		return p
	}
}

// latest is the global position of the newest event: a consistency token
// for "everything so far".
func (s *system) latest() int64 {
	var last int64
	if err := s.a.pool.QueryRow(context.Background(), `SELECT coalesce(max(global_position), 0) FROM events`).Scan(&last); err != nil {
		s.t.Fatal(err)
	}
	return last
}

// balances reads the wallet and the stock after the read models caught up
// with the event log.
func (s *system) balances(wallet, sku string) (available, onHand, reserved int64) {
	s.t.Helper()
	ctx, last := context.Background(), s.latest()
	w, err := s.api.GetWalletWithResponse(ctx, wallet, &api.GetWalletParams{MinPosition: &last})
	if err != nil || w.JSON200 == nil {
		s.t.Fatalf("GET the wallet: %v %s", err, w.Body)
	}
	p, err := s.api.GetProductWithResponse(ctx, sku, &api.GetProductParams{MinPosition: &last})
	if err != nil || p.JSON200 == nil {
		s.t.Fatalf("GET the product: %v %s", err, p.Body)
	}
	if w.JSON200.Held != 0 {
		s.t.Fatalf("a hold is left on %s: %+v", wallet, *w.JSON200)
	}
	return w.JSON200.Available, p.JSON200.OnHand, p.JSON200.Reserved
}

func TestOrderIsFulfilledEndToEnd(t *testing.T) {
	s := startSystem(t, 200*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	p := s.outcome(id)
	if p.Status != workflows.StatusCompleted || p.TrackingNumber == "" {
		t.Fatalf("saga %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 8000 || onHand != 3 || reserved != 0 {
		t.Fatalf("after fulfilment: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	o := s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200)
	if o["status"] != "completed" || o["saga"].(map[string]any)["status"] != workflows.StatusCompleted {
		t.Fatalf("order %v", o)
	}
	if pr := s.call("GET", "/orders/"+id+"/saga", "", 200)["progress"].(map[string]any); pr["step"] != "done" || pr["tracking_number"] == "" {
		t.Fatalf("saga progress %v", pr)
	}
	// The timeline shows which saga step issued each command.
	tl := s.call("GET", fmt.Sprintf("/orders/%s/timeline?min_position=%d", id, s.latest()), "", 200)
	steps := map[string]bool{}
	for _, e := range tl["entries"].([]any) {
		if st, ok := e.(map[string]any)["saga_step"].(string); ok {
			steps[st] = true
		}
	}
	for _, want := range []string{"reserve_stock:" + sku, "authorise_payment", "capture_payment", "complete_order"} {
		if !steps[want] {
			t.Fatalf("timeline lacks saga step %s: %v", want, steps)
		}
	}
	// Cancelling a completed order is refused.
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"too late"}`, 409)

	// A redelivered order.placed starts no second saga.
	before, err := s.tc.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID(id), "")
	if err != nil {
		t.Fatal(err)
	}
	// Every order.placed is delivered to the starter again, and the start
	// of this one is lost as if the worker crashed before recording it.
	ctx := context.Background()
	if _, err := s.a.pool.Exec(ctx, `UPDATE watermill_offsets_order_events SET offset_acked = 0, last_processed_transaction_id = '0'
		WHERE consumer_group = $1`, sagas.StarterGroup); err != nil {
		t.Fatal(err)
	}
	if _, err := s.a.pool.Exec(ctx, `UPDATE saga_starts SET started_at = NULL WHERE order_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var pending bool
		if err := s.a.pool.QueryRow(ctx, `SELECT started_at IS NULL FROM saga_starts WHERE order_id = $1`, id).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lost start was not launched again")
		}
	}
	after, err := s.tc.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID(id), "")
	if err != nil {
		t.Fatal(err)
	}
	if after.WorkflowExecutionInfo.Execution.RunId != before.WorkflowExecutionInfo.Execution.RunId {
		t.Fatal("a redelivered order.placed started a second saga")
	}
	// Every step runs in a local activity: the steps before the carrier in
	// one, the carrier's first call in another, those after it in a third
	// — a marker each (and the version's), no activity task, no timer, one
	// workflow task. Only a carrier slower than CarrierFastTimeout (a
	// loaded machine) is called again as a regular activity, with its
	// deadline's timer.
	scheduled, markers, timers, tasks := 0, 0, 0, 0
	for _, e := range writeHistory(t, s.tc, id, "completed").Events {
		switch e.EventType {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			scheduled++
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			markers++
		case enumspb.EVENT_TYPE_TIMER_STARTED:
			timers++
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			tasks++
		}
	}
	if markers != 4 || scheduled != timers || scheduled > 1 || (scheduled == 0 && tasks != 1) {
		t.Fatalf("history has %d markers, %d activity tasks, %d timers and %d workflow tasks; want 4 (the version, the stages, the carrier's first call), none and 1",
			markers, scheduled, timers, tasks)
	}
	if scheduled != 0 {
		t.Logf("the carrier's first call got no answer within %s: it was called again as a regular activity", workflows.CarrierFastTimeout)
	}
}

func TestFailuresCompensateAndRestoreBalances(t *testing.T) {
	s := startSystem(t, 200*time.Millisecond)
	cases := []struct {
		name       string
		balance    int
		stock      int
		qty        int
		zip        string
		failedStep string
	}{
		{"out of stock", 10000, 1, 2, "75001", "reserve_stock:"},
		{"insufficient funds", 1500, 5, 2, "75001", "authorise_payment"},
		{"carrier rejects", 10000, 5, 2, "00000", "dispatch_shipment"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			wallet, sku := s.customer(c.balance, c.stock)
			id := s.order(wallet, sku, c.qty, c.zip)
			p := s.outcome(id)
			if p.Status != workflows.StatusCompensated || !strings.HasPrefix(p.FailedStep, c.failedStep) {
				t.Fatalf("saga %+v", p)
			}
			avail, onHand, reserved := s.balances(wallet, sku)
			if avail != int64(c.balance) || onHand != int64(c.stock) || reserved != 0 {
				t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
			}
			o := s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200)
			if o["status"] != "cancelled" || !strings.Contains(o["reason"].(string), strings.SplitN(p.Reason, ":", 2)[0]) {
				t.Fatalf("order %v", o)
			}
			if c.zip == "00000" {
				writeHistory(t, s.tc, id, "compensated")
			}
		})
	}
	// Operators find them with the search attribute.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := s.tc.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: `OrderStatus = "COMPENSATED"`})
		if err == nil && len(res.Executions) >= len(cases) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("search by OrderStatus: %v %v", res, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestCustomerCancelsWhileTheSagaRuns(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	// The carrier takes 30 s: once the saga waits for it, the cancel asks
	// the carrier to withdraw, which it still can (202), and the saga
	// compensates without waiting for it.
	s.atCarrier(id)
	// A reason that cannot reach an event is refused at the edge and
	// changes nothing.
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"x\u0000"}`, 422)
	if r := s.call("POST", "/orders/"+id+"/cancel", `{"reason":"changed my mind"}`, 202); r["status"] != "cancelling" {
		t.Fatalf("cancel: %v", r)
	}
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated || p.Reason != "cancelled by the customer: changed my mind" || p.Carrier != "withdrawn" {
		t.Fatalf("saga %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	if n := s.events("shp-"+id, "shipment.dispatched"); n != 0 {
		t.Fatalf("a withdrawn parcel was dispatched (%d events)", n)
	}
	writeHistory(t, s.tc, id, "cancelled")
	s.verified()
}

// A client claims the key of the saga's capture before the order exists.
// The saga's keys are in a namespace clients cannot write to, so the claim
// is refused; a look-alike key is refused too (a capture for an order that
// does not exist is no one's), and the order is fulfilled and paid.
func TestAPreClaimedSagaKeyCannotGiveGoodsAway(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	id := "o-evil-" + uuid.NewString()[:8]
	capture := fmt.Sprintf(`{"type":"CaptureHold","payload":{"wallet_id":%q,"order_id":%q,"amount":2000}}`, wallet, id)
	s.call("POST", "/commands", capture, 422, "Idempotency-Key", "saga:"+workflows.WorkflowID(id)+".capture_payment")
	s.call("POST", "/commands", capture, 404, "Idempotency-Key", workflows.WorkflowID(id)+".capture_payment")
	s.orderWithID(id, wallet, sku, 2, "75001")
	p := s.outcome(id)
	if p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 8000 || onHand != 3 || reserved != 0 {
		t.Fatalf("after fulfilment: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	s.verified()
}

// A capture that fails after the carrier took the parcel (here the hold
// vanished meanwhile, by a fault: no client's request allows it) is never compensated: the saga waits for an operator
// with the holds as they are, and the write-off commits the stock, keeps
// the customer's money untouched and closes the order.
func TestACaptureFailingAfterDispatchIsWrittenOffByAnOperator(t *testing.T) {
	s := startSystem(t, 5*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	s.fault(commands.VoidHold{WalletID: wallet, OrderID: id})
	p := s.until(id, "stopped for an operator", func(p workflows.Progress) bool { return p.Status == workflows.StatusNeedsAttention })
	if p.Attention.Step != "capture_payment" || !strings.Contains(p.Attention.Error, "no_hold") || p.TrackingNumber == "" {
		t.Fatalf("attention %+v", p)
	}
	if n := s.events("shp-"+id, "shipment.failed") + s.events(sku, "inventory.reservation_released"); n != 0 {
		t.Fatalf("something was compensated after dispatch (%d events)", n)
	}
	// The customer sees where its saga is, not the operators' view (the
	// raw error, the options, who decided what).
	me := s.bearer(auth.Principal{Subject: "c-" + wallet, Role: auth.Customer, CustomerID: "c-" + wallet})
	customerView := func(want map[string]any) {
		t.Helper()
		got := s.call("GET", "/orders/"+id+"/saga", "", 200, "Authorization", me)["progress"].(map[string]any)
		for k, v := range got {
			if k != "tracking_number" && want[k] != v {
				t.Fatalf("the customer's view %v, want %v", got, want)
			}
		}
		if len(got) != len(want)+1 {
			t.Fatalf("the customer's view %v, want %v", got, want)
		}
	}
	customerView(map[string]any{"status": workflows.StatusNeedsAttention, "step": "capture_payment"})
	if ops := s.call("GET", "/orders/"+id+"/saga", "", 200)["progress"].(map[string]any); ops["attention"] == nil {
		t.Fatalf("the operators' view %v", ops)
	}
	// Operators find it: by the search attribute, in the API and in verify.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		list := s.call("GET", "/sagas?status=NEEDS_ATTENTION", "", 200)["sagas"].([]any)
		found := false
		for _, x := range list {
			found = found || x.(map[string]any)["order_id"] == id && x.(map[string]any)["failed_step"] == "capture_payment"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /sagas?status=NEEDS_ATTENTION lacks %s: %v", id, list)
		}
	}
	// The Temporal UI shows who ordered what (static summary) and why the
	// run waits (current details), without opening its history.
	ctx := context.Background()
	d, err := s.tc.DescribeWorkflowExecution(ctx, workflows.WorkflowID(id), "")
	var summary string
	if err == nil {
		err = converter.GetDefaultDataConverter().FromPayload(d.GetExecutionConfig().GetUserMetadata().GetSummary(), &summary)
	}
	if err != nil || !strings.Contains(summary, "order "+id) || !strings.Contains(summary, "2000 EUR") {
		t.Fatalf("static summary %q: %v", summary, err)
	}
	v, err := s.tc.QueryWorkflow(ctx, workflows.WorkflowID(id), "", "__temporal_workflow_metadata")
	var md sdkpb.WorkflowMetadata
	if err == nil {
		err = v.Get(&md)
	}
	if err != nil || !strings.Contains(md.GetCurrentDetails(), "Waiting for an operator** at `capture_payment`") {
		t.Fatalf("current details %q: %v", md.GetCurrentDetails(), err)
	}
	rep, err := (&verify.Checker{Pool: s.a.pool, Store: s.a.store, Reader: s.a.reader, Temporal: s.tc, Settle: time.Second}).Run(ctx)
	if err != nil || rep.OK() || !strings.Contains(rep.String(), id+" (shipped): its saga waits for an operator at capture_payment") {
		t.Fatalf("verify did not name the waiting saga: %v\n%s", err, rep)
	}
	s.call("POST", "/orders/"+id+"/saga/resolve", `{"action":"compensate","reason":"undo"}`, 409)
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"too late"}`, 409)
	r := s.call("POST", "/orders/"+id+"/saga/resolve", `{"action":"write_off","reason":"hold voided by mistake; customer contacted"}`, 200,
		"Authorization", s.bearer(auth.Principal{Subject: "ops-ada", Role: auth.Operator}))
	if r["progress"] == nil {
		t.Fatalf("resolve: %v", r)
	}
	p = s.outcome(id)
	if p.Status != workflows.StatusWrittenOff || len(p.Decisions) != 1 || !strings.Contains(p.Decisions[0], "by ops-ada") {
		t.Fatalf("saga %+v", p)
	}
	customerView(map[string]any{"status": workflows.StatusWrittenOff, "step": p.Step, "failed_step": p.FailedStep, "reason": "written_off"})
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 10000 || onHand != 3 || reserved != 0 {
		t.Fatalf("after the write-off: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	o := s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200)
	if o["status"] != "written_off" || !strings.Contains(o["reason"].(string), "hold voided by mistake") {
		t.Fatalf("order %v", o)
	}
	s.call("POST", "/orders/"+id+"/saga/resolve", `{"action":"retry","reason":"again"}`, 404)
	s.verified()
	writeHistory(t, s.tc, id, "written-off")
}

// A saga terminated from the Temporal UI while the carrier works leaves a
// hold, a reservation and a booking behind: verify names the order, and
// orderflow sagas repair withdraws the booking and compensates.
func TestATerminatedSagaIsFoundAndRepaired(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	ctx := context.Background()
	s.terminate(id)
	rep, err := (&verify.Checker{Pool: s.a.pool, Store: s.a.store, Reader: s.a.reader, Temporal: s.tc, Settle: time.Second}).Run(ctx)
	if err != nil || rep.OK() || !strings.Contains(rep.String(), "orderflow sagas repair -order "+id) {
		t.Fatalf("verify did not name the terminated saga: %v\n%s", err, rep)
	}
	if err := s.a.repair(ctx, ""); err != nil {
		t.Fatal(err)
	}
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated || !p.Repair || p.Carrier != "withdrawn" {
		t.Fatalf("repair run %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	if err := s.a.repair(ctx, id); !errors.Is(err, sagas.ErrNothingToRepair) {
		t.Fatalf("a second repair: %v", err)
	}
	s.verified()
}

// A load with every kind of order, then the invariant checker: it passes,
// and it names what is wrong once a read model is tampered with.
func TestLoadThenVerify(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	res, err := loadgen.Run(context.Background(), loadgen.Config{URL: s.url, Token: s.token, Concurrency: 4, Orders: 40, Customers: 3, Products: 2,
		Duplicates: 0.2, SagaTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	sum := res.Summary
	if sum.Accepted != 40 || sum.Duplicates != 0 || sum.AcceptedMs.N != 40 || sum.VisibleMs.N != 40 || sum.SagaMs.N != 40 {
		t.Fatalf("summary %+v errors %v", sum, res.Errors)
	}
	for kind, outcomes := range sum.Outcomes {
		for outcome := range outcomes {
			want := workflows.StatusCompensated
			if kind == loadgen.KindFulfilled {
				want = workflows.StatusCompleted
			}
			if outcome != want && !(kind == loadgen.KindCancelled && outcome == workflows.StatusCompleted) {
				t.Fatalf("%s orders ended %s: %v", kind, outcome, sum.Outcomes)
			}
		}
	}
	var html strings.Builder
	if err := res.WriteHTML(&html); err != nil || !strings.Contains(html.String(), "new uPlot(") ||
		regexp.MustCompile(`(src|href)=["']?https?:`).MatchString(html.String()) { // self-contained: no remote asset
		t.Fatalf("report: %v", err)
	}

	chk := &verify.Checker{Pool: s.a.pool, Store: s.a.store, Reader: s.a.reader, Temporal: s.tc, Settle: time.Minute}
	rep, err := chk.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Orders < 40 {
		t.Fatalf("verify after load:\n%s", rep)
	}
	var w string
	if err := s.a.pool.QueryRow(context.Background(), `UPDATE read_wallets SET balance = balance + 1
		WHERE wallet_id = (SELECT min(wallet_id) FROM read_wallets) RETURNING wallet_id`).Scan(&w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // put it back for the tests that run after
		_, _ = s.a.pool.Exec(context.Background(), `UPDATE read_wallets SET balance = balance - 1 WHERE wallet_id = $1`, w)
	})
	rep, err = (&verify.Checker{Pool: s.a.pool, Store: s.a.store, Reader: s.a.reader, Settle: time.Second}).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(rep.String(), "wallet "+w+": read model balance") {
		t.Fatalf("verify missed a tampered wallet:\n%s", rep)
	}
}

// writeHistory replays the saga's real history against the current code
// and, with ORDERFLOW_RECORD_HISTORIES=1, saves it for the replay tests of
// the workflows package, named for the saga's current version (histories
// of older versions stay, so that they keep replaying).
func writeHistory(t *testing.T, tc client.Client, orderID, name string) *historypb.History {
	t.Helper()
	ctx := context.Background()
	it := tc.GetWorkflowHistory(ctx, workflows.WorkflowID(orderID), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		hist.Events = append(hist.Events, e)
	}
	r := worker.NewWorkflowReplayer()
	workflows.RegisterWorkflow(r)
	if err := r.ReplayWorkflowHistory(nil, hist); err != nil {
		t.Fatalf("replay of %s: %v", name, err)
	}
	if os.Getenv("ORDERFLOW_RECORD_HISTORIES") == "" {
		return hist
	}
	raw, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "workflows", "testdata", "fastcarrier-"+name+".json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return hist
}

// A customer orders with its own token and the saga ships the order; a
// second order goes to the postal code the carrier refuses, and its saga
// compensates; then the customer is forgotten. Neither before nor after is
// any cleartext of its name, address or that postal code in any table of
// the database, in either saga's Temporal history (the saga carries them
// sealed, opens them only for the carrier, and the carrier's refusal quotes
// nothing of them) or in the process's log at every level; after, the API
// shows them erased, the streams still replay and every invariant holds.
func TestAForgottenCustomerLeavesNoCleartextAnywhere(t *testing.T) {
	zip := "Z" + strings.ToUpper(uuid.NewString()[:7])
	var logged lockedBuffer
	s := startSystem(t, 50*time.Millisecond, func(c *Config) {
		c.CarrierRejectZip = zip
		c.log = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	wallet, sku := s.customer(10000, 5)
	cust := "c-" + wallet
	me := s.bearer(auth.Principal{Subject: cust, Role: auth.Customer, CustomerID: cust})
	name, street := "Grace "+uuid.NewString()[:8], "Impasse "+uuid.NewString()[:8]
	place := func(postalCode string) string {
		r := s.call("POST", "/orders", fmt.Sprintf(`{"customer_id":%q,"wallet_id":%q,"currency":"EUR",
		"lines":[{"sku":%q,"quantity":1,"unit_price":1000}],
		"shipping_address":{"name":%q,"line1":%q,"city":"Paris","postal_code":%q,"country":"FR"}}`, cust, wallet, sku, name, street, postalCode),
			201, "Authorization", me)
		return r["stream_id"].(string)
	}
	id := place("75001")
	if p := s.outcome(id); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	refused := place(zip)
	if p := s.outcome(refused); p.Status != workflows.StatusCompensated || !strings.Contains(p.Reason, "postal_code_not_served") {
		t.Fatalf("saga of the refused parcel %+v", p)
	}
	// Another customer can neither see nor cancel it.
	other := s.bearer(auth.Principal{Subject: "mallory", Role: auth.Customer, CustomerID: "mallory"})
	s.call("GET", "/orders/"+id+"/saga", "", 404, "Authorization", other)
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"mine"}`, 404, "Authorization", other)

	secrets := []string{name, street, zip}
	nowhere := func(when string) {
		t.Helper()
		if where, err := pgtest.Cleartext(ctx, s.a.pool, secrets...); err != nil || where != "" {
			t.Fatalf("%s: cleartext in %s (%v)", when, where, err)
		}
		for _, order := range []string{id, refused} {
			it := s.tc.GetWorkflowHistory(ctx, workflows.WorkflowID(order), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			n := 0
			for it.HasNext() {
				e, err := it.Next()
				if err != nil {
					t.Fatal(err)
				}
				raw, err := proto.Marshal(e) // payloads as stored: their JSON bytes
				if err != nil {
					t.Fatal(err)
				}
				for _, secret := range secrets {
					if bytes.Contains(raw, []byte(secret)) {
						t.Fatalf("%s: cleartext in history event %d (%s) of %s", when, e.EventId, e.EventType, order)
					}
				}
				n++
			}
			if n < 10 {
				t.Fatalf("%s: only %d history events read", when, n)
			}
		}
		for _, secret := range secrets {
			if logged.contains(secret) {
				t.Fatalf("%s: cleartext in the process log", when)
			}
		}
	}
	nowhere("before forgetting")
	// The saga's commands are the saga's, on behalf of the customer who ordered.
	evs := s.call("GET", "/events?stream_type=order&stream_id="+id+"&type=order.confirmed", "", 200)["events"].([]any)
	if e := evs[0].(map[string]any); e["actor"] != "saga:"+workflows.WorkflowID(id) || e["on_behalf_of"] != cust || e["customer_id"] != cust {
		t.Fatalf("the saga's event: %v", e)
	}
	o := s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200, "Authorization", me)
	if a := o["shipping_address"].(map[string]any); a["name"] != name || a["line1"] != street {
		t.Fatalf("the customer's own order: %v", o)
	}
	s.call("DELETE", "/customers/"+cust+"/personal-data", "", 200, "Authorization", me)
	for _, order := range []string{id, refused} {
		o = s.call("GET", "/orders/"+order, "", 200)
		if a := o["shipping_address"].(map[string]any); a["name"] != "[erased]" || a["line1"] != "[erased]" || a["postal_code"] != "[erased]" {
			t.Fatalf("after forgetting: %v", o)
		}
	}
	nowhere("after forgetting")
	if logged.len() == 0 {
		t.Fatal("the process logged nothing: the log was not captured")
	}
	s.call("GET", "/streams/order/"+id, "", 200)
	s.verified()
}

// lockedBuffer is a process log kept for searching.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(s))
}

func (l *lockedBuffer) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// An operator suspends a wallet: the saga of an order on it is refused
// its hold and compensates with wallet_suspended.
func TestASuspendedWalletStopsTheSagaWhichCompensates(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	s.call("POST", "/commands", fmt.Sprintf(`{"type":"SuspendWallet","payload":{"wallet_id":%q,"reason":"chargeback under review"}}`, wallet), 201)
	id := s.order(wallet, sku, 1, "75001")
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated || p.FailedStep != "authorise_payment" || !strings.Contains(p.Reason, "suspended") {
		t.Fatalf("saga %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("after compensation: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	w := s.call("GET", fmt.Sprintf("/wallets/%s?min_position=%d", wallet, s.latest()), "", 200)
	if w["status"] != "suspended" || w["suspended_reason"] != "chargeback under review" {
		t.Fatalf("wallet %v", w)
	}
	s.verified()
}

// After an order, the metrics endpoint shows every family an operator's
// dashboard reads, and the real Prometheus tool accepts the exposition.
func TestMetricsCoverTheSystemAndPassPromtool(t *testing.T) {
	s := startSystem(t, 20*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 1, "75001")
	if p := s.outcome(id); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200)
	srv := httptest.NewServer(s.a.metrics.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`orderflow_http_requests_total{method="POST",route="/orders",status="201"}`,
		`orderflow_http_request_duration_seconds_bucket{method="GET",route="/orders/:id"`,
		`orderflow_commands_total{outcome="accepted",type="PlaceOrder"}`,
		`orderflow_commands_total{outcome="accepted",type="CaptureHold"}`, // the saga's, through the same bus
		`orderflow_command_duration_seconds_bucket{type="PlaceOrder"`,
		`orderflow_events_appended_total{stream_type="order"}`,
		`orderflow_outbox_backlog_messages{consumer_group="orders_projection",topic="order_events"}`,
		`orderflow_projection_lag_events{projection="wallets_projection"}`,
		`orderflow_projection_poison_messages{projection="timeline_projection"}`,
		`orderflow_sagas_started`, `orderflow_sagas_finished`, `outcome="COMPLETED"`, `orderflow_saga_duration`,
		`orderflow_sagas_needing_attention`,
		`temporal_workflow_completed`, `temporal_local_activity_execution_latency`, // the SDK's own worker metrics (the happy path runs no regular activity)
		`orderflow_db_pool_connections{pool="main"}`,
		`go_goroutines`, `process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The group committer reports what it committed (not only a registered histogram).
	if i := strings.Index(text, "\norderflow_command_group_size_count "); i < 0 || strings.HasPrefix(text[i+len("\norderflow_command_group_size_count "):], "0\n") {
		t.Error("metrics lack the committed groups (orderflow_command_group_size_count)")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (Debian's prometheus package); CI must check the exposition")
		}
		t.Skip("promtool not installed")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// The committed dashboard reads metrics that exist, with PromQL that
	// parses (promtool checks it as recording rules), and the compose
	// file's Prometheus configuration is valid.
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err = os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "orderflow.json"))
	if err != nil || json.Unmarshal(raw, &dash) != nil || len(dash.Panels) < 8 {
		t.Fatalf("dashboard: %v", err)
	}
	rules := "groups:\n  - name: dashboard\n    rules:\n"
	for i, p := range dash.Panels {
		for j, tg := range p.Targets {
			for _, name := range regexp.MustCompile(`orderflow_[a-z_]+`).FindAllString(tg.Expr, -1) {
				if !strings.Contains(text, "\n"+name) {
					t.Errorf("panel %q reads %s, which is not exposed", p.Title, name)
				}
			}
			rules += fmt.Sprintf("      - record: panel_%d_%d\n        expr: %q\n", i, j, tg.Expr)
		}
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", file}, {"check", "config", filepath.Join("..", "..", "deploy", "prometheus.yml")}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// One order is one trace: the client's traceparent is continued by the
// HTTP span, the command and its events, the projector's handling, the
// saga's start, run and every step, and the commands those steps send.
func TestOneTraceFromTheRequestThroughTheSaga(t *testing.T) {
	s := startSystem(t, 20*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	traceID, parentID := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := s.call("POST", "/orders", fmt.Sprintf(`{"customer_id":"c-%s","wallet_id":%q,"currency":"EUR",
		"lines":[{"sku":%q,"quantity":1,"unit_price":1000}],
		"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}`, wallet, wallet, sku),
		201, "traceparent", "00-"+traceID+"-"+parentID+"-01")
	id := r["stream_id"].(string)
	if p := s.outcome(id); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		for _, sp := range spans.Ended() {
			if sp.SpanContext().TraceID().String() == traceID {
				if _, seen := byName[sp.Name()]; !seen {
					byName[sp.Name()] = sp
				}
			}
		}
		if _, ok := byName["command CompleteOrder"]; ok || time.Now().After(deadline) {
			break
		}
	}
	parent := func(child, parent string) {
		t.Helper()
		c, ok1 := byName[child]
		p, ok2 := byName[parent]
		if !ok1 || !ok2 {
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			sort.Strings(names)
			t.Fatalf("the trace lacks %q or %q; it has %q", child, parent, names)
		}
		if c.Parent().SpanID() != p.SpanContext().SpanID() {
			t.Fatalf("%q is not a child of %q", child, parent)
		}
	}
	if http := byName["POST /orders"]; http == nil || http.Parent().SpanID().String() != parentID {
		t.Fatalf("the HTTP span does not continue the client's traceparent: %v", byName)
	}
	parent("command PlaceOrder", "POST /orders")
	parent("orders_projection order_events", "command PlaceOrder")
	parent(sagas.StarterGroup+" order_events", "command PlaceOrder")
	parent("StartWorkflow:"+workflows.Name, sagas.StarterGroup+" order_events")
	parent("RunWorkflow:"+workflows.Name, "StartWorkflow:"+workflows.Name)
	parent("command ReserveStock", "RunActivity:RunForwardStage")
	parent("command CaptureHold", "RunActivity:RunFinishStage")
	parent("command CompleteOrder", "RunActivity:RunFinishStage")
}

// testLog writes a system's log lines into the test's log, until the test
// has ended (a goroutine still stopping must not log into a finished test).
type testLog struct {
	t    *testing.T
	mu   *sync.Mutex
	done *bool
}

func newTestLog(t *testing.T) testLog {
	w := testLog{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() { w.mu.Lock(); *w.done = true; w.mu.Unlock() }) // registered first: runs last
	return w
}

func (w testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
