// Package apitest holds the service to its OpenAPI document in tests: an
// http.RoundTripper that validates every response it carries against the
// document the service embeds (httpapi.OpenAPI) and reports each mismatch
// to the test — a status the operation does not declare, a declared header
// missing or malformed, a contract header the response does not declare,
// a body that does not match its schema (a member it does not list
// included). It also records the problem codes
// it saw, so that a test binary can check which codes its tests produced.
//
// Only tests import it.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/orderflow/orderflow/client"
	"github.com/orderflow/orderflow/httpapi"
)

// contractHeaders are the response headers the document must declare
// wherever the service sends them: a response carrying one its operation
// does not declare fails.
var contractHeaders = []string{"ETag", "Location", "Idempotent-Replayed", "Retry-After", "WWW-Authenticate", "Allow", "X-Request-Id"}

var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	// unrouted answers a request no operation matches (an unknown path,
	// another method, a path the edge refuses before routing): the
	// document's x-unrouted-responses.
	unrouted *openapi3.Operation
	err      error
}

func load() error {
	spec.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
		if err == nil {
			err = doc.Validate(context.Background())
		}
		if err != nil {
			spec.err = fmt.Errorf("apitest: load the OpenAPI document: %w", err)
			return
		}
		routed := *doc
		routed.Servers = nil // route on paths alone, whatever the test server's address
		if spec.router, err = gorillamux.NewRouter(&routed); err != nil {
			spec.err = err
			return
		}
		closeSchemas(doc)
		spec.doc = doc
		spec.unrouted, spec.err = unroutedOperation(doc)
	})
	return spec.err
}

// unroutedOperation builds an operation from the document's
// x-unrouted-responses: status → name of a components/responses entry.
func unroutedOperation(doc *openapi3.T) (*openapi3.Operation, error) {
	raw, ok := doc.Extensions["x-unrouted-responses"].(map[string]any)
	if !ok {
		return nil, errors.New("apitest: the document has no x-unrouted-responses")
	}
	responses := openapi3.NewResponses()
	for status, name := range raw {
		ref, ok := doc.Components.Responses[fmt.Sprint(name)]
		if !ok {
			return nil, fmt.Errorf("apitest: x-unrouted-responses names %v, not in components/responses", name)
		}
		responses.Set(status, ref)
	}
	responses.Delete("default")
	return &openapi3.Operation{Responses: responses}, nil
}

// Transport validates every response against the document.
type Transport struct {
	// Base carries the requests (http.DefaultTransport when nil).
	Base http.RoundTripper
	// Errorf is told of each mismatch (a test's Errorf).
	Errorf func(format string, args ...any)
}

// New returns a Transport that fails tb on any mismatch.
func New(tb testing.TB) *Transport {
	return &Transport{Errorf: func(format string, args ...any) { tb.Helper(); tb.Errorf(format, args...) }}
}

// Client returns an http.Client whose every response is validated (New).
func Client(tb testing.TB) *http.Client { return &http.Client{Transport: New(tb)} }

// RoundTrip sends req and validates its response.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	res, err := base.RoundTrip(req)
	if err != nil {
		return res, err
	}
	t.Check(req, res)
	return res, nil
}

// Serve serves req with h in process (as httptest.NewRecorder does) and
// validates the response: for tests that call a handler directly.
func (t *Transport) Serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	t.Check(req, res)
	return rec
}

// Check validates res, the response to req, reporting a mismatch to
// t.Errorf. The body is read and put back (an event stream's is left
// unread: its status and headers are checked).
func (t *Transport) Check(req *http.Request, res *http.Response) {
	if err := Validate(req, res); err != nil {
		t.Errorf("%s %s answered %d, which the OpenAPI document does not describe: %v", req.Method, req.URL.Path, res.StatusCode, err)
	}
}

// Validate checks res, the response to req, against the document.
func Validate(req *http.Request, res *http.Response) error {
	if err := load(); err != nil {
		return err
	}
	if res.StatusCode == http.StatusInternalServerError {
		return errors.New("500: no test expects a fault of the service")
	}
	// HEAD is answered as GET without the body (the document declares GET).
	head := req.Method == http.MethodHead
	routeReq := req
	if head {
		routeReq = req.Clone(req.Context())
		routeReq.Method = http.MethodGet
	}
	route, params, err := spec.router.FindRoute(routeReq)
	if err != nil {
		route = &routers.Route{Spec: spec.doc, Operation: spec.unrouted, Method: req.Method, Path: req.URL.Path}
		params = nil
	}
	mediaType, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	stream := mediaType == "text/event-stream"

	var body []byte
	if !stream && !head && res.Body != nil {
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("read the body: %w", err)
		}
	}
	if mediaType == "application/problem+json" {
		var p struct {
			Code   string `json:"code"`
			Status int    `json:"status"`
		}
		if json.Unmarshal(body, &p) == nil && p.Code != "" {
			record(res.StatusCode, p.Code)
		}
		// RFC 9457: the status member, when present, is the response's.
		if p.Status != 0 && p.Status != res.StatusCode && !head {
			return fmt.Errorf("problem %s says status %d, the response is %d", p.Code, p.Status, res.StatusCode)
		}
	}

	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: routeReq, PathParams: params, Route: route},
		Status:                 res.StatusCode,
		Header:                 res.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true, // an undeclared status fails (no default response swallows it)
			ExcludeResponseBody:   stream || head,
			MultiError:            true,
		},
	}
	// Short errors: where and why, without the schema.
	in.Options.WithCustomSchemaErrorFunc(func(err *openapi3.SchemaError) string {
		return "/" + strings.Join(err.JSONPointer(), "/") + ": " + err.Reason
	})
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return err
	}
	response := route.Operation.Responses.Status(res.StatusCode).Value
	if (stream || head) && mediaType != "" && response.Content.Get(mediaType) == nil && len(response.Content) > 0 {
		return fmt.Errorf("content type %q is not declared", mediaType)
	}
	if len(response.Content) == 0 && len(bytes.TrimSpace(body)) > 0 {
		return errors.New("a body is sent, and the response declares none")
	}
	declared := map[string]bool{}
	for name := range response.Headers {
		declared[http.CanonicalHeaderKey(name)] = true
	}
	for _, name := range contractHeaders {
		if res.Header.Get(name) != "" && !declared[http.CanonicalHeaderKey(name)] {
			return fmt.Errorf("header %s is sent, and the response does not declare it", name)
		}
	}
	return nil
}

var seen struct {
	sync.Mutex
	codes map[string]bool
}

func record(status int, code string) {
	seen.Lock()
	defer seen.Unlock()
	if seen.codes == nil {
		seen.codes = map[string]bool{}
	}
	seen.codes[fmt.Sprintf("%d %s", status, code)] = true
}

// Seen returns the problems every validated response of this test binary
// carried so far, as "<status> <code>", sorted.
func Seen() []string {
	seen.Lock()
	defer seen.Unlock()
	out := make([]string, 0, len(seen.codes))
	for k := range seen.codes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SeenCodes returns the codes of Seen, without their statuses, sorted and
// unique.
func SeenCodes() []string {
	var out []string
	for _, s := range Seen() {
		_, code, _ := strings.Cut(s, " ")
		out = append(out, code)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ExercisedInCmdOrderflow are the problem codes of docs/api.md's error
// table that only cmd/orderflow's tests produce over HTTP: they need a
// real saga (Temporal) or the sagas' backlog. The http package's tests
// excuse them; cmd/orderflow's TestMain checks that its tests saw each.
var ExercisedInCmdOrderflow = []string{
	"overloaded",         // an order while the sagas' backlog is full (overload_test)
	"order_shipped",      // a cancel once the carrier has the parcel
	"order_completed",    // a cancel of an order its saga completed
	"saga_owns",          // an operator's hold, reservation or shipment command on an order its saga holds (saga_bypass_test)
	"order_ended",        // such a command once the order ended (saga_bypass_test)
	"order_id_assigned",  // a customer naming its order's id (saga_bypass_test)
	"action_not_allowed", // an operator's decision the waiting saga does not offer
}

// CheckSeen reports the codes of want that no validated response of this
// test binary carried. It checks only a run of every test (no -run, no
// -skip): a part of the tests proves nothing.
func CheckSeen(want []string) error {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f == nil || f.Value.String() != "" {
			return nil
		}
	}
	var missing []string
	for _, code := range want {
		if !slices.Contains(SeenCodes(), code) {
			missing = append(missing, code)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no test produced the problem codes %v (seen: %v)", missing, Seen())
	}
	return nil
}

// NewClient is orderflow's typed client (package client) for server,
// sending token, whose every response is validated (New): the tests send
// well-formed requests through the client Go users get.
func NewClient(tb testing.TB, server, token string) *client.ClientWithResponses {
	c, err := client.New(server, token, client.WithHTTPClient(Client(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// closeSchemas makes every object schema of the loaded document refuse
// members it does not list (additionalProperties: false where the document
// says nothing), so that a field the service sends and the document does
// not declare fails the test as an undeclared status or header does: a
// generated client would silently drop it. Schemas that are parts of an
// allOf stay open (closed, each would refuse the other parts' members),
// and so do those that say additionalProperties themselves (Document,
// metadata, Readiness' checks). Only this validator's copy is changed.
func closeSchemas(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	inAllOf := map[*openapi3.Schema]bool{}
	var walk func(s *openapi3.Schema)
	walk = func(s *openapi3.Schema) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		for _, r := range s.AllOf {
			inAllOf[r.Value] = true
		}
		for _, r := range s.Properties {
			walk(r.Value)
		}
		if s.Items != nil {
			walk(s.Items.Value)
		}
		for _, l := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
			for _, r := range l {
				walk(r.Value)
			}
		}
		if s.AdditionalProperties.Schema != nil {
			walk(s.AdditionalProperties.Schema.Value)
		}
	}
	for _, r := range doc.Components.Schemas {
		walk(r.Value)
	}
	for _, r := range doc.Components.Responses {
		for _, m := range r.Value.Content {
			if m.Schema != nil {
				walk(m.Schema.Value)
			}
		}
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, r := range op.Responses.Map() {
				if r.Value == nil {
					continue
				}
				for _, m := range r.Value.Content {
					if m.Schema != nil {
						walk(m.Schema.Value)
					}
				}
			}
		}
	}
	f := false
	for s := range seen {
		if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil && !inAllOf[s] {
			s.AdditionalProperties.Has = &f
		}
	}
}
