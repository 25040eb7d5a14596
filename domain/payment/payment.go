// Package payment is a customer's payment at a payment provider: the only
// way money enters a wallet from outside. A payment is requested by the
// customer, gets an intent at the provider, and is settled by the
// provider's word (a signed webhook): succeeded, or failed. Only a
// succeeded payment may credit its wallet (commands.TopUpWallet checks it).
package payment

import (
	"encoding/json"
	"strings"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
)

// StreamType is the stream family of payments.
const StreamType = "payment"

// SnapshotVersion changes whenever State changes shape; older snapshots are ignored.
const SnapshotVersion = 1

// Status is a payment's stage.
type Status string

const (
	// StatusRequested: recorded, no intent at the provider yet.
	StatusRequested Status = "requested"
	// StatusPending: the provider has the intent and has not decided.
	StatusPending   Status = "pending"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
)

// Requested is a customer's payment into its wallet.
type Requested struct {
	PaymentID  string `json:"payment_id"`
	CustomerID string `json:"customer_id"`
	WalletID   string `json:"wallet_id"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
}

// IntentCreated records the provider's intent for the payment (a Stripe
// PaymentIntent id, pi_…). The client secret is never recorded.
type IntentCreated struct {
	Provider string `json:"provider"`
	IntentID string `json:"intent_id"`
}

// Succeeded is the provider's confirmation (EventID is its webhook event).
type Succeeded struct {
	IntentID string `json:"intent_id"`
	EventID  string `json:"event_id"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// Failed is the provider's refusal or cancellation. Reason is a code and
// text from orderflow's list, never the provider's free text.
type Failed struct {
	IntentID string `json:"intent_id"`
	EventID  string `json:"event_id"`
	Reason   string `json:"reason"`
}

func (Requested) EventType() string     { return "payment.requested" }
func (IntentCreated) EventType() string { return "payment.intent_created" }
func (Succeeded) EventType() string     { return "payment.succeeded" }
func (Failed) EventType() string        { return "payment.failed" }

// State is the payment as JSON: for snapshots and point-in-time reads.
type State struct {
	PaymentID  string `json:"payment_id"`
	CustomerID string `json:"customer_id"`
	WalletID   string `json:"wallet_id"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Status     Status `json:"status"`
	Provider   string `json:"provider,omitempty"`
	IntentID   string `json:"intent_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Payment is the aggregate.
type Payment struct {
	aggregate.Base
	id string
	s  State
}

// New returns an empty payment stream with the given id.
func New(id string) *Payment { return &Payment{id: id, s: State{PaymentID: id}} }

func (p *Payment) StreamType() string       { return StreamType }
func (p *Payment) StreamID() string         { return p.id }
func (p *Payment) Replay(e aggregate.Event) { p.ReplayWith(e, p.apply) }
func (p *Payment) State() any               { return p.s }
func (p *Payment) CustomerID() string       { return p.s.CustomerID }
func (p *Payment) WalletID() string         { return p.s.WalletID }
func (p *Payment) Status() Status           { return p.s.Status }

// Amount is what the customer asked to pay.
func (p *Payment) Amount() money.Money { return money.New(p.s.Amount, p.s.Currency) }

func (p *Payment) Restore(version int64, data []byte) error {
	s := State{}
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	p.s = s
	p.SetVersion(version)
	return nil
}

func (p *Payment) record(e aggregate.Event) { p.Record(e, p.apply) }

func (p *Payment) mustExist() error {
	if p.s.Status == "" {
		return aggregate.NotFound("payment_not_found", "payment %s does not exist", p.id)
	}
	return nil
}

// Request records a customer's payment of amount into its wallet.
func (p *Payment) Request(customerID, walletID string, amount money.Money) error {
	if p.s.Status != "" {
		return aggregate.State("payment_exists", "payment %s already exists", p.id)
	}
	if strings.TrimSpace(customerID) == "" || strings.TrimSpace(walletID) == "" {
		return aggregate.Rule("wallet_required", "a payment names its customer and wallet")
	}
	if !money.ValidCurrency(amount.Currency) {
		return aggregate.Rule("invalid_currency", "currency %q is not an ISO 4217 code", amount.Currency)
	}
	if amount.Amount <= 0 {
		return aggregate.Rule("amount_not_positive", "a payment's amount must be positive")
	}
	p.record(Requested{PaymentID: p.id, CustomerID: customerID, WalletID: walletID, Amount: amount.Amount, Currency: amount.Currency})
	return nil
}

// RecordIntent records the provider's intent. The same intent again
// records nothing; another one is refused (the provider's idempotency key
// is the payment id: one payment, one intent).
func (p *Payment) RecordIntent(provider, intentID string) error {
	if err := p.mustExist(); err != nil {
		return err
	}
	if strings.TrimSpace(intentID) == "" {
		return aggregate.Rule("intent_required", "the provider's intent id is required")
	}
	if p.s.IntentID != "" {
		if p.s.IntentID == intentID {
			return nil
		}
		return aggregate.Rule("intent_mismatch", "payment %s has intent %s, not %s", p.id, p.s.IntentID, intentID)
	}
	if p.s.Status != StatusRequested {
		return nil // settled by the provider's webhook first: it named the intent
	}
	p.record(IntentCreated{Provider: provider, IntentID: intentID})
	return nil
}

func (p *Payment) sameIntent(intentID string) error {
	if strings.TrimSpace(intentID) == "" {
		return aggregate.Rule("intent_required", "the provider's intent id is required")
	}
	if p.s.IntentID != "" && p.s.IntentID != intentID {
		return aggregate.Rule("intent_mismatch", "payment %s has intent %s, not %s", p.id, p.s.IntentID, intentID)
	}
	return nil
}

// Confirm records the provider's confirmation that amount was paid. A
// confirmation of a succeeded payment records nothing (providers
// redeliver); one after a failure is recorded (the provider took the money
// on a later attempt: it wins). The amount must be the one requested.
func (p *Payment) Confirm(intentID, eventID string, paid money.Money) error {
	if err := p.mustExist(); err != nil {
		return err
	}
	if err := p.sameIntent(intentID); err != nil {
		return err
	}
	if p.s.Status == StatusSucceeded {
		return nil
	}
	if paid.Amount != p.s.Amount || paid.Currency != p.s.Currency {
		return aggregate.Rule("amount_mismatch", "payment %s is of %d %s; the provider confirmed %d %s", p.id, p.s.Amount, p.s.Currency, paid.Amount, paid.Currency)
	}
	p.record(Succeeded{IntentID: intentID, EventID: eventID, Amount: paid.Amount, Currency: paid.Currency})
	return nil
}

// Fail records the provider's refusal. A failure of a settled payment
// records nothing: after a success it is an older event delivered late,
// and a failure again is a redelivery.
func (p *Payment) Fail(intentID, eventID, reason string) error {
	if err := p.mustExist(); err != nil {
		return err
	}
	if err := p.sameIntent(intentID); err != nil {
		return err
	}
	if p.s.Status == StatusSucceeded || p.s.Status == StatusFailed {
		return nil
	}
	if strings.TrimSpace(reason) == "" {
		return aggregate.Rule("reason_required", "a failed payment needs a reason")
	}
	p.record(Failed{IntentID: intentID, EventID: eventID, Reason: reason})
	return nil
}

// apply only records facts; every check happened before the event was recorded.
func (p *Payment) apply(e aggregate.Event) {
	s := &p.s
	switch e := e.(type) {
	case Requested:
		s.CustomerID, s.WalletID, s.Amount, s.Currency, s.Status = e.CustomerID, e.WalletID, e.Amount, e.Currency, StatusRequested
	case IntentCreated:
		s.Provider, s.IntentID, s.Status = e.Provider, e.IntentID, StatusPending
	case Succeeded:
		s.IntentID, s.Status, s.Reason = e.IntentID, StatusSucceeded, ""
	case Failed:
		s.IntentID, s.Status, s.Reason = e.IntentID, StatusFailed, e.Reason
	}
}
