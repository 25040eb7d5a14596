// Command client places one order through orderflow's typed Go client
// (package client, generated from the OpenAPI document) and follows it
// until its saga ends:
//
//	TOKEN=$(orderflow token -role customer -customer c1 | tail -1)
//	go run ./examples/client -token "$TOKEN" -customer c1 -wallet w1 -sku sku-1
//
// The wallet and the SKU must exist (see the README's "Try it").
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/orderflow/orderflow/client"
)

func main() {
	url := flag.String("url", "http://localhost:8080", "orderflow's API")
	token := flag.String("token", "", "a customer's bearer token")
	customer := flag.String("customer", "c1", "the customer the token is for")
	wallet := flag.String("wallet", "w1", "the customer's wallet")
	sku := flag.String("sku", "sku-1", "the SKU to order")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	api, err := client.New(*url, *token)
	if err != nil {
		log.Fatal(err)
	}
	placed, err := api.PlaceOrderWithResponse(ctx, nil, client.PlaceOrder{
		CustomerId: *customer, WalletId: *wallet, Currency: "EUR",
		Lines:           []client.OrderLine{{Sku: *sku, Quantity: 1}},
		ShippingAddress: client.Address{Name: "Ada", Line1: "1 rue de la Paix", City: "Paris", PostalCode: "75002", Country: "FR"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if placed.JSON201 == nil { // a refusal is an RFC 9457 problem with a code
		log.Fatalf("order refused: %d %s", placed.StatusCode(), placed.Body)
	}
	orderID := placed.JSON201.StreamId
	fmt.Println("placed", orderID)

	for {
		saga, err := api.GetOrderSagaWithResponse(ctx, orderID)
		if err != nil {
			log.Fatal(err)
		}
		if p := saga.JSON200; p != nil {
			fmt.Println("saga:", p.Progress.Status, p.Progress.Step)
			switch p.Progress.Status {
			case "COMPLETED", "COMPENSATED", "WRITTEN_OFF", "NEEDS_ATTENTION":
				return
			}
		} else if saga.StatusCode() != http.StatusNotFound { // 404 until the saga has started
			log.Fatalf("saga: %d %s", saga.StatusCode(), saga.Body)
		}
		select {
		case <-ctx.Done():
			log.Fatal("the saga did not end within a minute")
		case <-time.After(500 * time.Millisecond):
		}
	}
}
