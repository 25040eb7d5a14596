package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// paymentsAPI serves the API with the simulated provider (its ledger in the
// test database) delivering signed webhooks to the API; the test drives
// the provider with Step. The card limit is 100000: above it, declined.
func paymentsAPI(t *testing.T, latency time.Duration) (client, *activities.SimulatedPayments) {
	t.Helper()
	runProjector(t)
	sim := &activities.SimulatedPayments{Pool: pgtest.Pool(t), Latency: latency, CardLimit: 100_000, Secret: "whsec_test_" + uuid.NewString()}
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second,
		Payments: httpapi.Payments{Provider: sim, WebhookSecret: sim.Secret, Tolerance: time.Minute}})
	sim.WebhookURL = c.url + "/webhooks/payments"
	return c, sim
}

// customerWallet opens a wallet for a new customer and returns the
// customer's client and the wallet id.
func customerWallet(t *testing.T, c client) (client, string) {
	t.Helper()
	cust, w := "c-"+uuid.NewString(), "w-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	return c.customer(cust), w
}

// settle steps the provider until the payment's status (read model) is
// want, and returns the payment.
func settle(t *testing.T, cc client, sim *activities.SimulatedPayments, paymentID, want string) response {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := sim.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		r := cc.do("GET", "/payments/"+paymentID, "")
		if r.status == http.StatusOK && r.body["status"] == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("payment %s: %s, want %s", paymentID, r.raw, want)
		}
	}
}

// balance is the wallet's balance in the write model (its events), with
// the number of top-ups.
func balance(t *testing.T, c client, w string) (int64, int) {
	t.Helper()
	r := c.want(c.do("GET", "/streams/wallet/"+w, ""), 200)
	st := r.body["state"].(map[string]any)
	n := 0
	for _, e := range r.body["events"].([]any) {
		if e.(map[string]any)["event_type"] == "wallet.topped_up" {
			n++
		}
	}
	return int64(st["balance"].(float64)), n
}

// deliver posts a webhook body with a Stripe-Signature header.
func deliver(t *testing.T, c client, body []byte, signature string) response {
	t.Helper()
	r := c.do("POST", "/webhooks/payments", string(body), "Stripe-Signature", signature, "Authorization", "")
	return r
}

// succeededEvent is a provider's payment_intent.succeeded for the payment.
func succeededEvent(eventID, intentID, paymentID, walletID string, amount int64) []byte {
	raw, _ := json.Marshal(map[string]any{"id": eventID, "object": "event", "type": activities.EventIntentSucceeded, "created": time.Now().Unix(),
		"data": map[string]any{"object": map[string]any{"id": intentID, "object": "payment_intent", "amount": amount, "currency": "eur", "status": "succeeded",
			"metadata": map[string]string{"payment_id": paymentID, "wallet_id": walletID}}}})
	return raw
}

// A customer pays through the simulated provider: 202 at once, the
// provider's signed webhook confirms the payment and credits the wallet
// once, however often it is delivered.
func TestACustomerPaysThroughTheProvider(t *testing.T) {
	c, sim := paymentsAPI(t, 0)
	cc, w := customerWallet(t, c)
	key := "pay-" + uuid.NewString()
	p := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":5000}`, "Idempotency-Key", key), 202)
	id, intent := p.body["payment_id"].(string), p.body["intent_id"].(string)
	if !strings.HasPrefix(intent, "pi_") || p.body["amount"] != 5000.0 || p.body["currency"] != "EUR" || p.body["provider"] != "simulated" {
		t.Fatalf("payment %s", p.raw)
	}
	again := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":5000}`, "Idempotency-Key", key), 202)
	if again.body["payment_id"] != id || again.body["intent_id"] != intent || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a retry is the same payment and intent: %s", again.raw)
	}
	got := settle(t, cc, sim, id, "succeeded")
	if got.body["intent_id"] != intent || got.body["wallet_id"] != w {
		t.Fatal(got.raw)
	}
	if b, n := balance(t, c, w); b != 5000 || n != 1 {
		t.Fatalf("balance %d after %d top-ups", b, n)
	}
	stream := c.want(c.do("GET", "/streams/wallet/"+w, ""), 200)
	ev := stream.body["events"].([]any)[1].(map[string]any)
	if data := ev["data"].(map[string]any); data["payment_id"] != id || data["operator"] != nil || ev["actor"] != "payments" {
		t.Fatalf("the credit names the payment: %v", ev)
	}
	wallet := cc.want(cc.do("GET", fmt.Sprintf("/wallets/%s/payments?min_position=%.0f", w, ev["global_position"].(float64)), ""), 200)
	if ps := wallet.body["payments"].([]any); len(ps) != 1 || ps[0].(map[string]any)["status"] != "succeeded" {
		t.Fatal(wallet.raw)
	}

	// The provider's webhook again (a redelivery), signed anew: 200, no new credit.
	var body string
	if err := sim.Pool.QueryRow(context.Background(), `SELECT body FROM payment_sim_events WHERE intent_id = $1`, intent).Scan(&body); err != nil {
		t.Fatal(err)
	}
	r := c.want(deliver(t, c, []byte(body), activities.SignWebhook([]byte(body), sim.Secret, time.Now())), 200)
	if r.body["outcome"] != "succeeded" {
		t.Fatal(r.raw)
	}
	// Another event for the same payment (a provider may send two): no new credit either.
	other := succeededEvent("evt_"+uuid.NewString()[:8], intent, id, w, 5000)
	c.want(deliver(t, c, other, activities.SignWebhook(other, sim.Secret, time.Now())), 200)
	if b, n := balance(t, c, w); b != 5000 || n != 1 {
		t.Fatalf("redelivered: balance %d after %d top-ups", b, n)
	}
}

// A webhook that is forged, stale, or signed over another body is 401
// problem+json and changes nothing; the genuine one credits once.
func TestAWebhookIsAuthenticatedByItsSignature(t *testing.T) {
	c, sim := paymentsAPI(t, time.Hour) // the provider never decides on its own here
	cc, w := customerWallet(t, c)
	p := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":700}`), 202)
	id, intent := p.body["payment_id"].(string), p.body["intent_id"].(string)
	if p.body["status"] != "pending" {
		t.Fatal(p.raw)
	}
	body := succeededEvent("evt_"+strings.ReplaceAll(uuid.NewString(), "-", ""), intent, id, w, 700)
	more := succeededEvent("evt_"+strings.ReplaceAll(uuid.NewString(), "-", ""), intent, id, w, 700_00)
	now := time.Now()
	for name, try := range map[string]struct {
		body []byte
		sig  string
	}{
		"no signature":             {body, ""},
		"another secret":           {body, activities.SignWebhook(body, "whsec_forged", now)},
		"stale timestamp":          {body, activities.SignWebhook(body, sim.Secret, now.Add(-10*time.Minute))},
		"signed over another body": {more, activities.SignWebhook(body, sim.Secret, now)},
		"a garbled header":         {body, "t=abc,v1=zz"},
	} {
		r := deliver(t, c, try.body, try.sig)
		if r.status != http.StatusUnauthorized || r.body["code"] != "invalid_signature" {
			t.Fatalf("%s: %d %s", name, r.status, r.raw)
		}
	}
	if b, n := balance(t, c, w); b != 0 || n != 0 {
		t.Fatalf("refused webhooks credited %d (%d top-ups)", b, n)
	}
	if got := cc.want(cc.do("GET", fmt.Sprintf("/payments/%s?min_position=%.0f", id, p.body["global_position"]), ""), 200); got.body["status"] != "pending" {
		t.Fatalf("refused webhooks changed the payment: %s", got.raw)
	}
	for range 2 {
		r := c.want(deliver(t, c, body, activities.SignWebhook(body, sim.Secret, time.Now())), 200)
		if r.body["outcome"] != "succeeded" || r.body["payment_id"] != id {
			t.Fatal(r.raw)
		}
	}
	if b, n := balance(t, c, w); b != 700 || n != 1 {
		t.Fatalf("balance %d after %d top-ups", b, n)
	}
	// A success of another amount than the payment's is refused for good.
	p2 := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":10}`), 202)
	wrong := succeededEvent("evt_"+strings.ReplaceAll(uuid.NewString(), "-", ""), p2.body["intent_id"].(string), p2.body["payment_id"].(string), w, 9)
	r := c.want(deliver(t, c, wrong, activities.SignWebhook(wrong, sim.Secret, time.Now())), 200)
	if r.body["outcome"] != "rejected" || r.body["code"] != "amount_mismatch" {
		t.Fatal(r.raw)
	}
	if b, _ := balance(t, c, w); b != 700 {
		t.Fatalf("balance %d", b)
	}
}

// A payment above the simulated card's limit is declined: the customer
// sees it failed, with the reason, and nothing is credited.
func TestADeclinedPaymentCreditsNothing(t *testing.T) {
	c, sim := paymentsAPI(t, 0)
	cc, w := customerWallet(t, c)
	p := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":100001}`), 202)
	got := settle(t, cc, sim, p.body["payment_id"].(string), "failed")
	if !strings.HasPrefix(got.body["reason"].(string), "card_declined:") || !strings.Contains(got.body["reason"].(string), activities.DeclineOverLimit) {
		t.Fatal(got.raw)
	}
	if b, n := balance(t, c, w); b != 0 || n != 0 {
		t.Fatalf("a declined payment credited %d", b)
	}
}

// Customers no longer top up, through POST /wallets/{id}/top-ups or
// POST /commands; an operator's credit needs a reason and records it with
// the operator.
func TestOnlyOperatorsTopUpWithAReason(t *testing.T) {
	c, _ := paymentsAPI(t, time.Hour)
	cc, w := customerWallet(t, c)
	r := cc.want(cc.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1000000000,"reason":"mine"}`), 403)
	if r.body["code"] != "forbidden" || !strings.Contains(r.body["detail"].(string), "/wallets/{id}/payments") {
		t.Fatal(r.raw)
	}
	r = cc.want(cc.do("POST", "/commands", fmt.Sprintf(`{"type":"TopUpWallet","payload":{"wallet_id":%q,"amount":1000000000,"reason":"mine"}}`, w)), 403)
	if !strings.Contains(r.body["detail"].(string), "/payments") {
		t.Fatal(r.raw)
	}
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10}`), 422)
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"TopUpWallet","payload":{"wallet_id":%q,"amount":10}}`, w)), 422)
	// A payment's credit is the payments principal's alone.
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"TopUpWallet","payload":{"wallet_id":%q,"amount":10,"reason":"x","payment_id":"p1"}}`, w)), 422)
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10,"reason":"goodwill: late delivery","operator":"someone-else"}`), 422)
	top := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10,"reason":"goodwill: late delivery"}`), 201)
	ev := c.want(c.do("GET", "/events/"+top.body["event_ids"].([]any)[0].(string), ""), 200)
	if data := ev.body["data"].(map[string]any); data["reason"] != "goodwill: late delivery" || data["operator"] != operator.Subject || data["payment_id"] != nil {
		t.Fatalf("event %s", ev.raw)
	}
	if b, n := balance(t, c, w); b != 10 || n != 1 {
		t.Fatalf("balance %d after %d top-ups", b, n)
	}
}

// A customer reads its own payments only: another's is 404.
func TestACustomerReadsItsOwnPaymentsOnly(t *testing.T) {
	c, _ := paymentsAPI(t, time.Hour)
	a, wa := customerWallet(t, c)
	b, wb := customerWallet(t, c)
	p := a.want(a.do("POST", "/wallets/"+wa+"/payments", `{"amount":100}`), 202)
	id := p.body["payment_id"].(string)
	a.want(a.do("GET", fmt.Sprintf("/payments/%s?min_position=%.0f", id, p.body["global_position"]), ""), 200)
	b.want(b.do("GET", "/payments/"+id, ""), 404)
	b.want(b.do("GET", "/wallets/"+wa+"/payments", ""), 404)
	b.want(b.do("POST", "/wallets/"+wa+"/payments", `{"amount":100}`), 404)
	b.want(b.do("POST", "/wallets/"+wb+"/payments", `{"amount":100,"currency":"USD"}`), 422)
	c.want(c.do("GET", "/payments/"+id, ""), 200)
}

// A payment goes through its own route, which asks the provider: sent as
// a command it is refused and records nothing (it would have been a
// payment no provider knows of, requested for ever).
func TestAPaymentIsNotACommandOfPOSTCommands(t *testing.T) {
	c, _ := paymentsAPI(t, 0)
	cust, w := "c-"+uuid.NewString(), "w-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	cc := c.customer(cust)
	key := "pay-" + uuid.NewString()
	r := cc.want(cc.do("POST", "/commands", fmt.Sprintf(`{"type":"RequestPayment","payload":{"customer_id":%q,"wallet_id":%q,"amount":500}}`, cust, w),
		"Idempotency-Key", key), 422)
	if r.body["code"] != "validation_failed" || !strings.Contains(r.raw, `"type"`) {
		t.Fatalf("%s", r.raw)
	}
	cc.want(cc.do("GET", "/commands/"+key, ""), 404) // nothing logged under the key
	// The same key on the payment route is a new payment, with its intent.
	p := cc.want(cc.do("POST", "/wallets/"+w+"/payments", `{"amount":500}`, "Idempotency-Key", key), 202)
	if p.header.Get("Idempotent-Replayed") != "" || p.body["intent_id"] == "" {
		t.Fatalf("%s", p.raw)
	}
}

// cutProvider lets the test's client go away while the provider is asked
// for a recorded payment's intent: it waits for the server's context to
// end (or a while), then asks the simulated provider with that context.
type cutProvider struct {
	*activities.SimulatedPayments
	asked chan struct{}
}

func (p cutProvider) CreateIntent(ctx context.Context, req activities.IntentRequest) (activities.Intent, error) {
	close(p.asked)
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}
	if err := ctx.Err(); err != nil {
		return activities.Intent{}, err
	}
	return p.SimulatedPayments.CreateIntent(ctx, req)
}

// A client that goes away once its payment is recorded does not leave it
// without its intent: the provider is still asked, the intent recorded.
func TestAPaymentGetsItsIntentThoughTheClientWentAway(t *testing.T) {
	runProjector(t)
	sim := &activities.SimulatedPayments{Pool: pgtest.Pool(t), CardLimit: 100_000, Secret: "whsec_test_" + uuid.NewString()}
	prov := cutProvider{SimulatedPayments: sim, asked: make(chan struct{})}
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second,
		Payments: httpapi.Payments{Provider: prov, WebhookSecret: sim.Secret, Tolerance: time.Minute}})
	sim.WebhookURL = c.url + "/webhooks/payments"
	cust, w := "c-"+uuid.NewString(), "w-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	cc := c.customer(cust)
	key := "pay-" + uuid.NewString()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", c.url+"/wallets/"+w+"/payments", strings.NewReader(`{"amount":500}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cc.token)
	req.Header.Set("Idempotency-Key", key)
	gone := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		gone <- err
	}()
	select {
	case <-prov.asked:
	case <-time.After(20 * time.Second):
		t.Fatal("the provider was never asked")
	}
	cancel() // the client goes away while the provider is asked
	if err := <-gone; err == nil {
		t.Fatal("the request was not cut")
	}
	rec := cc.want(cc.do("GET", "/commands/"+key, ""), 200)
	paymentID := rec.body["stream_id"].(string)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r := c.do("GET", "/commands/payments:intent:"+paymentID, "")
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no intent recorded for payment %s: %s", paymentID, r.raw)
		}
	}
}
