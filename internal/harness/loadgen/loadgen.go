// Package loadgen drives a running orderflow over HTTP the way its users do:
// it opens wallets and receives stock, then places orders with a realistic
// mix of outcomes (fulfilled, out of stock, insufficient funds, carrier
// refusal, cancelled mid-saga, duplicate submissions), and measures what a
// user sees: command latency, time until the read model shows the order
// (read-your-writes with the consistency token), time until the saga ends.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/orderflow/orderflow/client"
)

// Kinds of order in the mix, named after what the saga should end with.
const (
	KindFulfilled         = "fulfilled"
	KindOutOfStock        = "out_of_stock"
	KindInsufficientFunds = "insufficient_funds"
	KindCarrierRejected   = "carrier_rejected"
	KindCancelled         = "cancelled_mid_saga"
)

// Config says how hard and how long to push.
type Config struct {
	// URL is the API, or several separated by commas: each client then
	// sends its orders to one of them, in turn (a cluster's APIs).
	URL string
	// Token is the bearer token of every request (an operator's: the run
	// opens wallets and stocks products).
	Token       string `json:"-"`
	Concurrency int
	// Rate is orders per second; 0 places them as fast as Concurrency allows.
	Rate float64
	// Duration or Orders ends the run (whichever is set; Orders wins).
	Duration time.Duration
	Orders   int
	// Drain is how long the requests in flight when Duration ends may
	// still take (DefaultDrain when 0): they finish and are counted, and a
	// request without a status is a real transport failure.
	Drain time.Duration
	// Customers and Products are how many wallets and SKUs the run creates.
	Customers, Products int
	// Mix weights the kinds of order.
	Mix map[string]float64
	// Duplicates is the share of orders submitted twice with the same key.
	Duplicates float64
	// Hot sends every order to one wallet and one SKU, with money for about
	// 40 orders and stock for about 50: many concurrent commands on one
	// aggregate run into its limits (contention test).
	Hot bool
	// SagaTimeout bounds the wait for one saga.
	SagaTimeout time.Duration
	// RejectPostalCode is the postal code the carrier always refuses.
	RejectPostalCode string
	// Progress is called with the number of orders placed so far.
	Progress func(placed int64)
}

// DefaultMix is mostly fulfilled orders with every failure represented.
func DefaultMix() map[string]float64 {
	return map[string]float64{KindFulfilled: 0.70, KindOutOfStock: 0.08, KindInsufficientFunds: 0.08, KindCarrierRejected: 0.07, KindCancelled: 0.07}
}

// Sample is one order's measurements.
type Sample struct {
	At        time.Duration `json:"at_ms"` // since the start of the run
	Kind      string        `json:"kind"`
	OrderID   string        `json:"order_id,omitempty"`
	Status    int           `json:"status"`
	Accepted  time.Duration `json:"accepted_ms"`
	Visible   time.Duration `json:"visible_ms,omitempty"`
	Saga      time.Duration `json:"saga_ms,omitempty"`
	Outcome   string        `json:"outcome,omitempty"`
	Duplicate bool          `json:"duplicate,omitempty"`
	// API is the URL the order was sent to.
	API string `json:"api"`
	// RetryAfter: the answer carried a Retry-After header, which asked to
	// wait RetryAfterDelay.
	RetryAfter      bool          `json:"retry_after,omitempty"`
	RetryAfterDelay time.Duration `json:"-"`
}

// DefaultDrain is Config.Drain's default.
const DefaultDrain = 10 * time.Second

// Run sets up customers and products, then places orders until the run
// ends and every saga it started has finished (or timed out).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Mix == nil {
		cfg.Mix = DefaultMix()
	}
	if cfg.SagaTimeout == 0 {
		cfg.SagaTimeout = 2 * time.Minute
	}
	if cfg.RejectPostalCode == "" {
		cfg.RejectPostalCode = "00000"
	}
	if cfg.Hot {
		cfg.Customers, cfg.Products = 1, 1
	}
	apis := strings.Split(cfg.URL, ",")
	for i := range apis {
		apis[i] = strings.TrimRight(strings.TrimSpace(apis[i]), "/")
	}
	c := NewClient(apis[0], cfg.Token, &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 512}})
	runID := strconv.FormatInt(time.Now().UnixMilli(), 36)
	f, err := setUp(ctx, c, cfg, runID)
	if err != nil {
		return nil, err
	}

	res := &Result{Config: cfg, StartedAt: time.Now().UTC(), RunID: runID, Errors: map[string]int{}}
	var mu sync.Mutex
	record := func(s Sample) {
		mu.Lock()
		defer mu.Unlock()
		res.Samples = append(res.Samples, s)
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if cfg.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	// runCtx ends the placing; reqCtx, Drain later, the requests still in
	// flight then.
	runCtx, reqCtx := ctx, ctx
	if cfg.Orders == 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
		reqCtx, cancel = context.WithTimeout(ctx, cfg.Duration+cfg.Drain)
		defer cancel()
	}
	start := time.Now()
	var placed atomic.Int64
	var sagas sync.WaitGroup
	var workers sync.WaitGroup
	kinds := weighted(cfg.Mix)
	for w := range cfg.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			c := c.At(apis[w%len(apis)])
			for {
				n := placed.Add(1)
				if (cfg.Orders > 0 && n > int64(cfg.Orders)) || runCtx.Err() != nil || lim.Wait(runCtx) != nil {
					return
				}
				if cfg.Progress != nil {
					cfg.Progress(n)
				}
				kind := kinds(rnd)
				s, ok := placeOrder(reqCtx, c, f, cfg, runID, n, kind, rnd, start)
				if !ok {
					record(s)
					switch {
					case refused(s):
						// The service said when to come back: this worker
						// waits that long before its next order.
						time.Sleep(s.RetryAfterDelay)
					case s.Status == 0 || s.Status >= 500:
						time.Sleep(200 * time.Millisecond) // the service is down: don't hammer it
					}
					continue
				}
				sagas.Add(1)
				go func() {
					defer sagas.Done()
					took, outcome := c.awaitSaga(ctx, s.OrderID, cfg.SagaTimeout)
					if took > 0 {
						s.Saga = s.Accepted + took
					}
					if s.Outcome == "" {
						s.Outcome = outcome
					}
					record(s)
				}()
			}
		}()
	}
	workers.Wait()
	res.PlacingTook = time.Since(start)
	if cfg.Orders == 0 {
		// The rate is over the placing window; answers drained after it
		// count in it.
		res.PlacingTook = min(res.PlacingTook, cfg.Duration)
	}
	sagas.Wait()
	res.Took = time.Since(start)
	res.summarise()
	return res, nil
}

// fixture is what setUp created.
type fixture struct {
	rich, poor []string // wallets
	skus       []string
	scarce     string // a SKU with no stock
}

func setUp(ctx context.Context, c *Client, cfg Config, runID string) (*fixture, error) {
	f := &fixture{scarce: "sku-" + runID + "-scarce"}
	balance, stock := int64(1_000_000_000_000), int64(1_000_000_000)
	if cfg.Hot {
		balance, stock = 100_000, 100
	}
	for i := range max(cfg.Customers, 1) {
		id := fmt.Sprintf("w-%s-%d", runID, i)
		poor := id + "-poor"
		if err := c.Wallet(ctx, id, "c-"+id, balance, "load test: funds for the generated orders"); err != nil {
			return nil, err
		}
		if err := c.Wallet(ctx, poor, "c-"+poor, 0, ""); err != nil {
			return nil, err
		}
		f.rich = append(f.rich, id)
		f.poor = append(f.poor, poor)
	}
	for i := range max(cfg.Products, 1) {
		sku := fmt.Sprintf("sku-%s-%d", runID, i)
		if err := c.Product(ctx, sku, int64(100+i*37%5000), stock); err != nil {
			return nil, err
		}
		f.skus = append(f.skus, sku)
	}
	// The scarce SKU is for sale but never stocked: its orders are refused
	// by the saga (out of stock), not at the door (not for sale).
	return f, c.setPrice(ctx, f.scarce, 100)
}

// created is a set-up step's outcome: nil when it was created (201), or
// is there already (200, a replay).
func created(what string) func(answer, error) error {
	return func(res answer, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case res.StatusCode() != http.StatusCreated && res.StatusCode() != http.StatusOK:
			return fmt.Errorf("%s: %d %s", what, res.StatusCode(), res.GetBody())
		}
		return nil
	}
}

// answer is what every typed answer of package client has.
type answer interface {
	StatusCode() int
	GetBody() []byte
}

// setPrice prices sku in the catalogue (an operator's PUT).
func (c *Client) setPrice(ctx context.Context, sku string, unitPrice int64) error {
	return created("price " + sku)(c.API.SetPriceWithResponse(ctx, sku, nil, client.SetPriceJSONRequestBody{UnitPrice: unitPrice, Currency: "EUR"}))
}

// Wallet opens a EUR wallet for customer, credited with balance (an
// operator's credit, for reason) unless balance is 0.
func (c *Client) Wallet(ctx context.Context, id, customer string, balance int64, reason string) error {
	if err := created("open " + id)(c.API.OpenWalletWithResponse(ctx, nil, client.OpenWallet{WalletId: id, CustomerId: customer, Currency: "EUR"})); err != nil {
		return err
	}
	if balance == 0 {
		return nil
	}
	return created("top up " + id)(c.API.TopUpWalletWithResponse(ctx, id, nil, client.TopUpWalletJSONRequestBody{Amount: balance, Reason: &reason}))
}

// Product prices sku (EUR) and receives stock of it.
func (c *Client) Product(ctx context.Context, sku string, unitPrice, stock int64) error {
	if err := c.setPrice(ctx, sku, unitPrice); err != nil {
		return err
	}
	return created("stock " + sku)(c.API.ReceiveStockWithResponse(ctx, sku, nil, client.ReceiveStockJSONRequestBody{Quantity: stock}))
}

// placeOrder places one order of kind and waits until the read model shows it.
func placeOrder(ctx context.Context, c *Client, f *fixture, cfg Config, runID string, n int64, kind string, rnd *rand.Rand, start time.Time) (Sample, bool) {
	s := Sample{At: time.Since(start), Kind: kind, API: c.base}
	wallet, sku, zip := f.rich[rnd.IntN(len(f.rich))], f.skus[rnd.IntN(len(f.skus))], "75001"
	switch kind {
	case KindOutOfStock:
		sku = f.scarce
	case KindInsufficientFunds:
		wallet = f.poor[rnd.IntN(len(f.poor))]
	case KindCarrierRejected:
		zip = cfg.RejectPostalCode
	}
	body := client.PlaceOrder{CustomerId: "c-" + wallet, WalletId: wallet, Currency: "EUR",
		Lines:           []client.OrderLine{{Sku: sku, Quantity: int64(1 + rnd.IntN(3))}}, // priced by the catalogue
		ShippingAddress: client.Address{Name: "Load Test", Line1: "1 Bench St", City: "Paris", PostalCode: zip, Country: "FR"}}
	key := fmt.Sprintf("load-%s-%d", runID, n)
	params := &client.PlaceOrderParams{IdempotencyKey: &key}
	t0 := time.Now()
	res, err := c.API.PlaceOrderWithResponse(ctx, params, body)
	s.Accepted = time.Since(t0)
	if err != nil {
		return s, false
	}
	s.Status, s.RetryAfter = res.StatusCode(), res.HTTPResponse.Header.Get("Retry-After") != ""
	if secs, err := strconv.Atoi(res.HTTPResponse.Header.Get("Retry-After")); err == nil {
		s.RetryAfterDelay = time.Duration(max(secs, 1)) * time.Second
	}
	if res.JSON201 == nil {
		return s, false
	}
	s.OrderID = res.JSON201.StreamId
	pos := res.JSON201.GlobalPosition
	if cfg.Duplicates > 0 && rnd.Float64() < cfg.Duplicates {
		again, err := c.API.PlaceOrderWithResponse(ctx, params, body)
		if err != nil || again.JSON200 == nil || again.JSON200.StreamId != s.OrderID {
			s.Duplicate = true
			st := 0
			if err == nil {
				st = again.StatusCode()
			}
			s.Outcome = fmt.Sprintf("duplicate_mismatch_%d", st)
		}
	}
	if kind == KindCancelled {
		c.API.CancelOrderWithResponse(ctx, s.OrderID, nil, client.CancelOrderJSONRequestBody{Reason: "load test: changed my mind"})
	}
	t1 := time.Now()
	if o, err := c.API.GetOrderWithResponse(ctx, s.OrderID, &client.GetOrderParams{MinPosition: pos}); err == nil && o.JSON200 != nil {
		s.Visible = time.Since(t1)
	}
	return s, true
}

// awaitSaga polls the order until its saga has ended.
func (c *Client) awaitSaga(ctx context.Context, orderID string, timeout time.Duration) (time.Duration, string) {
	t0 := time.Now()
	for time.Since(t0) < timeout && ctx.Err() == nil {
		o, err := c.API.GetOrderWithResponse(ctx, orderID, nil)
		if err == nil && o.JSON200 != nil && o.JSON200.Saga != nil {
			switch st := o.JSON200.Saga.Status; st {
			case "COMPLETED", "COMPENSATED", "NEEDS_ATTENTION":
				return time.Since(t0), st
			}
		}
		// Every 100 ms for two seconds, then every 500 ms: each poll
		// describes the saga on Temporal, and a run with many sagas
		// waiting must not become the load it measures.
		if time.Since(t0) < 2*time.Second {
			time.Sleep(100 * time.Millisecond)
		} else {
			time.Sleep(500 * time.Millisecond)
		}
	}
	return 0, "timeout"
}

func weighted(mix map[string]float64) func(*rand.Rand) string {
	var kinds []string
	var total float64
	for k, w := range mix {
		if w > 0 {
			kinds = append(kinds, k)
			total += w
		}
	}
	slices.Sort(kinds)
	return func(r *rand.Rand) string {
		x := r.Float64() * total
		for _, k := range kinds {
			if x -= mix[k]; x < 0 {
				return k
			}
		}
		return kinds[len(kinds)-1]
	}
}

// Client is the HTTP client of the load and of the campaign: API is
// orderflow's typed client (package client, generated from the OpenAPI
// document), which places orders and sets up; Post, Get and Send send any
// JSON body (the campaign's hostile requests, which a typed client would
// not build), the answer decoded as a JSON object (status 0 and an error
// when no answer came).
type Client struct {
	API         *client.ClientWithResponses
	base, token string
	http        *http.Client
}

// NewClient sends to base with token.
func NewClient(base, token string, hc *http.Client) *Client {
	base = strings.TrimRight(base, "/")
	api, err := client.New(base, token, client.WithHTTPClient(hc))
	if err != nil { // only an option can fail, and these cannot
		panic(fmt.Sprintf("loadgen: API %q: %v", base, err))
	}
	return &Client{API: api, base: base, token: token, http: hc}
}

// At is the same client sending to another API.
func (c *Client) At(base string) *Client { return NewClient(base, c.token, c.http) }

// As is the same client sending with another principal's token.
func (c *Client) As(token string) *Client { return NewClient(c.base, token, c.http) }

// Base is the API this client sends to.
func (c *Client) Base() string { return c.base }

// Post sends body as JSON, with the Idempotency-Key key when it is not empty.
func (c *Client) Post(ctx context.Context, path, key string, body any) (int, map[string]any, error) {
	return c.Send(ctx, http.MethodPost, path, key, body)
}

// Get reads path.
func (c *Client) Get(ctx context.Context, path string) (int, map[string]any, error) {
	return c.Send(ctx, http.MethodGet, path, "", nil)
}

// Send sends a request of any method; body nil sends none.
func (c *Client) Send(ctx context.Context, method, path, key string, body any) (int, map[string]any, error) {
	st, out, _, err := c.send(ctx, method, path, key, body)
	return st, out, err
}

// send makes one request; the header is empty when no answer came.
func (c *Client) send(ctx context.Context, method, path, key string, body any) (int, map[string]any, http.Header, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, http.Header{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, http.Header{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, nil, res.Header, err
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out, res.Header, nil
}

// mustPost is a set-up step that has to succeed.
func (c *Client) mustPost(ctx context.Context, path string, body any) error {
	st, out, err := c.Post(ctx, path, "", body)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if st != http.StatusCreated && st != http.StatusOK {
		return fmt.Errorf("POST %s: %d %v", path, st, out["detail"])
	}
	return nil
}
