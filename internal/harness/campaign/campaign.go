// Package campaign runs, from a seed, a hostile mix of customers and
// operators against a running orderflow, through every door (both cancel
// routes, POST /commands, keyed and keyless retries, colliding keys, ids a
// customer may not name, personal data forgotten mid-saga, holds voided
// under the saga's feet, sagas terminated), while faults are injected
// (processes killed -9 and restarted, PostgreSQL restarted, an API's
// database connections cut). It then drives every saga to an end as an
// operator would and hands over to verify: the invariants must hold.
//
// The seed fixes each actor's choices (which action, which door, which
// delay, which fault, which resolution); the interleaving of concurrent
// actors with the service is the machine's.
package campaign

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/internal/verify"
)

// Config is one campaign.
type Config struct {
	APIs     []string // the APIs' base URLs; each request goes to one of them
	Seed     uint64
	Duration time.Duration // of customer actions; the end phase comes after
	Actors   int           // customers acting at once
	// Issue signs a bearer token for a principal (customers and operators).
	Issue func(auth.Principal) (string, error)
	// Temporal and Pool are the operator's tools beside HTTP: terminating a
	// saga, and starting repair runs (as `orderflow sagas repair` does).
	Temporal client.Client
	Pool     *pgxpool.Pool
	// RejectPostalCode is the postal code the carrier refuses.
	RejectPostalCode string
	// SlowPostalCode, when set, is a postal code the carrier takes slower
	// than the saga's CarrierFastTimeout (the others faster): orders ship
	// to either, by seed, so that the saga's fast first call and its
	// regular activity both run under faults.
	SlowPostalCode string
	// Faults are the kinds to inject, FaultEvery the mean pause between
	// two. "cut-connection" is done here (Proxies: each process's pool
	// goes through one, and a cut picks one by seed); any other kind is
	// FaultExec with the kind as its last argument (the script kills and
	// restarts the process, and returns once it is ready again).
	Faults     []string
	FaultEvery time.Duration
	FaultExec  []string
	Proxies    []*Proxy
	// Settle bounds the end phase: every saga driven to an end.
	Settle time.Duration
	// Verify checks the invariants once every saga has ended.
	Verify func(context.Context) (*verify.Report, error)
	// Actions, when set, narrows the mix to these actions (to reproduce a
	// finding with fewer moving parts).
	Actions []string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// customer is a customer of the campaign's: its wallet and token.
type customer struct {
	id, wallet, poorWallet string
	c                      *loadgen.Client
}

type placed struct {
	id       string
	customer *customer
	amount   int64
	zip      string
}

type run struct {
	cfg    Config
	runID  string
	ops    *loadgen.Client
	skus   []string
	scarce string

	mu        sync.Mutex
	rep       *Report
	customers []*customer
	orders    []placed
	// handled are orders whose saga an action of its own resolves: the
	// operator loop leaves them alone until the action is done.
	handled map[string]bool
	retries map[string]int
	cancels []cancelAnswer
	keyless []keylessRetry
}

// Run runs the campaign and returns its report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Actors == 0 {
		cfg.Actors = 6
	}
	if cfg.Settle == 0 {
		cfg.Settle = 5 * time.Minute
	}
	if cfg.FaultEvery == 0 {
		cfg.FaultEvery = 15 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	for _, a := range cfg.Actions {
		if !slices.Contains(Actions(), a) {
			return nil, fmt.Errorf("no action %q; there are %s", a, strings.Join(Actions(), ", "))
		}
	}
	start := time.Now()
	r := &run{cfg: cfg, runID: fmt.Sprintf("s%d-%s", cfg.Seed, strconv.FormatInt(start.UnixMilli()%1e8, 36)),
		rep: &Report{Seed: cfg.Seed, Duration: cfg.Duration, Actions: map[string]int{}, NotSent: map[string]int{}, Answers: map[string]map[string]int{},
			Faults: map[string]int{}, Cuts: map[string]int{}, Operator: map[string]int{}, Counters: map[string]int{}, Carrier: map[string]int{}},
		handled: map[string]bool{}, retries: map[string]int{}}
	tok, err := cfg.Issue(auth.Principal{Subject: "ops-campaign", Role: auth.Operator})
	if err != nil {
		return nil, err
	}
	r.ops = loadgen.NewClient(cfg.APIs[0], tok, &http.Client{Timeout: 30 * time.Second, Transport: tracing{&http.Transport{MaxIdleConnsPerHost: 64}}})
	if err := r.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	if err := r.setUp(ctx); err != nil {
		return nil, fmt.Errorf("set-up: %w", err)
	}
	cfg.Logf("campaign %s: %d actors for %s, faults %v every ~%s", r.runID, cfg.Actors, cfg.Duration, cfg.Faults, cfg.FaultEvery)

	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range cfg.Actors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.actor(loadCtx, ctx, rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), i)
		}()
	}
	var faults sync.WaitGroup
	if len(cfg.Faults) > 0 {
		faults.Add(1)
		go func() {
			defer faults.Done()
			r.faults(loadCtx, rand.New(rand.NewPCG(cfg.Seed, 1000)))
		}()
	}
	opsCtx, stopOps := context.WithCancel(ctx)
	var opsDone sync.WaitGroup
	opsDone.Add(1)
	go func() {
		defer opsDone.Done()
		rnd := rand.New(rand.NewPCG(cfg.Seed, 2000))
		for opsCtx.Err() == nil {
			r.operatorRound(opsCtx, rnd, false)
			sleep(opsCtx, 3*time.Second)
		}
	}()
	faults.Wait()
	wg.Wait()
	stopOps()
	opsDone.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	cfg.Logf("load over; every saga to an end (at most %s)", cfg.Settle)
	if err := r.waitReady(ctx, 3*time.Minute); err != nil {
		return nil, err
	}
	r.endPhase(ctx, rand.New(rand.NewPCG(cfg.Seed, 3000)))
	if cfg.Verify != nil {
		cfg.Logf("verify")
		rep, err := cfg.Verify(ctx)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		r.rep.Verify = rep
	}
	cfg.Logf("the campaign's own checks")
	if err := r.ownChecks(ctx); err != nil {
		return nil, fmt.Errorf("campaign checks: %w", err)
	}
	r.rep.Took = time.Since(start)
	return r.rep, nil
}

func (r *run) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, api := range r.cfg.APIs {
		for {
			res, err := r.ops.At(api).API.ReadyWithResponse(ctx)
			st := 0
			if err == nil {
				st = res.StatusCode()
			}
			if st == http.StatusOK {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s not ready: %d %v", api, st, err)
			}
			sleep(ctx, 500*time.Millisecond)
		}
	}
	return nil
}

// setUp opens the customers' wallets and stocks the products.
func (r *run) setUp(ctx context.Context) error {
	for i := range r.cfg.Actors * 3 {
		cu, err := r.newCustomer(ctx, fmt.Sprintf("c-%s-%d", r.runID, i))
		if err != nil {
			return err
		}
		r.customers = append(r.customers, cu)
	}
	r.scarce = "sku-" + r.runID + "-scarce"
	for i := range 5 {
		sku := fmt.Sprintf("sku-%s-%d", r.runID, i)
		stock := 1_000_000_000
		if i == 4 {
			sku, stock = r.scarce, 3
		}
		// The catalogue prices every order: each SKU is priced first.
		if err := r.setPrice(ctx, sku, int64(100+i*1237)); err != nil {
			return err
		}
		if err := r.must(ctx, r.ops, "/products/"+sku+"/stock", map[string]any{"quantity": stock}); err != nil {
			return err
		}
		if sku != r.scarce {
			r.skus = append(r.skus, sku)
		}
	}
	return nil
}

// setPrice is an operator's PUT of a SKU's price (retried through faults).
func (r *run) setPrice(ctx context.Context, sku string, price int64) error {
	for attempt := 0; ; attempt++ {
		st, out, err := r.ops.Send(ctx, http.MethodPut, "/products/"+sku+"/price", "", map[string]any{"unit_price": price, "currency": "EUR"})
		if err == nil && st/100 == 2 {
			return nil
		}
		if attempt == 20 || ctx.Err() != nil {
			return fmt.Errorf("PUT /products/%s/price: %d %v %v", sku, st, out, err)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// newCustomer opens a rich and a poor wallet for a new customer.
func (r *run) newCustomer(ctx context.Context, id string) (*customer, error) {
	tok, err := r.cfg.Issue(auth.Principal{Subject: id, CustomerID: id, Role: auth.Customer})
	if err != nil {
		return nil, err
	}
	cu := &customer{id: id, wallet: "w-" + id, poorWallet: "w-" + id + "-poor", c: r.ops.As(tok)}
	for _, step := range []struct {
		path string
		body map[string]any
	}{
		{"/wallets", map[string]any{"wallet_id": cu.wallet, "customer_id": id, "currency": "EUR"}},
		{"/wallets/" + cu.wallet + "/top-ups", map[string]any{"amount": 1_000_000_000, "reason": "campaign: funds for the customer's orders"}},
		{"/wallets", map[string]any{"wallet_id": cu.poorWallet, "customer_id": id, "currency": "EUR"}},
	} {
		if err := r.must(ctx, r.ops, step.path, step.body); err != nil {
			return nil, err
		}
	}
	return cu, nil
}

// must sends a set-up step until it succeeds (faults may be under way).
func (r *run) must(ctx context.Context, c *loadgen.Client, path string, body any) error {
	key := "setup-" + r.runID + "-" + strings.NewReplacer("/", "-").Replace(strings.Trim(path, "/"))
	if b, ok := body.(map[string]any); ok && b["wallet_id"] != nil && strings.HasSuffix(path, "/wallets") {
		key += "-" + fmt.Sprint(b["wallet_id"])
	}
	for attempt := 0; ; attempt++ {
		st, out, err := c.Post(ctx, path, key, body)
		if err == nil && (st == http.StatusCreated || st == http.StatusOK) {
			return nil
		}
		if attempt == 30 || ctx.Err() != nil || (err == nil && st < 500) {
			return fmt.Errorf("POST %s: %d %v %v", path, st, out["detail"], err)
		}
		sleep(ctx, time.Second)
	}
}

func (r *run) actor(ctx, outer context.Context, rnd *rand.Rand, n int) {
	for step := 0; ctx.Err() == nil; step++ {
		name := pick(rnd, r.cfg.Actions)
		t := &tracker{}
		a := &act{r: r, name: name, rnd: rnd, ctx: context.WithValue(outer, trackerKey{}, t), key: fmt.Sprintf("k-%s-%d-%d", r.runID, n, step)}
		a.cu = r.customers[rnd.IntN(len(r.customers))]
		a.do()
		if t.sent.Load() {
			r.count(r.rep.Actions, name)
		} else {
			r.count(r.rep.NotSent, name)
		}
		sleep(ctx, time.Duration(rnd.IntN(300))*time.Millisecond)
	}
}

// answer records a door's answer to an action.
func (r *run) answer(door string, st int, out map[string]any) {
	ans := answerName(st, out)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rep.Answers[door] == nil {
		r.rep.Answers[door] = map[string]int{}
	}
	r.rep.Answers[door][ans]++
}

// answerName names an answer in the report: its status and code.
func answerName(st int, out map[string]any) string {
	ans := strconv.Itoa(st)
	if st == 0 {
		ans = "no_answer"
	}
	if code, _ := out["code"].(string); code != "" {
		ans += " " + code
	}
	return ans
}

func (r *run) anomaly(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Anomalies = append(r.rep.Anomalies, fmt.Sprintf(format, args...))
}

func (r *run) count(m map[string]int, k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m[k]++
}

// faulty: an answer a fault explains (none, or the service unavailable).
func faulty(st int, err error) bool {
	return err != nil || st == 0 || st == http.StatusBadGateway || st == http.StatusServiceUnavailable || st == http.StatusGatewayTimeout
}

// faults injects a fault of a random kind every FaultEvery or so.
func (r *run) faults(ctx context.Context, rnd *rand.Rand) {
	for {
		pause := r.cfg.FaultEvery/2 + time.Duration(rnd.Int64N(int64(r.cfg.FaultEvery)))
		if !sleep(ctx, pause) {
			return
		}
		kind := r.cfg.Faults[rnd.IntN(len(r.cfg.Faults))]
		t0 := time.Now()
		if kind == "cut-connection" {
			p := r.cfg.Proxies[rnd.IntN(len(r.cfg.Proxies))]
			n := p.Cut(time.Duration(rnd.IntN(3000)) * time.Millisecond)
			r.cfg.Logf("fault: cut %d connections between %s and PostgreSQL", n, p.Name)
			r.mu.Lock()
			if n > 0 {
				r.rep.Faults[kind]++
				r.rep.Cuts[p.Name] += n
			} else {
				r.rep.CutNothing++
			}
			r.mu.Unlock()
			continue
		}
		// The restart must finish even when the load is over.
		fctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		out, err := exec.CommandContext(fctx, r.cfg.FaultExec[0], append(slices.Clone(r.cfg.FaultExec[1:]), kind)...).CombinedOutput()
		cancel()
		r.cfg.Logf("fault: %s (%s) %s", kind, time.Since(t0).Round(100*time.Millisecond), strings.TrimSpace(string(out)))
		r.mu.Lock()
		if err != nil {
			r.rep.FaultErrors = append(r.rep.FaultErrors, fmt.Sprintf("%s: %v: %s", kind, err, strings.TrimSpace(string(out))))
		} else {
			r.rep.Faults[kind]++
		}
		r.mu.Unlock()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
