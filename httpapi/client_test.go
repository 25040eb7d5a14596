package httpapi_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	api "github.com/orderflow/orderflow/client"
	"github.com/orderflow/orderflow/httpapi/apitest"
)

// A Go client generated from the document works against the service: the
// answers it decodes carry what the service sent (the order's id, a
// replay's header, a refusal's code and current prices), so a body or a
// status the document declares wrongly fails here as a decoding miss.
func TestTheGeneratedClientPlacesAndIsRefusedInTypes(t *testing.T) {
	runProjector(t)
	c := newAPI(t)
	ops := apitest.NewClient(t, c.url, c.token)
	ctx := context.Background()
	w, sku := "w-"+uuid.NewString(), "sku-"+uuid.NewString()
	reason := "test funds"
	if r, err := ops.OpenWalletWithResponse(ctx, nil, api.OpenWallet{WalletId: w, CustomerId: "c1", Currency: "EUR"}); err != nil || r.JSON201 == nil {
		t.Fatalf("open: %v %s", err, r.Body)
	}
	if r, err := ops.TopUpWalletWithResponse(ctx, w, nil, api.TopUpWalletJSONRequestBody{Amount: 5000, Reason: &reason}); err != nil || r.JSON201 == nil || r.HTTPResponse.Header.Get("ETag") != `"2"` {
		t.Fatalf("top up: %v %s", err, r.Body)
	}
	if r, err := ops.SetPriceWithResponse(ctx, sku, nil, api.SetPriceJSONRequestBody{UnitPrice: 1250, Currency: "EUR"}); err != nil || r.JSON201 == nil {
		t.Fatalf("price: %v %s", err, r.Body)
	}

	order := api.PlaceOrder{CustomerId: "c1", WalletId: w, Currency: "EUR",
		Lines:           []api.OrderLine{{Sku: sku, Quantity: 2}},
		ShippingAddress: api.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}}
	key := "key-" + uuid.NewString()
	placed, err := ops.PlaceOrderWithResponse(ctx, &api.PlaceOrderParams{IdempotencyKey: &key}, order)
	if err != nil || placed.JSON201 == nil || placed.JSON201.StreamId == "" || placed.HTTPResponse.Header.Get("Location") == "" {
		t.Fatalf("place: %v %d %s", err, placed.StatusCode(), placed.Body)
	}
	again, err := ops.PlaceOrderWithResponse(ctx, &api.PlaceOrderParams{IdempotencyKey: &key}, order)
	if err != nil || again.JSON200 == nil || again.JSON200.StreamId != placed.JSON201.StreamId || again.HTTPResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %v %d %s", err, again.StatusCode(), again.Body)
	}
	got, err := ops.GetOrderWithResponse(ctx, placed.JSON201.StreamId, &api.GetOrderParams{MinPosition: placed.JSON201.GlobalPosition})
	if err != nil || got.JSON200 == nil || got.JSON200.Total != 2500 {
		t.Fatalf("read: %v %d %s", err, got.StatusCode(), got.Body)
	}

	// A price the client was shown that is no longer the catalogue's: a
	// typed 409 with the current price.
	stale := int64(1)
	order.Lines[0].UnitPrice = &stale
	refused, err := ops.PlaceOrderWithResponse(ctx, nil, order)
	if err != nil {
		t.Fatal(err)
	}
	p := refused.ApplicationproblemJSON409
	if p == nil || p.Code != "price_changed" || p.CurrentPrices == nil || len(*p.CurrentPrices) != 1 || (*p.CurrentPrices)[0].UnitPrice != 1250 {
		t.Fatalf("stale price: %d %s", refused.StatusCode(), refused.Body)
	}
}
