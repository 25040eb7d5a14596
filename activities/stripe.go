package activities

import (
	"context"
	"strings"

	"github.com/stripe/stripe-go/v82"
)

// StripePayments is a real Stripe account behind PaymentProvider, with
// stripe-go's client. It needs the network and an account's secret key:
// dev and the tests use SimulatedPayments, never this. The customer's
// browser confirms the intent with its client secret (Stripe.js); Stripe
// then calls /webhooks/payments, signed with the endpoint's secret.
type StripePayments struct {
	Client *stripe.Client // stripe.NewClient(secretKey)
}

// Name is the provider's name on payments.
func (StripePayments) Name() string { return "stripe" }

// CreateIntent creates the PaymentIntent under the payment id as Stripe's
// Idempotency-Key: a retry gets the same intent back.
func (s StripePayments) CreateIntent(ctx context.Context, req IntentRequest) (Intent, error) {
	params := &stripe.PaymentIntentCreateParams{
		Amount:                  stripe.Int64(req.Amount),
		Currency:                stripe.String(strings.ToLower(req.Currency)),
		AutomaticPaymentMethods: &stripe.PaymentIntentCreateAutomaticPaymentMethodsParams{Enabled: stripe.Bool(true)},
	}
	params.SetIdempotencyKey(req.PaymentID)
	params.AddMetadata(MetaPaymentID, req.PaymentID)
	params.AddMetadata(MetaWalletID, req.WalletID)
	pi, err := s.Client.V1PaymentIntents.Create(ctx, params)
	if err != nil {
		return Intent{}, err
	}
	return Intent{ID: pi.ID, Object: "payment_intent", Amount: pi.Amount, Currency: string(pi.Currency), Status: string(pi.Status),
		ClientSecret: pi.ClientSecret, Metadata: pi.Metadata, Created: pi.Created}, nil
}
