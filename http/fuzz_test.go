package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	httpapi "github.com/orderflow/orderflow/http"
	"github.com/orderflow/orderflow/internal/pgtest"
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
	res, err := http.DefaultClient.Do(req)
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
	f.Add(`{"type":"TopUpWallet","payload":{"wallet_id":"fz-1","amount":-5}}`)
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
	f.Add(`{"type":"TopUpWallet","payload":{"wallet_id":"w2","amount":5}}`)
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
