// The hostile actions that take more than one request: keys duplicated, reused or
// colliding, ids an operator names, forgetting mid-saga, a customer sending the
// saga's commands, operators acting on what the saga holds, forged webhooks,
// terminated sagas.

package campaign

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

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
