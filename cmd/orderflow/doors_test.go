package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Money and goods move only as the saga decides: each test here is a door
// around the saga that once reached the same state by another way.

// customerOf is the Authorization header of the wallet's customer (the
// system's wallets belong to "c-" + the wallet id).
func (s *system) customerOf(wallet string) []string {
	id := "c-" + wallet
	return []string{"Authorization", s.bearer(auth.Principal{Subject: id, Role: auth.Customer, CustomerID: id})}
}

// A customer's CancelOrder through POST /commands, while the carrier works,
// is the same door as POST /orders/{id}/cancel: the saga asks the carrier
// to withdraw and compensates. (It used to cancel the order directly: the
// carrier took the parcel, the payment was captured, verify failed.)
func TestACustomersCancelThroughCommandsGoesThroughTheSaga(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	cancel := fmt.Sprintf(`{"type":"CancelOrder","payload":{"order_id":%q,"reason":"changed my mind"}}`, id)
	keyed := append(s.customerOf(wallet), "Idempotency-Key", "cancel-1")
	r := s.call("POST", "/commands", cancel, 202, keyed...)
	if r["status"] != "cancelling" {
		t.Fatalf("cancel: %v", r)
	}
	// The same cancel again under its key is the same cancel: its answer
	// again (202 while the saga runs, 200 once it cancelled), never a 409.
	if st := s.status("POST", "/commands", cancel, keyed...); st != 202 && st != 200 {
		t.Fatalf("the cancel sent again under its key: %d", st)
	}
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated || p.Carrier != "withdrawn" || p.Reason != "cancelled by the customer: changed my mind" {
		t.Fatalf("saga %+v", p)
	}
	if avail, onHand, reserved := s.balances(wallet, sku); avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	// Once the saga finished, its outcome stands: the cancel again is 200.
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"again"}`, 200, s.customerOf(wallet)...)
	// The order itself refuses a cancel that is not the saga's, whoever
	// sends it through the bus.
	_, err := s.a.bus.Dispatch(context.Background(), commands.Request{Command: commands.CancelOrder{OrderID: id, Reason: "x"},
		Principal: &auth.Principal{Subject: "ops", Role: auth.Operator}})
	var rejected *commands.RejectedError
	if !errors.As(err, &rejected) || rejected.Record.ReasonCode != "saga_decides" {
		t.Fatalf("a cancel from outside the saga, through the bus: %v", err)
	}
	s.verified()
}

// The order's other status changes are the saga's alone: no client, not
// even an operator, confirms, ships, completes or rejects an order.
func TestTheOrdersStatusChangesAreTheSagasAlone(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 1, "75001")
	for _, typ := range []string{"ConfirmOrder", "MarkOrderShipped", "CompleteOrder", "RejectOrder", "WriteOffOrder"} {
		r := s.call("POST", "/commands", fmt.Sprintf(`{"type":%q,"payload":{"order_id":%q,"shipment_id":"shp-%s","reason":"x"}}`, typ, id, id), 422)
		if r["code"] != "unknown_command_type" && r["code"] != "validation_failed" {
			t.Fatalf("%s by an operator: %v", typ, r)
		}
	}
	if p := s.outcome(id); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	s.verified()
}

// After an operator terminated the saga, a customer's cancel starts the
// repair run, which answers with its reading of the carrier: here the
// carrier withdraws, so the cancel holds and everything is given back.
func TestACancelAfterATerminateIsAnsweredByTheRepairRun(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	s.terminate(id)
	r := s.call("POST", "/orders/"+id+"/cancel", `{"reason":"too slow"}`, 202, s.customerOf(wallet)...)
	if r["status"] != "cancelling" {
		t.Fatalf("cancel: %v", r)
	}
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated || !p.Repair || p.Carrier != "withdrawn" || p.Reason != "cancelled by the customer: too slow" {
		t.Fatalf("repair run %+v", p)
	}
	if avail, onHand, reserved := s.balances(wallet, sku); avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	writeHistory(t, s.tc, id, "repair-cancelled")
	s.verified()
}

// Bulk repair finds every order whose saga ended without an outcome,
// whatever the order's status (it used to look at placed, confirmed and
// shipped orders only).
func TestBulkRepairFindsATerminatedSagaWhateverTheOrdersStatus(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 1, "75001")
	s.atCarrier(id)
	ctx := context.Background()
	s.terminate(id)
	// The order is cancelled (as a saga's compensation would) before the
	// run that would have finished it was terminated.
	if _, err := s.a.bus.Dispatch(ctx, commands.Request{Command: commands.CancelOrder{OrderID: id, Reason: "x"}, Internal: true}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		found, err := sagas.Unfinished(ctx, s.a.pool, s.tc)
		if err != nil {
			t.Fatal(err)
		}
		if slicesContainOrder(found, id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bulk repair does not list order %s (cancelled, saga terminated): %+v", id, found)
		}
	}
	if err := s.a.repair(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if p := s.outcome(id); p.Status != workflows.StatusCompensated || !p.Repair {
		t.Fatalf("repair run %+v", p)
	}
	if avail, onHand, reserved := s.balances(wallet, sku); avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	s.verified()
}

func slicesContainOrder(list []sagas.State, orderID string) bool {
	for _, st := range list {
		if st.OrderID == orderID {
			return true
		}
	}
	return false
}

// An order id too long for the ids the saga derives from it is refused
// when the order is placed; the longest one accepted is fulfilled (it used
// to be accepted, and the saga then waited for ever holding the stock).
func TestAnOrderIDThatCannotFitItsShipmentIsRefusedAtPlacement(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	wallet, sku := s.customer(10000, 10)
	r := s.call("POST", "/orders", fmt.Sprintf(`{"order_id":%q,"customer_id":"c-%s","wallet_id":%q,"currency":"EUR",
		"lines":[{"sku":%q,"quantity":10,"unit_price":1}],
		"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}`,
		strings.Repeat("x", 128), wallet, wallet, sku), 422)
	if r["code"] != "order_id_too_long" {
		t.Fatalf("a 128-character order id: %v", r)
	}
	id := s.orderWithID(strings.Repeat("y", 120), wallet, sku, 10, "75001")
	if p := s.outcome(id); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga of the longest id %+v", p)
	}
	s.verified()
}

// A customer's order id can neither block nor reveal another customer's:
// a customer cannot name an order id (the attack took, in advance, the id
// another customer's idempotency key derives — derivations are public), so
// every customer's order id is derived from its own key, and a customer
// naming one is refused before anything is logged.
func TestNoCustomerCanTakeOrProbeAnothersOrderID(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	w1, sku := s.customer(10000, 10)
	w2, _ := s.customer(10000, 1)
	body := func(wallet, orderID string) string {
		field := ""
		if orderID != "" {
			field = fmt.Sprintf(`"order_id":%q,`, orderID)
		}
		return fmt.Sprintf(`{%s"customer_id":"c-%s","wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1,"unit_price":1}],
			"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}`, field, wallet, wallet, sku)
	}
	// c1 computes the id c2's key "order-9" derives and tries to take it,
	// and to probe it with If-Match.
	c2sID := uuid.NewSHA1(uuid.MustParse("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"), []byte(commands.ScopedID("c-"+w2, "order-9"))).String()
	for _, headers := range [][]string{s.customerOf(w1), append(s.customerOf(w1), "If-Match", `"9"`)} {
		if r := s.call("POST", "/orders", body(w1, c2sID), 422, headers...); r["code"] != "order_id_assigned" {
			t.Fatalf("a customer naming an order id: %v", r)
		}
	}
	before := s.latest()
	// c2's order under its key gets that id, the same on a retry, and its
	// timeline starts with c2's placement.
	first := s.call("POST", "/orders", body(w2, ""), 201, append(s.customerOf(w2), "Idempotency-Key", "order-9")...)
	again := s.call("POST", "/orders", body(w2, ""), 200, append(s.customerOf(w2), "Idempotency-Key", "order-9")...)
	if first["stream_id"] != c2sID || again["stream_id"] != c2sID {
		t.Fatalf("c2's order %v, its retry %v, want %s", first["stream_id"], again["stream_id"], c2sID)
	}
	tl := s.call("GET", fmt.Sprintf("/orders/%s/timeline?min_position=%d", c2sID, before+1), "", 200, s.customerOf(w2)...)
	if e := tl["entries"].([]any)[0].(map[string]any); e["type"] != "PlaceOrder" || e["actor"] != "c-"+w2 {
		t.Fatalf("the first entry of c2's timeline: %v", e)
	}
	s.outcome(c2sID)
	s.verified()
}

// An operator's retry after a refused step is a new attempt: the hold was
// voided while the carrier worked, the capture is refused, the operator
// authorises the payment again and retries — and the saga completes (the
// same key used to replay the refusal for ever). Both attempts stay in the
// order's timeline.
func TestARetryAfterAReauthorisationCompletesTheSaga(t *testing.T) {
	s := startSystem(t, 5*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	s.call("POST", "/commands", fmt.Sprintf(`{"type":"VoidHold","payload":{"wallet_id":%q,"order_id":%q}}`, wallet, id), 201)
	s.until(id, "stopped at the capture", func(p workflows.Progress) bool {
		return p.Attention != nil && p.Attention.Step == "capture_payment"
	})
	s.call("POST", "/commands", fmt.Sprintf(`{"type":"AuthoriseHold","payload":{"wallet_id":%q,"order_id":%q,"amount":2000,"currency":"EUR"}}`, wallet, id), 201)
	s.call("POST", "/orders/"+id+"/saga/resolve", `{"action":"retry","reason":"payment authorised again"}`, 200)
	p := s.outcome(id)
	if p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 8000 || onHand != 3 || reserved != 0 {
		t.Fatalf("after the retry: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	tl := s.call("GET", fmt.Sprintf("/orders/%s/timeline?limit=100&min_position=%d", id, s.latest()), "", 200)
	var captures []string
	for _, x := range tl["entries"].([]any) {
		e := x.(map[string]any)
		if e["kind"] == "command" && e["type"] == "CaptureHold" {
			captures = append(captures, fmt.Sprint(e["status"]))
		}
	}
	if strings.Join(captures, ",") != "rejected,accepted" {
		t.Fatalf("captures in the timeline: %v", captures)
	}
	writeHistory(t, s.tc, id, "retried")
	s.verified()
}

// status sends a request and returns its status alone.
func (s *system) status(method, path, body string, headers ...string) int {
	s.t.Helper()
	st, _ := s.send(method, path, body, headers...)
	return st
}

// atCarrier waits until the order's saga waits for the carrier.
func (s *system) atCarrier(orderID string) {
	s.t.Helper()
	s.until(orderID, "reached the carrier", func(p workflows.Progress) bool { return p.Step == "dispatch_shipment" })
}

// terminate ends the order's saga as an operator does from the Temporal UI.
func (s *system) terminate(orderID string) {
	s.t.Helper()
	if err := s.tc.TerminateWorkflow(context.Background(), workflows.WorkflowID(orderID), "", "operator clicked terminate"); err != nil {
		s.t.Fatal(err)
	}
}
