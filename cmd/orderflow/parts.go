// The parts the roles are built from, each configured from Config: the
// token verifier and the payment provider of the API, the Watermill handlers
// and the routers' settings of the consumers, the carrier of the saga's
// worker, the database pools. wiring.go assembles them.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v82"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/pgpool"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/telemetry"
)

// verifier checks bearer tokens: against the configured public key or
// JWKS, or, in dev, against dev's own key.
func (a *app) verifier(ctx context.Context) (*auth.Verifier, error) {
	c := a.cfg
	vc := auth.VerifierConfig{Issuer: c.JWTIssuer, Audience: c.JWTAudience, Algorithm: c.JWTAlgorithm, JWKSURL: c.JWKSURL, MaxTTL: c.JWTMaxTTL}
	switch {
	case c.JWTPublicKey != "":
		raw, err := os.ReadFile(c.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("jwt-public-key: %w", err)
		}
		if vc.PublicKey, err = auth.ParsePublicKey(raw); err != nil {
			return nil, fmt.Errorf("jwt-public-key %s: %w", c.JWTPublicKey, err)
		}
	case c.JWKSURL != "":
	case c.oneProcess:
		key, err := auth.DevKey(c.DataDir, true)
		if err != nil {
			return nil, err
		}
		vc.PublicKey = key.Public()
		if vc.Issuer == "" {
			vc.Issuer = auth.DevIssuer
		}
	default:
		return nil, errors.New("set ORDERFLOW_JWT_PUBLIC_KEY or ORDERFLOW_JWKS_URL (with ORDERFLOW_JWT_ISSUER): the API accepts no request without a verifiable token")
	}
	return auth.NewVerifier(ctx, vc)
}

// handlers are every Watermill handler this process runs.
func (a *app) handlers() ([]delivery.Handler, func(), error) {
	var hs []delivery.Handler
	for _, p := range projections.All() {
		hs = append(hs, faulty(p, a.cfg.FaultFailEvent).Handler(a.store.Registry()))
	}
	closeAll := func() {}
	if a.cfg.NATSURL != "" {
		// NATS need not answer yet: the bridge connects when it can, and
		// the messages wait in the outbox meanwhile.
		b, err := bridge.New(bridge.Config{URL: a.cfg.NATSURL, ReconnectWait: a.cfg.NATSReconnectWait, Limits: a.cfg.NATSLimits,
			BatchSize: a.cfg.BatchSize, Logger: a.log})
		if err != nil {
			return nil, nil, err
		}
		hs = append(hs, b.Handlers()...)
		closeAll = func() { _ = b.Close() }
		// NATS away degrades the process, it does not make it unready: the
		// API, the projections and the sagas go on without it.
		a.ready.add("nats_bridge", func(ctx context.Context) error {
			if err := b.Check(ctx); err != nil {
				return fmt.Errorf("%w: %w", httpapi.ErrDegraded, err)
			}
			return nil
		})
		a.metrics.WatchNATSBridge(func() telemetry.BridgeStatus {
			s := b.Status()
			return telemetry.BridgeStatus{Connected: s.Connected, AwaySince: s.AwaySince, Forwarded: s.Forwarded, Reconnects: s.Reconnects}
		})
		a.log.Info("forwarding topics to NATS JetStream", "topics", outbox.Topics)
	}
	return hs, closeAll, nil
}

// faulty makes projection p fail on one event (<stream id>:<version>), for
// the fault scenarios: the event goes to the poison topic, the rest keeps
// flowing.
func faulty(p projections.Projection, event string) projections.Projection {
	if event == "" || p.OnEvents == nil {
		return p
	}
	apply := p.OnEvents
	p.OnEvents = func(ctx context.Context, tx pgx.Tx, es []eventstore.Envelope) error {
		for _, e := range es {
			if e.StreamID+":"+strconv.FormatInt(e.StreamVersion, 10) == event {
				return fmt.Errorf("injected fault on %s", event)
			}
		}
		return apply(ctx, tx, es)
	}
	return p
}

func (a *app) routerConfig() delivery.RouterConfig {
	return delivery.RouterConfig{PollInterval: a.cfg.PollInterval, BatchSize: a.cfg.BatchSize, SetBatchSize: a.cfg.SetBatchSize, MaxRetries: a.cfg.HandlerRetries,
		Wake: a.commits.wake, Logger: a.log, Observe: a.metrics.Message}
}

// paymentProvider is the configured payment provider, and for the
// simulated one its decider and webhook sender, which every API process
// runs (they share its tables).
func (a *app) paymentProvider(pool *pgxpool.Pool) (activities.PaymentProvider, func(context.Context) error) {
	if a.cfg.PaymentProvider == "stripe" {
		return activities.StripePayments{Client: stripe.NewClient(a.cfg.StripeSecretKey)}, nil
	}
	url := a.cfg.PaymentWebhookURL
	if url == "" {
		url = "http://" + a.cfg.HTTPAddr + "/webhooks/payments"
	}
	sim := &activities.SimulatedPayments{Pool: pool, Latency: a.cfg.PaymentLatency, DeclineRate: a.cfg.PaymentDeclineRate,
		CardLimit: int64(a.cfg.PaymentCardLimit), WebhookURL: url, Secret: a.cfg.PaymentWebhookSecret, Log: a.log}
	return sim, sim.Run
}

// carrier is the simulated carrier the saga's activities ship with.
func (a *app) carrier() activities.SimulatedCarrier {
	c := a.cfg
	return activities.SimulatedCarrier{Pool: a.pool, Latency: c.CarrierLatency, FailureRate: c.CarrierFailRate, RejectPostalCode: c.CarrierRejectZip,
		SlowPostalCode: c.CarrierSlowZip, SlowLatency: c.CarrierSlowLatency}
}

// connect opens a pool on DATABASE_URL for the roles and the tools.
func connect(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	return connectWith(ctx, cfg, 32, 0)
}

// connectWith opens a pool of size conns (pool_max_conns in the URL wins),
// with a statement timeout when timeout is set.
func connectWith(ctx context.Context, cfg Config, conns int32, timeout time.Duration) (*pgxpool.Pool, error) {
	return pgpool.Open(ctx, cfg.DatabaseURL, conns, timeout)
}
