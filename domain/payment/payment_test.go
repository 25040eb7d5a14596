package payment_test

import (
	"encoding/json"
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/payment"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*payment.Payment]

var (
	requested = payment.Requested{PaymentID: "p1", CustomerID: "c1", WalletID: "w1", Amount: 500, Currency: "EUR"}
	intent    = payment.IntentCreated{Provider: "simulated", IntentID: "pi_1"}
	succeeded = payment.Succeeded{IntentID: "pi_1", EventID: "evt_1", Amount: 500, Currency: "EUR"}
	failed    = payment.Failed{IntentID: "pi_1", EventID: "evt_2", Reason: "card_declined: the card was declined"}
	pending   = ev{requested, intent}
)

func eur(n int64) money.Money { return money.New(n, "EUR") }

func TestPayment(t *testing.T) {
	aggregatetest.Run(t, func() *payment.Payment { return payment.New("p1") }, []row{
		{Name: "request", When: func(p *payment.Payment) error { return p.Request("c1", "w1", eur(500)) }, Then: ev{requested}},
		{Name: "request twice", Given: ev{requested}, When: func(p *payment.Payment) error { return p.Request("c1", "w1", eur(500)) }, Err: "payment_exists"},
		{Name: "request nothing", When: func(p *payment.Payment) error { return p.Request("c1", "w1", eur(0)) }, Err: "amount_not_positive"},
		{Name: "request a negative amount", When: func(p *payment.Payment) error { return p.Request("c1", "w1", eur(-5)) }, Err: "amount_not_positive"},
		{Name: "request in no currency", When: func(p *payment.Payment) error { return p.Request("c1", "w1", money.New(5, "euro")) }, Err: "invalid_currency"},
		{Name: "request without a wallet", When: func(p *payment.Payment) error { return p.Request("c1", " ", eur(5)) }, Err: "wallet_required"},

		{Name: "record the intent", Given: ev{requested}, When: func(p *payment.Payment) error { return p.RecordIntent("simulated", "pi_1") }, Then: ev{intent}},
		{Name: "record the same intent again", Given: pending, When: func(p *payment.Payment) error { return p.RecordIntent("simulated", "pi_1") }},
		{Name: "record another intent", Given: pending, When: func(p *payment.Payment) error { return p.RecordIntent("simulated", "pi_2") }, Err: "intent_mismatch"},
		{Name: "intent of an unknown payment", When: func(p *payment.Payment) error { return p.RecordIntent("simulated", "pi_1") }, Err: "payment_not_found"},
		{Name: "intent after the webhook settled it", Given: ev{requested, succeeded},
			When: func(p *payment.Payment) error { return p.RecordIntent("simulated", "pi_1") }},

		{Name: "confirm", Given: pending, When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", eur(500)) }, Then: ev{succeeded}},
		{Name: "confirm before the intent was recorded", Given: ev{requested},
			When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", eur(500)) }, Then: ev{succeeded}},
		{Name: "confirm again is a no-op", Given: append(pending[:2:2], succeeded),
			When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_9", eur(500)) }},
		{Name: "confirm another amount", Given: pending, When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", eur(501)) }, Err: "amount_mismatch"},
		{Name: "confirm another currency", Given: pending, When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", money.New(500, "USD")) }, Err: "amount_mismatch"},
		{Name: "confirm another intent", Given: pending, When: func(p *payment.Payment) error { return p.Confirm("pi_2", "evt_1", eur(500)) }, Err: "intent_mismatch"},
		{Name: "confirm an unknown payment", When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", eur(500)) }, Err: "payment_not_found"},
		{Name: "a success after a failure wins", Given: append(pending[:2:2], failed),
			When: func(p *payment.Payment) error { return p.Confirm("pi_1", "evt_1", eur(500)) }, Then: ev{succeeded}},

		{Name: "fail", Given: pending, When: func(p *payment.Payment) error { return p.Fail("pi_1", "evt_2", failed.Reason) }, Then: ev{failed}},
		{Name: "fail without a reason", Given: pending, When: func(p *payment.Payment) error { return p.Fail("pi_1", "evt_2", "") }, Err: "reason_required"},
		{Name: "fail again is a no-op", Given: append(pending[:2:2], failed), When: func(p *payment.Payment) error { return p.Fail("pi_1", "evt_3", "x") }},
		{Name: "a late failure after a success changes nothing", Given: append(pending[:2:2], succeeded),
			When: func(p *payment.Payment) error { return p.Fail("pi_1", "evt_2", failed.Reason) }},
		{Name: "fail another intent", Given: pending, When: func(p *payment.Payment) error { return p.Fail("pi_2", "evt_2", "x") }, Err: "intent_mismatch"},
	})
}

func TestPaymentState(t *testing.T) {
	p := payment.New("p1")
	for _, e := range append(pending[:2:2], failed, succeeded) {
		p.Replay(e)
	}
	s := p.State().(payment.State)
	if s.Status != payment.StatusSucceeded || s.Reason != "" || s.IntentID != "pi_1" || p.Version() != 4 || p.CustomerID() != "c1" || p.WalletID() != "w1" {
		t.Fatalf("state %+v version %d", s, p.Version())
	}
	q := payment.New("p1")
	if err := q.Restore(4, mustJSON(t, s)); err != nil || q.State().(payment.State) != s || q.Version() != 4 {
		t.Fatalf("restored %+v, %v", q.State(), err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
