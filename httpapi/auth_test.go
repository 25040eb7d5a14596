package httpapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// routes returns every route the server serves.
func routes(t *testing.T) []*echo.Route {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	e, err := httpapi.New(httpapi.Config{Pool: pool, Store: store, Bus: commands.NewBus(pool, store, commands.Definitions(), commands.Options{}),
		Verifier: auth.DevVerifier(key), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return e.Routes()
}

// The policy covers every route and every command type: one missing would
// be refused to everyone (fail closed), which this test turns into a failure.
func TestThePolicyCoversEveryRouteAndCommandType(t *testing.T) {
	for _, r := range routes(t) {
		if auth.RouteAccess(r.Method, r.Path) == auth.Nobody {
			t.Errorf("route %s %s is not in the policy", r.Method, r.Path)
		}
	}
	for _, d := range commands.Definitions() {
		if auth.CommandAccess(d.Name) == auth.Nobody {
			t.Errorf("command %s is not in the policy", d.Name)
		}
	}
}

// Every route, as nobody, a customer and an operator: public routes need
// no token, the rest answer 401 without one; a customer gets 403 on every
// operator route; the saga's internal commands are never a customer's.
func TestEveryRouteAnswersEachRoleAsThePolicySays(t *testing.T) {
	c := newAPI(t)
	anon := c
	anon.token = ""
	mallory := c.customer("mallory-" + uuid.NewString())
	for _, r := range routes(t) {
		path := strings.NewReplacer(":id", "x1", ":sku", "x1", ":type", "wallet", ":offset", "1", "*", "swagger-ui.css").Replace(r.Path)
		body := ""
		if r.Method == "POST" {
			body = "{}"
		}
		access := auth.RouteAccess(r.Method, r.Path)
		res := anon.do(r.Method, path, body)
		if access == auth.Public && res.status == 401 || access != auth.Public && (res.status != 401 || res.header.Get("WWW-Authenticate") == "") {
			t.Errorf("%s %s without a token: %d", r.Method, r.Path, res.status)
		}
		if access == auth.Operators {
			if res := mallory.do(r.Method, path, body); res.status != 403 || res.body["code"] != "forbidden" {
				t.Errorf("%s %s as a customer: %d %s", r.Method, r.Path, res.status, res.raw)
			}
		}
	}
	for _, d := range commands.Definitions() {
		res := mallory.do("POST", "/commands", fmt.Sprintf(`{"type":%q,"payload":{}}`, d.Name))
		want := 403
		if auth.CommandAccess(d.Name) == auth.Customers {
			want = 422 // allowed, and the empty payload is refused
		}
		if d.Internal() {
			want = 422 // the saga's only: no client type at all
		}
		if res.status != want {
			t.Errorf("POST /commands %s as a customer: %d, want %d: %s", d.Name, res.status, want, res.raw)
		}
	}
}

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Hostile tokens get 401 with a precise reason, and write nothing.
func TestHostileTokensAreRefusedPrecisely(t *testing.T) {
	c := newAPI(t)
	pool := pgtest.Pool(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": auth.DevIssuer, "aud": auth.DevAudience, "sub": "ops-eve", "role": "operator", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		m := good()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs := signed(t, jwt.SigningMethodHS256, []byte("a guessed secret"), good())
	cases := []struct{ name, token, detail string }{
		{"garbage", "not-a-jwt", "not a well-formed JWT"},
		{"wrong signature", signed(t, jwt.SigningMethodEdDSA, other, good()), "signature or algorithm"},
		{"alg none", none, "signature or algorithm"},
		{"HMAC with a guessed secret", hs, "signature or algorithm"},
		{"expired", signed(t, jwt.SigningMethodEdDSA, c.key, with("exp", now.Add(-time.Hour).Unix())), "expired"},
		{"no expiry", signed(t, jwt.SigningMethodEdDSA, c.key, with("exp", nil)), "required claim"},
		{"no iat", signed(t, jwt.SigningMethodEdDSA, c.key, with("iat", nil)), "required claim (iat)"},
		{"iat in the future", signed(t, jwt.SigningMethodEdDSA, c.key, with("iat", now.Add(time.Minute).Unix())), "not valid yet"},
		{"a life past the maximum", signed(t, jwt.SigningMethodEdDSA, c.key, with("exp", now.Add(25*time.Hour).Unix())), "lives longer than 24h"},
		{"an old iat and a far exp", signed(t, jwt.SigningMethodEdDSA, c.key, func() jwt.MapClaims {
			m := with("iat", now.Add(-48*time.Hour).Unix())
			m["exp"] = now.Add(time.Hour).Unix()
			return m
		}()), "lives longer than"},
		{"wrong audience", signed(t, jwt.SigningMethodEdDSA, c.key, with("aud", "another-service")), "audience"},
		{"wrong issuer", signed(t, jwt.SigningMethodEdDSA, c.key, with("iss", "evil")), "issuer"},
		{"no role", signed(t, jwt.SigningMethodEdDSA, c.key, with("role", nil)), "role"},
		{"customer without customer_id", signed(t, jwt.SigningMethodEdDSA, c.key, with("role", "customer")), "customer_id"},
		{"invented role", signed(t, jwt.SigningMethodEdDSA, c.key, with("role", "admin")), "role"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, cmd := writes(t, pool)
			r := c.do("POST", "/commands", `{"type":"ReceiveStock","payload":{"sku":"hostile","quantity":5}}`, "Authorization", "Bearer "+tc.token)
			c.want(r, 401)
			detail, _ := r.body["detail"].(string)
			if r.body["code"] != "invalid_token" || !strings.Contains(detail, tc.detail) || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("%s", r.raw)
			}
			if ev2, cmd2 := writes(t, pool); ev2 != ev || cmd2 != cmd {
				t.Fatal("a refused request wrote something")
			}
		})
	}
}

// A customer acts on its own orders and wallets only: every attempt on
// another customer's is refused (403 for what a customer may never do,
// 404 for another's resource, so existence does not leak) and writes
// nothing; what it may do, it does on its own.
func TestACustomerActsOnItsOwnOnly(t *testing.T) {
	runProjector(t)
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second})
	pool := pgtest.Pool(t)
	victim, attacker := "c-"+uuid.NewString(), "m-"+uuid.NewString()
	vw, mw, sku := "w-"+uuid.NewString(), "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, vw, victim)), 201)
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, mw, attacker)), 201)
	c.want(c.do("POST", "/products/"+sku+"/stock", `{"quantity":10}`), 201)
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":100,"currency":"EUR"}`), 201)
	v, m := c.customer(victim), c.customer(attacker)
	c.want(c.do("POST", "/wallets/"+vw+"/top-ups", `{"amount":5000,"reason":"test"}`, "Idempotency-Key", "top-up-1"), 201)
	order := func(customer, wallet string) string {
		return fmt.Sprintf(`{"customer_id":%q,"wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1,"unit_price":100}],"shipping_address":%s}`,
			customer, wallet, sku, address)
	}
	placed := v.want(v.do("POST", "/orders", order(victim, vw), "Idempotency-Key", "order-1"), 201)
	orderID := placed.body["stream_id"].(string)

	hostile := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"authorise a hold on the victim's wallet", "POST", "/commands", fmt.Sprintf(`{"type":"AuthoriseHold","payload":{"wallet_id":%q,"order_id":"evil","amount":2500,"currency":"EUR"}}`, vw), 403, "forbidden"},
		{"capture", "POST", "/commands", fmt.Sprintf(`{"type":"CaptureHold","payload":{"wallet_id":%q,"order_id":%q,"amount":100}}`, vw, orderID), 403, "forbidden"},
		{"refund", "POST", "/commands", fmt.Sprintf(`{"type":"RefundCapture","payload":{"wallet_id":%q,"order_id":%q,"amount":100}}`, mw, orderID), 403, "forbidden"},
		{"confirm an order", "POST", "/commands", fmt.Sprintf(`{"type":"ConfirmOrder","payload":{"order_id":%q}}`, orderID), 422, "validation_failed"},
		{"release an order's stock", "POST", "/commands", fmt.Sprintf(`{"type":"ReleaseStock","payload":{"sku":"s1","order_id":%q}}`, orderID), 403, "forbidden"},
		{"receive stock", "POST", "/products/" + sku + "/stock", `{"quantity":1000}`, 403, "forbidden"},
		{"price a product", "PUT", "/products/" + sku + "/price", `{"unit_price":1,"currency":"EUR"}`, 403, "forbidden"},
		{"open a wallet", "POST", "/wallets", fmt.Sprintf(`{"wallet_id":"w-x-%s","customer_id":%q,"currency":"EUR"}`, attacker, attacker), 403, "forbidden"},
		{"an order for the victim", "POST", "/orders", order(victim, vw), 403, "forbidden"},
		{"an order on the victim's wallet", "POST", "/orders", order(attacker, vw), 404, "wallet_not_found"},
		{"top up the victim's wallet", "POST", "/wallets/" + vw + "/top-ups", `{"amount":1,"reason":"test"}`, 403, "forbidden"},
		{"top up its own wallet", "POST", "/wallets/" + mw + "/top-ups", `{"amount":1,"reason":"test"}`, 403, "forbidden"},
		{"top up through /commands", "POST", "/commands", fmt.Sprintf(`{"type":"TopUpWallet","payload":{"wallet_id":%q,"amount":1,"reason":"x"}}`, mw), 403, "forbidden"},
		// A payment has its own route, which asks the provider (payments_test.go).
		{"a payment into the victim's wallet through /commands", "POST", "/commands", fmt.Sprintf(`{"type":"RequestPayment","payload":{"customer_id":%q,"wallet_id":%q,"amount":1}}`, attacker, vw), 422, "validation_failed"},
		{"a payment for the victim through /commands", "POST", "/commands", fmt.Sprintf(`{"type":"RequestPayment","payload":{"customer_id":%q,"wallet_id":%q,"amount":1}}`, victim, vw), 422, "validation_failed"},
		{"cancel the victim's order", "POST", "/orders/" + orderID + "/cancel", `{"reason":"mine now"}`, 404, "order_not_found"},
		{"cancel through /commands", "POST", "/commands", fmt.Sprintf(`{"type":"CancelOrder","payload":{"order_id":%q,"reason":"x"}}`, orderID), 404, "order_not_found"},
		{"read the victim's order", "GET", "/orders/" + orderID, "", 404, "not_found"},
		{"read the victim's timeline", "GET", "/orders/" + orderID + "/timeline", "", 404, "order_not_found"},
		{"read the victim's wallet", "GET", "/wallets/" + vw, "", 404, "not_found"},
		{"read the victim's command by its key", "GET", "/commands/order-1", "", 404, "not_found"},
		{"read the victim's command by its id", "GET", "/commands/" + placed.body["command_id"].(string), "", 404, "not_found"},
		{"forget the victim", "DELETE", "/customers/" + victim + "/personal-data", "", 404, "customer_not_found"},
		{"the global event log", "GET", "/events", "", 403, "forbidden"},
		{"a stream", "GET", "/streams/wallet/" + vw, "", 403, "forbidden"},
		{"the poison topic", "GET", "/poison", "", 403, "forbidden"},
	}
	for _, h := range hostile {
		ev, cmd := writes(t, pool)
		r := m.do(h.method, h.path, h.body)
		if r.status != h.status || r.body["code"] != h.code {
			t.Errorf("%s: %d %s, want %d %s", h.name, r.status, r.raw, h.status, h.code)
		}
		if ev2, cmd2 := writes(t, pool); ev2 != ev || cmd2 != cmd {
			t.Errorf("%s: refused, but wrote %d events and %d commands", h.name, ev2-ev, cmd2-cmd)
		}
	}

	// Lists are the customer's own.
	list := m.want(m.do("GET", "/orders?customer_id="+victim, ""), 200)
	if n := len(list.body["orders"].([]any)); n != 0 {
		t.Fatalf("the attacker listed %d of the victim's orders", n)
	}
	cmds := m.want(m.do("GET", "/commands", ""), 200)
	for _, x := range cmds.body["commands"].([]any) {
		if x.(map[string]any)["actor"] != attacker {
			t.Fatalf("the attacker read another's command: %v", x)
		}
	}
	// The victim sees its own, with its address in clear.
	got := v.want(v.do("GET", fmt.Sprintf("/orders/%s?min_position=%v", orderID, placed.body["global_position"]), ""), 200)
	if addr := got.body["shipping_address"].(map[string]any); addr["line1"] != "1 Main St" {
		t.Fatalf("the customer's own order: %s", got.raw)
	}
	v.want(v.do("GET", "/commands/order-1", ""), 200)
}

// An idempotency key belongs to the principal that sent it: another client
// using the same key gets its own command, never the first one's result
// nor a 422.
func TestIdempotencyKeysAreScopedToThePrincipal(t *testing.T) {
	c := newAPI(t)
	a, b := "c-"+uuid.NewString(), "c-"+uuid.NewString()
	wa, wb := "w-"+uuid.NewString(), "w-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, wa, a)), 201)
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, wb, b)), 201)
	// Two principals (operators: customers no longer top up).
	ca, cb := c.as(auth.Principal{Subject: "ops-" + a, Role: auth.Operator}), c.as(auth.Principal{Subject: "ops-" + b, Role: auth.Operator})
	first := ca.want(ca.do("POST", "/wallets/"+wa+"/top-ups", `{"amount":10,"reason":"test"}`, "Idempotency-Key", "shared-key"), 201)
	second := cb.want(cb.do("POST", "/wallets/"+wb+"/top-ups", `{"amount":20,"reason":"test"}`, "Idempotency-Key", "shared-key"), 201)
	if first.body["command_id"] == second.body["command_id"] || second.body["stream_id"] != wb {
		t.Fatalf("first %s second %s", first.raw, second.raw)
	}
	again := ca.want(ca.do("POST", "/wallets/"+wa+"/top-ups", `{"amount":10,"reason":"test"}`, "Idempotency-Key", "shared-key"), 200)
	if again.body["command_id"] != first.body["command_id"] {
		t.Fatalf("replay %s", again.raw)
	}
}

// The actor is the token's subject: a customer's X-Actor is ignored; an
// operator's is recorded as whom it acted for, beside the operator.
func TestTheActorIsTheAuthenticatedSubject(t *testing.T) {
	c := newAPI(t)
	cust, w, sku := "c-"+uuid.NewString(), "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	c.want(c.do("POST", "/products/"+sku+"/stock", `{"quantity":10}`), 201)
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":100,"currency":"EUR"}`), 201)
	r := c.customer(cust).want(c.customer(cust).do("POST", "/commands", fmt.Sprintf(`{"type":"PlaceOrder","payload":{"customer_id":%q,"wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1}],"shipping_address":%s}}`,
		cust, w, sku, address), "X-Actor", "ops-ceo"), 201)
	md, _ := r.body["metadata"].(map[string]any)
	if r.body["actor"] != cust || md["on_behalf_of"] != nil {
		t.Fatalf("customer's command: %s", r.raw)
	}
	r = c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10,"reason":"test"}`, "X-Actor", cust), 201)
	md, _ = r.body["metadata"].(map[string]any)
	if r.body["actor"] != operator.Subject || md["on_behalf_of"] != cust {
		t.Fatalf("operator's command: %s", r.raw)
	}
	ev := c.want(c.do("GET", "/events/"+r.body["event_ids"].([]any)[0].(string), ""), 200)
	if ev.body["actor"] != operator.Subject || ev.body["on_behalf_of"] != cust || ev.body["customer_id"] != cust {
		t.Fatalf("event %s", ev.raw)
	}
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1,"reason":"test"}`, "X-Correlation-ID", strings.Repeat("x", 4096)), 400)
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1,"reason":"test"}`, "X-Actor", "bad\xffactor"), 400)
}

// Each principal has its budget: beyond it, 429 with Retry-After, for that
// principal only; live streams are capped per principal.
func TestRateLimitsAndStreamCapsArePerPrincipal(t *testing.T) {
	c := newAPIWith(t, httpapi.Config{Limits: httpapi.Limits{CustomerRate: 0.5, CustomerBurst: 3, Streams: 1}})
	a, b := c.customer("c-"+uuid.NewString()), c.customer("c-"+uuid.NewString())
	for range 3 {
		a.want(a.do("GET", "/orders", ""), 200)
	}
	r := a.want(a.do("GET", "/orders", ""), 429)
	if r.header.Get("Retry-After") != "2" || r.body["code"] != "rate_limited" {
		t.Fatalf("%v %s", r.header, r.raw)
	}
	b.want(b.do("GET", "/orders", ""), 200)

	ops := c
	first := ops.sse("/events/updates", "")
	defer first.close()
	ops.want(ops.do("GET", "/commands/updates", ""), 429)
}

// Operators suspend and reinstate a wallet: a suspended wallet refuses
// top-ups (and holds), shows as suspended, and a customer cannot suspend.
func TestAnOperatorSuspendsAndReinstatesAWallet(t *testing.T) {
	runProjector(t)
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second})
	cust, w := "c-"+uuid.NewString(), "w-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR"}`, w, cust)), 201)
	cc := c.customer(cust)
	cc.want(cc.do("POST", "/commands", fmt.Sprintf(`{"type":"SuspendWallet","payload":{"wallet_id":%q,"reason":"me"}}`, w)), 403)
	s := c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"SuspendWallet","payload":{"wallet_id":%q,"reason":"chargeback"}}`, w)), 201)
	if s.body["payload"].(map[string]any)["operator"] != operator.Subject {
		t.Fatalf("the operator is the token's subject: %s", s.raw)
	}
	r := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10,"reason":"test"}`), 409)
	if r.body["code"] != "wallet_suspended" {
		t.Fatal(r.raw)
	}
	got := cc.want(cc.do("GET", fmt.Sprintf("/wallets/%s?min_position=%v", w, s.body["global_position"]), ""), 200)
	if got.body["status"] != "suspended" || got.body["suspended_reason"] != "chargeback" {
		t.Fatal(got.raw)
	}
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"ReinstateWallet","payload":{"wallet_id":%q,"reason":"resolved"}}`, w)), 201)
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":10,"reason":"test"}`), 201)
}

// Personal fields never reach the database in clear, and forgetting the
// customer erases them everywhere the API shows them.
func TestPersonalDataIsSealedAndForgotten(t *testing.T) {
	runProjector(t)
	c := newAPIWith(t, httpapi.Config{ConsistencyTimeout: 30 * time.Second})
	pool := pgtest.Pool(t)
	cust, w, sku := "c-"+uuid.NewString(), "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	secret := "Rue Secrète " + uuid.NewString()[:8]
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":%q,"currency":"EUR","name":"Ada's wallet"}`, w, cust)), 201)
	c.want(c.do("POST", "/products/"+sku+"/stock", `{"quantity":10}`), 201)
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":100,"currency":"EUR"}`), 201)
	cc := c.customer(cust)
	placed := cc.want(cc.do("POST", "/orders", fmt.Sprintf(`{"customer_id":%q,"wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1,"unit_price":100}],
		"shipping_address":{"name":"Ada Lovelace","line1":%q,"city":"Paris","postal_code":"75001","country":"FR"}}`, cust, w, sku, secret)), 201)
	if addr := placed.body["payload"].(map[string]any)["shipping_address"].(map[string]any); addr["line1"] != secret {
		t.Fatalf("the customer sees its own address: %s", placed.raw)
	}
	id, pos := placed.body["stream_id"].(string), placed.body["global_position"]
	cc.want(cc.do("GET", fmt.Sprintf("/orders/%s?min_position=%v", id, pos), ""), 200)
	if n := cleartext(t, pool, secret, "Ada Lovelace", "Ada's wallet"); n != "" {
		t.Fatalf("cleartext personal data in %s", n)
	}
	r := cc.want(cc.do("DELETE", "/customers/"+cust+"/personal-data", ""), 200)
	if r.body["key_destroyed"] != true {
		t.Fatal(r.raw)
	}
	for _, get := range []response{
		cc.want(cc.do("GET", "/orders/"+id, ""), 200),
		c.want(c.do("GET", "/orders/"+id, ""), 200),
	} {
		addr := get.body["shipping_address"].(map[string]any)
		if addr["line1"] != "[erased]" || addr["name"] != "[erased]" || addr["country"] != "FR" {
			t.Fatalf("after forgetting: %s", get.raw)
		}
	}
	cmd := c.want(c.do("GET", "/commands/"+placed.body["command_id"].(string), ""), 200)
	if !strings.Contains(cmd.raw, `"line1":"[erased]"`) || strings.Contains(cmd.raw, secret) {
		t.Fatalf("the command log after forgetting: %s", cmd.raw)
	}
	wallet := c.want(c.do("GET", "/wallets/"+w, ""), 200)
	if wallet.body["name"] != "[erased]" {
		t.Fatal(wallet.raw)
	}
	// The stream still replays: the aggregate's state is rebuilt from sealed events.
	c.want(c.do("GET", "/streams/order/"+id, ""), 200)
}

func cleartext(t *testing.T, pool *pgxpool.Pool, texts ...string) string {
	t.Helper()
	where, err := pgtest.Cleartext(context.Background(), pool, texts...)
	if err != nil {
		t.Fatal(err)
	}
	return where
}

// X-Forwarded-For and X-Real-IP name the client only when the direct peer
// is a configured proxy: from any other peer (here loopback, which echo
// trusts by default) a spoofed address per request changes nothing, and
// the requests without a valid token still run out of their budget.
func TestSpoofedForwardingHeadersChangeNothing(t *testing.T) {
	limits := httpapi.Limits{CustomerRate: 0.01, CustomerBurst: 3}
	spoof := func(c client, i int) response {
		return c.do("GET", "/orders", "", "Authorization", "Bearer not-a-token",
			"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i), "X-Real-IP", fmt.Sprintf("203.0.113.%d", i))
	}
	untrusted := newAPIWith(t, httpapi.Config{Limits: limits})
	for i := range 3 {
		untrusted.want(spoof(untrusted, i), 401)
	}
	for i := 3; i < 20; i++ {
		untrusted.want(spoof(untrusted, i), 429)
	}
	// Behind a configured proxy the header names the client: one budget each.
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	proxied := newAPIWith(t, httpapi.Config{Limits: limits, TrustedProxies: []*net.IPNet{loopback}})
	for i := range 20 {
		proxied.want(spoof(proxied, i), 401)
	}
	for range 3 {
		proxied.want(proxied.do("GET", "/orders", "", "Authorization", "Bearer x", "X-Real-IP", "203.0.113.7"), 401)
	}
	proxied.want(proxied.do("GET", "/orders", "", "Authorization", "Bearer x", "X-Real-IP", "203.0.113.7"), 429)
}

// A verifier refuses to start with HMAC, none or any algorithm that is not
// a public-key signature, whatever its key source (a JWKS may publish an
// HMAC key), so no configuration accepts a token anyone holding the
// verification key could sign.
func TestAVerifierRefusesHMACAndNoneWhateverTheKeySource(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for _, alg := range []string{"HS256", "HS384", "HS512", "none", "None", "hs256", "RS1"} {
		for source, cfg := range map[string]auth.VerifierConfig{
			"public key": {PublicKey: pub},
			"JWKS":       {JWKSURL: "http://127.0.0.1:1/jwks.json"}, // never fetched: refused first
		} {
			cfg.Issuer, cfg.Audience, cfg.Algorithm = "iss", "aud", alg
			if _, err := auth.NewVerifier(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("%s with a %s: %v", alg, source, err)
			}
		}
	}
	if _, err := auth.NewVerifier(context.Background(), auth.VerifierConfig{Issuer: "i", Audience: "a", Algorithm: "EdDSA", PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
}
