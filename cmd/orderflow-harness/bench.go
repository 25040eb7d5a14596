package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	orderflowapi "github.com/orderflow/orderflow/client"
	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/workflows"
)

// benchFlags are the flags of `orderflow-harness bench`.
type benchFlags struct {
	url, token  string
	orders      int
	concurrency int
	serial      int
	cpuProfile  string
	metricsURL  string
	profileURL  string
	profileOut  string
}

func (b *benchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.url, "url", "http://127.0.0.1:8080", "the running orderflow's API")
	fs.StringVar(&b.token, "token", os.Getenv("ORDERFLOW_TOKEN"), "an operator's bearer token (ORDERFLOW_TOKEN); default: one signed with dev's key in -data-dir")
	fs.IntVar(&b.orders, "orders", 300, "sagas in each throughput run")
	fs.IntVar(&b.concurrency, "concurrency", 32, "sagas in flight at once in the throughput runs")
	fs.IntVar(&b.serial, "serial", 20, "sagas one after the other, for the end-to-end latency")
	fs.StringVar(&b.cpuProfile, "cpuprofile", "", "write this process's CPU profile (the bound's worker) here")
	fs.StringVar(&b.profileURL, "profile-url", "", "the measured orderflow's pprof address (its -pprof-addr, e.g. http://127.0.0.1:6060): a CPU profile of it is taken over the saga run's first 10 s")
	fs.StringVar(&b.profileOut, "profile-out", "saga.prof", "where -profile-url's profile is written")
	fs.StringVar(&b.metricsURL, "metrics-url", "http://127.0.0.1:9464/metrics", "the measured orderflow's /metrics, for its CPU time per saga; empty = not read")
}

// The bound: the saga's shape without its work — as many no-op local
// activities as a one-line order's saga runs (8) and one regular activity
// that waits like the carrier — on the same Temporal server with the same
// worker settings, in one run beside the real saga.
const (
	boundTaskQueue = "orderflow-bench-bound"
	boundWorkflow  = "SagaBound"
	boundLocal     = 8
)

func boundNoop(context.Context) error { return nil }

func boundCarrier(ctx context.Context, latency time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(latency):
		return nil
	}
}

func sagaBound(ctx workflow.Context, carrierLatency time.Duration) error {
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{ScheduleToCloseTimeout: workflows.StepDeadline,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond}})
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: workflows.CarrierTimeout})
	for i := range boundLocal {
		if i == 4 { // the saga dispatches after reserve, authorise, confirm, schedule
			if err := workflow.ExecuteActivity(ctx, boundCarrier, carrierLatency).Get(ctx, nil); err != nil {
				return err
			}
		}
		if err := workflow.ExecuteLocalActivity(ctx, boundNoop).Get(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// runBench measures sagas per second of the bound and of the real saga
// (orders over HTTP to a running orderflow, completion from Temporal), and
// the serial end-to-end latency of the saga minus the carrier's.
func runBench(ctx context.Context, cfg config, b benchFlags) error {
	if cfg.TemporalAddress == "" {
		cfg.TemporalAddress = cfg.TemporalDevAddr
	}
	tc, err := dialTemporal(ctx, cfg)
	if err != nil {
		return err
	}
	defer tc.Close()
	w := worker.New(tc, boundTaskQueue, workflows.WorkerOptions())
	w.RegisterWorkflowWithOptions(sagaBound, workflow.RegisterOptions{Name: boundWorkflow})
	w.RegisterActivity(boundNoop)
	w.RegisterActivity(boundCarrier)
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Stop()
	if b.cpuProfile != "" {
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	token, err := operatorToken(cfg, b.token)
	if err != nil {
		return err
	}
	h := &benchHTTP{api: loadgen.NewClient(b.url, token, http.DefaultClient), tc: tc}
	runID := uuid.NewString()[:8]
	// One wallet and one SKU per concurrent client: the run measures the
	// saga, not contention on one aggregate.
	for i := range b.concurrency {
		if err := h.setUp(ctx, fmt.Sprintf("bench-%s-%d", runID, i)); err != nil {
			return err
		}
	}
	bound := func(ctx context.Context, _ int, _ string) (time.Duration, error) {
		t0 := time.Now()
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "bench-bound-" + uuid.NewString(), TaskQueue: boundTaskQueue,
			EnableEagerStart: true}, boundWorkflow, cfg.CarrierLatency)
		if err == nil {
			err = run.Get(ctx, nil)
		}
		return time.Since(t0), err
	}
	saga := func(ctx context.Context, client int, key string) (time.Duration, error) {
		return h.order(ctx, fmt.Sprintf("bench-%s-%d", runID, client), key)
	}
	fmt.Printf("carrier latency %s, %d sagas per run, %d in flight\n", cfg.CarrierLatency, b.orders, b.concurrency)
	// Warm up: the workers' pollers and caches, the connection pools.
	if _, _, err := benchRun(ctx, b.concurrency, b.concurrency, runID+"-wb", bound); err != nil {
		return fmt.Errorf("bound: %w", err)
	}
	if _, _, err := benchRun(ctx, b.concurrency, b.concurrency, runID+"-ws", saga); err != nil {
		return fmt.Errorf("saga: %w", err)
	}
	meter := newCPUMeter(ctx, b.metricsURL, cfg.DatabaseURL)
	defer meter.close(ctx)
	cpu0 := meter.sample(ctx)
	boundRate, _, err := benchRun(ctx, b.orders, b.concurrency, runID+"-b", bound)
	if err != nil {
		return fmt.Errorf("bound: %w", err)
	}
	cpu1 := meter.sample(ctx)
	profiled := make(chan error, 1)
	if b.profileURL != "" {
		go func() { profiled <- fetchProfile(ctx, b.profileURL, b.profileOut) }()
	} else {
		profiled <- nil
	}
	sagaRate, _, err := benchRun(ctx, b.orders, b.concurrency, runID+"-s", saga)
	if err != nil {
		return fmt.Errorf("saga: %w", err)
	}
	cpu2 := meter.sample(ctx)
	_, serial, err := benchRun(ctx, b.serial, 1, runID+"-l", saga)
	if err != nil {
		return fmt.Errorf("serial saga: %w", err)
	}
	slices.Sort(serial)
	pct := func(p float64) time.Duration {
		return serial[min(len(serial)-1, int(p*float64(len(serial))))] - cfg.CarrierLatency
	}
	fmt.Printf("bound (%d no-op local activities + 1 regular waiting %s): %7.1f workflows/s\n", boundLocal, cfg.CarrierLatency, boundRate)
	fmt.Printf("saga through HTTP (one-line orders):                        %7.1f sagas/s\n", sagaRate)
	fmt.Printf("ratio saga / bound:                                          %7.2f\n", sagaRate/boundRate)
	fmt.Printf("placements refused (429/503 with Retry-After) and sent again when told: %d\n", h.refused.Load())
	fmt.Printf("serial saga end to end minus carrier latency: p50 %s  p90 %s  max %s\n",
		pct(0.5).Round(time.Millisecond), pct(0.9).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	if err := <-profiled; err != nil {
		fmt.Println("profile:", err)
	} else if b.profileURL != "" {
		fmt.Printf("CPU profile of the measured process over the saga run's first 10 s: %s\n", b.profileOut)
	}
	fmt.Println("CPU per workflow, bound:")
	printCPU(cpu0, cpu1, b.orders)
	fmt.Println("CPU per saga:")
	printCPU(cpu1, cpu2, b.orders)
	return nil
}

// benchRun runs n of do, concurrency at a time, and returns the rate and
// every duration.
func benchRun(ctx context.Context, n, concurrency int, runID string, do func(ctx context.Context, client int, key string) (time.Duration, error)) (float64, []time.Duration, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var took []time.Duration
	var first error
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				d, err := do(ctx, c, fmt.Sprintf("%s-%d", runID, i))
				mu.Lock()
				took = append(took, d)
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(t0).Seconds(), took, first
}

// benchHTTP places orders on a running orderflow with its typed client.
type benchHTTP struct {
	api *loadgen.Client
	tc  client.Client
	// refused counts the placements the service pushed back (429 or 503
	// with Retry-After): each is sent again, with its key, when it says.
	refused atomic.Int64
}

func (h *benchHTTP) setUp(ctx context.Context, id string) error {
	if err := h.api.Wallet(ctx, id, id, 1_000_000_000, "bench: funds for the measured orders"); err != nil {
		return err
	}
	return h.api.Product(ctx, id, 100, 1_000_000)
}

// order places a one-line order and waits for its saga to complete.
func (h *benchHTTP) order(ctx context.Context, id, key string) (time.Duration, error) {
	t0 := time.Now()
	price := int64(100)
	body := orderflowapi.PlaceOrder{CustomerId: id, WalletId: id, Currency: "EUR",
		Lines:           []orderflowapi.OrderLine{{Sku: id, Quantity: 1, UnitPrice: &price}},
		ShippingAddress: orderflowapi.Address{Name: "Bench", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}}
	// Admission control may push back (503 overloaded while the sagas'
	// backlog is full): the order is sent again under its key when the
	// answer says, and its time counts from the first attempt.
	var placed *orderflowapi.PlaceOrderResponse
	for {
		res, err := h.api.API.PlaceOrderWithResponse(ctx, &orderflowapi.PlaceOrderParams{IdempotencyKey: &key}, body)
		if err != nil {
			return 0, err
		}
		ra := res.HTTPResponse.Header.Get("Retry-After")
		if ra == "" || (res.StatusCode() != http.StatusTooManyRequests && res.StatusCode() != http.StatusServiceUnavailable) {
			placed = res
			break
		}
		h.refused.Add(1)
		secs, _ := strconv.Atoi(ra)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(max(secs, 1)) * time.Second):
		}
	}
	if placed.JSON201 == nil {
		return 0, fmt.Errorf("POST /orders: %d: %s", placed.StatusCode(), placed.Body)
	}
	orderID := placed.JSON201.StreamId
	for {
		var p workflows.Progress
		err := h.tc.GetWorkflow(ctx, workflows.WorkflowID(orderID), "").Get(ctx, &p)
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond) // not started yet
			continue
		}
		if err == nil && p.Status != workflows.StatusCompleted {
			err = fmt.Errorf("saga of %s ended %s: %s", orderID, p.Status, p.Reason)
		}
		return time.Since(t0), err
	}
}
