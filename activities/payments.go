package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"
)

// PaymentProvider is where a payment provider's API plugs in, shaped after
// Stripe's PaymentIntents: orderflow asks for an intent per payment, under
// the payment id as the request's idempotency key, and the provider tells
// the outcome later by a signed webhook (VerifyWebhook). The simulated
// provider (SimulatedPayments) serves dev and the tests; StripePayments is
// a real account's.
type PaymentProvider interface {
	Name() string
	// CreateIntent creates the payment's intent, or answers with the one
	// created before under the same payment id (a retry), whatever it is
	// now. The intent's metadata carries the payment and wallet ids, which
	// come back on the webhook.
	CreateIntent(ctx context.Context, req IntentRequest) (Intent, error)
}

// IntentRequest is orderflow's payment as the provider is asked for it.
type IntentRequest struct {
	PaymentID  string
	WalletID   string
	CustomerID string
	Amount     int64  // minor units
	Currency   string // ISO 4217, upper case
}

// Intent statuses, Stripe's names (the ones orderflow meets).
const (
	IntentRequiresPaymentMethod = "requires_payment_method"
	IntentProcessing            = "processing"
	IntentSucceeded             = "succeeded"
	IntentCanceled              = "canceled"
)

// Intent is a provider's PaymentIntent, in Stripe's JSON shape (its
// currency in lower case, as Stripe writes it).
type Intent struct {
	ID       string `json:"id"` // pi_…
	Object   string `json:"object"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Status   string `json:"status"`
	// ClientSecret lets the customer's browser confirm the intent with a
	// real provider; never recorded by orderflow.
	ClientSecret     string            `json:"client_secret,omitempty"`
	Metadata         map[string]string `json:"metadata"`
	LastPaymentError *PaymentError     `json:"last_payment_error,omitempty"`
	Created          int64             `json:"created"`
}

// PaymentError is an intent's last_payment_error (Stripe's shape).
type PaymentError struct {
	Type        string `json:"type,omitempty"`
	Code        string `json:"code,omitempty"`
	DeclineCode string `json:"decline_code,omitempty"`
}

// Metadata keys orderflow puts on every intent.
const (
	MetaPaymentID = "payment_id"
	MetaWalletID  = "wallet_id"
)

// Webhook event types orderflow acts on.
const (
	EventIntentSucceeded = "payment_intent.succeeded"
	EventIntentFailed    = "payment_intent.payment_failed"
	EventIntentCanceled  = "payment_intent.canceled"
)

// WebhookEvent is a verified webhook: the event and the intent it is about.
type WebhookEvent struct {
	ID      string // evt_…
	Type    string
	Created int64
	Intent  Intent
}

// ErrBadSignature is a webhook whose signature does not verify: forged,
// signed with another secret, over another body, or outside the tolerance.
var ErrBadSignature = errors.New("the webhook's signature does not verify")

// DefaultWebhookTolerance is Stripe's: a signature older than this is refused.
const DefaultWebhookTolerance = webhook.DefaultTolerance

// VerifyWebhook checks the Stripe-Signature header over the raw body, byte
// for byte as received (stripe-go's own webhook package: HMAC-SHA256 over
// "t.body", constant-time comparison, the timestamp within tolerance), and
// decodes the event. Any failure is ErrBadSignature (the cause wrapped).
func VerifyWebhook(body []byte, header, secret string, tolerance time.Duration) (WebhookEvent, error) {
	if secret == "" {
		return WebhookEvent{}, fmt.Errorf("%w: no webhook secret is configured", ErrBadSignature)
	}
	ev, err := webhook.ConstructEventWithOptions(body, header, secret,
		webhook.ConstructEventOptions{Tolerance: tolerance, IgnoreAPIVersionMismatch: true})
	if err != nil {
		return WebhookEvent{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	out := WebhookEvent{ID: ev.ID, Type: string(ev.Type), Created: ev.Created}
	if ev.Data != nil && len(ev.Data.Raw) > 0 && strings.HasPrefix(out.Type, "payment_intent.") {
		if err := json.Unmarshal(ev.Data.Raw, &out.Intent); err != nil {
			return WebhookEvent{}, fmt.Errorf("webhook %s: the intent does not decode: %w", ev.ID, err)
		}
	}
	return out, nil
}

// SignWebhook is the Stripe-Signature header of body at t (what a provider
// sends; the simulator and the tests sign with it).
func SignWebhook(body []byte, secret string, t time.Time) string {
	return fmt.Sprintf("t=%d,v1=%x", t.Unix(), webhook.ComputeSignature(t, body, secret))
}

var declineCode = regexp.MustCompile(`^[a-z_]{1,40}$`)

// FailureReason is the reason orderflow records for a failed or canceled
// intent: a code and text from orderflow's list, with the provider's
// decline code when it is one (never the provider's free text).
func FailureReason(ev WebhookEvent) string {
	if ev.Type == EventIntentCanceled {
		return "payment_canceled: the payment was canceled at the provider"
	}
	if e := ev.Intent.LastPaymentError; e != nil {
		code := e.DeclineCode
		if code == "" {
			code = e.Code
		}
		if declineCode.MatchString(code) {
			return "card_declined: the provider declined the payment (" + code + ")"
		}
	}
	return "payment_failed: the provider refused the payment"
}
