package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/httpapi/apitest"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// writes counts what a request may have written: events and logged commands.
func writes(t testing.TB, pool *pgxpool.Pool) (events, commands int64) {
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM commands)`).Scan(&events, &commands); err != nil {
		t.Fatal(err)
	}
	return events, commands
}

// fuzzRequest sends a hostile body and checks the contract: never a 5xx,
// every error is problem+json, and a refused request writes nothing.
func fuzzRequest(t *testing.T, c client, pool *pgxpool.Pool, path, body string, headers ...string) {
	ev, cmd := writes(t, pool)
	req, _ := http.NewRequest("POST", c.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := apitest.Client(t).Do(req) // t's: a fuzz target reports to its own t
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode >= 500 {
		t.Fatalf("%s %q: %d", path, body, res.StatusCode)
	}
	if res.StatusCode >= 400 && res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%s %q: %d without problem+json", path, body, res.StatusCode)
	}
	// A domain rejection is logged (status rejected) but appends no events;
	// anything refused at the edge writes nothing at all.
	ev2, cmd2 := writes(t, pool)
	if res.StatusCode >= 400 && (ev2 != ev || (res.StatusCode != 409 && res.StatusCode != 404 && res.StatusCode != 422 && cmd2 != cmd)) {
		t.Fatalf("%s %q: %d but events %d->%d commands %d->%d", path, body, res.StatusCode, ev, ev2, cmd, cmd2)
	}
	if res.StatusCode == 400 || res.StatusCode == 413 || res.StatusCode == 415 {
		if cmd2 != cmd {
			t.Fatalf("%s %q: refused with %d but logged a command", path, body, res.StatusCode)
		}
	}
}

func FuzzPostCommand(f *testing.F) {
	f.Add(`{"type":"OpenWallet","payload":{"wallet_id":"fz-1","customer_id":"c","currency":"EUR"}}`)
	f.Add(`{"type":"TopUpWallet","payload":{"wallet_id":"fz-1","amount":-5,"reason":"test"}}`)
	f.Add(`{"type":"Nope","payload":{}}`)
	f.Add(strings.Repeat("[", 100) + strings.Repeat("]", 100))
	c, pool := newAPIWith(f, httpapi.Config{}), pgtest.Pool(f)
	f.Fuzz(func(t *testing.T, body string) { fuzzRequest(t, c, pool, "/commands", body) })
}

func FuzzPlaceOrder(f *testing.F) {
	f.Add(`{"customer_id":"c","wallet_id":"w","currency":"EUR","lines":[{"sku":"s","quantity":1,"unit_price":1}],"shipping_address":{"name":"a","line1":"b","city":"c","postal_code":"d","country":"FR"}}`)
	f.Add(`{"customer_id":"c","wallet_id":"w","currency":"eur","lines":[]}`)
	f.Add(`{"lines":[{"quantity":1e400}]}`)
	c, pool := newAPIWith(f, httpapi.Config{}), pgtest.Pool(f)
	f.Fuzz(func(t *testing.T, body string) { fuzzRequest(t, c, pool, "/orders", body) })
}

// A customer's hostile bodies: whatever the body names, nothing is
// written for another customer, and nothing is a 5xx.
func FuzzCustomerCommand(f *testing.F) {
	f.Add(`{"type":"AuthoriseHold","payload":{"wallet_id":"w1","order_id":"evil","amount":2500,"currency":"EUR"}}`)
	f.Add(`{"type":"PlaceOrder","payload":{"customer_id":"c2","wallet_id":"w2","currency":"EUR","lines":[{"sku":"s","quantity":1,"unit_price":1}],"shipping_address":{"name":"a","line1":"b","city":"c","postal_code":"d","country":"FR"}}}`)
	f.Add(`{"type":"TopUpWallet","payload":{"wallet_id":"w2","amount":5,"reason":"test"}}`)
	f.Add(`{"type":"CancelOrder","payload":{"order_id":"o2","reason":"x"}}`)
	c, pool := newAPIWith(f, httpapi.Config{Limits: httpapi.Limits{CustomerRate: 1e6, CustomerBurst: 1e6}}), pgtest.Pool(f)
	c = c.customer("fz-mallory")
	f.Fuzz(func(t *testing.T, body string) {
		var last int64
		if err := pool.QueryRow(context.Background(), `SELECT coalesce(max(global_position), 0) FROM events`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		fuzzRequest(t, c, pool, "/commands", body)
		// Whatever was accepted is mallory's own: no event of another customer's stream.
		var foreign int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE global_position > $1
			AND actor = 'fz-mallory' AND customer_id <> 'fz-mallory'`, last).Scan(&foreign); err != nil {
			t.Fatal(err)
		}
		if foreign > 0 {
			t.Fatalf("%q: a customer wrote to another customer's stream", body)
		}
	})
}

// FuzzEdge sends anything to the whole edge: a method, a request target
// (any route, with empty, odd or encoded segments and any query), one
// header, a body with or without a JSON media type, as nobody, a customer
// or an operator. The contract: never a 5xx (but a read model behind,
// 503 projection_behind, which is an answer), every error problem+json,
// and a refused request writes no event and accepts no command (a domain
// rejection is logged as rejected, by design).
func FuzzEdge(f *testing.F) {
	methods := []string{"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}
	fill := []string{"x1", "", "%00", "%FF", "..", "%2F", "a%20b", "x1/extra", "-", strings.Repeat("a", 200)}
	for _, route := range auth.Routes() {
		method, pattern, _ := strings.Cut(route, " ")
		m := uint8(slices.Index(methods, method))
		for i, v := range fill {
			path := strings.NewReplacer(":id", v, ":sku", v, ":type", "order", ":offset", v, "*", v).Replace(pattern)
			f.Add(m, path, "X-Min-Position", "1", "", uint8(i%3), true)
		}
		f.Add(m, pattern+"?limit=0&cursor=%zz", "Idempotency-Key", "saga:x", `{}`, uint8(2), true)
		f.Add(m, pattern+"?min_position=99999999&after=99999999", "Last-Event-ID", "-1", `{"reason":"x"}`, uint8(1), true)
	}
	f.Add(uint8(1), "/commands", "If-Match", `"0"`, `{"type":"OpenWallet","payload":{"wallet_id":"fz-w","customer_id":"fz-c","currency":"EUR"}}`, uint8(2), true)
	f.Add(uint8(1), "/wallets/fz-w/top-ups", "X-Actor", "ops", `{"amount":5}`, uint8(1), true)
	f.Add(uint8(1), "/orders", "X-Correlation-ID", "c1", `{"customer_id":"fz-c","wallet_id":"fz-w","currency":"EUR","lines":[{"sku":"s","quantity":1,"unit_price":1}],"shipping_address":{"name":"a","line1":"b","city":"c","postal_code":"d","country":"FR"}}`, uint8(1), true)
	f.Add(uint8(1), "/wallets//top-ups", "Content-Length", "5", strings.Repeat(`{"a":`, 40), uint8(1), false)
	f.Add(uint8(0), "/commands?stream_id=%00", "", "", "", uint8(1), false)

	e, key := newServer(f, &httpapi.Config{ConsistencyTimeout: time.Millisecond, Heartbeat: time.Millisecond,
		Limits: httpapi.Limits{CustomerRate: 1e9, CustomerBurst: 1 << 30, OperatorRate: 1e9, OperatorBurst: 1 << 30, Streams: 1 << 20, Waits: 1 << 20}})
	pool := pgtest.Pool(f)
	c := client{t: f, key: key}
	tokens := []string{"", c.customer("fz-c").token, c.as(operator).token}
	f.Fuzz(func(t *testing.T, method uint8, target, header, value, body string, role uint8, asJSON bool) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(target, "/") {
			return // not a request target a client could send
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // ends live streams
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, methods[int(method)%len(methods)], "http://orderflow"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		if asJSON {
			req.Header.Set("Content-Type", "application/json")
		}
		if headerName.MatchString(header) && !strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) &&
			!strings.EqualFold(header, "Content-Length") {
			req.Header.Set(header, value)
		}
		if tok := tokens[int(role)%len(tokens)]; tok != "" && !strings.EqualFold(header, "Authorization") {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		ev, accepted := edgeWrites(t, pool)
		rec := apitest.New(t).Serve(e, req)
		code := rec.Code
		// A 503 after the client's deadline passed (a loaded machine: the
		// query outlived it) answers a client that gave up, not a fault.
		gaveUp := code == 503 && ctx.Err() != nil
		if code >= 500 && !gaveUp && !(code == 503 && strings.Contains(rec.Body.String(), "projection_behind")) {
			t.Fatalf("%s %q: %d %s", req.Method, target, code, rec.Body)
		}
		if code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s %q: %d without problem+json", req.Method, target, code)
		}
		if ev2, accepted2 := edgeWrites(t, pool); code >= 400 && (ev2 != ev || accepted2 != accepted) {
			t.Fatalf("%s %q: %d but events %d->%d accepted commands %d->%d", req.Method, target, code, ev, ev2, accepted, accepted2)
		}
	})
}

// headerName is what a client can send as a header's name.
var headerName = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// edgeWrites counts the events and the accepted commands.
func edgeWrites(t testing.TB, pool *pgxpool.Pool) (events, accepted int64) {
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM commands WHERE status = 'accepted')`).Scan(&events, &accepted); err != nil {
		t.Fatal(err)
	}
	return events, accepted
}
