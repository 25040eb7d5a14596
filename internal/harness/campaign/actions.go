package campaign

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// act is one action of one actor.
type act struct {
	r    *run
	name string
	rnd  *rand.Rand
	ctx  context.Context
	key  string // this action's Idempotency-Key (and prefix of its others)
	cu   *customer
}

// The doors a customer's cancel comes by.
const (
	doorRoute    = "POST /orders/{id}/cancel"
	doorCommands = "POST /commands CancelOrder"
)

func (a *act) do() {
	switch a.name {
	case "place":
		a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true)
	case "place_keyless":
		a.place(a.cu.c, "", a.order(a.cu.wallet, a.sku(), a.zip()), true)
	case "place_duplicate_key":
		a.duplicateKey()
	case "place_reused_key":
		a.reusedKey()
	case "place_colliding_key":
		a.collidingKey()
	case "place_customer_named_id":
		body := a.order(a.cu.wallet, a.sku(), a.zip())
		body["order_id"] = "o-" + a.key
		door, send := placeDoor(a.rnd, a.cu.c.At(a.api()), a.key, body)
		st, out, _ := send(a.ctx)
		a.r.answer(a.name+" "+door, st, out)
		a.expect(st, out, http.StatusUnprocessableEntity, "order_id_assigned")
	case "place_operator_long_id":
		a.operatorLongID()
	case "place_reserved_key":
		st, out, _ := a.cu.c.Post(a.ctx, "/orders", "saga:"+a.key, a.order(a.cu.wallet, a.sku(), a.zip()))
		a.r.answer(a.name, st, out)
		a.expect(st, out, http.StatusUnprocessableEntity, "idempotency_key_reserved")
	case "place_foreign_wallet":
		other := a.other()
		body := a.order(other.wallet, a.sku(), a.zip())
		st, out, _ := a.cu.c.Post(a.ctx, "/orders", a.key, body)
		a.r.answer(a.name+" own customer_id", st, out)
		a.expect(st, out, http.StatusNotFound, "wallet_not_found")
		body["customer_id"] = other.id
		st, out, _ = a.cu.c.Post(a.ctx, "/orders", a.key+"-b", body)
		a.r.answer(a.name+" other's customer_id", st, out)
		if st/100 == 2 {
			a.r.anomaly("%s: customer %s placed an order for customer %s: %d", a.name, a.cu.id, other.id, st)
		}
	case "place_out_of_stock":
		a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.r.scarce, "75001"), true)
	case "place_insufficient_funds":
		a.place(a.cu.c, a.key, a.order(a.cu.poorWallet, a.sku(), a.zip()), true)
	case "place_carrier_rejected":
		a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.r.cfg.RejectPostalCode), true)
	case "cancel_before_carrier":
		if id := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true); id != "" {
			a.cancel(a.cu.c, id, a.door(), true)
		}
	case "cancel_during_carrier":
		if id := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true); id != "" {
			a.r.awaitSaga(a.ctx, id, 30*time.Second, workflows.StatusShipping, workflows.StatusShipped, workflows.StatusCompleted)
			a.cancel(a.cu.c, id, a.door(), true)
		}
	case "cancel_after_carrier":
		if id := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true); id != "" {
			if a.r.awaitSaga(a.ctx, id, time.Minute, workflows.StatusCompleted) == workflows.StatusCompleted {
				st, out := a.cancel(a.cu.c, id, a.door(), true)
				if st/100 == 2 {
					a.r.anomaly("%s: order %s completed, then a cancel answered %d", a.name, id, st)
				}
				_ = out
			}
		}
	case "cancel_twice":
		if id := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true); id != "" {
			sleep(a.ctx, time.Duration(a.rnd.IntN(1500))*time.Millisecond)
			var wg sync.WaitGroup
			for _, door := range []string{doorRoute, doorCommands} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a.cancel(a.cu.c.At(a.api()), id, door, true)
				}()
			}
			wg.Wait()
		}
	case "cancel_foreign":
		if o, ok := a.foreignOrder(); ok {
			st, out := a.cancel(a.cu.c, o.id, a.door(), false)
			a.expect(st, out, http.StatusNotFound, "order_not_found")
		}
	case "forget_mid_saga":
		a.forget()
	case "top_up":
		// A customer tops up by paying through the (simulated) provider.
		key := a.key
		if a.rnd.IntN(2) == 0 {
			key = ""
		}
		st, out := a.retry(func() (int, map[string]any, error) {
			return a.cu.c.At(a.api()).Post(a.ctx, "/wallets/"+a.cu.wallet+"/payments", key, map[string]any{"amount": 1 + a.rnd.IntN(100_000)})
		}, key != "")
		a.r.answer(fmt.Sprintf("%s keyed=%t", a.name, key != ""), st, out)
		a.expectOK(st, out)
	case "operator_command_as_customer":
		a.sagaCommandAsCustomer()
	case "operator_on_saga_holdings":
		a.onSagaHoldings()
	case "reprice":
		sku := a.sku()
		st, out, _ := a.r.ops.At(a.api()).Send(a.ctx, http.MethodPut, "/products/"+sku+"/price", "", map[string]any{"unit_price": 100 + a.rnd.IntN(5000), "currency": "EUR"})
		a.r.answer(a.name, st, out)
		a.expectOK(st, out)
	case "place_stale_price":
		// No SKU is ever priced at 1: the order is refused, never re-priced.
		body := a.order(a.cu.wallet, a.sku(), a.zip())
		body["lines"].([]map[string]any)[0]["unit_price"] = 1
		door, send := placeDoor(a.rnd, a.cu.c.At(a.api()), a.key, body)
		st, out, _ := send(a.ctx)
		a.r.answer(a.name+" "+door, st, out)
		a.expect(st, out, http.StatusConflict, "price_changed")
	case "forged_webhook":
		a.forgedWebhook()
	case "terminate_then_repair", "terminate_then_cancel":
		a.terminate()
	}
}

// order is a PlaceOrder body of a.cu's.
func (a *act) order(wallet, sku, zip string) map[string]any {
	return map[string]any{
		"customer_id": a.cu.id, "wallet_id": wallet, "currency": "EUR",
		"lines":            []map[string]any{{"sku": sku, "quantity": 1 + a.rnd.IntN(3)}}, // priced by the catalogue
		"shipping_address": map[string]any{"name": "Campaign Customer", "line1": "1 Hostile St", "city": "Paris", "postal_code": zip, "country": "FR"},
	}
}

// amount is what the client asked for at the price it was shown, 0 when
// it left the price to the catalogue.
func amount(body map[string]any) int64 {
	var n int64
	for _, l := range body["lines"].([]map[string]any) {
		price, _ := l["unit_price"].(int)
		n += int64(l["quantity"].(int) * price)
	}
	return n
}

func (a *act) sku() string { return a.r.skus[a.rnd.IntN(len(a.r.skus))] }

// zip is where an order ships: by seed, to the carrier's fast postal code
// or (when the run has one) its slow one.
func (a *act) zip() string {
	if a.r.cfg.SlowPostalCode != "" && a.rnd.IntN(2) == 0 {
		return a.r.cfg.SlowPostalCode
	}
	return fastZip
}

func (a *act) slowZip() string {
	if a.r.cfg.SlowPostalCode != "" {
		return a.r.cfg.SlowPostalCode
	}
	return fastZip
}

// fastZip is the postal code the carrier takes at its default latency.
const fastZip = "75001"

func zipOf(body map[string]any) string {
	addr, _ := body["shipping_address"].(map[string]any)
	z, _ := addr["postal_code"].(string)
	return z
}
func (a *act) api() string  { return a.r.cfg.APIs[a.rnd.IntN(len(a.r.cfg.APIs))] }
func (a *act) door() string { return []string{doorRoute, doorCommands}[a.rnd.IntN(2)] }

func (a *act) other() *customer {
	for {
		if o := a.r.customers[a.rnd.IntN(len(a.r.customers))]; o != a.cu {
			return o
		}
	}
}

func (a *act) foreignOrder() (placed, bool) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	for range 10 {
		if len(a.r.orders) == 0 {
			return placed{}, false
		}
		if o := a.r.orders[a.rnd.IntN(len(a.r.orders))]; o.customer != a.cu {
			return o, true
		}
	}
	return placed{}, false
}

// retry sends until an answer comes that no fault explains: a keyed
// request is retried with its key, a keyless one (as a careless client
// would) without, once.
func (a *act) retry(send func() (int, map[string]any, error), keyed bool) (int, map[string]any) {
	attempts := 2
	if keyed {
		attempts = 8
	}
	var st int
	var out map[string]any
	first := ""
	if !keyed {
		// The attempts share a correlation id: the command log tells
		// afterwards whether more than one committed.
		t := trackerOf(a.ctx)
		t.setCorrelation("campaign-" + a.key)
		defer t.setCorrelation("")
	}
	for i := range attempts {
		var err error
		st, out, err = send()
		if i == 1 && !keyed {
			a.r.recordKeyless(keylessRetry{action: a.name, command: keylessCommand(a.name), correlation: "campaign-" + a.key, first: first})
		}
		if !faulty(st, err) || a.ctx.Err() != nil {
			break
		}
		if i > 0 {
			a.r.answer(a.name+" retry", st, out)
		}
		first = answerName(st, out)
		sleep(a.ctx, time.Duration(500+a.rnd.IntN(1000))*time.Millisecond)
	}
	return st, out
}

// keylessCommand is the command a keyless action sends.
func keylessCommand(action string) string {
	if action == "top_up" {
		return "TopUpWallet"
	}
	return "PlaceOrder"
}

// place places an order through a random API (retried after a fault) and
// returns its id, or "" when it was refused.
func (a *act) place(c *loadgen.Client, key string, body map[string]any, track bool) string {
	c = c.At(a.api())
	door, send := placeDoor(a.rnd, c, key, body)
	st, out := a.retry(func() (int, map[string]any, error) { return send(a.ctx) }, key != "")
	a.r.answer(a.name+" "+door, st, out)
	id, _ := out["stream_id"].(string)
	if st/100 != 2 || id == "" {
		if !faulty(st, nil) && st != http.StatusConflict && st != http.StatusUnprocessableEntity && st != http.StatusNotFound {
			a.r.anomaly("%s: POST /orders answered %d %v", a.name, st, out["code"])
		}
		return ""
	}
	if track {
		a.r.mu.Lock()
		a.r.orders = append(a.r.orders, placed{id: id, customer: a.cu, amount: amount(body), zip: zipOf(body)})
		a.r.mu.Unlock()
	}
	return id
}

// placeDoor picks the door of a PlaceOrder: POST /orders, or (one in
// four) POST /commands.
func placeDoor(rnd *rand.Rand, c *loadgen.Client, key string, body map[string]any) (string, func(context.Context) (int, map[string]any, error)) {
	if rnd.IntN(4) == 0 {
		return "POST /commands PlaceOrder", func(ctx context.Context) (int, map[string]any, error) {
			return c.Post(ctx, "/commands", key, map[string]any{"type": "PlaceOrder", "payload": body})
		}
	}
	return "POST /orders", func(ctx context.Context) (int, map[string]any, error) { return c.Post(ctx, "/orders", key, body) }
}

// cancel sends a customer's cancel by door; saga_starting is sent again
// after its Retry-After when again is set.
func (a *act) cancel(c *loadgen.Client, id, door string, again bool) (int, map[string]any) {
	send := func() (int, map[string]any, error) {
		if door == doorRoute {
			return c.Post(a.ctx, "/orders/"+id+"/cancel", "", map[string]any{"reason": "campaign: changed my mind"})
		}
		return c.Post(a.ctx, "/commands", "", map[string]any{"type": "CancelOrder", "payload": map[string]any{"order_id": id, "reason": "campaign: changed my mind"}})
	}
	st, out, err := send()
	for i := 0; again && i < 30 && a.ctx.Err() == nil; i++ {
		if code, _ := out["code"].(string); !faulty(st, err) && code != "saga_starting" {
			break
		}
		a.r.answer(a.name+" "+door+" (before a retry)", st, out)
		sleep(a.ctx, time.Second)
		st, out, err = send()
	}
	a.r.answer(a.name+" "+door, st, out)
	if again {
		code, _ := out["code"].(string)
		if st == http.StatusOK || st == http.StatusAccepted {
			code, _ = out["status"].(string)
		}
		a.r.recordCancel(cancelAnswer{action: a.name, door: door, order: id, status: st, code: code})
	}
	if again && st == http.StatusNotFound {
		a.r.anomaly("%s: %s of the customer's own order %s answered 404", a.name, door, id)
	}
	return st, out
}

// expect notes an anomaly when a definite answer is not the expected one.
func (a *act) expect(st int, out map[string]any, want int, code string) {
	if faulty(st, nil) {
		return
	}
	if got, _ := out["code"].(string); st != want || got != code {
		a.r.anomaly("%s (%s): want %d %s, got %d %s", a.name, a.cu.id, want, code, st, got)
	}
}

func (a *act) expectOK(st int, out map[string]any) {
	if !faulty(st, nil) && st/100 != 2 {
		a.r.anomaly("%s (%s): got %d %v", a.name, a.cu.id, st, out["code"])
	}
}

// duplicateKey sends the same keyed order to both APIs at once: one order.
func (a *act) duplicateKey() {
	body := a.order(a.cu.wallet, a.sku(), a.zip())
	ids := make([]string, len(a.r.cfg.APIs))
	var wg sync.WaitGroup
	for i, api := range a.r.cfg.APIs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a.cu.c.At(api)
			st, out := a.retry(func() (int, map[string]any, error) { return c.Post(a.ctx, "/orders", a.key, body) }, true)
			a.r.answer(a.name, st, out)
			ids[i], _ = out["stream_id"].(string)
		}()
	}
	wg.Wait()
	if ids[0] != "" && ids[len(ids)-1] != "" && ids[0] != ids[len(ids)-1] {
		a.r.anomaly("%s: one key, two orders: %s and %s", a.name, ids[0], ids[len(ids)-1])
	}
	if ids[0] != "" {
		a.r.mu.Lock()
		a.r.orders = append(a.r.orders, placed{id: ids[0], customer: a.cu, amount: amount(body), zip: zipOf(body)})
		a.r.mu.Unlock()
	}
}

// reusedKey: the same key with another body is refused.
func (a *act) reusedKey() {
	if a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true) == "" {
		return
	}
	st, out, _ := a.cu.c.At(a.api()).Post(a.ctx, "/orders", a.key, a.order(a.cu.wallet, a.sku(), "75002"))
	a.r.answer(a.name+" again, another body", st, out)
	a.expect(st, out, http.StatusUnprocessableEntity, "idempotency_key_reused")
}

// collidingKey: two customers use the same key; each gets its own order.
func (a *act) collidingKey() {
	first := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true)
	other := a.other()
	b := &act{r: a.r, name: a.name + " (second customer)", rnd: a.rnd, ctx: a.ctx, key: a.key, cu: other}
	second := b.place(other.c, a.key, b.order(other.wallet, b.sku(), b.zip()), true)
	if first != "" && first == second {
		a.r.anomaly("%s: customers %s and %s got the same order %s from one key", a.name, a.cu.id, other.id, first)
	}
}

// operatorLongID: an operator may name an id of 120 characters, not 121.
func (a *act) operatorLongID() {
	for _, n := range []int{120, 121} {
		body := a.order(a.cu.wallet, a.sku(), a.zip())
		id := "op-" + a.key + "-"
		body["order_id"] = id + strings.Repeat("x", n-len(id))
		st, out := a.retry(func() (int, map[string]any, error) {
			return a.r.ops.At(a.api()).Post(a.ctx, "/orders", fmt.Sprintf("%s-%d", a.key, n), body)
		}, true)
		a.r.answer(fmt.Sprintf("%s %d chars", a.name, n), st, out)
		if n == 120 {
			a.expectOK(st, out)
			if st/100 == 2 {
				a.r.mu.Lock()
				a.r.orders = append(a.r.orders, placed{id: body["order_id"].(string), customer: a.cu, amount: amount(body), zip: zipOf(body)})
				a.r.mu.Unlock()
			}
		} else {
			a.expect(st, out, http.StatusUnprocessableEntity, "order_id_too_long")
		}
	}
}

// forget: a new customer orders, then asks to be forgotten mid-saga.
func (a *act) forget() {
	cu, err := a.r.newCustomer(a.ctx, "f-"+a.key)
	if err != nil {
		a.r.answer(a.name+" set-up failed", 0, nil)
		return
	}
	b := &act{r: a.r, name: a.name, rnd: a.rnd, ctx: a.ctx, key: a.key, cu: cu}
	id := b.place(cu.c, a.key, b.order(cu.wallet, b.sku(), b.zip()), true)
	if id == "" {
		return
	}
	stages := []string{"", workflows.StatusConfirmed, workflows.StatusShipping}
	if stage := stages[a.rnd.IntN(len(stages))]; stage != "" {
		a.r.awaitSaga(a.ctx, id, 30*time.Second, stage, workflows.StatusShipping, workflows.StatusShipped, workflows.StatusCompleted)
	}
	st, out := a.retry(func() (int, map[string]any, error) {
		return cu.c.At(a.api()).Send(a.ctx, http.MethodDelete, "/customers/"+cu.id+"/personal-data", "", nil)
	}, true)
	a.r.answer(a.name+" DELETE /customers/{id}/personal-data", st, out)
	b.expectOK(st, out)
}

// sagaCommandAsCustomer: the saga's commands are not a customer's.
func (a *act) sagaCommandAsCustomer() {
	o, ok := a.ownOrder()
	if !ok {
		return
	}
	cmds := []struct {
		typ     string
		payload map[string]any
	}{
		{"VoidHold", map[string]any{"wallet_id": a.cu.wallet, "order_id": o.id}},
		{"ConfirmOrder", map[string]any{"order_id": o.id}},
		{"CaptureHold", map[string]any{"wallet_id": a.cu.wallet, "order_id": o.id, "amount": o.amount}},
		{"MarkOrderShipped", map[string]any{"order_id": o.id, "tracking_number": "FAKE"}},
		{"ReleaseStock", map[string]any{"sku": a.r.skus[0], "order_id": o.id, "quantity": 1}},
		{"WriteOffOrder", map[string]any{"order_id": o.id, "reason": "free goods"}},
	}
	cmd := cmds[a.rnd.IntN(len(cmds))]
	st, out, _ := a.cu.c.At(a.api()).Post(a.ctx, "/commands", "", map[string]any{"type": cmd.typ, "payload": cmd.payload})
	a.r.answer(a.name+" "+cmd.typ, st, out)
	// 403, or 422 for a type POST /commands does not know (WriteOffOrder).
	if !faulty(st, nil) && st != http.StatusForbidden && st != http.StatusUnprocessableEntity {
		a.r.anomaly("%s (%s): %s answered %d %v", a.name, a.cu.id, cmd.typ, st, out["code"])
	}
}

func (a *act) ownOrder() (placed, bool) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	for i := len(a.r.orders) - 1; i >= 0 && i >= len(a.r.orders)-50; i-- {
		if a.r.orders[i].customer == a.cu {
			return a.r.orders[i], true
		}
	}
	return placed{}, false
}

// onSagaHoldings: while the carrier works, an operator sends a command on
// what the order's saga holds (its hold, its stock, its shipment): refused
// (409 saga_owns) — money and goods move only as the saga decides. Once
// the order ended, a capture for a cancelled or rejected one is refused too.
func (a *act) onSagaHoldings() {
	// The slow carrier: the saga waits at SHIPPING (the fast one takes the
	// parcel within the first call, with no SHIPPING to see).
	body := a.order(a.cu.wallet, a.sku(), a.slowZip())
	sku := body["lines"].([]map[string]any)[0]["sku"]
	id := a.place(a.cu.c, a.key, body, true)
	if id == "" {
		return
	}
	if a.r.awaitSaga(a.ctx, id, 30*time.Second, workflows.StatusShipping) != workflows.StatusShipping {
		a.r.answer(a.name+" (carrier stage missed)", 0, nil)
		return
	}
	cmds := []struct {
		typ     string
		payload map[string]any
	}{
		{"CaptureHold", map[string]any{"wallet_id": a.cu.wallet, "order_id": id, "amount": 1}},
		{"VoidHold", map[string]any{"wallet_id": a.cu.wallet, "order_id": id}},
		{"ReleaseStock", map[string]any{"sku": sku, "order_id": id}},
		{"CommitStock", map[string]any{"sku": sku, "order_id": id}},
		{"FailShipment", map[string]any{"shipment_id": "shp-" + id, "reason": "lost"}},
		{"DispatchShipment", map[string]any{"shipment_id": "shp-" + id, "carrier": "other", "tracking_number": "OPS-1"}},
	}
	cmd := cmds[a.rnd.IntN(len(cmds))]
	ops := a.r.ops.At(a.api())
	st, out := a.retry(func() (int, map[string]any, error) {
		return ops.Post(a.ctx, "/commands", a.key+"-ops", map[string]any{"type": cmd.typ, "payload": cmd.payload})
	}, true)
	a.r.answer(a.name+" POST /commands "+cmd.typ, st, out)
	// Refused while the saga runs (saga_owns). The saga may have finished
	// meanwhile (the command was sent again after a fault): then the order's
	// end decides, and an accepted command must have moved nothing (a
	// capture of a captured hold is a no-op).
	if moved(st, out) {
		a.r.anomaly("%s: an operator's %s beside the saga of %s moved money or goods: %d %v", a.name, cmd.typ, id, st, out["event_ids"])
	}
	final := a.r.awaitSaga(a.ctx, id, time.Minute, ended...)
	a.r.answer(a.name+" saga after the operator's command", 200, map[string]any{"code": final})
	if final == workflows.StatusCompensated {
		st, out = a.retry(func() (int, map[string]any, error) {
			return ops.Post(a.ctx, "/commands", a.key+"-capture", map[string]any{"type": "CaptureHold", "payload": map[string]any{"wallet_id": a.cu.wallet, "order_id": id, "amount": 1}})
		}, true)
		a.r.answer(a.name+" POST /commands CaptureHold after the end", st, out)
		if moved(st, out) {
			a.r.anomaly("%s: a capture for the ended order %s (%s) took money: %v", a.name, id, final, out["event_ids"])
		}
	}
}

// moved: a command's answer says it was accepted and recorded events.
func moved(st int, out map[string]any) bool {
	events, _ := out["event_ids"].([]any)
	return st/100 == 2 && len(events) > 0
}

// forgedWebhook: a payment webhook signed with no secret of the service's,
// fresh or stale, is refused (401) and credits nothing.
func (a *act) forgedWebhook() {
	ts := time.Now().Unix()
	if a.rnd.IntN(2) == 0 {
		ts -= 3600 // stale
	}
	body := fmt.Sprintf(`{"id":"evt_forged_%s","type":"payment_intent.succeeded","created":%d,"data":{"object":{"id":"pi_forged","object":"payment_intent","amount":100000000,"currency":"eur","status":"succeeded","metadata":{"payment_id":"pay-%s","wallet_id":%q}}}}`,
		a.key, ts, a.key, a.cu.wallet)
	req, err := http.NewRequestWithContext(a.ctx, http.MethodPost, a.api()+"/webhooks/payments", strings.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%064x", ts, a.rnd.Uint64()))
	res, err := (&http.Client{Timeout: 30 * time.Second, Transport: tracing{http.DefaultTransport}}).Do(req)
	if err != nil {
		a.r.answer(a.name, 0, nil)
		return
	}
	res.Body.Close()
	a.r.answer(a.name, res.StatusCode, nil)
	if !faulty(res.StatusCode, nil) && res.StatusCode != http.StatusUnauthorized {
		a.r.anomaly("%s: a forged webhook answered %d, want 401", a.name, res.StatusCode)
	}
}

// terminate: an operator terminates the saga at a random moment, then
// repairs it, or the customer cancels (the cancel repairs it).
func (a *act) terminate() {
	id := a.place(a.cu.c, a.key, a.order(a.cu.wallet, a.sku(), a.zip()), true)
	if id == "" {
		return
	}
	stages := []string{workflows.StatusConfirmed, workflows.StatusShipping, workflows.StatusCompleted, ""}
	if stage := stages[a.rnd.IntN(len(stages))]; stage != "" {
		a.r.awaitSaga(a.ctx, id, 30*time.Second, stage, workflows.StatusShipping, workflows.StatusShipped, workflows.StatusCompleted)
	}
	var err error
	for range 20 {
		if err = a.r.cfg.Temporal.TerminateWorkflow(a.ctx, workflows.WorkflowID(id), "", "campaign: an operator terminates the saga"); err == nil {
			break
		}
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			if _, e := (sagas.Client{C: a.r.cfg.Temporal}).State(a.ctx, id); e == nil {
				a.r.answer(a.name+" terminate", 200, map[string]any{"code": "saga_already_ended"})
				return
			}
		}
		sleep(a.ctx, 500*time.Millisecond)
	}
	if err != nil {
		a.r.answer(a.name+" terminate", 0, map[string]any{"code": shortErr(err)})
		return
	}
	a.r.count(a.r.rep.Operator, "terminate")
	sleep(a.ctx, time.Duration(a.rnd.IntN(2000))*time.Millisecond)
	if a.name == "terminate_then_cancel" {
		a.cancel(a.cu.c.At(a.api()), id, a.door(), true)
		return
	}
	err = sagas.Repair(a.ctx, a.r.cfg.Pool, a.r.cfg.Temporal, id)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case err == nil:
		a.r.count(a.r.rep.Operator, "repair (one order)")
		a.r.answer(a.name+" repair", 200, nil)
	case errors.Is(err, sagas.ErrNothingToRepair) || errors.As(err, &already):
		a.r.answer(a.name+" repair", 200, map[string]any{"code": "nothing_to_repair"})
	default:
		a.r.answer(a.name+" repair", 0, map[string]any{"code": shortErr(err)})
	}
}

// shortErr names an error for the report's counts (its kind, not its ids).
func shortErr(err error) string {
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return "not_found"
	}
	words := strings.Fields(err.Error())
	return strings.Join(words[:min(len(words), 3)], "_")
}
