package httpapi_test

import (
	"strings"
	"testing"

	"github.com/orderflow/orderflow/asyncapi"
)

// The event consumers' contract is public, like the OpenAPI document: the
// AsyncAPI document and its page answer without a token.
func TestAsyncAPIDocumentAndPageArePublic(t *testing.T) {
	anon := newAPI(t)
	anon.token = ""
	doc := anon.do("GET", "/asyncapi.json", "")
	if doc.status != 200 || doc.body["asyncapi"] != asyncapi.Version || !strings.HasPrefix(doc.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /asyncapi.json: %d %s %.200s", doc.status, doc.header.Get("Content-Type"), doc.raw)
	}
	want, _ := asyncapi.JSON()
	if doc.raw != string(want) {
		t.Fatal("GET /asyncapi.json is not the generated document")
	}
	page := anon.do("GET", "/docs/events", "")
	if page.status != 200 || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /docs/events: %d %s", page.status, page.header.Get("Content-Type"))
	}
	for _, s := range []string{`id="order.placed"`, "watermill_order_events", "personal, sealed", `id="PlaceOrder"`, `href="/asyncapi.json"`} {
		if !strings.Contains(page.raw, s) {
			t.Errorf("the page lacks %q", s)
		}
	}
	if strings.Contains(page.raw, "<script") {
		t.Error("the page runs a script")
	}
}
