package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A push-back (429/503 with Retry-After) is counted apart from a failure,
// a request without a status apart from both, and only accepted orders
// make the accepted latency.
func TestSummaryCountsRefusalsApartFromFailures(t *testing.T) {
	ms := time.Millisecond
	r := &Result{Errors: map[string]int{}, PlacingTook: time.Second, Samples: []Sample{
		{Status: 201, Accepted: 10 * ms, Kind: KindFulfilled, Outcome: "COMPLETED"},
		{Status: 503, RetryAfter: true, Accepted: 2 * ms},
		{Status: 429, RetryAfter: true, Accepted: 1500 * ms},
		{Status: 503, Accepted: 3 * ms}, // no Retry-After: not a push-back
		{Status: 500, Accepted: 4 * ms},
		{Status: 0, Accepted: 5 * time.Second},
	}}
	r.summarise()
	s := r.Summary
	if s.Orders != 6 || s.Accepted != 1 || s.Refused != 2 || s.Failed != 2 || s.NoStatus != 1 || s.Late != 1 {
		t.Fatalf("summary %+v", s)
	}
	if s.AcceptedMs.N != 1 || s.AcceptedMs.Max != 10 || s.AnsweredMs.N != 5 || s.OrdersPerS != 1 {
		t.Fatalf("latencies: accepted %+v answered %+v, %v orders/s", s.AcceptedMs, s.AnsweredMs, s.OrdersPerS)
	}
	if r.Errors["503"] != 2 || r.Errors["0"] != 1 {
		t.Fatalf("errors by status %v", r.Errors)
	}
	if txt := r.Text(); !strings.Contains(txt, "refused (429/503 with Retry-After): 2, failed: 2, without a status: 1") {
		t.Fatalf("text:\n%s", txt)
	}
}

// An order still in flight when the run's duration ends is waited for:
// it gets its status and is counted as accepted, not as a request
// without a status.
func TestOrdersInFlightAtTheEndAreAnswered(t *testing.T) {
	const duration = 200 * time.Millisecond
	var orders atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/orders":
			if orders.Add(1) > 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"code":"overloaded"}`))
				return
			}
			time.Sleep(3 * duration) // answered after the run's end
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"stream_id":"o-1","global_position":1}`))
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{}`))
		default: // the order, its saga finished
			_, _ = w.Write([]byte(`{"saga":{"status":"COMPLETED"}}`))
		}
	}))
	defer api.Close()
	res, err := Run(context.Background(), Config{URL: api.URL, Token: "t", Concurrency: 2, Rate: 50, Duration: duration,
		Customers: 1, Products: 1, Mix: map[string]float64{KindFulfilled: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	if s.Accepted != 1 || s.NoStatus != 0 || s.Failed != 0 || s.Refused != s.Orders-1 || s.SagaMs.N != 1 {
		t.Fatalf("summary %+v, errors %v", s, res.Errors)
	}
}
