package activities

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v82"
)

// Decline codes of the simulated provider (Stripe's names).
const (
	// DeclineOverLimit is every intent above CardLimit: a refusal a test
	// provokes on purpose.
	DeclineOverLimit = "insufficient_funds"
	// DeclineRandom is the share DeclineRate refused at random.
	DeclineRandom = "generic_decline"
)

// ErrIdempotencyMismatch is a payment id sent again with other parameters
// (Stripe answers such a request 400 idempotency_error).
var ErrIdempotencyMismatch = errors.New("the idempotency key was used with other parameters")

// SimulatedPayments stands in for a payment provider. It creates an intent
// per payment id (its idempotency key), decides it Latency later — it
// succeeds, but declines a share DeclineRate at random and every amount
// above CardLimit (0: no limit), so that a refusal can be provoked on
// purpose — and delivers each decision as a webhook signed with Secret to
// WebhookURL, again and again until it is answered 2xx. Its ledger is the
// tables payment_sim_intents and payment_sim_events, shared by every
// process: Run in several processes claims rows with FOR UPDATE SKIP LOCKED.
type SimulatedPayments struct {
	Pool        *pgxpool.Pool
	Latency     time.Duration
	DeclineRate float64
	CardLimit   int64
	WebhookURL  string
	Secret      string
	// Poll is how often Run looks for due work (default 50ms).
	Poll time.Duration
	// Lease is how long a claimed delivery is left to its sender before
	// another may send it again (default 30s).
	Lease  time.Duration
	Client *http.Client
	Log    *slog.Logger
}

// Name is the provider's name on payments.
func (p *SimulatedPayments) Name() string { return "simulated" }

func randomID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// CreateIntent records the intent once per payment id and decides its
// outcome now (revealed at decide_at); a retry answers the same intent.
func (p *SimulatedPayments) CreateIntent(ctx context.Context, req IntentRequest) (Intent, error) {
	outcome, decline := IntentSucceeded, ""
	switch {
	case p.CardLimit > 0 && req.Amount > p.CardLimit:
		outcome, decline = IntentRequiresPaymentMethod, DeclineOverLimit
	case p.DeclineRate > 0 && mrand.Float64() < p.DeclineRate:
		outcome, decline = IntentRequiresPaymentMethod, DeclineRandom
	}
	id := randomID("pi_")
	_, err := p.Pool.Exec(ctx, `INSERT INTO payment_sim_intents (intent_id, idempotency_key, payment_id, wallet_id, amount, currency,
		client_secret, status, outcome, decline_code, decide_at)
		VALUES ($1, $2, $2, $3, $4, $5, $6, 'processing', $7, nullif($8, ''), now() + $9::interval)
		ON CONFLICT (idempotency_key) DO NOTHING`,
		id, req.PaymentID, req.WalletID, req.Amount, req.Currency, id+"_secret_"+randomID(""), outcome, decline, p.Latency.String())
	if err != nil {
		return Intent{}, err
	}
	in, wallet, err := p.intent(ctx, `idempotency_key = $1`, req.PaymentID)
	if err != nil {
		return Intent{}, err
	}
	if in.Amount != req.Amount || !strings.EqualFold(in.Currency, req.Currency) || wallet != req.WalletID {
		return Intent{}, fmt.Errorf("%w: payment %s", ErrIdempotencyMismatch, req.PaymentID)
	}
	// The simulator confirms server-side: the client has nothing to do.
	in.ClientSecret = ""
	return in, nil
}

// intentColumns are what scanIntent reads.
const intentColumns = `intent_id, amount, currency, status, client_secret, payment_id, wallet_id, coalesce(decline_code, ''), created_at`

func (p *SimulatedPayments) intent(ctx context.Context, where string, arg any) (Intent, string, error) {
	return scanIntent(p.Pool.QueryRow(ctx, `SELECT `+intentColumns+` FROM payment_sim_intents WHERE `+where, arg))
}

// scanIntent reads an intent in Stripe's shape, and its wallet.
func scanIntent(row pgx.Row) (Intent, string, error) {
	var in Intent
	var wallet, paymentID, decline string
	var created time.Time
	if err := row.Scan(&in.ID, &in.Amount, &in.Currency, &in.Status, &in.ClientSecret, &paymentID, &wallet, &decline, &created); err != nil {
		return Intent{}, "", err
	}
	in.Object, in.Currency, in.Created = "payment_intent", strings.ToLower(in.Currency), created.Unix()
	in.Metadata = map[string]string{MetaPaymentID: paymentID, MetaWalletID: wallet}
	if decline != "" && in.Status == IntentRequiresPaymentMethod {
		in.LastPaymentError = &PaymentError{Type: "card_error", Code: "card_declined", DeclineCode: decline}
	}
	return in, wallet, nil
}

// Run decides due intents and delivers their webhooks until ctx ends.
func (p *SimulatedPayments) Run(ctx context.Context) error {
	poll := p.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	for {
		if err := p.Step(ctx); err != nil && ctx.Err() == nil {
			log.Warn("simulated payment provider", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// Step decides the intents that are due and sends the webhooks that are
// due once (Run calls it in a loop; tests may call it themselves).
func (p *SimulatedPayments) Step(ctx context.Context) error {
	// One cheap read first: most polls find nothing due, and open no
	// transaction (the provider polls every process's database all along).
	var due bool
	if err := p.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM payment_sim_intents WHERE status = 'processing' AND decide_at <= now())
		OR EXISTS (SELECT 1 FROM payment_sim_events WHERE delivered_at IS NULL AND next_attempt_at <= now())`).Scan(&due); err != nil || !due {
		return err
	}
	if err := p.decide(ctx); err != nil {
		return err
	}
	return p.deliver(ctx)
}

// decide reveals the outcome of due intents and queues their webhook
// events, in one short transaction per batch.
func (p *SimulatedPayments) decide(ctx context.Context) error {
	return pgx.BeginFunc(ctx, p.Pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `UPDATE payment_sim_intents SET status = outcome
			WHERE intent_id IN (SELECT intent_id FROM payment_sim_intents WHERE status = 'processing' AND decide_at <= now()
			    ORDER BY decide_at LIMIT 100 FOR UPDATE SKIP LOCKED)
			RETURNING intent_id`)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, id := range ids {
			in, _, err := scanIntent(tx.QueryRow(ctx, `SELECT `+intentColumns+` FROM payment_sim_intents WHERE intent_id = $1`, id))
			if err != nil {
				return err
			}
			typ := EventIntentSucceeded
			if in.Status != IntentSucceeded {
				typ = EventIntentFailed
			}
			in.ClientSecret = "" // Stripe's webhook carries it; orderflow never needs it
			eventID := randomID("evt_")
			body, err := json.Marshal(map[string]any{"id": eventID, "object": "event", "api_version": stripe.APIVersion, "created": time.Now().Unix(),
				"livemode": false, "pending_webhooks": 1, "type": typ, "data": map[string]any{"object": in}})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO payment_sim_events (event_id, intent_id, type, body) VALUES ($1, $2, $3, $4)`,
				eventID, id, typ, string(body)); err != nil {
				return err
			}
		}
		return nil
	})
}

// deliver claims due events (moving them a lease ahead, so that a sender
// that dies leaves them to be sent again) and posts each, signed now.
func (p *SimulatedPayments) deliver(ctx context.Context) error {
	if p.WebhookURL == "" {
		return nil
	}
	lease := p.Lease
	if lease <= 0 {
		lease = 30 * time.Second
	}
	rows, _ := p.Pool.Query(ctx, `UPDATE payment_sim_events SET attempts = attempts + 1, next_attempt_at = now() + $1::interval
		WHERE event_id IN (SELECT event_id FROM payment_sim_events WHERE delivered_at IS NULL AND next_attempt_at <= now()
		    ORDER BY next_attempt_at LIMIT 32 FOR UPDATE SKIP LOCKED)
		RETURNING event_id, body, attempts`, lease.String())
	type due struct {
		ID       string
		Body     string
		Attempts int
	}
	batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[due])
	if err != nil {
		return err
	}
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	var wg sync.WaitGroup
	for _, d := range batch {
		wg.Go(func() {
			status := p.post(ctx, client, []byte(d.Body))
			if status >= 200 && status < 300 {
				_, _ = p.Pool.Exec(ctx, `UPDATE payment_sim_events SET delivered_at = now(), last_status = $2 WHERE event_id = $1`, d.ID, status)
				return
			}
			// Redelivered with a growing pause (Stripe retries for days).
			backoff := min(100*time.Millisecond<<min(d.Attempts, 16), time.Minute)
			_, _ = p.Pool.Exec(ctx, `UPDATE payment_sim_events SET next_attempt_at = now() + $2::interval, last_status = $3 WHERE event_id = $1`,
				d.ID, backoff.String(), status)
		})
	}
	wg.Wait()
	return nil
}

// post sends one event, signed at the time of sending; 0 when no answer came.
func (p *SimulatedPayments) post(ctx context.Context, client *http.Client, body []byte) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "orderflow-simulated-payments/1.0 (+Stripe webhook format)")
	req.Header.Set("Stripe-Signature", SignWebhook(body, p.Secret, time.Now()))
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
