package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"golang.org/x/sync/errgroup"

	"github.com/stripe/stripe-go/v82"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	httpapi "github.com/orderflow/orderflow/http"
	"github.com/orderflow/orderflow/internal/devruntime/devpg"
	"github.com/orderflow/orderflow/migrations"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/telemetry"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// app is the wiring: every part built from one Config and one pool.
type app struct {
	cfg    Config
	log    *slog.Logger
	pool   *pgxpool.Pool
	store  *eventstore.Store
	bus    *commands.Bus
	reader *projections.Reader
	sagas  *sagas.Client
	// wake is raised when this process commits outbox messages, and on a
	// NOTIFY from another process when the roles run apart.
	wake *outbox.Signal
	// committed is what a commit of this process raises.
	committed func()
	metrics   *telemetry.Metrics
	ready     *checks
	// streams are the per-stream command locks of this process's buses.
	streams *commands.StreamLocks
	// temporalOnce wires the Temporal SDK's metrics and the sagas gauge once.
	temporalOnce    sync.Once
	temporalMetrics client.MetricsHandler
	temporalTracing interceptor.Interceptor
	sagasGauge      sync.Once
	// admit refuses orders while the sagas' backlog is full (nil: never).
	admit func(ctx context.Context, commandType string) error
}

func withPool(ctx context.Context, cfg Config, f func(*app) error) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: cfg.SnapshotEvery, CacheSize: cfg.AggregateCache})
	wake := outbox.NewSignal()
	committed := wake.Raise
	if !cfg.oneProcess {
		// Roles in separate processes: subscribers elsewhere hear of this
		// process's commits by NOTIFY, and this one's of theirs.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		n := outbox.NewNotifier(ctx, pool, cfg.log)
		committed = func() { wake.Raise(); n.Raise() }
		go outbox.Listen(ctx, pool, outbox.NotifyChannel, wake.Raise, cfg.log)
	}
	m := telemetry.NewMetrics(cfg.log)
	cfg.GroupCommit.Observe = m.Group
	streams := commands.NewStreamLocks()
	// One count of the sagas' backlog per process, shared by its buses.
	var admit func(context.Context, string) error
	if cfg.SagaBacklogWait > 0 {
		admit = (&sagas.Admission{Backlog: &sagas.Backlog{Pool: pool, Window: cfg.SagaWindow}, Wait: cfg.SagaBacklogWait,
			Min: int64(max(1, cfg.SagaBacklogMin)), Slots: int64(cfg.SagaMaxRunning), RetryAfter: time.Second}).Admit
	}
	a := &app{admit: admit,
		cfg: cfg, log: cfg.log, pool: pool, store: store, wake: wake, committed: committed, metrics: m, ready: &checks{}, streams: streams,
		bus: commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: cfg.CommandRetries, Committed: committed,
			Observe: m.Command, Conflict: m.Conflict, ConcurrentStreams: cfg.ConcurrentStreams, Streams: streams, Group: cfg.GroupCommit, Admit: admit}),
		reader: projections.NewReader(pool),
	}
	m.WatchPool("main", pool)
	m.WatchDelivery(pool, a.reader)
	if cfg.OpsAddr != "" {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			if err := a.serveOps(ctx); err != nil {
				a.log.Error("ops listener", "err", err)
			}
		}()
	}
	return f(a)
}

func runDev(ctx context.Context, cfg Config, log *slog.Logger) error {
	cfg.oneProcess = true
	// Every port dev will listen on is free before anything starts: a busy
	// one found later (the Web UI exits the process on it) would leave the
	// embedded PostgreSQL running with no one to stop it.
	if err := portsFree(devPorts(cfg)); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		log.Info("starting embedded PostgreSQL", "dir", filepath.Join(cfg.DataDir, "postgres"))
		password, err := secretFile(filepath.Join(cfg.DataDir, "postgres-password"))
		if err != nil {
			return err
		}
		srv, err := devpg.Start(ctx, devpg.Options{Dir: cfg.DataDir, Password: password})
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		defer func() {
			if err := srv.Stop(); err != nil {
				log.Error("stop embedded PostgreSQL", "err", err)
			}
		}()
		cfg.DatabaseURL = srv.URL
		// The tools (verify, projections, poison, sagas) read it from here.
		if err := os.WriteFile(filepath.Join(cfg.DataDir, devURLFile), []byte(srv.URL), 0o600); err != nil {
			return err
		}
		log.Info("embedded PostgreSQL is up", "url", redacted(srv.URL), "full_url_in", filepath.Join(cfg.DataDir, devURLFile))
	}
	if err := runMigrate(ctx, cfg, log); err != nil {
		return err
	}
	if cfg.TemporalAddress == "" {
		stop, err := startDevTemporal(ctx, &cfg)
		if err != nil {
			return err
		}
		defer stop()
	}
	if cfg.PaymentWebhookSecret == "" {
		// One secret for this run, handed to the simulated provider and the API.
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		cfg.PaymentWebhookSecret = "whsec_" + base64.RawURLEncoding.EncodeToString(b)
		log.Info("generated a payment webhook secret for this run (set ORDERFLOW_PAYMENT_WEBHOOK_SECRET to choose one)")
	}
	if cfg.JWTPublicKey == "" && cfg.JWKSURL == "" {
		if _, err := auth.DevKey(cfg.DataDir, true); err != nil {
			return err
		}
		log.Info("the API needs a bearer token: print one with `orderflow token -role operator` or `orderflow token -role customer -customer <id>`",
			"signing_key", auth.DevKeyPath(cfg.DataDir))
	}
	return withPool(ctx, cfg, func(a *app) error {
		tc, err := a.dialTemporal(ctx)
		if err != nil {
			return err
		}
		defer tc.Close()
		a.sagas = &sagas.Client{C: tc, Pool: a.pool}
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return a.runWorker(ctx, tc) })
		g.Go(func() error { return a.serveAPI(ctx) })
		g.Go(func() error { return a.runProjector(ctx) })
		return g.Wait()
	})
}

// withTemporal runs f with a Temporal client when TEMPORAL_ADDRESS is set.
func (a *app) withTemporal(ctx context.Context, required bool, f func() error) error {
	if a.cfg.TemporalAddress == "" {
		if required {
			return errors.New("TEMPORAL_ADDRESS is not set")
		}
		a.log.Warn("TEMPORAL_ADDRESS is not set: cancels are refused (the saga decides them), GET /orders/{id} shows no saga")
		return f()
	}
	tc, err := a.dialTemporal(ctx)
	if err != nil {
		return err
	}
	defer tc.Close()
	a.sagas = &sagas.Client{C: tc, Pool: a.pool}
	return f()
}

func connect(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	return connectWith(ctx, cfg, 32, 0)
}

// connectWith opens a pool of size conns (pool_max_conns in the URL wins),
// with a statement timeout when timeout is set.
func connectWith(ctx context.Context, cfg Config, conns int32, timeout time.Duration) (*pgxpool.Pool, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("DATABASE_URL is not set")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	// pgxpool's default (4 on 2 cores) is too few for one process that runs
	// a subscriber transaction per consumer group and the saga's activities.
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		pcfg.MaxConns = conns
	}
	if timeout > 0 {
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

func runMigrate(ctx context.Context, cfg Config, log *slog.Logger) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := migrations.Up(ctx, pool)
	if err != nil {
		return err
	}
	log.Info("migrations applied", "new", applied)
	return nil
}

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

// serveAPI serves the API on a pool of its own, with a statement timeout:
// clients' reads, waits and streams never take the connections the
// projector and the saga need.
func (a *app) serveAPI(ctx context.Context) error {
	if a.cfg.PaymentWebhookSecret == "" { // dev generated one before
		return errors.New("set ORDERFLOW_PAYMENT_WEBHOOK_SECRET: the API verifies the payment provider's webhooks with it")
	}
	verifier, err := a.verifier(ctx)
	if err != nil {
		return err
	}
	pool, err := connectWith(ctx, a.cfg, int32(a.cfg.APIPoolSize), a.cfg.StatementTimeout)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: a.cfg.SnapshotEvery, CacheSize: a.cfg.AggregateCache})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: a.cfg.CommandRetries, Committed: a.committed,
		Observe: a.metrics.Command, Conflict: a.metrics.Conflict, ConcurrentStreams: a.cfg.ConcurrentStreams, Streams: a.streams, Group: a.cfg.GroupCommit,
		Admit: a.admit})
	a.metrics.WatchPool("api", pool)
	provider, runProvider := a.paymentProvider(pool)
	if runProvider != nil {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = runProvider(ctx) }()
	}
	e, err := httpapi.New(httpapi.Config{Payments: httpapi.Payments{Provider: provider, WebhookSecret: a.cfg.PaymentWebhookSecret, Tolerance: a.cfg.PaymentWebhookTolerance}, Pool: pool, Bus: bus, Store: store, Reader: projections.NewReader(pool), Log: a.log, Sagas: a.sagas, Consumers: a.replayable(),
		MaxBodyBytes: a.cfg.MaxBodyBytes, ConsistencyTimeout: a.cfg.ConsistencyTimeout, CancelWait: a.cfg.CancelWait, Verifier: verifier, Limits: a.cfg.Limits, TrustedProxies: a.cfg.TrustedProxies,
		Observe: a.metrics.HTTP, Ready: a.ready.all, InFlight: a.cfg.InFlight})
	if err != nil {
		return err
	}
	// No WriteTimeout: live streams (SSE) stay open; each write of theirs
	// has its own deadline instead.
	srv := &http.Server{
		Addr:              a.cfg.HTTPAddr,
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	a.log.Info("API listening", "addr", "http://"+a.cfg.HTTPAddr, "docs", "http://"+a.cfg.HTTPAddr+"/docs")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("API shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
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
		Wake: a.wake, Logger: a.log, Observe: a.metrics.Message}
}

func (a *app) runProjector(ctx context.Context) error {
	hs, closeAll, err := a.handlers()
	if err != nil {
		return err
	}
	defer closeAll()
	router, err := delivery.NewRouter(a.pool, a.routerConfig(), hs...)
	if err != nil {
		return err
	}
	a.ready.add("projector", func(context.Context) error {
		if !router.IsRunning() {
			return errors.New("the projector is not running")
		}
		return nil
	})
	a.log.Info("projector running", "handlers", len(hs), "poll_interval", a.cfg.PollInterval)
	return router.Run(ctx)
}

// devURLFile holds dev's database URL, password included (mode 0600).
const devURLFile = "database-url"

// devDatabaseURL is the URL a running (or last) dev wrote in dataDir, or "".
func devDatabaseURL(dataDir string) string {
	raw, err := os.ReadFile(filepath.Join(dataDir, devURLFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// secretFile returns the secret kept at path, generating it (mode 0600)
// the first time.
func secretFile(path string) (string, error) {
	if raw, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(raw)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	// The directory stays traversable: as root, dev's PostgreSQL runs as
	// nobody inside it; the secret itself is 0600.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return secret, os.WriteFile(path, []byte(secret), 0o600)
}

// redacted is a database URL without its password, for logs.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
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

// listenPort is an address dev listens on and the setting that moves it.
type listenPort struct{ addr, setting string }

// devPorts are the addresses dev listens on: the API, the ops endpoints
// and, when it embeds Temporal, its frontend and Web UI. (-pprof-addr is
// bound before dev starts, by main.)
func devPorts(cfg Config) []listenPort {
	ports := []listenPort{{cfg.HTTPAddr, "-http-addr (ORDERFLOW_HTTP_ADDR)"}, {cfg.OpsAddr, "-ops-addr (ORDERFLOW_OPS_ADDR)"}}
	if cfg.TemporalAddress == "" {
		// The frontend's: the other services take the ports after it, or
		// free ones when those are taken.
		ports = append(ports, listenPort{cfg.TemporalDevAddr, "-temporal-dev-addr (ORDERFLOW_TEMPORAL_DEV_ADDR)"},
			listenPort{cfg.TemporalUIAddr, "-temporal-ui-addr (ORDERFLOW_TEMPORAL_UI_ADDR)"})
	}
	return ports
}

// portsFree reports the first address that cannot be listened on, with the
// setting that moves it.
func portsFree(ports []listenPort) error {
	for _, p := range ports {
		if p.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("%s is not free (%v): stop what listens there, or move it with %s", p.addr, err, p.setting)
		}
		l.Close()
	}
	return nil
}
