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
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
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

// Report is what the campaign did and found.
type Report struct {
	Seed     uint64
	Duration time.Duration
	Took     time.Duration
	// Actions counts the actions sent, by kind (an action counts once a
	// request of its was written to an API); NotSent those drawn that sent
	// nothing (no order of the customer's to act on, every API down).
	// Answers are the answers by action and door ("cancel_during POST
	// /commands" → "202": 4).
	Actions map[string]int
	NotSent map[string]int
	Answers map[string]map[string]int
	// Faults counts the faults injected: a cut only when it cut a
	// connection, a script's fault once it ran (FaultErrors otherwise).
	Faults map[string]int
	// Cuts counts the connections cut by process; CutNothing the cuts
	// that found no connection open.
	Cuts       map[string]int
	CutNothing int
	// FaultErrors are faults whose script failed.
	FaultErrors []string
	// Operator counts the operators' decisions in the end phase and during
	// the run (resolutions by action, repairs, terminations).
	Operator map[string]int
	// Anomalies are answers a door must never give (a customer naming an
	// order id accepted, a keyed retry that made a second order, another
	// customer's order cancelled...). Answers during a fault (no answer,
	// 502/503/504) are not anomalies.
	Anomalies []string
	// Unended are sagas still not ended when the end phase gave up.
	Unended []string
	// Checks are the campaign's own invariants (what each door promised
	// against the end, keyless retries against the command log); Counters
	// what they looked at; Carrier the orders by the carrier's path and
	// their end.
	Checks   []verify.Check
	Counters map[string]int
	Carrier  map[string]int
	Verify   *verify.Report
}

// Violations is the number of invariant violations verify found.
func (r *Report) Violations() int {
	n := 0
	for _, c := range r.Checks {
		n += len(c.Failures)
	}
	if r.Verify == nil {
		return n
	}
	for _, c := range r.Verify.Checks {
		n += len(c.Failures)
	}
	return n
}

// OK: no violation, no anomaly, every saga ended.
// A run that placed or cancelled nothing (every order refused, an API
// never up) tested nothing, and is no pass.
func (r *Report) OK() bool {
	return r.Verify != nil && r.Verify.OK() && r.Violations() == 0 && len(r.Anomalies) == 0 && len(r.Unended) == 0 && len(r.FaultErrors) == 0 &&
		r.succeeded("place") > 0 && r.succeeded("cancel") > 0
}

// succeeded counts the 2xx answers of the actions whose kind starts with
// prefix.
func (r *Report) succeeded(prefix string) int {
	n := 0
	for door, answers := range r.Answers {
		if !strings.HasPrefix(door, prefix) {
			continue
		}
		for ans, count := range answers {
			if strings.HasPrefix(ans, "2") {
				n += count
			}
		}
	}
	return n
}

func (r *Report) String() string {
	var b strings.Builder
	total := 0
	for _, n := range r.Actions {
		total += n
	}
	fmt.Fprintf(&b, "campaign seed %d: %d actions in %s of load (%s in all)\n", r.Seed, total, r.Duration, r.Took.Round(time.Second))
	fmt.Fprintln(&b, "actions by kind (answers by door):")
	for _, k := range sortedKeys(r.Actions) {
		fmt.Fprintf(&b, "  %-28s %5d\n", k, r.Actions[k])
		for _, door := range sortedKeys(r.Answers) {
			if door == k || strings.HasPrefix(door, k+" ") {
				fmt.Fprintf(&b, "      %-40s %s\n", door, counts(r.Answers[door]))
			}
		}
	}
	nf := 0
	for _, n := range r.Faults {
		nf += n
	}
	if len(r.NotSent) > 0 {
		fmt.Fprintf(&b, "actions drawn that sent nothing: %s\n", counts(r.NotSent))
	}
	fmt.Fprintf(&b, "faults injected: %d %s\n", nf, counts(r.Faults))
	if len(r.Cuts) > 0 || r.CutNothing > 0 {
		fmt.Fprintf(&b, "  connections cut, by process: %s; cuts that found none open: %d\n", counts(r.Cuts), r.CutNothing)
	}
	for _, e := range r.FaultErrors {
		fmt.Fprintf(&b, "  fault failed: %s\n", e)
	}
	fmt.Fprintf(&b, "operator decisions: %s\n", counts(r.Operator))
	fmt.Fprintf(&b, "anomalies (answers no door may give): %d\n", len(r.Anomalies))
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  %s\n", a)
	}
	if len(r.Unended) > 0 {
		fmt.Fprintf(&b, "sagas not ended: %d: %s\n", len(r.Unended), strings.Join(r.Unended, ", "))
	}
	if len(r.Carrier) > 0 {
		fmt.Fprintf(&b, "orders by the carrier's path: %s\n", counts(r.Carrier))
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(&b, "campaign checks: %s\n", counts(r.Counters))
		for _, c := range r.Checks {
			if len(c.Failures) == 0 {
				fmt.Fprintf(&b, "  ok    %s\n", c.Name)
				continue
			}
			fmt.Fprintf(&b, "  FAIL  %s (%d)\n", c.Name, len(c.Failures))
			for _, f := range c.Failures {
				fmt.Fprintf(&b, "        %s\n", f)
			}
		}
	}
	if r.Verify != nil {
		fmt.Fprint(&b, r.Verify.String())
	}
	fmt.Fprintf(&b, "invariant violations: %d\n", r.Violations())
	return b.String()
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The actions, with their weights in the mix.
var actions = []struct {
	name   string
	weight int
}{
	{"place", 14},                  // keyed, maybe retried with the same key after no answer
	{"place_keyless", 4},           // no key; retried without one after no answer
	{"place_duplicate_key", 6},     // the same key twice at once, one to each API
	{"place_reused_key", 2},        // a key used again with another body
	{"place_colliding_key", 3},     // two customers, the same key
	{"place_customer_named_id", 2}, // a customer names the order id
	{"place_operator_long_id", 2},  // an operator names a 120- and a 121-character id
	{"place_reserved_key", 1},      // a key in the saga's namespace
	{"place_foreign_wallet", 1},    // a customer pays with another's wallet
	{"place_out_of_stock", 3},
	{"place_insufficient_funds", 3},
	{"place_carrier_rejected", 3},
	{"cancel_before_carrier", 5}, // right after placement (the saga may be starting)
	{"cancel_during_carrier", 6}, // while the carrier works
	{"cancel_after_carrier", 3},  // once the carrier took it
	{"cancel_twice", 2},          // both doors at once
	{"cancel_foreign", 2},        // another customer's order
	{"forget_mid_saga", 3},
	{"top_up", 4},
	{"operator_command_as_customer", 2}, // a customer sends a saga's command
	{"operator_on_saga_holdings", 3},    // operator: a capture, void, release, commit or shipment beside the saga
	{"reprice", 2},                      // operator: a new price mid-flow
	{"place_stale_price", 1},            // a customer sends a price that is not the catalogue's
	{"forged_webhook", 1},               // a payment webhook with a forged or stale signature
	{"terminate_then_repair", 2},        // operator: terminate, then repair
	{"terminate_then_cancel", 2},        // operator terminates, the customer cancels
}

// pick draws an action by weight, among only when it is not empty.
func pick(rnd *rand.Rand, only []string) string {
	total := 0
	for _, a := range actions {
		if len(only) == 0 || slices.Contains(only, a.name) {
			total += a.weight
		}
	}
	x := rnd.IntN(total)
	for _, a := range actions {
		if len(only) > 0 && !slices.Contains(only, a.name) {
			continue
		}
		if x -= a.weight; x < 0 {
			return a.name
		}
	}
	return actions[len(actions)-1].name
}

// Actions are the names of the campaign's actions.
func Actions() []string {
	var names []string
	for _, a := range actions {
		names = append(names, a.name)
	}
	return names
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
			st, _, err := r.ops.At(api).Get(ctx, "/readyz")
			if err == nil && st == http.StatusOK {
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

// sagaStatus is the order's saga status as GET /orders/{id} shows it ("" if unknown).
func (r *run) sagaStatus(ctx context.Context, id string) string {
	st, out, err := r.ops.At(r.cfg.APIs[rand.IntN(len(r.cfg.APIs))]).Get(ctx, "/orders/"+id)
	if err != nil || st != http.StatusOK {
		return ""
	}
	saga, _ := out["saga"].(map[string]any)
	s, _ := saga["status"].(string)
	if rs, _ := saga["run_status"].(string); rs == "Terminated" || rs == "WORKFLOW_EXECUTION_STATUS_TERMINATED" {
		return "TERMINATED"
	}
	return s
}

// awaitSaga polls until the saga's status is one of want (or limit passes).
func (r *run) awaitSaga(ctx context.Context, id string, limit time.Duration, want ...string) string {
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last = r.sagaStatus(ctx, id); slices.Contains(want, last) {
			return last
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return last
}

// ended: the saga's outcome statuses.
var ended = []string{workflows.StatusCompleted, workflows.StatusCompensated, workflows.StatusWrittenOff, workflows.StatusNeedsAttention}

// operatorRound resolves the sagas that wait for an operator (except those
// an action resolves itself) and, in the end phase, repairs the sagas that
// ended without an outcome.
func (r *run) operatorRound(ctx context.Context, rnd *rand.Rand, end bool) (waiting int) {
	st, out, err := r.ops.Get(ctx, "/sagas?status=NEEDS_ATTENTION&limit=1000")
	if err != nil || st != http.StatusOK {
		return 1
	}
	list, _ := out["sagas"].([]any)
	for _, s := range list {
		m, _ := s.(map[string]any)
		id, _ := m["order_id"].(string)
		r.mu.Lock()
		mine := r.handled[id]
		r.mu.Unlock()
		if id == "" || (mine && !end) {
			waiting++
			continue
		}
		r.resolve(ctx, rnd, id)
		waiting++
	}
	if end {
		unfinished, err := sagas.Unfinished(ctx, r.cfg.Pool, r.cfg.Temporal)
		if err != nil {
			return waiting + 1
		}
		for _, u := range unfinished {
			err := sagas.Repair(ctx, r.cfg.Pool, r.cfg.Temporal, u.OrderID)
			var already *serviceerror.WorkflowExecutionAlreadyStarted
			if err == nil {
				r.count(r.rep.Operator, "repair (bulk, end)")
			} else if !errors.Is(err, sagas.ErrNothingToRepair) && !errors.As(err, &already) {
				r.cfg.Logf("repair %s: %v", u.OrderID, err)
			}
			waiting++
		}
	}
	return waiting
}

// resolve decides for a saga in NEEDS_ATTENTION, by seed among the options
// it offers: retry (twice at most per order), compensate or write_off.
// skip is never chosen: it says an operator undid a step by hand, which
// the campaign does not do.
func (r *run) resolve(ctx context.Context, rnd *rand.Rand, id string) {
	st, out, err := r.ops.Get(ctx, "/orders/"+id+"/saga")
	if err != nil || st != http.StatusOK {
		return
	}
	prog, _ := out["progress"].(map[string]any)
	att, _ := prog["attention"].(map[string]any)
	opts, _ := att["options"].([]any)
	var choices []string
	r.mu.Lock()
	tries := r.retries[id]
	r.mu.Unlock()
	for _, o := range opts {
		s, _ := o.(string)
		if s == workflows.ActionSkip || (s == workflows.ActionRetry && tries >= 2) {
			continue
		}
		choices = append(choices, s)
	}
	if len(choices) == 0 {
		return
	}
	action := choices[rnd.IntN(len(choices))]
	if action == workflows.ActionRetry {
		r.mu.Lock()
		r.retries[id]++
		r.mu.Unlock()
	}
	st, out, _ = r.ops.Post(ctx, "/orders/"+id+"/saga/resolve", "", map[string]any{"action": action, "reason": "campaign operator"})
	r.answer("operator resolve "+action, st, out)
	if st == http.StatusOK {
		r.count(r.rep.Operator, "resolve "+action)
	}
}

// endPhase drives every saga to an end: it resolves those waiting for an
// operator and repairs those terminated, until none runs.
func (r *run) endPhase(ctx context.Context, rnd *rand.Rand) {
	deadline := time.Now().Add(r.cfg.Settle)
	quiet := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		waiting := r.operatorRound(ctx, rnd, true)
		running, err := r.cfg.Temporal.CountWorkflow(ctx, &workflowCount)
		if err != nil {
			sleep(ctx, 2*time.Second)
			continue
		}
		if waiting == 0 && running.GetCount() == 0 {
			if quiet++; quiet == 2 {
				return
			}
		} else {
			quiet = 0
			r.cfg.Logf("end phase: %d sagas running, %d waiting for an operator or a repair", running.GetCount(), waiting)
		}
		sleep(ctx, 2*time.Second)
	}
	all, _ := sagas.Unfinished(ctx, r.cfg.Pool, r.cfg.Temporal)
	for _, u := range all {
		r.rep.Unended = append(r.rep.Unended, u.OrderID+" (ended without an outcome)")
	}
	running, _ := r.cfg.Temporal.CountWorkflow(ctx, &workflowCount)
	r.rep.Unended = append(r.rep.Unended, fmt.Sprintf("%d sagas still running after %s", running.GetCount(), r.cfg.Settle))
}

// workflowCount counts the sagas still running (waiting for an operator included).
var workflowCount = workflowservice.CountWorkflowExecutionsRequest{
	Query: fmt.Sprintf(`WorkflowType = %q AND ExecutionStatus = "Running"`, workflows.Name),
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
