package wallet_test

import (
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/aggregate/aggregatetest"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/wallet"
)

type ev = []aggregate.Event
type row = aggregatetest.Case[*wallet.Wallet]

var opened = wallet.Opened{WalletID: "w1", CustomerID: "c1", Name: "main", Currency: "EUR"}
var funded = ev{opened, wallet.ToppedUp{Amount: 1000, Currency: "EUR"}}
var suspended = wallet.Suspended{Reason: "chargeback", Operator: "ops-ada"}

var goodwill = wallet.Credit{Operator: "ops-ada", Reason: "goodwill"}

func eur(n int64) money.Money { return money.New(n, "EUR") }

func TestWallet(t *testing.T) {
	aggregatetest.Run(t, func() *wallet.Wallet { return wallet.New("w1") }, []row{
		{Name: "open", When: func(w *wallet.Wallet) error { return w.Open("c1", "main", "EUR") }, Then: ev{opened}},
		{Name: "open twice", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.Open("c1", "", "EUR") }, Err: "wallet_exists"},
		{Name: "open with bad currency", When: func(w *wallet.Wallet) error { return w.Open("c1", "", "euro") }, Err: "invalid_currency"},
		{Name: "top up unknown wallet", When: func(w *wallet.Wallet) error { return w.TopUp(eur(5), goodwill) }, Err: "wallet_not_found"},
		{Name: "top up", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.TopUp(eur(500), goodwill) }, Then: ev{wallet.ToppedUp{Amount: 500, Currency: "EUR", Reason: "goodwill", Operator: "ops-ada"}}},
		{Name: "top up other currency", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.TopUp(money.New(5, "USD"), goodwill) }, Err: "currency_mismatch"},
		{Name: "top up zero", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.TopUp(eur(0), goodwill) }, Err: "amount_not_positive"},
		{Name: "an operator's top-up needs a reason", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.TopUp(eur(5), wallet.Credit{Operator: "ops-ada", Reason: " "}) }, Err: "reason_required"},
		{Name: "top up from a payment", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.TopUp(eur(500), wallet.Credit{PaymentID: "p1"}) },
			Then: ev{wallet.ToppedUp{Amount: 500, Currency: "EUR", PaymentID: "p1"}}},
		{Name: "a payment credits once", Given: ev{opened, wallet.ToppedUp{Amount: 500, Currency: "EUR", PaymentID: "p1"}},
			When: func(w *wallet.Wallet) error { return w.TopUp(eur(500), wallet.Credit{PaymentID: "p1"}) }},
		{Name: "another payment credits", Given: ev{opened, wallet.ToppedUp{Amount: 500, Currency: "EUR", PaymentID: "p1"}},
			When: func(w *wallet.Wallet) error { return w.TopUp(eur(7), wallet.Credit{PaymentID: "p2"}) }, Then: ev{wallet.ToppedUp{Amount: 7, Currency: "EUR", PaymentID: "p2"}}},
		{Name: "a suspended wallet takes a payment's credit", Given: ev{opened, suspended},
			When: func(w *wallet.Wallet) error { return w.TopUp(eur(7), wallet.Credit{PaymentID: "p2"}) }, Then: ev{wallet.ToppedUp{Amount: 7, Currency: "EUR", PaymentID: "p2"}}},
		{Name: "an old top-up without reason still replays", Given: ev{opened, wallet.ToppedUp{Amount: 5, Currency: "EUR"}},
			When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(5)) }, Then: ev{wallet.HoldAuthorised{OrderID: "o1", Amount: 5, Currency: "EUR"}}},
		{Name: "rename", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.Rename("savings") }, Then: ev{wallet.Renamed{Name: "savings"}}},
		{Name: "rename to same name records nothing", Given: ev{opened}, When: func(w *wallet.Wallet) error { return w.Rename("main") }},
		{Name: "authorise within funds", Given: funded, When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(1000)) },
			Then: ev{wallet.HoldAuthorised{OrderID: "o1", Amount: 1000, Currency: "EUR"}}},
		{Name: "authorise beyond funds", Given: funded, When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(1001)) }, Err: "insufficient_funds"},
		{Name: "holds count against available", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}),
			When: func(w *wallet.Wallet) error { return w.Authorise("o2", eur(401)) }, Err: "insufficient_funds"},
		{Name: "authorise same hold again is a no-op", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}),
			When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(600)) }},
		{Name: "authorise other currency", Given: funded, When: func(w *wallet.Wallet) error { return w.Authorise("o1", money.New(1, "USD")) }, Err: "currency_mismatch"},
		{Name: "partial capture releases the rest", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}),
			When: func(w *wallet.Wallet) error { return w.Capture("o1", 400) }, Then: ev{wallet.HoldCaptured{OrderID: "o1", Amount: 400, Released: 200}}},
		{Name: "capture more than held", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}),
			When: func(w *wallet.Wallet) error { return w.Capture("o1", 601) }, Err: "capture_exceeds_hold"},
		{Name: "capture without hold", Given: funded, When: func(w *wallet.Wallet) error { return w.Capture("o1", 1) }, Err: "no_hold"},
		{Name: "void releases the hold", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}),
			When: func(w *wallet.Wallet) error { return w.Void("o1") }, Then: ev{wallet.HoldVoided{OrderID: "o1", Amount: 600}}},
		{Name: "void without hold is a no-op", Given: funded, When: func(w *wallet.Wallet) error { return w.Void("o1") }},
		{Name: "void after capture", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, wallet.HoldCaptured{OrderID: "o1", Amount: 600}),
			When: func(w *wallet.Wallet) error { return w.Void("o1") }, Err: "hold_captured"},
		{Name: "refund a capture", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, wallet.HoldCaptured{OrderID: "o1", Amount: 600}),
			When: func(w *wallet.Wallet) error { return w.Refund("o1", 600) }, Then: ev{wallet.CaptureRefunded{OrderID: "o1", Amount: 600}}},
		{Name: "refund more than captured", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, wallet.HoldCaptured{OrderID: "o1", Amount: 500, Released: 100}),
			When: func(w *wallet.Wallet) error { return w.Refund("o1", 501) }, Err: "refund_exceeds_capture"},
		{Name: "refund twice beyond capture", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, wallet.HoldCaptured{OrderID: "o1", Amount: 600}, wallet.CaptureRefunded{OrderID: "o1", Amount: 600}),
			When: func(w *wallet.Wallet) error { return w.Refund("o1", 1) }, Err: "refund_exceeds_capture"},
		{Name: "refund without capture", Given: funded, When: func(w *wallet.Wallet) error { return w.Refund("o1", 1) }, Err: "nothing_captured"},

		{Name: "suspend", Given: funded, When: func(w *wallet.Wallet) error { return w.Suspend("chargeback", "ops-ada") },
			Then: ev{wallet.Suspended{Reason: "chargeback", Operator: "ops-ada"}}},
		{Name: "suspend needs a reason", Given: funded, When: func(w *wallet.Wallet) error { return w.Suspend(" ", "ops-ada") }, Err: "reason_required"},
		{Name: "suspend twice", Given: append(funded[:2:2], suspended), When: func(w *wallet.Wallet) error { return w.Suspend("again", "ops") }, Err: "wallet_suspended"},
		{Name: "suspended wallet refuses a hold", Given: append(funded[:2:2], suspended),
			When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(100)) }, Err: "wallet_suspended"},
		{Name: "suspended wallet refuses a top-up", Given: append(funded[:2:2], suspended),
			When: func(w *wallet.Wallet) error { return w.TopUp(eur(100), goodwill) }, Err: "wallet_suspended"},
		{Name: "a hold taken before the suspension is captured", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, suspended),
			When: func(w *wallet.Wallet) error { return w.Capture("o1", 600) }, Then: ev{wallet.HoldCaptured{OrderID: "o1", Amount: 600}}},
		{Name: "a hold taken before the suspension is voided", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, suspended),
			When: func(w *wallet.Wallet) error { return w.Void("o1") }, Then: ev{wallet.HoldVoided{OrderID: "o1", Amount: 600}}},
		{Name: "a capture is refunded while suspended", Given: append(funded[:2:2], wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"}, wallet.HoldCaptured{OrderID: "o1", Amount: 600}, suspended),
			When: func(w *wallet.Wallet) error { return w.Refund("o1", 600) }, Then: ev{wallet.CaptureRefunded{OrderID: "o1", Amount: 600}}},
		{Name: "reinstate", Given: append(funded[:2:2], suspended), When: func(w *wallet.Wallet) error { return w.Reinstate("cleared", "ops-bob") },
			Then: ev{wallet.Reinstated{Reason: "cleared", Operator: "ops-bob"}}},
		{Name: "reinstated wallet takes holds again", Given: append(funded[:2:2], suspended, wallet.Reinstated{Reason: "cleared", Operator: "ops"}),
			When: func(w *wallet.Wallet) error { return w.Authorise("o1", eur(100)) }, Then: ev{wallet.HoldAuthorised{OrderID: "o1", Amount: 100, Currency: "EUR"}}},
		{Name: "reinstate an active wallet", Given: funded, When: func(w *wallet.Wallet) error { return w.Reinstate("x", "ops") }, Err: "wallet_not_suspended"},
	})
}

func TestWalletBalances(t *testing.T) {
	w := wallet.New("w1")
	for _, e := range append(funded[:2:2],
		wallet.HoldAuthorised{OrderID: "o1", Amount: 600, Currency: "EUR"},
		wallet.HoldCaptured{OrderID: "o1", Amount: 500, Released: 100},
		wallet.HoldAuthorised{OrderID: "o2", Amount: 300, Currency: "EUR"},
		wallet.CaptureRefunded{OrderID: "o1", Amount: 200},
	) {
		w.Replay(e)
	}
	s := w.State().(wallet.State)
	// 1000 - 500 captured + 200 refunded = 700; 300 held; 400 available.
	if s.Balance != 700 || s.Held != 300 || s.Available != 400 || w.Version() != 6 {
		t.Fatalf("state %+v version %d", s, w.Version())
	}
}
