package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/httpapi/apitest"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// While the sagas' backlog is full, an order is refused at once with 503
// and Retry-After, through POST /orders, POST /commands and another
// process's bus alike, and nothing of it is written; the
// launcher keeps no more sagas running than it may; once the sagas finish,
// orders are accepted again.
func TestOrdersAreRefusedWhileTheSagasBacklogIsFull(t *testing.T) {
	// The carrier takes an hour: the sagas stay running until the test
	// hands their parcels over.
	s := startSystem(t, time.Hour, func(c *Config) {
		// One saga runs at a time; one start queued behind it refuses
		// orders, whatever the pace.
		c.SagaBacklogWait, c.SagaBacklogMin, c.SagaMaxRunning, c.SagaWindow = time.Millisecond, 1, 1, 10*time.Minute
	})
	ctx := context.Background()
	wallet, sku := s.customer(100000, 50)
	body := fmt.Sprintf(`{"customer_id":"c-%s","wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1,"unit_price":1000}],
		"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}`, wallet, wallet, sku)
	first := s.call("POST", "/orders", body, 201, "Idempotency-Key", "overload-first")["stream_id"].(string)
	// Once the first saga runs, nothing is queued: the second order passes.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var started bool
		err := s.a.pool.QueryRow(ctx, `SELECT started_at IS NOT NULL FROM saga_starts WHERE order_id = $1`, first).Scan(&started)
		if err == nil && started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the saga of %s never started: %v", first, err)
		}
	}
	time.Sleep(2 * sagas.DefaultBacklogTTL) // the API's last count of the backlog is older than that
	second := s.order(wallet, sku, 1, "75001")

	// One saga runs (the launcher's bound), the other waits in the inbox.
	var started, queued int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := s.a.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE started_at IS NOT NULL), count(*) FILTER (WHERE started_at IS NULL)
			FROM saga_starts WHERE order_id = ANY($1)`, []string{first, second}).Scan(&started, &queued); err != nil {
			t.Fatal(err)
		}
		if started == 1 && queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("saga starts: %d started, %d queued; want 1 and 1", started, queued)
		}
	}
	time.Sleep(2 * sagas.DefaultBacklogTTL) // the API's last count of the backlog is older than that

	counts := func() (events, logged int) {
		t.Helper()
		if err := s.a.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM commands)`).Scan(&events, &logged); err != nil {
			t.Fatal(err)
		}
		return events, logged
	}
	events, logged := counts()
	refused := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Idempotency-Key", "overload-1")
		res, err := apitest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" || !strings.Contains(string(raw), `"code":"overloaded"`) {
			t.Fatalf("POST %s with the backlog full: %d Retry-After=%q %s", path, res.StatusCode, res.Header.Get("Retry-After"), raw)
		}
	}
	refused("/orders", body)
	refused("/commands", `{"type":"PlaceOrder","payload":`+body+`}`)
	// Another process's bus (its own count of the backlog, the same database).
	other := commands.NewBus(s.a.pool, s.a.store, commands.Definitions(), commands.Options{
		Admit: (&sagas.Admission{Backlog: &sagas.Backlog{Pool: s.a.pool}, Wait: time.Millisecond, Min: 1, RetryAfter: time.Second}).Admit})
	_, err := other.Dispatch(ctx, commands.Request{CommandID: "overload-2", Principal: &auth.Principal{Subject: "ops", Role: auth.Operator},
		Command: commands.PlaceOrder{CustomerID: "c-" + wallet, WalletID: wallet, Currency: "EUR"}})
	var overloaded *commands.OverloadedError
	if !errors.As(err, &overloaded) {
		t.Fatalf("another process's PlaceOrder with the backlog full: %v", err)
	}
	if e, l := counts(); e != events || l != logged {
		t.Fatalf("refused orders wrote: events %d -> %d, command log %d -> %d", events, e, logged, l)
	}
	// A retry of an order already accepted is answered as before.
	if r := s.call("POST", "/orders", body, 200, "Idempotency-Key", "overload-first"); r["stream_id"] != first {
		t.Fatalf("retry of an accepted order while the backlog is full: %v", r)
	}
	// Other commands still pass.
	s.call("POST", "/wallets/"+wallet+"/top-ups", `{"amount":100,"reason":"test funds"}`, 201)

	// The orders are cancelled: their sagas finish (the carrier withdraws),
	// the second starting only once the first has finished, and orders
	// are accepted again.
	for _, id := range []string{first, second} {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			req, _ := http.NewRequest("POST", s.url+"/orders/"+id+"/cancel", strings.NewReader(`{"reason":"overload test"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+s.token)
			res, err := apitest.Client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode < 300 {
				break
			}
			if time.Now().After(deadline) { // 503 saga_starting until the launcher has a slot
				t.Fatalf("cancel of %s: %d", id, res.StatusCode)
			}
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var finished bool
			if err := s.a.pool.QueryRow(ctx, `SELECT finished_at IS NOT NULL FROM saga_starts WHERE order_id = $1`, id).Scan(&finished); err != nil {
				t.Fatal(err)
			}
			if finished {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the saga of %s was never seen finished", id)
			}
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		req, _ := http.NewRequest("POST", s.url+"/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Idempotency-Key", "overload-1")
		res, err := apitest.Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusCreated {
			break
		}
		if res.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("POST /orders after the backlog drained: %d", res.StatusCode)
		}
	}
}
