package campaign

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/orderflow/orderflow/internal/harness/loadgen"
	"github.com/orderflow/orderflow/workflows"
)

// The actions, with their weights in the mix.
var actions = []struct {
	name   string
	weight int
}{
	{"place", 14},                  // keyed, maybe retried with the same key after no answer
	{"place_keyless", 4},           // no key; retried without one after no answer
	{"place_duplicate_key", 6},     // the same key twice at once, one to each API
	{"place_reused_key", 2},        // a key used again with another body
	{"place_colliding_key", 3},     // two customers, the same key
	{"place_customer_named_id", 2}, // a customer names the order id
	{"place_operator_long_id", 2},  // an operator names a 120- and a 121-character id
	{"place_reserved_key", 1},      // a key in the saga's namespace
	{"place_foreign_wallet", 1},    // a customer pays with another's wallet
	{"place_out_of_stock", 3},
	{"place_insufficient_funds", 3},
	{"place_carrier_rejected", 3},
	{"cancel_before_carrier", 5}, // right after placement (the saga may be starting)
	{"cancel_during_carrier", 6}, // while the carrier works
	{"cancel_after_carrier", 3},  // once the carrier took it
	{"cancel_twice", 2},          // both doors at once
	{"cancel_foreign", 2},        // another customer's order
	{"forget_mid_saga", 3},
	{"top_up", 4},
	{"operator_command_as_customer", 2}, // a customer sends a saga's command
	{"operator_on_saga_holdings", 3},    // operator: a capture, void, release, commit or shipment beside the saga
	{"reprice", 2},                      // operator: a new price mid-flow
	{"place_stale_price", 1},            // a customer sends a price that is not the catalogue's
	{"forged_webhook", 1},               // a payment webhook with a forged or stale signature
	{"terminate_then_repair", 2},        // operator: terminate, then repair
	{"terminate_then_cancel", 2},        // operator terminates, the customer cancels
}

// pick draws an action by weight, among only when it is not empty.
func pick(rnd *rand.Rand, only []string) string {
	total := 0
	for _, a := range actions {
		if len(only) == 0 || slices.Contains(only, a.name) {
			total += a.weight
		}
	}
	x := rnd.IntN(total)
	for _, a := range actions {
		if len(only) > 0 && !slices.Contains(only, a.name) {
			continue
		}
		if x -= a.weight; x < 0 {
			return a.name
		}
	}
	return actions[len(actions)-1].name
}

// Actions are the names of the campaign's actions.
func Actions() []string {
	var names []string
	for _, a := range actions {
		names = append(names, a.name)
	}
	return names
}

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

// shortErr names an error for the report's counts (its kind, not its ids).
func shortErr(err error) string {
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return "not_found"
	}
	words := strings.Fields(err.Error())
	return strings.Join(words[:min(len(words), 3)], "_")
}
