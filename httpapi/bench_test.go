package httpapi_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/httpapi"
)

// Bodies of the edge benchmark: a top-up, an order, and a top-up through
// POST /commands.
var (
	benchTopUp = `{"amount":500,"currency":"EUR","reason":"bench"}`
	benchOrder = `{"customer_id":"bench-c","wallet_id":"bench-w","currency":"EUR","lines":[` +
		`{"sku":"sku-1","quantity":2,"unit_price":1250},{"sku":"sku-2","quantity":1,"unit_price":990},{"sku":"sku-3","quantity":5,"unit_price":120}],` +
		`"shipping_address":{"name":"Ada Lovelace","line1":"12 Example Street","line2":"Flat 3","city":"London","postal_code":"N1 9GU","country":"GB"}}`
	benchCommand = `{"type":"TopUpWallet","payload":{"wallet_id":"bench-w","amount":500,"currency":"EUR","reason":"test"}}`
	// benchPrices price benchOrder's SKUs (POST /commands bodies).
	benchPrices = []string{
		`{"type":"SetPrice","payload":{"sku":"sku-1","unit_price":1250,"currency":"EUR"}}`,
		`{"type":"SetPrice","payload":{"sku":"sku-2","unit_price":990,"currency":"EUR"}}`,
		`{"type":"SetPrice","payload":{"sku":"sku-3","unit_price":120,"currency":"EUR"}}`,
	}
)

// BenchmarkEdge posts command bodies through the whole echo server. The
// edge case stops at the handler's dispatch, before the bus (an
// X-Correlation-ID the handler refuses, after the body is read, checked,
// validated and decoded): the cost of the edge alone, without the
// database. The dispatched case runs the command on the bus as well.
func BenchmarkEdge(b *testing.B) {
	e, key := newServer(b, &httpapi.Config{Limits: httpapi.Limits{OperatorRate: 1e9, OperatorBurst: 1 << 30}})
	token := client{t: b, key: key}.as(operator).token
	post := func(b *testing.B, path, body, correlation string) int {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Correlation-ID", correlation)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post(b, "/wallets", `{"wallet_id":"bench-w","customer_id":"bench-c","currency":"EUR"}`, "bench"); code != 201 && code != 200 {
		b.Fatalf("open wallet: %d", code)
	}
	for _, price := range benchPrices {
		if code := post(b, "/commands", price, "bench"); code != 201 && code != 200 {
			b.Fatalf("price: %d", code)
		}
	}
	for _, tc := range []struct{ name, path, body string }{
		{"top-up", "/wallets/bench-w/top-ups", benchTopUp},
		{"order", "/orders", benchOrder},
		{"command", "/commands", benchCommand},
	} {
		b.Run("edge/"+tc.name, func(b *testing.B) {
			if code := post(b, tc.path, tc.body, "!"); code != 400 {
				b.Fatalf("%d, want 400 invalid_correlation_id", code)
			}
			b.ReportAllocs()
			for b.Loop() {
				post(b, tc.path, tc.body, "!")
			}
		})
		b.Run("dispatched/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if code := post(b, tc.path, tc.body, "bench"); code != 201 {
					b.Fatalf("%d", code)
				}
			}
		})
	}
}
