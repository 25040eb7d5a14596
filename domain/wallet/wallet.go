// Package wallet is the customer's wallet: top-ups, holds authorised for
// orders, captures, voids and refunds. A wallet is never overdrawn: a hold
// needs available funds and a capture only takes what a hold reserved.
package wallet

import (
	"encoding/json"
	"strings"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
)

// StreamType is the stream family of wallets.
const StreamType = "wallet"

// SnapshotVersion changes whenever State changes shape; older snapshots are ignored.
const SnapshotVersion = 2

type Opened struct {
	WalletID   string `json:"wallet_id"`
	CustomerID string `json:"customer_id"`
	Name       string `json:"name,omitempty"`
	Currency   string `json:"currency"`
}

type Renamed struct {
	Name string `json:"name"`
}

// ToppedUp is money credited to the wallet: from a payment the provider
// confirmed (PaymentID), or by an operator (Operator, with a Reason).
// Reason, Operator and PaymentID were added later: older events have none.
type ToppedUp struct {
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Reason    string `json:"reason,omitempty"`
	Operator  string `json:"operator,omitempty"`
	PaymentID string `json:"payment_id,omitempty"`
}

// Credit says where a top-up's money comes from: a payment (PaymentID), or
// an operator's decision (Operator and Reason, required then).
type Credit struct {
	PaymentID string
	Operator  string
	Reason    string
}

type HoldAuthorised struct {
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// HoldCaptured takes Amount from the hold; the rest of the hold (Released) goes back to available.
type HoldCaptured struct {
	OrderID  string `json:"order_id"`
	Amount   int64  `json:"amount"`
	Released int64  `json:"released"`
}

type HoldVoided struct {
	OrderID string `json:"order_id"`
	Amount  int64  `json:"amount"`
}

type CaptureRefunded struct {
	OrderID string `json:"order_id"`
	Amount  int64  `json:"amount"`
}

// Suspended stops new holds and top-ups; holds taken before still capture,
// void and refund. Operator is who suspended it.
type Suspended struct {
	Reason   string `json:"reason"`
	Operator string `json:"operator"`
}

type Reinstated struct {
	Reason   string `json:"reason"`
	Operator string `json:"operator"`
}

// PersonalFields are the fields that identify a person: the wallet's name
// (its holder's, as the customer chose it), stored sealed.
func (e *Opened) PersonalFields() []*string { return []*string{&e.Name} }

// PersonalFields: the new name, stored sealed.
func (e *Renamed) PersonalFields() []*string { return []*string{&e.Name} }

func (Opened) EventType() string          { return "wallet.opened" }
func (Renamed) EventType() string         { return "wallet.renamed" }
func (ToppedUp) EventType() string        { return "wallet.topped_up" }
func (HoldAuthorised) EventType() string  { return "wallet.hold_authorised" }
func (HoldCaptured) EventType() string    { return "wallet.hold_captured" }
func (HoldVoided) EventType() string      { return "wallet.hold_voided" }
func (CaptureRefunded) EventType() string { return "wallet.capture_refunded" }
func (Suspended) EventType() string       { return "wallet.suspended" }
func (Reinstated) EventType() string      { return "wallet.reinstated" }

// State is the wallet as JSON: for snapshots and for point-in-time reads.
type State struct {
	WalletID   string `json:"wallet_id"`
	CustomerID string `json:"customer_id"`
	Name       string `json:"name"`
	Currency   string `json:"currency"`
	// Balance is all money in the wallet, held or not.
	Balance int64 `json:"balance"`
	// Held is the sum of open holds; Available = Balance - Held.
	Held      int64 `json:"held"`
	Available int64 `json:"available"`
	// Holds are open holds by order id.
	Holds map[string]int64 `json:"holds"`
	// Captured is what was captured per order, less refunds.
	Captured map[string]int64 `json:"captured"`
	// Suspended, with its reason, while an operator has suspended the wallet.
	Suspended       bool   `json:"suspended,omitempty"`
	SuspendedReason string `json:"suspended_reason,omitempty"`
	// Payments are the payments credited: each credits once.
	Payments map[string]bool `json:"payments,omitempty"`
}

// Wallet is the aggregate.
type Wallet struct {
	aggregate.Base
	id string
	s  State
}

// New returns an empty wallet stream with the given id.
func New(id string) *Wallet {
	return &Wallet{id: id, s: State{WalletID: id, Holds: map[string]int64{}, Captured: map[string]int64{}, Payments: map[string]bool{}}}
}

func (w *Wallet) StreamType() string       { return StreamType }
func (w *Wallet) StreamID() string         { return w.id }
func (w *Wallet) Replay(e aggregate.Event) { w.ReplayWith(e, w.apply) }
func (w *Wallet) Currency() string         { return w.s.Currency }
func (w *Wallet) CustomerID() string       { return w.s.CustomerID }
func (w *Wallet) opened() bool             { return w.s.Currency != "" }

func (w *Wallet) State() any {
	s := w.s
	s.Available = s.Balance - s.Held
	return s
}

func (w *Wallet) Restore(version int64, data []byte) error {
	s := State{}
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	if s.Holds == nil {
		s.Holds = map[string]int64{}
	}
	if s.Captured == nil {
		s.Captured = map[string]int64{}
	}
	if s.Payments == nil {
		s.Payments = map[string]bool{}
	}
	w.s = s
	w.SetVersion(version)
	return nil
}

func (w *Wallet) record(e aggregate.Event) { w.Record(e, w.apply) }

func (w *Wallet) mustBeOpen() error {
	if !w.opened() {
		return aggregate.NotFound("wallet_not_found", "wallet %s does not exist", w.id)
	}
	return nil
}

// Open creates the wallet for a customer in one currency. The name is
// personal data: it arrives sealed (its length was checked before).
func (w *Wallet) Open(customerID, name, currency string) error {
	if w.opened() {
		return aggregate.State("wallet_exists", "wallet %s already exists", w.id)
	}
	if strings.TrimSpace(customerID) == "" {
		return aggregate.Rule("customer_required", "customer_id is required")
	}
	if !money.ValidCurrency(currency) {
		return aggregate.Rule("invalid_currency", "currency %q is not an ISO 4217 code", currency)
	}
	w.record(Opened{WalletID: w.id, CustomerID: customerID, Name: name, Currency: currency})
	return nil
}

// Rename changes the display name; the same name again records nothing.
func (w *Wallet) Rename(name string) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return aggregate.Rule("name_required", "name must not be empty")
	}
	if name == w.s.Name {
		return nil
	}
	w.record(Renamed{Name: name})
	return nil
}

func (w *Wallet) mustBeActive() error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if w.s.Suspended {
		return aggregate.State("wallet_suspended", "wallet %s is suspended: %s", w.id, w.s.SuspendedReason)
	}
	return nil
}

// Suspend stops new holds and top-ups until Reinstate.
func (w *Wallet) Suspend(reason, operator string) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if w.s.Suspended {
		return aggregate.State("wallet_suspended", "wallet %s is already suspended", w.id)
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a suspension needs a reason")
	}
	w.record(Suspended{Reason: reason, Operator: operator})
	return nil
}

// Reinstate lifts a suspension.
func (w *Wallet) Reinstate(reason, operator string) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if !w.s.Suspended {
		return aggregate.State("wallet_not_suspended", "wallet %s is not suspended", w.id)
	}
	w.record(Reinstated{Reason: reason, Operator: operator})
	return nil
}

// TopUp adds funds from a payment or by an operator's decision (with a
// reason). A payment credited before credits nothing again. A suspended
// wallet refuses operators' credits but takes a payment's: the provider
// has the customer's money, and the suspension still stops holds.
func (w *Wallet) TopUp(amount money.Money, from Credit) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if from.PaymentID != "" {
		if w.s.Payments[from.PaymentID] {
			return nil
		}
	} else {
		if err := w.mustBeActive(); err != nil {
			return err
		}
		if strings.TrimSpace(from.Reason) == "" {
			return aggregate.Rule("reason_required", "a top-up without a payment needs a reason")
		}
	}
	if amount.Amount <= 0 {
		return aggregate.Rule("amount_not_positive", "top-up amount must be positive")
	}
	bal := money.New(w.s.Balance, w.s.Currency)
	if _, err := bal.Add(amount); err != nil {
		return err
	}
	w.record(ToppedUp{Amount: amount.Amount, Currency: amount.Currency, Reason: from.Reason, Operator: from.Operator, PaymentID: from.PaymentID})
	return nil
}

// Authorise holds amount for an order. The same hold again is a no-op.
func (w *Wallet) Authorise(orderID string, amount money.Money) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if err := money.SameCurrency(money.New(0, w.s.Currency), amount); err != nil {
		return err
	}
	if amount.Amount <= 0 {
		return aggregate.Rule("amount_not_positive", "hold amount must be positive")
	}
	if held, ok := w.s.Holds[orderID]; ok {
		if held == amount.Amount {
			return nil
		}
		return aggregate.Rule("hold_exists", "order %s already holds %d, not %d", orderID, held, amount.Amount)
	}
	if _, ok := w.s.Captured[orderID]; ok {
		return aggregate.State("hold_captured", "the hold for order %s was already captured", orderID)
	}
	if err := w.mustBeActive(); err != nil {
		return err
	}
	if available := w.s.Balance - w.s.Held; amount.Amount > available {
		return aggregate.Rule("insufficient_funds", "wallet %s has %d %s available, %d needed", w.id, available, w.s.Currency, amount.Amount)
	}
	w.record(HoldAuthorised{OrderID: orderID, Amount: amount.Amount, Currency: amount.Currency})
	return nil
}

// Capture takes amount (at most the hold) and releases the rest of the hold.
// Capturing an already captured order again is a no-op.
func (w *Wallet) Capture(orderID string, amount int64) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	held, ok := w.s.Holds[orderID]
	if !ok {
		if _, captured := w.s.Captured[orderID]; captured {
			return nil
		}
		return aggregate.State("no_hold", "wallet %s has no hold for order %s", w.id, orderID)
	}
	if amount <= 0 {
		return aggregate.Rule("amount_not_positive", "capture amount must be positive")
	}
	if amount > held {
		return aggregate.Rule("capture_exceeds_hold", "capture of %d exceeds the hold of %d for order %s", amount, held, orderID)
	}
	w.record(HoldCaptured{OrderID: orderID, Amount: amount, Released: held - amount})
	return nil
}

// Void releases an open hold. With no open hold it is a no-op, so that a
// compensation can run whether or not the hold was ever taken; a captured
// hold cannot be voided (refund it instead).
func (w *Wallet) Void(orderID string) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	held, ok := w.s.Holds[orderID]
	if !ok {
		if _, captured := w.s.Captured[orderID]; captured {
			return aggregate.State("hold_captured", "the hold for order %s was captured; refund it instead", orderID)
		}
		return nil
	}
	w.record(HoldVoided{OrderID: orderID, Amount: held})
	return nil
}

// Refund returns captured money for an order, at most what was captured.
func (w *Wallet) Refund(orderID string, amount int64) error {
	if err := w.mustBeOpen(); err != nil {
		return err
	}
	if amount <= 0 {
		return aggregate.Rule("amount_not_positive", "refund amount must be positive")
	}
	captured, ok := w.s.Captured[orderID]
	if !ok {
		return aggregate.State("nothing_captured", "nothing was captured for order %s", orderID)
	}
	if amount > captured {
		return aggregate.Rule("refund_exceeds_capture", "refund of %d exceeds the %d captured for order %s", amount, captured, orderID)
	}
	w.record(CaptureRefunded{OrderID: orderID, Amount: amount})
	return nil
}

// apply only records facts; every check happened before the event was recorded.
func (w *Wallet) apply(e aggregate.Event) {
	s := &w.s
	switch e := e.(type) {
	case Opened:
		s.CustomerID, s.Name, s.Currency = e.CustomerID, e.Name, e.Currency
	case Renamed:
		s.Name = e.Name
	case ToppedUp:
		s.Balance += e.Amount
		if e.PaymentID != "" {
			s.Payments[e.PaymentID] = true
		}
	case HoldAuthorised:
		s.Holds[e.OrderID] = e.Amount
		s.Held += e.Amount
	case HoldCaptured:
		s.Held -= e.Amount + e.Released
		delete(s.Holds, e.OrderID)
		s.Balance -= e.Amount
		s.Captured[e.OrderID] += e.Amount
	case HoldVoided:
		s.Held -= e.Amount
		delete(s.Holds, e.OrderID)
	case CaptureRefunded:
		s.Balance += e.Amount
		s.Captured[e.OrderID] -= e.Amount
	case Suspended:
		s.Suspended, s.SuspendedReason = true, e.Reason
	case Reinstated:
		s.Suspended, s.SuspendedReason = false, ""
	}
}
