package commands

// The payment commands. A customer requests a payment into its own wallet;
// the payments principal (orderflow's webhook handler, an internal
// request) records the provider's intent and its verdict.

import (
	"context"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/payment"
	"github.com/orderflow/orderflow/domain/wallet"
)

// RequestPayment's payment id, when absent, is derived from the command id
// (as PlaceOrder's order id): a retry with the same Idempotency-Key is the
// same payment, and the payment id is the provider's idempotency key. Its
// currency defaults to the wallet's.
type RequestPayment struct {
	PaymentID  string `json:"payment_id"`
	CustomerID string `json:"customer_id"`
	WalletID   string `json:"wallet_id"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency,omitempty"`
}

// RecordPaymentIntent records the provider's intent for a payment.
type RecordPaymentIntent struct {
	PaymentID string `json:"payment_id"`
	Provider  string `json:"provider"`
	IntentID  string `json:"intent_id"`
}

// ConfirmPayment and FailPayment carry the provider's verdict, from its
// signed webhook (EventID is the provider's event id).
type ConfirmPayment struct {
	PaymentID string `json:"payment_id"`
	IntentID  string `json:"intent_id"`
	EventID   string `json:"event_id"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
}

type FailPayment struct {
	PaymentID string `json:"payment_id"`
	IntentID  string `json:"intent_id"`
	EventID   string `json:"event_id"`
	Reason    string `json:"reason"`
}

func (RequestPayment) CommandType() string      { return "RequestPayment" }
func (RecordPaymentIntent) CommandType() string { return "RecordPaymentIntent" }
func (ConfirmPayment) CommandType() string      { return "ConfirmPayment" }
func (FailPayment) CommandType() string         { return "FailPayment" }

// paymentIDNamespace makes derived payment ids stable across processes.
var paymentIDNamespace = uuid.MustParse("3b0e8f5a-1c2d-4e6f-9a7b-5c4d3e2f1a0b")

// PaymentActor is the actor of the payments principal's commands.
const PaymentActor = "payments"

// PaymentCommandID is the command id of the payments principal's command
// step on payment (or provider event) id: a redelivered webhook sends the
// same ids, so each step is decided once.
func PaymentCommandID(step, id string) string { return "payments:" + step + ":" + id }

// PaymentDefinitions are the payment commands.
func PaymentDefinitions() []Definition {
	request := Define("RequestPayment", payment.StreamType, func(p *RequestPayment) string { return p.PaymentID },
		func(pay *payment.Payment, p *RequestPayment) error {
			return pay.Request(p.CustomerID, p.WalletID, money.New(p.Amount, p.Currency))
		})
	request = WithRequestCheck(request, func(p *RequestPayment, r Request) error {
		if p.PaymentID != "" && !r.Internal && r.Principal != nil && r.Principal.Role == auth.Customer {
			return aggregate.Rule("payment_id_assigned", "a customer's payment gets its id from orderflow: leave payment_id out (an Idempotency-Key makes retries safe)")
		}
		if p.PaymentID == "" {
			p.PaymentID = uuid.NewSHA1(paymentIDNamespace, []byte(r.CommandID)).String()
		}
		return nil
	})
	request = CreatedFor(request, func(p *RequestPayment) string { return p.CustomerID })
	request = RouteOnly(request) // POST /wallets/{id}/payments, which asks the provider
	request = WithCheck(request, func(ctx context.Context, load Loader, p *RequestPayment) error {
		agg, err := load(ctx, wallet.StreamType, p.WalletID)
		if err != nil {
			return err
		}
		w := agg.(*wallet.Wallet)
		if agg.Version() == 0 || w.CustomerID() != p.CustomerID {
			return aggregate.NotFound("wallet_not_found", "customer %s has no wallet %s", p.CustomerID, p.WalletID)
		}
		if p.Currency == "" {
			p.Currency = w.Currency() // the logged payload keeps it empty: a retry compares alike
		}
		if p.Currency != w.Currency() {
			return aggregate.Rule("currency_mismatch", "wallet %s holds %s, not %s", p.WalletID, w.Currency(), p.Currency)
		}
		return nil
	})
	return []Definition{
		request,
		InternalOnly(Define("RecordPaymentIntent", payment.StreamType, func(p *RecordPaymentIntent) string { return p.PaymentID },
			func(pay *payment.Payment, p *RecordPaymentIntent) error {
				return pay.RecordIntent(p.Provider, p.IntentID)
			})),
		InternalOnly(Define("ConfirmPayment", payment.StreamType, func(p *ConfirmPayment) string { return p.PaymentID },
			func(pay *payment.Payment, p *ConfirmPayment) error {
				return pay.Confirm(p.IntentID, p.EventID, money.New(p.Amount, p.Currency))
			})),
		InternalOnly(Define("FailPayment", payment.StreamType, func(p *FailPayment) string { return p.PaymentID },
			func(pay *payment.Payment, p *FailPayment) error { return pay.Fail(p.IntentID, p.EventID, p.Reason) })),
	}
}
