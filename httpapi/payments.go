package httpapi

// Payments: a customer pays into its wallet through the payment provider
// (POST /wallets/{id}/payments), the provider's signed webhook settles the
// payment and credits the wallet (POST /webhooks/payments), and the
// payments read model answers how a payment stands.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/payment"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/projections"
)

// Payments configures the payment routes. Without a Provider a request
// for a payment answers 503; without a WebhookSecret every webhook 401.
type Payments struct {
	Provider activities.PaymentProvider
	// WebhookSecret verifies the provider's Stripe-Signature header.
	WebhookSecret string
	// Tolerance is how old a webhook's signature may be (default 5 min).
	Tolerance time.Duration
}

// rawBodyKey holds a request's body byte for byte as received (checkBody):
// a webhook's signature is over these bytes, not over a re-encoding.
const rawBodyKey = "raw_body"

// paymentView is the answer to a request for a payment.
type paymentView struct {
	PaymentID string `json:"payment_id"`
	WalletID  string `json:"wallet_id"`
	Status    string `json:"status"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Provider  string `json:"provider"`
	IntentID  string `json:"intent_id,omitempty"`
	// ClientSecret, from a real provider, lets the customer's browser
	// confirm the intent (Stripe.js); never stored by orderflow.
	ClientSecret   string `json:"client_secret,omitempty"`
	CommandID      string `json:"command_id"`
	GlobalPosition int64  `json:"global_position"`
}

func (s *Server) paymentRoutes(e *echo.Echo) {
	e.POST("/wallets/:id/payments", s.requestPayment)
	e.POST("/webhooks/payments", s.paymentWebhook)
	e.GET("/payments/:id", read(s, "payments_projection", func(c echo.Context) (projections.Payment, error) {
		p, err := s.reader.Payment(c.Request().Context(), c.Param("id"))
		if err == nil && !principal(c).Owns(p.CustomerID) {
			return projections.Payment{}, projections.ErrNotFound
		}
		return p, err
	}))
	// The wallet (its owner) is the wallets read model's: min_position
	// waits for it too.
	e.GET("/wallets/:id/payments", readAfter(s, []string{"payments_projection", "wallets_projection"}, func(c echo.Context) (map[string]any, error) {
		ctx := c.Request().Context()
		w, err := s.reader.Wallet(ctx, c.Param("id"))
		if err == nil && !principal(c).Owns(w.CustomerID) {
			err = projections.ErrNotFound
		}
		if errors.Is(err, projections.ErrNotFound) {
			return nil, problem(http.StatusNotFound, "wallet_not_found", fmt.Sprintf("wallet %s does not exist", c.Param("id")))
		}
		if err != nil {
			return nil, err
		}
		ps, err := s.reader.WalletPayments(ctx, w.WalletID, limit(c))
		return map[string]any{"wallet_id": w.WalletID, "payments": nonNil(ps)}, err
	}))
}

// intentTimeout bounds asking the provider for a recorded payment's intent
// and recording it, once the client's request no longer does.
const intentTimeout = 15 * time.Second

// requestPayment records the customer's payment (RequestPayment, its id
// derived from the Idempotency-Key), asks the provider for its intent
// under the payment id, and records the intent: 202, the provider decides
// later. A retry with the same key is the same payment and the same
// intent; a provider that did not answer leaves the payment requested,
// for the retry to finish.
func (s *Server) requestPayment(c echo.Context) error {
	if s.payments.Provider == nil {
		return problem(http.StatusServiceUnavailable, "payments_unavailable", "no payment provider is configured")
	}
	var body struct {
		Amount   int64  `json:"amount"`
		Currency string `json:"currency"`
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	ctx := c.Request().Context()
	walletID := c.Param("id")
	p := principal(c)
	customer := p.CustomerID
	if p.Role == auth.Operator {
		// An operator pays on the wallet's customer's behalf.
		w := wallet.New(walletID)
		if err := s.store.Load(ctx, w); err != nil {
			return err
		}
		customer = w.CustomerID()
	}
	correlationID, onBehalfOf, err := traceHeaders(c)
	if err != nil {
		return err
	}
	rec, err := s.bus.Dispatch(ctx, commands.Request{Command: commands.RequestPayment{CustomerID: customer, WalletID: walletID, Amount: body.Amount, Currency: body.Currency},
		CommandID: c.Request().Header.Get("Idempotency-Key"), CorrelationID: correlationID, OnBehalfOf: onBehalfOf, Principal: &p})
	if err != nil {
		return err
	}
	// The payment is recorded: its intent is asked for and recorded even if
	// the client goes away now (a client that retries without its key makes
	// another payment, and this one would stay requested for ever), within
	// a bound of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intentTimeout)
	defer cancel()
	pay := payment.New(rec.StreamID)
	if err := s.store.Load(ctx, pay); err != nil {
		return err
	}
	amount := pay.Amount()
	intent, err := s.payments.Provider.CreateIntent(ctx, activities.IntentRequest{PaymentID: rec.StreamID, WalletID: pay.WalletID(),
		CustomerID: pay.CustomerID(), Amount: amount.Amount, Currency: amount.Currency})
	if err != nil {
		s.log.Warn("payment provider", "payment_id", rec.StreamID, "err", err)
		p := problem(http.StatusBadGateway, "provider_unavailable",
			fmt.Sprintf("payment %s is recorded but the provider did not answer: send the same request again (same Idempotency-Key)", rec.StreamID))
		p.CommandID, p.RetryAfter = rec.CommandID, time.Second
		return p
	}
	irec, err := s.bus.Dispatch(ctx, commands.Request{Command: commands.RecordPaymentIntent{PaymentID: rec.StreamID, Provider: s.payments.Provider.Name(), IntentID: intent.ID},
		CommandID: commands.PaymentCommandID("intent", rec.StreamID), CorrelationID: rec.CorrelationID, CausationID: rec.CommandID,
		Actor: commands.PaymentActor, Internal: true})
	if err != nil {
		return err
	}
	if err := s.store.Load(ctx, pay); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, "/payments/"+rec.StreamID)
	if rec.Replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	return c.JSON(http.StatusAccepted, paymentView{PaymentID: rec.StreamID, WalletID: pay.WalletID(), Status: string(pay.Status()), Amount: amount.Amount,
		Currency: amount.Currency, Provider: s.payments.Provider.Name(), IntentID: intent.ID, ClientSecret: intent.ClientSecret, CommandID: rec.CommandID,
		GlobalPosition: max(rec.GlobalPosition, irec.GlobalPosition)})
}

// webhookReply is the answer to the provider: 2xx once orderflow has
// committed everything the event asks (it stops redelivering then).
type webhookReply struct {
	Received  bool   `json:"received"`
	EventID   string `json:"event_id"`
	PaymentID string `json:"payment_id,omitempty"`
	// Outcome: succeeded (and credited), failed, ignored (an event orderflow
	// does not act on), rejected (refused for good: logged, not retried).
	Outcome string `json:"outcome"`
	Code    string `json:"code,omitempty"`
}

// paymentWebhook takes the provider's signed webhook as orderflow's
// payments principal. The signature (over the raw body, with a timestamp
// within the tolerance) is its authentication: anything else is 401 and
// changes nothing. The payment's verdict is one command keyed by the
// provider's event id, the credit one keyed by the payment id: a
// redelivered webhook decides and credits nothing again. It answers 2xx
// only after both committed, so a crash in between is healed by the
// provider's redelivery.
func (s *Server) paymentWebhook(c echo.Context) error {
	raw, _ := c.Get(rawBodyKey).([]byte)
	tolerance := s.payments.Tolerance
	if tolerance <= 0 {
		tolerance = activities.DefaultWebhookTolerance
	}
	ev, err := activities.VerifyWebhook(raw, c.Request().Header.Get("Stripe-Signature"), s.payments.WebhookSecret, tolerance)
	if err != nil {
		if !errors.Is(err, activities.ErrBadSignature) {
			return problem(http.StatusBadRequest, "invalid_webhook", "the webhook's event does not decode")
		}
		return problem(http.StatusUnauthorized, "invalid_signature",
			"the Stripe-Signature header does not verify: forged, signed with another secret, over another body, or older than the tolerance")
	}
	reply := webhookReply{Received: true, EventID: ev.ID, PaymentID: ev.Intent.Metadata[activities.MetaPaymentID], Outcome: "ignored"}
	if reply.PaymentID == "" || !commands.ValidID(ev.ID) {
		return c.JSON(http.StatusOK, reply) // not one of orderflow's intents, or an event it does not act on
	}
	ctx := c.Request().Context()
	internal := func(cmd commands.Command, key, causation string) (commands.Request, error) {
		if !commands.ValidID(key) {
			return commands.Request{}, fmt.Errorf("command id %q", key)
		}
		return commands.Request{Command: cmd, CommandID: key, CorrelationID: reply.PaymentID, CausationID: causation,
			Actor: commands.PaymentActor, Internal: true, Metadata: map[string]string{"provider_event": ev.ID}}, nil
	}
	var verdict commands.Command
	switch ev.Type {
	case activities.EventIntentSucceeded:
		verdict = commands.ConfirmPayment{PaymentID: reply.PaymentID, IntentID: ev.Intent.ID, EventID: ev.ID,
			Amount: ev.Intent.Amount, Currency: strings.ToUpper(ev.Intent.Currency)}
	case activities.EventIntentFailed, activities.EventIntentCanceled:
		verdict = commands.FailPayment{PaymentID: reply.PaymentID, IntentID: ev.Intent.ID, EventID: ev.ID, Reason: activities.FailureReason(ev)}
	default:
		return c.JSON(http.StatusOK, reply)
	}
	req, err := internal(verdict, commands.PaymentCommandID("event", ev.ID), ev.ID)
	if err != nil {
		return c.JSON(http.StatusOK, reply)
	}
	rec, err := s.bus.Dispatch(ctx, req)
	if done, err := s.settled(c, &reply, err); done {
		return err
	}
	reply.Outcome = "failed"
	if _, ok := verdict.(commands.ConfirmPayment); !ok {
		return c.JSON(http.StatusOK, reply)
	}
	pay := payment.New(reply.PaymentID)
	if err := s.store.Load(ctx, pay); err != nil {
		return err
	}
	if pay.Status() != payment.StatusSucceeded {
		return fmt.Errorf("payment %s is %s after its confirmation", reply.PaymentID, pay.Status())
	}
	amount := pay.Amount()
	req, err = internal(commands.TopUpWallet{WalletID: pay.WalletID(), Amount: amount.Amount, Currency: amount.Currency, PaymentID: reply.PaymentID},
		commands.PaymentCommandID("credit", reply.PaymentID), rec.CommandID)
	if err != nil {
		return err
	}
	_, err = s.bus.Dispatch(ctx, req)
	if done, err := s.settled(c, &reply, err); done {
		if reply.Outcome == "rejected" {
			// The provider has the money and the wallet refused it: an
			// operator's matter (the refusal is in the command log).
			s.log.Error("a confirmed payment could not be credited", "payment_id", reply.PaymentID, "code", reply.Code)
		}
		return err
	}
	reply.Outcome = "succeeded"
	return c.JSON(http.StatusOK, reply)
}

// settled handles a command's error in the webhook: a refusal by the
// aggregate is final (answered 200 "rejected", so the provider stops
// redelivering; the refusal is in the command log), anything else is
// returned (5xx: the provider redelivers). done is false when the command
// went through.
func (s *Server) settled(c echo.Context, reply *webhookReply, err error) (done bool, out error) {
	if err == nil {
		return false, nil
	}
	var de *aggregate.Error
	if errors.As(err, &de) {
		reply.Outcome, reply.Code = "rejected", de.Code
		s.log.Warn("payment webhook refused", "event_id", reply.EventID, "payment_id", reply.PaymentID, "code", de.Code)
		return true, c.JSON(http.StatusOK, reply)
	}
	return true, err
}
