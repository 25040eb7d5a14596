package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Money and goods move only as the saga decides: each test here is a way
// around the saga (a route, a command through POST /commands, an
// operator's action) that once reached the same state without it.

// customerOf is the Authorization header of the wallet's customer (the
// system's wallets belong to "c-" + the wallet id).
func (s *system) customerOf(wallet string) []string {
	id := "c-" + wallet
	return []string{"Authorization", s.bearer(auth.Principal{Subject: id, Role: auth.Customer, CustomerID: id})}
}

// A customer's CancelOrder through POST /commands, while the carrier works,
// is the same cancel as POST /orders/{id}/cancel: the saga asks the carrier
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
		"lines":[{"sku":%q,"quantity":10}],
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
		return fmt.Sprintf(`{%s"customer_id":"c-%s","wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":1}],
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

// What the saga holds, only the saga moves. While the carrier works, an
// operator's commands on the order's hold, reservation and shipment are
// refused through POST /commands (409 saga_owns, naming the saga); the
// customer's cancel then compensates everything, and once the order ended
// a capture or a reservation for it is refused too (order_ended). (An
// operator's capture used to stand beside the saga: the order was cancelled
// and the customer charged.)
func TestAnOperatorsCommandsOnWhatTheSagaHoldsAreRefused(t *testing.T) {
	s := startSystem(t, 5*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 2, "75001")
	s.atCarrier(id)
	cmd := func(typ, payload string, want int, code string) {
		t.Helper()
		r := s.call("POST", "/commands", fmt.Sprintf(`{"type":%q,"payload":%s}`, typ, payload), want)
		if r["code"] != code {
			t.Fatalf("%s: %v, want code %s", typ, r, code)
		}
		if code == "saga_owns" && r["saga"] != workflows.WorkflowID(id) {
			t.Fatalf("%s: the refusal names no saga: %v", typ, r)
		}
	}
	hold := fmt.Sprintf(`{"wallet_id":%q,"order_id":%q`, wallet, id)
	stock := fmt.Sprintf(`{"sku":%q,"order_id":%q`, sku, id)
	for _, c := range []struct{ typ, payload string }{
		{"CaptureHold", hold + `,"amount":2000}`},
		{"VoidHold", hold + `}`},
		{"RefundCapture", hold + `,"amount":1}`},
		{"AuthoriseHold", hold + `,"amount":2000,"currency":"EUR"}`},
		{"CommitStock", stock + `}`},
		{"ReleaseStock", stock + `}`},
		{"ReserveStock", stock + `,"quantity":1}`},
		{"FailShipment", fmt.Sprintf(`{"shipment_id":"shp-%s","reason":"lost"}`, id)},
		{"DispatchShipment", fmt.Sprintf(`{"shipment_id":"shp-%s","carrier":"other","tracking_number":"T-1"}`, id)},
	} {
		cmd(c.typ, c.payload, 409, "saga_owns")
	}
	s.call("POST", "/orders/"+id+"/cancel", `{"reason":"changed my mind"}`, 202, s.customerOf(wallet)...)
	p := s.outcome(id)
	if p.Status != workflows.StatusCompensated {
		t.Fatalf("saga %+v", p)
	}
	cmd("CaptureHold", hold+`,"amount":2000}`, 409, "order_ended")
	cmd("AuthoriseHold", hold+`,"amount":2000,"currency":"EUR"}`, 409, "order_ended")
	cmd("ReserveStock", stock+`,"quantity":1}`, 409, "order_ended")
	cmd("CommitStock", stock+`}`, 409, "order_ended")
	// A hold for an order that does not exist is no one's.
	cmd("AuthoriseHold", fmt.Sprintf(`{"wallet_id":%q,"order_id":"o-none-%s","amount":1,"currency":"EUR"}`, wallet, uuid.NewString()[:8]), 404, "order_not_found")
	avail, onHand, reserved := s.balances(wallet, sku)
	if avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("after the cancel: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
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

// The catalogue names the price, on the typed routes and POST /commands
// alike: a customer's price is never taken, a price the customer was shown
// that is no longer current is refused with the current one, an unpriced
// SKU is not for sale, only operators price, and an order keeps the price
// it was placed at when the price changes.
func TestTheCataloguePricesEveryOrder(t *testing.T) {
	s := startSystem(t, 50*time.Millisecond)
	wallet, sku := s.customer(100000, 10) // priced at 1000
	me := s.customerOf(wallet)
	body := func(sku, price string) string {
		return fmt.Sprintf(`{"customer_id":"c-%s","wallet_id":%q,"currency":"EUR","lines":[{"sku":%q,"quantity":2%s}],
			"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}`, wallet, wallet, sku, price)
	}
	before := s.latest()
	r := s.call("POST", "/orders", body(sku, `,"unit_price":1`), 409, me...)
	cur, _ := r["current_prices"].([]any)
	if r["code"] != "price_changed" || len(cur) != 1 || cur[0].(map[string]any)["unit_price"] != 1000.0 {
		t.Fatalf("an order at the customer's price: %v", r)
	}
	r = s.call("POST", "/commands", `{"type":"PlaceOrder","payload":`+body(sku, `,"unit_price":1`)+`}`, 409, me...)
	if r["code"] != "price_changed" {
		t.Fatalf("the same through POST /commands: %v", r)
	}
	unpriced := "sku-" + uuid.NewString()
	s.call("POST", "/products/"+unpriced+"/stock", `{"quantity":5}`, 201)
	if r := s.call("POST", "/orders", body(unpriced, ""), 422, me...); r["code"] != "not_for_sale" {
		t.Fatalf("an unpriced SKU: %v", r)
	}
	if n := s.eventsSince(before, "order.placed"); n != 0 {
		t.Fatalf("refused orders placed %d orders", n)
	}
	// Customers do not price.
	s.call("PUT", "/products/"+sku+"/price", `{"unit_price":1,"currency":"EUR"}`, 403, me...)
	s.call("POST", "/commands", fmt.Sprintf(`{"type":"SetPrice","payload":{"sku":%q,"unit_price":1,"currency":"EUR"}}`, sku), 403, me...)

	first := s.call("POST", "/orders", body(sku, ""), 201, me...)["stream_id"].(string)
	if p := s.outcome(first); p.Status != workflows.StatusCompleted {
		t.Fatalf("saga %+v", p)
	}
	s.call("PUT", "/products/"+sku+"/price", `{"unit_price":1500,"currency":"EUR"}`, 201)
	second := s.call("POST", "/orders", body(sku, `,"unit_price":1500`), 201, me...)["stream_id"].(string)
	s.outcome(second)
	for id, want := range map[string]float64{first: 2000, second: 3000} {
		o := s.call("GET", fmt.Sprintf("/orders/%s?min_position=%d", id, s.latest()), "", 200, me...)
		if o["total"] != want {
			t.Fatalf("order %s: total %v, want %v", id, o["total"], want)
		}
	}
	avail, _, _ := s.balances(wallet, sku)
	if avail != 100000-2000-3000 {
		t.Fatalf("the wallet paid %v, want 5000", 100000-avail)
	}
	p := s.call("GET", fmt.Sprintf("/products/%s?min_position=%d", sku, s.latest()), "", 200, me...)
	if p["unit_price"] != 1500.0 || p["currency"] != "EUR" || p["price_version"] != 2.0 {
		t.Fatalf("the product %v", p)
	}
	s.verified()
}

// eventsSince counts events of type typ after global position after.
func (s *system) eventsSince(after int64, typ string) int {
	s.t.Helper()
	var n int
	if err := s.a.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE global_position > $1 AND event_type = $2`, after, typ).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// A cancel the saga has not answered in time may still be taken: the
// answer says the outcome is unknown and where to read it, never that
// nothing was decided. (It was 503 saga_busy, "send it again".)
func TestACancelUnansweredInTimeSaysItsOutcomeIsUnknown(t *testing.T) {
	s := startSystem(t, 30*time.Second, func(c *Config) { c.CancelWait = time.Millisecond })
	wallet, sku := s.customer(10000, 5)
	id := s.order(wallet, sku, 1, "75001")
	s.atCarrier(id)
	r := s.call("POST", "/orders/"+id+"/cancel", `{"reason":"changed my mind"}`, 503, s.customerOf(wallet)...)
	if r["code"] != "outcome_unknown" || r["saga"] != "/orders/"+id+"/saga" {
		t.Fatalf("a cancel unanswered in time: %v", r)
	}
	s.outcome(id)
	s.verified()
}

// Version 6 before the carrier, from real runs: the steps before the
// carrier are held up (the order's reservation waits on a lock the test
// holds), a customer's cancel — or Temporal's cancel of the workflow —
// arrives meanwhile, and the saga asks the carrier to withdraw before it
// undoes anything. Their histories are recorded for the replay test
// (ORDERFLOW_RECORD_HISTORIES=1), so a change to these paths without a new
// version fails it.
func TestACancelBeforeTheCarrierAsksTheCarrierFirst(t *testing.T) {
	for _, c := range []struct {
		name   string
		cancel func(s *system, id, wallet string)
		reason string
	}{
		{"cancel-before-carrier", func(s *system, id, wallet string) {
			s.status("POST", "/orders/"+id+"/cancel", `{"reason":"changed my mind"}`, s.customerOf(wallet)...)
		}, "cancelled by the customer: changed my mind"},
		{"workflow-cancel-before-carrier", func(s *system, id, _ string) {
			if err := s.tc.CancelWorkflow(context.Background(), workflows.WorkflowID(id), ""); err != nil {
				s.t.Error(err)
			}
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startSystem(t, 30*time.Second)
			wallet, sku := s.customer(10000, 5)
			ctx := context.Background()
			tx, err := s.a.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			// The reservation's commit writes the inventory topic: held up
			// by this lock until the cancel has reached the saga. (A table
			// lock takes no transaction id: the subscribers, which read up
			// to the oldest open one, are not held back, so the saga starts.)
			if _, err := tx.Exec(ctx, `LOCK TABLE watermill_inventory_events IN EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			id := s.order(wallet, sku, 1, "75001")
			for started := false; !started; time.Sleep(50 * time.Millisecond) {
				if started, err = sagas.Started(ctx, s.a.pool, id); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second) // the saga's first task is in the steps before the carrier
			done := make(chan struct{})
			go func() { defer close(done); c.cancel(s, id, wallet) }()
			// Past the workflow task's heartbeat (80 % of its 10 s): the
			// cancel is delivered while the steps before the carrier still run.
			time.Sleep(10 * time.Second)
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			<-done
			p := s.outcome(id)
			if p.Status != workflows.StatusCompensated || p.Carrier != "withdrawn" || (c.reason != "" && p.Reason != c.reason) {
				t.Fatalf("saga %+v", p)
			}
			if avail, onHand, reserved := s.balances(wallet, sku); avail != 10000 || onHand != 5 || reserved != 0 {
				t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
			}
			writeHistory(t, s.tc, id, c.name)
			s.verified()
		})
	}
}

// An operator's compensate before the carrier, from a real run: the
// reservation's key is taken by another command (a collision, never a
// business refusal), the saga stops for an operator at reserve_stock, the
// operator compensates, and the saga asks the carrier to withdraw before
// it undoes anything. Its history is recorded for the replay test.
func TestAnOperatorsCompensateBeforeTheCarrierAsksTheCarrierFirst(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	wallet, sku := s.customer(10000, 5)
	id := "o-collide-" + uuid.NewString()[:8]
	key := activities.SagaKey(workflows.WorkflowID(id), "reserve_stock:"+sku)
	if _, err := s.a.bus.Dispatch(context.Background(), commands.Request{Internal: true, CommandID: key,
		Command: commands.ReceiveStock{SKU: "sku-elsewhere-" + id, Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	s.orderWithID(id, wallet, sku, 1, "75001")
	p := s.until(id, "stopped for an operator before the carrier", func(p workflows.Progress) bool { return p.Status == workflows.StatusNeedsAttention })
	if p.Attention.Step != "reserve_stock:"+sku || !slices.Contains(p.Attention.Options, workflows.ActionCompensate) {
		t.Fatalf("attention %+v", p.Attention)
	}
	s.call("POST", "/orders/"+id+"/saga/resolve", `{"action":"compensate","reason":"the reservation's key was taken"}`, 200)
	p = s.outcome(id)
	if p.Status != workflows.StatusCompensated || p.Carrier != "withdrawn" {
		t.Fatalf("saga %+v", p)
	}
	if avail, onHand, reserved := s.balances(wallet, sku); avail != 10000 || onHand != 5 || reserved != 0 {
		t.Fatalf("not restored: available %v on hand %v reserved %v", avail, onHand, reserved)
	}
	writeHistory(t, s.tc, id, "operator-compensate-before-carrier")
	s.verified()
}
