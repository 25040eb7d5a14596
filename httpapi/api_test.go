package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/httpapi/apitest"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/personal"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if code == 0 {
		// After every test ran: the codes they saw match docs/api.md.
		if err := checkCodesSeen(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type client struct {
	t   testing.TB
	url string
	key ed25519.PrivateKey
	// token is sent on every request that sets no Authorization itself.
	token string
	bus   *commands.Bus
	// http validates every response against the OpenAPI document.
	http *http.Client
}

// operator is the principal of the tests' requests unless they say otherwise.
var operator = auth.Principal{Subject: "ops-test", Role: auth.Operator}

// as returns a client that sends p's token.
func (c client) as(p auth.Principal) client {
	c.t.Helper()
	tok, err := auth.Issue(c.key, auth.DevIssuer, auth.DevAudience, p, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	c.token = tok
	return c
}

// customer returns a client acting as customer id.
func (c client) customer(id string) client {
	return c.as(auth.Principal{Subject: id, Role: auth.Customer, CustomerID: id})
}

func newAPI(t *testing.T) client {
	return newAPIWith(t, httpapi.Config{})
}

// newAPIWith serves the API with cfg's tuning on the package's database.
func newAPIWith(t testing.TB, cfg httpapi.Config) client {
	e, key := newServer(t, &cfg)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return client{t: t, url: srv.URL, key: key, bus: cfg.Bus, http: apitest.Client(t)}.as(operator)
}

// sagaCancels cancels an order as its saga does (these tests run no
// Temporal): the only decider that cancels an order. It answers like
// a command's response, with the position of the cancel.
func (c client) sagaCancels(orderID, reason string) response {
	c.t.Helper()
	rec, err := c.bus.Dispatch(context.Background(), commands.Request{Command: commands.CancelOrder{OrderID: orderID, Reason: reason}, Internal: true})
	if err != nil {
		c.t.Fatal(err)
	}
	return response{status: http.StatusCreated, body: map[string]any{"global_position": float64(rec.GlobalPosition)}}
}

// newServer builds the API (4 KiB bodies) with its token key; cfg.Bus is
// set to the API's bus.
func newServer(t testing.TB, cfg *httpapi.Config) (*echo.Echo, ed25519.PrivateKey) {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 100})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	cfg.Pool, cfg.Bus, cfg.Store, cfg.MaxBodyBytes = pool, bus, store, 4096
	cfg.Log = quiet
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Verifier = auth.DevVerifier(key)
	e, err := httpapi.New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, key
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// httpClient validates every response against the OpenAPI document,
// reporting to the client's test.
func (c client) httpClient() *http.Client {
	if c.http == nil {
		return apitest.Client(c.t)
	}
	return c.http
}

func (c client) do(method, path, body string, headers ...string) response {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	if res.StatusCode >= 500 && res.StatusCode != http.StatusServiceUnavailable {
		c.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, raw)
	}
	if res.StatusCode >= 400 && res.Header.Get("Content-Type") != "application/problem+json" {
		c.t.Fatalf("%s %s: error without problem+json: %s", method, path, res.Header.Get("Content-Type"))
	}
	return r
}

func (c client) want(r response, status int) response {
	c.t.Helper()
	if r.status != status {
		c.t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// events reads GET /events until it lists want events: the global log shows a
// commit only once every older transaction on the server has ended, and other
// test packages share the server.
func (c client) events(query string, want int) response {
	c.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := c.want(c.do("GET", "/events?"+query, ""), 200)
		if len(r.body["events"].([]any)) >= want || time.Now().After(deadline) {
			return r
		}
	}
}

const address = `{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}`

func orderBody(wallet, sku string, qty int) string {
	return fmt.Sprintf(`{"customer_id":"c1","wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":%d,"unit_price":1250}],"shipping_address":%s}`,
		wallet, sku, qty, address)
}

func TestPlaceAnOrderThroughTheAPI(t *testing.T) {
	c := newAPI(t)
	w, sku := "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	top := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":5000,"reason":"test"}`), 201)
	if top.body["stream_version"] != 2.0 || top.header.Get("ETag") != `"2"` {
		t.Fatalf("top-up %s", top.raw)
	}
	c.want(c.do("POST", "/products/"+sku+"/stock", `{"quantity":10}`), 201)
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":1250,"currency":"EUR"}`), 201)
	placed := c.want(c.do("POST", "/orders", orderBody(w, sku, 2)), 201)
	orderID := placed.body["stream_id"].(string)
	if placed.body["status"] != "accepted" || placed.body["global_position"].(float64) <= top.body["global_position"].(float64) ||
		len(placed.body["event_ids"].([]any)) != 1 || placed.header.Get("Location") != "/commands/"+placed.body["command_id"].(string) {
		t.Fatalf("placed %s %v", placed.raw, placed.header)
	}

	cmd := c.want(c.do("GET", placed.header.Get("Location"), ""), 200)
	events := cmd.body["events"].([]any)
	if len(events) != 1 || events[0].(map[string]any)["event_type"] != "order.placed" {
		t.Fatalf("command view %s", cmd.raw)
	}
	stream := c.want(c.do("GET", "/streams/order/"+orderID, ""), 200)
	state := stream.body["state"].(map[string]any)
	if state["status"] != "placed" || state["total"] != 2500.0 {
		t.Fatalf("stream %s", stream.raw)
	}

	// A client's cancel goes to the order's saga, by either route (POST
	// /orders/{id}/cancel or CancelOrder through POST /commands): without
	// Temporal there is none to ask, and the order is left as it is.
	for _, r := range []response{
		c.do("POST", "/orders/"+orderID+"/cancel", `{"reason":"changed my mind"}`),
		c.do("POST", "/commands", fmt.Sprintf(`{"type":"CancelOrder","payload":{"order_id":%q,"reason":"x"}}`, orderID)),
	} {
		if r.status != http.StatusServiceUnavailable || r.body["code"] != "sagas_unavailable" {
			t.Fatalf("a cancel without a saga to ask: %s", r.raw)
		}
	}
	// The saga cancels it; then read the order as it was at version 1.
	c.sagaCancels(orderID, "changed my mind")
	at1 := c.want(c.do("GET", "/streams/order/"+orderID+"?at_version=1", ""), 200)
	if at1.body["state"].(map[string]any)["status"] != "placed" {
		t.Fatalf("at version 1: %s", at1.raw)
	}
	now := c.want(c.do("GET", "/streams/order/"+orderID, ""), 200)
	if now.body["state"].(map[string]any)["status"] != "cancelled" || now.body["version"] != 2.0 {
		t.Fatalf("now: %s", now.raw)
	}
	c.want(c.do("GET", "/streams/order/"+orderID+"?at_version=9", ""), 422)
	c.want(c.do("GET", "/streams/order/nope-"+uuid.NewString(), ""), 404)

	// The event log pages in commit order and filters by stream.
	page := c.events("stream_type=order&stream_id="+orderID, 2)
	if got := page.body["events"].([]any); len(got) != 2 {
		t.Fatalf("events of the order: %s", page.raw)
	}
	first := page.body["events"].([]any)[0].(map[string]any)
	rest := c.want(c.do("GET", fmt.Sprintf("/events?stream_id=%s&after=%.0f", orderID, first["global_position"]), ""), 200)
	if got := rest.body["events"].([]any); len(got) != 1 || got[0].(map[string]any)["event_type"] != "order.cancelled" {
		t.Fatalf("after the first: %s", rest.raw)
	}
	c.want(c.do("GET", "/events/"+first["event_id"].(string), ""), 200)
	c.want(c.do("GET", "/events/"+uuid.NewString(), ""), 404)
	c.want(c.do("GET", "/events?after=999999999", ""), 404)

	list := c.want(c.do("GET", "/commands?type=PlaceOrder&status=accepted&limit=1000", ""), 200)
	found := false
	for _, r := range list.body["commands"].([]any) {
		found = found || r.(map[string]any)["stream_id"] == orderID
	}
	if !found {
		t.Fatal("the order's command is not in the command log")
	}
}

func TestIdempotencyKeyYieldsOneSetOfEvents(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	body := fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)
	key := "key-" + uuid.NewString()
	first := c.want(c.do("POST", "/wallets", body, "Idempotency-Key", key), 201)
	second := c.want(c.do("POST", "/wallets", body, "Idempotency-Key", key), 200)
	md, _ := second.body["metadata"].(map[string]any)
	if second.header.Get("Idempotent-Replayed") != "true" || second.body["command_id"] != first.body["command_id"] || md["idempotency_key"] != key ||
		fmt.Sprint(second.body["event_ids"]) != fmt.Sprint(first.body["event_ids"]) {
		t.Fatalf("first %s second %s", first.raw, second.raw)
	}
	events := c.events("stream_type=wallet&stream_id="+w, 1)
	if n := len(events.body["events"].([]any)); n != 1 {
		t.Fatalf("%d events for one command", n)
	}
	// Same key, other body: refused.
	p := c.want(c.do("POST", "/wallets", strings.Replace(body, "c1", "c2", 1), "Idempotency-Key", key), 422)
	if p.body["code"] != "idempotency_key_reused" {
		t.Fatalf("reuse: %s", p.raw)
	}
	// Without a key, the same body twice is two commands: the second is refused by the wallet.
	c.want(c.do("POST", "/wallets", body), 409)
}

func TestStaleIfMatchIsAConflict(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1,"reason":"test"}`, "If-Match", "1"), 201)
	p := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1,"reason":"test"}`, "If-Match", "1"), 409)
	if p.body["code"] != "version_conflict" || p.body["current_version"] != 2.0 {
		t.Fatalf("conflict: %s", p.raw)
	}
	c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":1,"reason":"test"}`, "If-Match", "soon"), 422)
}

// A client that retries after a lost response sends the same key with the
// same If-Match, stale by then: it gets the recorded outcome, not a conflict.
func TestARetryWithTheSameKeyAndStaleIfMatchReplays(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	key := "k-" + uuid.NewString()
	first := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":5,"reason":"test"}`, "If-Match", `"1"`, "Idempotency-Key", key), 201)
	again := c.want(c.do("POST", "/wallets/"+w+"/top-ups", `{"amount":5,"reason":"test"}`, "If-Match", `"1"`, "Idempotency-Key", key), 200)
	if again.header.Get("Idempotent-Replayed") != "true" || again.body["stream_version"] != 2.0 ||
		fmt.Sprint(again.body["event_ids"]) != fmt.Sprint(first.body["event_ids"]) {
		t.Fatalf("replay: %s (first %s)", again.raw, first.raw)
	}
	if w := c.want(c.do("GET", "/streams/wallet/"+w, ""), 200); w.body["version"] != 2.0 {
		t.Fatalf("the retry appended: %s", w.raw)
	}
}

func TestClientMistakesGetPreciseProblems(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code, field              string
	}{
		{"malformed JSON", "POST", "/wallets", `{"wallet_id": "x",`, nil, 400, "malformed_json", ""},
		{"trailing data", "POST", "/wallets", `{} {}`, nil, 400, "malformed_json", ""},
		{"deep JSON", "POST", "/wallets", strings.Repeat("[", 40) + strings.Repeat("]", 40), nil, 400, "malformed_json", ""},
		{"too large", "POST", "/wallets", `{"name":"` + strings.Repeat("x", 5000) + `"}`, nil, 413, "body_too_large", ""},
		{"not JSON", "POST", "/wallets", `wallet_id=x`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type", ""},
		{"missing field", "POST", "/wallets", `{"wallet_id":"w2","customer_id":"c1"}`, nil, 422, "validation_failed", "currency"},
		{"bad currency", "POST", "/wallets", `{"wallet_id":"w2","customer_id":"c1","currency":"euro"}`, nil, 422, "validation_failed", "currency"},
		{"negative amount", "POST", "/wallets/" + w + "/top-ups", `{"amount":-5,"reason":"test"}`, nil, 422, "validation_failed", "amount"},
		{"bad id in path", "POST", "/wallets/not%20an%20id/top-ups", `{"amount":5,"reason":"test"}`, nil, 422, "validation_failed", "path.id"},
		{"zero quantity line", "POST", "/orders", orderBody(w, "s", 0), nil, 422, "validation_failed", "lines.0.quantity"},
		{"currency mismatch", "POST", "/wallets/" + w + "/top-ups", `{"amount":5,"currency":"USD","reason":"test"}`, nil, 422, "currency_mismatch", ""},
		{"unknown wallet", "POST", "/wallets/nobody-" + uuid.NewString() + "/top-ups", `{"amount":5,"reason":"test"}`, nil, 404, "wallet_not_found", ""},
		{"wallet exists", "POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w), nil, 409, "wallet_exists", ""},
		{"cancel unknown order", "POST", "/orders/o-" + uuid.NewString() + "/cancel", `{"reason":"x"}`, nil, 404, "order_not_found", ""},
		{"unknown command type", "POST", "/commands", `{"type":"Explode","payload":{}}`, nil, 422, "validation_failed", "type"},
		{"command payload schema", "POST", "/commands", `{"type":"TopUpWallet","payload":{"wallet_id":"w","amount":0,"reason":"test"}}`, nil, 422, "validation_failed", "payload.amount"},
		{"unknown command", "GET", "/commands/nope", "", nil, 404, "not_found", ""},
		{"bad limit", "GET", "/events?limit=0", "", nil, 422, "validation_failed", "query.limit"},
		{"unknown route", "GET", "/nope", "", nil, 404, "http_404", ""},
		{"poison replay as documented, without a body", "POST", "/poison/999999999/replay", "", nil, 404, "not_found", ""},
		{"saga key", "POST", "/wallets/" + w + "/top-ups", `{"amount":5,"reason":"test"}`, []string{"Idempotency-Key", "saga:order-fulfilment:o-evil.capture_payment"},
			422, "idempotency_key_reserved", ""},
		{"NUL in a reason", "POST", "/orders/o-1/cancel", `{"reason":"x\u0000"}`, nil, 422, "invalid_text", ""},
		{"NUL in a key", "POST", "/wallets", `{"wallet_id\u0000":"w"}`, nil, 422, "invalid_text", ""},
		{"invalid UTF-8", "POST", "/orders/o-1/cancel", "{\"reason\":\"x\xff\"}", nil, 422, "invalid_text", ""},
		{"reason too long", "POST", "/orders/o-1/cancel", `{"reason":"` + strings.Repeat("é", 501) + `"}`, nil, 422, "validation_failed", "reason"},
		{"null body", "POST", "/wallets/" + w + "/top-ups", `null`, nil, 422, "validation_failed", ""},
		{"null command", "POST", "/commands", `null`, nil, 422, "validation_failed", ""},
		{"internal command", "POST", "/commands", `{"type":"WriteOffOrder","payload":{"order_id":"o-1","reason":"x"}}`, nil, 422, "validation_failed", "type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := client{t: t, url: c.url, key: c.key, token: c.token}
			p := c.want(c.do(tc.method, tc.path, tc.body, tc.headers...), tc.status)
			if detail, _ := p.body["detail"].(string); p.body["code"] != tc.code || detail == "" {
				t.Fatalf("problem %s", p.raw)
			}
			if tc.field != "" {
				errs, _ := p.body["errors"].([]any)
				found := false
				for _, e := range errs {
					found = found || strings.HasPrefix(e.(map[string]any)["field"].(string), tc.field)
				}
				if !found {
					t.Fatalf("no error names %q: %s", tc.field, p.raw)
				}
			}
		})
	}
}

func TestCommandsEndpointRunsAnyCommand(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"OpenWallet","payload":{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}}`, w)), 201)
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"TopUpWallet","payload":{"wallet_id":%q,"amount":100,"reason":"test"}}`, w)), 201)
	c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"SuspendWallet","payload":{"wallet_id":%q,"reason":"fraud"}}`, w)), 201)
	p := c.want(c.do("POST", "/commands", fmt.Sprintf(`{"type":"SuspendWallet","payload":{"wallet_id":%q,"reason":"fraud"}}`, w)), 409)
	if p.body["code"] != "wallet_suspended" || p.body["command_id"] == nil {
		t.Fatalf("rejection: %s", p.raw)
	}
	rejected := c.want(c.do("GET", "/commands/"+p.body["command_id"].(string), ""), 200)
	if rejected.body["status"] != "rejected" || rejected.body["reason_code"] != "wallet_suspended" {
		t.Fatalf("logged rejection: %s", rejected.raw)
	}
}

func TestHealthAndDocs(t *testing.T) {
	c := newAPI(t)
	c.want(c.do("GET", "/healthz", ""), 200)
	spec := c.want(c.do("GET", "/openapi.json", ""), 200)
	if spec.body["openapi"] != "3.0.3" {
		t.Fatalf("spec: %.200s", spec.raw)
	}
	docs := c.want(c.do("GET", "/docs", ""), 200)
	if !bytes.Contains([]byte(docs.raw), []byte("/openapi.json")) {
		t.Fatal("docs page does not load the spec")
	}
	c.want(c.do("GET", "/docs/swagger-ui-bundle.js", ""), 200)
}

// /readyz names what is not ready; /healthz only says the process answers.
func TestReadinessNamesTheFailingCheck(t *testing.T) {
	projector := errors.New("the projector is not running")
	c := newAPIWith(t, httpapi.Config{Ready: func() map[string]func(context.Context) error {
		return map[string]func(context.Context) error{"projector": func(context.Context) error { return projector }}
	}})
	r := c.want(c.do("GET", "/readyz", ""), 503)
	if r.body["code"] != "not_ready" || !strings.Contains(r.body["detail"].(string), "projector") || r.header.Get("Retry-After") == "" {
		t.Fatal(r.raw)
	}
	c.want(c.do("GET", "/healthz", ""), 200)
	projector = nil
	r = c.want(c.do("GET", "/readyz", ""), 200)
	if checks := r.body["checks"].(map[string]any); checks["database"] != "ok" || checks["projector"] != "ok" {
		t.Fatal(r.raw)
	}
}

// Once a command has committed, no answer says "retry": here the keys that
// open the order's address cannot be read after the commit (the API's pool
// is gone), and the answer is still the order's 201, its address withheld.
// (It was 503 database_unavailable, and a keyless client placed the order
// a second time.)
func TestACommittedOrderIsAnsweredThoughItsReplyCannotBeOpened(t *testing.T) {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	gone, err := pgxpool.New(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	gone.Close() // every read of the API's own after the commit fails
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, err := httpapi.New(httpapi.Config{Pool: gone, Bus: bus, Store: store, Log: quiet, Verifier: auth.DevVerifier(key)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c := client{t: t, url: srv.URL, key: key, bus: bus, http: apitest.Client(t)}.as(operator)
	w, sku := "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	c.want(c.do("PUT", "/products/"+sku+"/price", `{"unit_price":1250,"currency":"EUR"}`), 201)
	r := c.want(c.do("POST", "/orders", orderBody(w, sku, 1)), 201)
	payload, _ := r.body["payload"].(map[string]any)
	addr, _ := payload["shipping_address"].(map[string]any)
	if addr["name"] != personal.Withheld || addr["country"] != "FR" || r.body["stream_id"] == nil {
		t.Fatalf("the answer after the commit: %s", r.raw)
	}
	var placed int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'order.placed'`, r.body["stream_id"]).Scan(&placed); err != nil || placed != 1 {
		t.Fatalf("%d orders placed (%v)", placed, err)
	}
}

// HEAD is answered wherever GET is (it was 405): the GET route's status and
// headers, no body, and the same policy.
func TestHeadIsAnsweredWhereverGetIs(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	for _, path := range []string{"/healthz", "/wallets/" + w, "/orders", "/openapi.json"} {
		r := c.do("HEAD", path, "")
		if path == "/wallets/"+w && r.status == 404 {
			continue // the read model has not caught up yet: still the GET route's answer
		}
		if r.status != 200 || r.raw != "" {
			t.Fatalf("HEAD %s: %d %q", path, r.status, r.raw)
		}
	}
	if r := c.do("HEAD", "/orders", "", "Authorization", ""); r.status != 401 || r.raw != "" {
		t.Fatalf("HEAD without a token: %d %q", r.status, r.raw)
	}
}

// Answers of a service without Temporal or a payment provider, and of a
// method a path does not serve: each as the document declares it.
func TestAnswersWithoutSagasOrProviderAreDeclared(t *testing.T) {
	c := newAPI(t)
	w := "w-" + uuid.NewString()
	c.want(c.do("POST", "/wallets", fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c1","currency":"EUR"}`, w)), 201)
	if r := c.want(c.do("PUT", "/wallets/"+w, ""), 405); r.body["code"] != "http_405" || r.header.Get("Allow") == "" {
		t.Fatalf("PUT on a wallet: %s %v", r.raw, r.header)
	}
	if r := c.want(c.do("OPTIONS", "/wallets/"+w, ""), 204); r.header.Get("Allow") == "" {
		t.Fatalf("OPTIONS on a wallet: %v", r.header)
	}
	for _, path := range []string{"/orders/o-1/saga", "/sagas?status=NEEDS_ATTENTION"} {
		if r := c.want(c.do("GET", path, ""), 404); r.body["code"] != "no_saga" {
			t.Fatalf("GET %s: %s", path, r.raw)
		}
	}
	if r := c.want(c.do("POST", "/orders/o-1/saga/resolve", `{"action":"retry","reason":"fixed"}`), 404); r.body["code"] != "no_saga" {
		t.Fatalf("resolve: %s", r.raw)
	}
	cust := c.customer("c1")
	if r := cust.want(cust.do("POST", "/wallets/"+w+"/payments", `{"amount":500}`), 503); r.body["code"] != "payments_unavailable" || r.header.Get("Retry-After") == "" {
		t.Fatalf("a payment without a provider: %s", r.raw)
	}
}
