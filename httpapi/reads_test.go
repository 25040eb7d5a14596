package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/projections"
)

// runProjector runs every projection until the test ends.
func runProjector(t *testing.T) {
	pool := pgtest.Pool(t)
	reg := streams.Registry()
	var hs []delivery.Handler
	for _, p := range projections.All() {
		hs = append(hs, p.Handler(reg))
	}
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, Logger: quiet}, hs...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = router.Run(ctx); close(done) }()
	<-router.Running()
	t.Cleanup(func() { cancel(); <-done })
}

func pos(r response) string { return fmt.Sprintf("%.0f", r.body["global_position"]) }

func TestReadYourWritesThroughTheReadModels(t *testing.T) {
	runProjector(t)
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second})
	w, sku, cust := "w-"+uuid.NewString(), "sku-"+uuid.NewString(), "cust-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	top := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":5000,"reason":"test"}`), 201)
	wal := c.want(c.do("GET", "/wallets/"+w+"?min_position="+pos(top), ""), 200)
	if wal.body["balance"] != 5000.0 || wal.body["available"] != 5000.0 {
		t.Fatalf("wallet %s", wal.raw)
	}
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":1250,"currency":"EUR"}`), 201)
	stock := c.want(c.do("POST", "/products/"+sku+"/stock", `{"quantity":7}`), 201)
	prod := c.want(c.do("GET", "/products/"+sku, "", "X-Min-Position", pos(stock)), 200)
	if prod.body["on_hand"] != 7.0 || prod.body["available"] != 7.0 {
		t.Fatalf("product %s", prod.raw)
	}

	var ids []string
	var last response
	for range 3 {
		last = c.want(c.do("POST", "/orders", strings.Replace(orderBody(w, sku, 1), `"c1"`, fmt.Sprintf("%q", cust), 1)), 201)
		ids = append(ids, last.body["stream_id"].(string))
	}
	cancel := c.sagaCancels(ids[0], "changed my mind")
	o := c.want(c.do("GET", "/orders/"+ids[0]+"?min_position="+pos(cancel), ""), 200)
	if o.body["status"] != "cancelled" || o.body["reason"] != "changed my mind" || o.body["total"] != 1250.0 {
		t.Fatalf("order %s", o.raw)
	}
	// Paging by customer, newest first, and filtering by status.
	page1 := c.want(c.do("GET", "/orders?limit=2&customer_id="+cust+"&min_position="+pos(last), ""), 200)
	cursor, _ := page1.body["next_cursor"].(string)
	if len(page1.body["orders"].([]any)) != 2 || cursor == "" {
		t.Fatalf("page 1 %s", page1.raw)
	}
	page2 := c.want(c.do("GET", "/orders?limit=2&customer_id="+cust+"&cursor="+cursor, ""), 200)
	if got := page2.body["orders"].([]any); len(got) != 1 || got[0].(map[string]any)["order_id"] != ids[0] || page2.body["next_cursor"] != nil {
		t.Fatalf("page 2 %s", page2.raw)
	}
	placed := c.want(c.do("GET", "/orders?status=placed&customer_id="+cust, ""), 200)
	if len(placed.body["orders"].([]any)) != 2 {
		t.Fatalf("placed %s", placed.raw)
	}
	c.want(c.do("GET", "/orders?cursor=bogus", ""), 422)

	// The timeline: the command, then the event it caused, linked.
	tl := c.want(c.do("GET", "/orders/"+ids[0]+"/timeline?min_position="+pos(cancel), ""), 200)
	entries := tl.body["entries"].([]any)
	if len(entries) != 4 {
		t.Fatalf("timeline %s", tl.raw)
	}
	cmd, ev := entries[2].(map[string]any), entries[3].(map[string]any)
	if cmd["kind"] != "command" || cmd["type"] != "CancelOrder" || ev["kind"] != "event" || ev["type"] != "order.cancelled" || ev["causation_id"] != cmd["id"] {
		t.Fatalf("timeline %s", tl.raw)
	}
	c.want(c.do("GET", "/orders/nope-"+uuid.NewString(), ""), 404)
	c.want(c.do("GET", "/orders/"+ids[0]+"?min_position=abc", ""), 422)

	st := c.want(c.do("GET", "/projections", ""), 200)
	if len(st.body["projections"].([]any)) != 5 {
		t.Fatalf("projections %s", st.raw)
	}
}

func TestReadYourWritesTimesOutClearly(t *testing.T) {
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 100 * time.Millisecond}) // no projector runs
	w := "w-" + uuid.NewString()
	open := c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c","currency":"EUR"}`, w)), 201)
	r := c.want(c.do("GET", "/wallets/"+w+"?min_position="+pos(open), ""), 503)
	if r.body["code"] != "projection_behind" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("behind: %s %v", r.raw, r.header)
	}
}

// sse reads server-sent events of one connection.
type sse struct {
	t      testing.TB
	res    *http.Response
	frames chan map[string]string
}

func (c client) sse(path, lastID string) *sse {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := c.httpClient().Do(req)
	if err != nil || res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		c.t.Fatalf("sse %s: %v %v", path, err, res)
	}
	s := &sse{t: c.t, res: res, frames: make(chan map[string]string, 100)}
	go func() {
		sc := bufio.NewScanner(res.Body)
		f := map[string]string{}
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if len(f) > 0 {
					s.frames <- f
				}
				f = map[string]string{}
				continue
			}
			if k, v, ok := strings.Cut(line, ": "); ok && k != "" {
				f[k] = v
			}
		}
		close(s.frames)
	}()
	return s
}

func (s *sse) next(n int) []map[string]string {
	s.t.Helper()
	var out []map[string]string
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case f := <-s.frames:
			out = append(out, f)
		case <-timeout:
			s.t.Fatalf("got %d of %d frames: %v", len(out), n, out)
		}
	}
	return out
}

func (s *sse) close() { s.res.Body.Close() }

func TestEventUpdatesResumeWithoutGapOrDuplicate(t *testing.T) {
	c := newAPIWith(t, httpapi.Config{Heartbeat: 50 * time.Millisecond})
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	open := func(id string) response {
		return c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c","currency":"EUR"}`, id)), 201)
	}
	a, b, late := "w-a-"+uuid.NewString(), "w-b-"+uuid.NewString(), "w-late-"+uuid.NewString()
	first := open(a)
	stream := c.sse("/events/updates?stream_type=wallet&after="+pos(first), "")
	second := open(b)
	topA := c.want(c.do("POST", "/wallets/"+a+"/top-ups", `{"amount":5,"reason":"test"}`), 201)
	got := stream.next(2)
	if got[0]["id"] != pos(second) || got[1]["id"] != pos(topA) || got[1]["event"] != "wallet.topped_up" {
		t.Fatalf("live frames %v", got)
	}
	stream.close()

	// Disconnected: a transaction takes a lower position and commits after a later one.
	slow, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	envs, err := eventstoretest.SaveAndPublish(context.Background(), slow, store,
		eventstoretest.Stream(wallet.StreamType, late, 0, wallet.Opened{WalletID: late, CustomerID: "c", Currency: "EUR"}), eventstore.Metadata{CorrelationID: "x", Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	topB := c.want(c.do("POST", "/wallets/"+b+"/top-ups", `{"amount":7,"reason":"test"}`), 201)
	resumed := c.sse("/events/updates?stream_type=wallet", got[1]["id"])
	defer resumed.close()
	time.Sleep(150 * time.Millisecond) // heartbeats only: the late transaction holds the log back
	select {
	case f := <-resumed.frames:
		t.Fatalf("frame past an open transaction: %v", f)
	default:
	}
	if err := slow.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got = resumed.next(2)
	if got[0]["id"] != fmt.Sprint(envs[0].GlobalPosition) || got[1]["id"] != pos(topB) || envs[0].GlobalPosition > int64(topB.body["global_position"].(float64)) {
		t.Fatalf("resumed frames %v (late %d, top-up %s)", got, envs[0].GlobalPosition, pos(topB))
	}
	_ = pgx.ErrNoRows
}

func TestCommandUpdatesStreamCommandsWithTheirEvents(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	stream := c.sse("/commands/updates?stream_id="+w, "")
	defer stream.close()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c","currency":"EUR"}`, w)), 201)
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c","currency":"EUR"}`, w)), 409)
	got := stream.next(2)
	if got[0]["event"] != "OpenWallet" || !strings.Contains(got[0]["data"], `"event_type":"wallet.opened"`) ||
		!strings.Contains(got[1]["data"], `"status":"rejected"`) {
		t.Fatalf("frames %v", got)
	}
	// Resuming after the first yields the second only.
	again := c.sse("/commands/updates?stream_id="+w, got[0]["id"])
	defer again.close()
	if f := again.next(1); f[0]["id"] != got[1]["id"] {
		t.Fatalf("resumed %v", f)
	}
	c.want(c.do("GET", "/commands/updates?after=999999999", ""), 404)
}

// A customer knows the positions of its own events only: every position
// past them, another customer's or past the head of the log, is answered
// as its own latest (the same status, at once), so neither a live stream's
// ?after= nor a read's ?min_position= tells how many events the system
// holds. Operators still get 404 for a position with no event.
func TestACustomerCannotTellHowFarTheLogsGo(t *testing.T) {
	runProjector(t)
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 2 * time.Second, Heartbeat: 50 * time.Millisecond,
		Limits: httpapi.Limits{Streams: 100, CustomerRate: 1e6, CustomerBurst: 1e6}})
	a, b, wa, wb := "ca-"+uuid.NewString(), "cb-"+uuid.NewString(), "w-"+uuid.NewString(), "w-"+uuid.NewString()
	own := c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, wa, a)), 201)
	other := c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, wb, b)), 201)
	head := int64(other.body["global_position"].(float64))
	ca := c.customer(a)
	status := func(cl client, path string) int {
		req, _ := http.NewRequest("GET", cl.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+cl.token)
		res, err := cl.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, n := range []string{pos(own), pos(other), fmt.Sprint(head + 1), fmt.Sprint(head + 1_000_000)} {
		ca.want(ca.do("GET", "/wallets/"+wa+"?min_position="+n, ""), 200)
		for _, path := range []string{"/events/updates?after=" + n, "/commands/updates?after=" + n} {
			if got := status(ca, path); got != 200 {
				t.Errorf("customer %s: %d", path, got)
			}
		}
	}
	if got := status(c, fmt.Sprintf("/events/updates?after=%d", head+1_000_000)); got != 404 {
		t.Errorf("operator past the head: %d", got)
	}
}
