package apitest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A body with a member its schema does not list fails as an undeclared
// status or header does (a generated client would drop the member
// silently); the listed members alone pass, and so do the members of an
// allOf's parts (an order's saga: SagaState and its error). A problem
// whose status member is not the response's status fails too.
func TestAnUndeclaredMemberOfABodyFails(t *testing.T) {
	const wallet = `"wallet_id":"w1","customer_id":"c1","currency":"EUR","balance":1,"held":0,"available":1,"status":"active","version":1,"updated_at":"2026-01-01T00:00:00Z"`
	const order = `"order_id":"o1","customer_id":"c1","wallet_id":"w1","status":"placed","currency":"EUR","lines":[{"sku":"s","quantity":1,"unit_price":5}],"total":5,` +
		`"shipping_address":{"name":"n","line1":"l","city":"c","postal_code":"p","country":"FR"},"version":1,"position":1,"placed_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"`
	const saga = `"saga":{"order_id":"o1","workflow_id":"order-fulfilment:o1","run_status":"Running","status":"PLACED","started_at":"2026-01-01T00:00:00Z","error":"x"}`
	for _, tc := range []struct {
		path, contentType, body string
		ok                      bool
	}{
		{"/wallets/w1", "application/json", `{` + wallet + `}`, true},
		{"/wallets/w1", "application/json", `{` + wallet + `,"internal_note":"x"}`, false},
		{"/orders/o1", "application/json", `{` + order + `,` + saga + `}`, true},
		{"/orders/o1", "application/json", `{` + order + `,"lines_raw":[]}`, false},
		{"/wallets/w1", "application/problem+json", `{"type":"t","title":"Not Found","status":404,"code":"not_found","sql":"SELECT"}`, false},
		{"/wallets/w1", "application/problem+json", `{"type":"t","title":"Not Found","status":404,"code":"not_found"}`, true},
		// The problem's status member says another status than the response's.
		{"/wallets/w1", "application/problem+json", `{"type":"t","title":"Not Found","status":409,"code":"not_found"}`, false},
	} {
		status := http.StatusOK
		if tc.contentType == "application/problem+json" {
			status = http.StatusNotFound
		}
		res := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {tc.contentType}, "X-Request-Id": {"r"}},
			Body: io.NopCloser(strings.NewReader(tc.body))}
		err := Validate(httptest.NewRequest(http.MethodGet, "http://orderflow"+tc.path, nil), res)
		if (err == nil) != tc.ok {
			t.Errorf("GET %s %d %s: %v", tc.path, status, tc.body, err)
		}
	}
}
