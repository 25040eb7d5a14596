package httpapi_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/httpapi/apitest"
)

// counting is a body that counts what the server reads of it: 1 MiB of
// JSON text (far past any limit here).
type counting struct{ n int64 }

func (r *counting) Read(p []byte) (int, error) {
	if r.n >= 1<<20 {
		return 0, io.EOF
	}
	p = p[:min(len(p), 1<<20-int(r.n))]
	for i := range p {
		p[i] = 'a'
	}
	if r.n == 0 && len(p) > 0 {
		p[0] = '"'
	}
	r.n += int64(len(p))
	return len(p), nil
}

// Every route of the policy, with its parameters empty and with them set,
// under an endless body (no Content-Length) and under one announced too
// large: always a 4xx, and never a byte read past the limit; a route with
// an empty parameter or an announced size above the limit reads nothing.
func TestEveryRouteRefusesEmptyParametersAndOversizedBodiesUnread(t *testing.T) {
	const limit = 4096 // newServer's
	e, key := newServer(t, &httpapi.Config{Limits: httpapi.Limits{CustomerRate: 1e6, CustomerBurst: 1e6}})
	c := client{t: t, key: key}
	tokens := map[string]string{"nobody": "", "operator": c.as(operator).token, "customer": c.customer("c-edge").token}
	empty := strings.NewReplacer(":id", "", ":sku", "", ":type", "", ":offset", "", "*", "")
	set := strings.NewReplacer(":id", "x1", ":sku", "x1", ":type", "order", ":offset", "1", "*", "swagger-ui.css")
	for _, route := range auth.Routes() {
		method, pattern, _ := strings.Cut(route, " ")
		for who, token := range tokens {
			for _, tc := range []struct {
				path      string
				announced bool
			}{{empty.Replace(pattern), false}, {set.Replace(pattern), false}, {set.Replace(pattern), true}} {
				body := &counting{}
				req := httptest.NewRequest(method, tc.path, io.NopCloser(body))
				req.ContentLength = -1
				if tc.announced {
					req.ContentLength = 10 * limit
				}
				req.Header.Set("Content-Type", "application/json")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				rec := apitest.New(t).Serve(e, req)
				if rec.Code < 400 || rec.Code >= 500 {
					t.Errorf("%s %s as %s: %d %s", method, tc.path, who, rec.Code, rec.Body)
				}
				if body.n > limit+1 {
					t.Errorf("%s %s as %s: %d bytes read, the limit is %d", method, tc.path, who, body.n, limit)
				}
				if (tc.path != set.Replace(pattern) || tc.announced) && body.n != 0 {
					t.Errorf("%s %s as %s: %d bytes read of a body refused unread (%d)", method, tc.path, who, body.n, rec.Code)
				}
			}
		}
	}
	// Empty path segments, a NUL and invalid UTF-8 in a path parameter,
	// each under a 3×limit body: refused with its code before routing.
	op := c.as(operator).token
	for path, code := range map[string]string{"/wallets//top-ups": "empty_path_segment", "/products//stock": "empty_path_segment",
		"/orders//saga/resolve": "empty_path_segment", "/orders/": "empty_path_segment", "/orders/%00": "invalid_text", "/orders/%FF/saga": "invalid_text"} {
		req := httptest.NewRequest("POST", path, strings.NewReader(strings.Repeat("x", 3*limit)))
		req.Header.Set("Authorization", "Bearer "+op)
		rec := apitest.New(t).Serve(e, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"code":"`+code+`"`) {
			t.Errorf("POST %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// Every query parameter of every operation of the OpenAPI document, as an
// operator and (on customers' routes) as a customer, with a NUL character
// or invalid UTF-8 in its value or its name: 400 invalid_text, never a 500.
func TestEveryQueryParameterRefusesNULAndInvalidUTF8(t *testing.T) {
	c := newAPIWith(t, httpapi.Config{Limits: httpapi.Limits{CustomerRate: 1e6, CustomerBurst: 1e6}})
	cust := c.customer("c-text")
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	params := strings.NewReplacer("{id}", "x1", "{sku}", "x1", "{type}", "order", "{offset}", "1")
	checked := 0
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			pattern := strings.NewReplacer("{", ":", "}", "").Replace(path)
			access := auth.RouteAccess(method, pattern)
			var names []string
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value.In == openapi3.ParameterInQuery {
					names = append(names, p.Value.Name)
				}
			}
			for _, name := range append(names, "x") {
				for _, bad := range []string{"%00", "a%00b", "%FF", "%C3%28"} {
					for _, q := range []string{name + "=" + bad, bad + "=1"} {
						target := params.Replace(path) + "?" + q
						clients := []client{c}
						if access == auth.Customers {
							clients = append(clients, cust)
						}
						for _, who := range clients {
							body := ""
							if method == "POST" {
								body = "{}"
							}
							r := who.do(method, target, body)
							if r.status != 400 || r.body["code"] != "invalid_text" {
								t.Errorf("%s %s: %d %s", method, target, r.status, r.raw)
							}
							checked++
						}
					}
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d requests", checked)
	}
	// A customer's NUL in /commands' stream_id (once a 500), and a
	// malformed query (a bad percent escape).
	cust.want(cust.do("GET", "/commands?stream_id=%00", ""), 400)
	if r := cust.do("GET", "/commands?stream_id=%zz", ""); r.status != 400 || r.body["code"] != "invalid_query" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
}

// What the edge refuses before routing is observed too, as "unmatched"
// (never the client's path as a label).
func TestRequestsRefusedBeforeRoutingAreObserved(t *testing.T) {
	var seen []string
	e, _ := newServer(t, &httpapi.Config{Observe: func(route, method string, status int, _ time.Duration) {
		seen = append(seen, fmt.Sprintf("%s %s %d", method, route, status))
	}})
	for _, path := range []string{"/wallets//top-ups", "/orders?x=%00"} {
		apitest.New(t).Serve(e, httptest.NewRequest("POST", path, nil))
	}
	if want := []string{"POST unmatched 400", "POST unmatched 400"}; !slices.Equal(seen, want) {
		t.Fatalf("observed %v, want %v", seen, want)
	}
}

// readOnce is a body that counts the bytes read of it and the reads after
// its end.
type readOnce struct {
	r          *strings.Reader
	n, pastEnd int
}

func (b *readOnce) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.n += n; err == io.EOF && n == 0 && b.r.Size() == int64(b.n) {
		b.pastEnd++
	}
	return n, err
}

// A body is read once, by checkBody, and decoded there once: validation
// and the handler take that value, and the request's body is empty after
// it, so a handler that decoded the body again would find nothing — an
// accepted command shows it did not.
func TestABodyIsReadAndDecodedOnce(t *testing.T) {
	e, key := newServer(t, &httpapi.Config{})
	token := client{t: t, key: key}.as(operator).token
	steps := []struct{ path, body string }{
		{"/wallets", `{"wallet_id":"once-w","customer_id":"bench-c","currency":"EUR"}`},
		{"/wallets/once-w/top-ups", benchTopUp},
		{"/commands", `{"type":"TopUpWallet","payload":{"wallet_id":"once-w","amount":500,"reason":"test"}}`},
	}
	for _, price := range benchPrices {
		steps = append(steps, struct{ path, body string }{"/commands", price})
	}
	steps = append(steps, struct{ path, body string }{"/orders", strings.ReplaceAll(benchOrder, "bench-w", "once-w")})
	for _, tc := range steps {
		body := &readOnce{r: strings.NewReader(tc.body)}
		req := httptest.NewRequest("POST", tc.path, io.NopCloser(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec := apitest.New(t).Serve(e, req)
		if rec.Code != 201 {
			t.Fatalf("POST %s: %d %s", tc.path, rec.Code, rec.Body)
		}
		if body.n != len(tc.body) || body.pastEnd > 1 {
			t.Fatalf("POST %s: %d bytes of %d read, %d reads at its end", tc.path, body.n, len(tc.body), body.pastEnd)
		}
	}
}
