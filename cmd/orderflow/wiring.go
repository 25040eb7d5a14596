// How an orderflow process is assembled, in one place.
//
// newApp builds, from one Config, what every role of a process shares: the
// main pool, the event store, the command bus, the read models' reader, the
// metrics and readiness checks, and the wake-up of this process's consumers
// (raised by its own commits, and by a NOTIFY from other processes when the
// roles run apart). connectTemporal adds the Temporal client. Each role then
// has one run function, which adds its own parts and runs until ctx ends:
//
//	runAPI             the REST API, on a pool of its own            orderflow api
//	runProjector       the projections' Watermill router             orderflow projector
//	runWorker          the saga: Temporal worker, starter, launcher  orderflow worker
//	runDev             the three above in one process, on embedded   orderflow dev
//	                   PostgreSQL and Temporal (dev.go)
//	runMigrate         the migrations                                orderflow migrate
//	runTemporalServer  the Temporal server dev embeds, alone         orderflow temporal-server
//
// The operator's tools (tools.go) open the same app and call one method.
// How each part is configured is in parts.go.

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/temporalclient"
	"github.com/orderflow/orderflow/migrations"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/personal"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/telemetry"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// app is what the roles of one process share.
type app struct {
	cfg    Config
	log    *slog.Logger
	pool   *pgxpool.Pool
	store  *eventstore.Store
	bus    *commands.Bus
	reader *projections.Reader
	// sagas is the Temporal client, once connectTemporal found one.
	sagas   *sagas.Client
	metrics *telemetry.Metrics
	ready   *checks
	// commits is how this process's buses commit: every bus of the
	// process (the API has its own) shares it.
	commits commits
	// temporal holds what the Temporal clients of this process share.
	temporal temporalParts
	// closers run on close, last added first.
	closers []func()
}

// commits are the settings every bus of a process shares.
type commits struct {
	// wake is raised when this process commits outbox messages, and on a
	// NOTIFY from another process when the roles run apart.
	wake *outbox.Signal
	// committed is what a commit of this process raises, with the topics
	// it wrote to.
	committed func(topics ...string)
	// streams are the per-stream command locks of this process's buses.
	streams *commands.StreamLocks
	// admit refuses orders while the sagas' backlog is full (nil: never).
	admit func(ctx context.Context, commandType string) error
}

// temporalParts wire the Temporal SDK's metrics, its tracing and the sagas
// gauge once per process, however many clients it dials.
type temporalParts struct {
	once      sync.Once
	metrics   client.MetricsHandler
	tracing   interceptor.Interceptor
	gaugeOnce sync.Once
}

// newApp connects to the database and builds the shared parts; close
// releases them.
func newApp(ctx context.Context, cfg Config) (*app, error) {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: cfg.log, pool: pool, ready: &checks{}, metrics: telemetry.NewMetrics(cfg.log)}
	a.closers = append(a.closers, pool.Close)
	ctx, cancel := context.WithCancel(ctx)
	a.closers = append(a.closers, cancel) // the listener, the notifier and the ops endpoints below
	a.store = eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: cfg.SnapshotEvery, CacheSize: cfg.AggregateCache})
	a.commits = commits{wake: outbox.NewSignal(), streams: commands.NewStreamLocks()}
	a.commits.committed = a.commits.wake.Raise
	if !cfg.oneProcess {
		// Roles in separate processes: subscribers elsewhere hear of this
		// process's commits by NOTIFY, and this one's of theirs.
		n := outbox.NewNotifier(ctx, pool, cfg.log)
		a.commits.committed = func(topics ...string) { a.commits.wake.Raise(topics...); n.Raise(topics...) }
		go outbox.Listen(ctx, pool, outbox.NotifyChannel, func(payload string) { a.commits.wake.Raise(outbox.NotifiedTopics(payload)...) }, cfg.log)
	}
	a.cfg.GroupCommit.Observe = a.metrics.Group
	// One count of the sagas' backlog per process, shared by its buses.
	if cfg.SagaBacklogWait > 0 {
		a.commits.admit = (&sagas.Admission{Backlog: &sagas.Backlog{Pool: pool, Window: cfg.SagaWindow, Slots: int64(cfg.SagaMaxRunning)}, Wait: cfg.SagaBacklogWait,
			Min: int64(max(1, cfg.SagaBacklogMin)), Slots: int64(cfg.SagaMaxRunning), RetryAfter: time.Second}).Admit
	}
	a.bus = a.newBus(pool, a.store)
	a.reader = projections.NewReader(pool)
	a.metrics.WatchPool("main", pool)
	a.metrics.WatchDelivery(pool, a.reader)
	a.ready.starting(cfg.starting...)
	if cfg.OpsAddr != "" {
		go func() {
			if err := a.serveOps(ctx); err != nil {
				a.log.Error("ops listener", "err", err)
			}
		}()
	}
	return a, nil
}

// newBus is a command bus on pool, committing as every bus of this process.
func (a *app) newBus(pool *pgxpool.Pool, store *eventstore.Store) *commands.Bus {
	c := a.cfg
	return commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: c.CommandRetries, Committed: a.commits.committed,
		Observe: a.metrics.Command, Conflict: a.metrics.Conflict, ConcurrentStreams: c.ConcurrentStreams, Streams: a.commits.streams,
		Group: c.GroupCommit, Admit: a.commits.admit})
}

// close releases what newApp and connectTemporal opened, last first.
func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// temporalUse says whether a role needs Temporal.
type temporalUse int

const (
	noTemporal       temporalUse = iota
	temporalIfSet                // without TEMPORAL_ADDRESS it runs, and says what it cannot do
	temporalRequired             // without TEMPORAL_ADDRESS it does not start
)

// connectTemporal dials TEMPORAL_ADDRESS as use says; the client closes
// with the app.
func (a *app) connectTemporal(ctx context.Context, use temporalUse) error {
	if use == noTemporal {
		return nil
	}
	if a.cfg.TemporalAddress == "" {
		if use == temporalRequired {
			return errors.New("TEMPORAL_ADDRESS is not set")
		}
		a.log.Warn("TEMPORAL_ADDRESS is not set: cancels are refused (the saga decides them), GET /orders/{id} shows no saga")
		return nil
	}
	tc, err := a.dialTemporal(ctx)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, tc.Close)
	a.sagas = &sagas.Client{C: tc, Pool: a.pool}
	return nil
}

// dialTemporal connects to TEMPORAL_ADDRESS, waiting for a server that is
// still starting, with this process's Temporal metrics and tracing.
func (a *app) dialTemporal(ctx context.Context) (client.Client, error) {
	t := &a.temporal
	t.once.Do(func() {
		var err error
		// Workflow starts, runs and every activity continue the trace of
		// the request that placed the order.
		if t.tracing, err = temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{}); err != nil {
			a.log.Error("Temporal tracing", "err", err)
		}
		if t.metrics, err = a.metrics.TemporalHandler(); err != nil {
			a.log.Error("Temporal SDK metrics", "err", err)
		}
	})
	dial := temporalclient.Config{Address: a.cfg.TemporalAddress, Namespace: a.cfg.TemporalNamespace, APIKey: a.cfg.TemporalAPIKey,
		Compression: a.cfg.TemporalCompression, Log: a.log, Metrics: t.metrics}
	if t.tracing != nil {
		dial.Interceptors = []interceptor.ClientInterceptor{t.tracing}
	}
	c, err := temporalclient.Dial(ctx, dial)
	if err != nil {
		return nil, err
	}
	a.ready.add("temporal", temporalCheck(c))
	t.gaugeOnce.Do(func() { a.metrics.WatchSagas(sagas.Client{C: c}.Count) })
	return c, nil
}

// runAPI is the api role: the REST API, and the sagas' client when
// TEMPORAL_ADDRESS is set.
func runAPI(ctx context.Context, cfg Config) error {
	return runRole(ctx, cfg, "api", temporalIfSet, (*app).serveAPI)
}

// runProjector is the projector role.
func runProjector(ctx context.Context, cfg Config) error {
	return runRole(ctx, cfg, "projector", noTemporal, (*app).runProjector)
}

// runWorker is the worker role: the saga's worker, starter and launcher.
func runWorker(ctx context.Context, cfg Config) error {
	return runRole(ctx, cfg, "worker", temporalRequired, func(a *app, ctx context.Context) error { return a.runWorker(ctx, a.sagas.C) })
}

// runRole runs one role in a process of its own: the process's parts, its
// Temporal client as the role uses it, then run. Until the role and its
// client are up, their readiness checks fail as starting.
func runRole(ctx context.Context, cfg Config, role string, use temporalUse, run func(a *app, ctx context.Context) error) error {
	cfg.starting = []string{role}
	if use != noTemporal && cfg.TemporalAddress != "" {
		cfg.starting = append(cfg.starting, "temporal")
	}
	a, err := newApp(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.connectTemporal(ctx, use); err != nil {
		return err
	}
	return run(a, ctx)
}

// runDev runs every role in this process, on an embedded PostgreSQL
// (unless DATABASE_URL is set) and an embedded Temporal server with its
// Web UI (unless TEMPORAL_ADDRESS is set). On a signal the roles stop
// first, then Temporal, then PostgreSQL.
func runDev(ctx context.Context, cfg Config) error {
	cfg.oneProcess = true
	log := cfg.log
	// Every port dev will listen on is free before anything starts: a busy
	// one found later (the Web UI exits the process on it) would leave the
	// embedded PostgreSQL running with no one to stop it.
	if err := portsFree(devPorts(cfg)); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		stop, err := startDevPostgres(ctx, &cfg)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := runMigrate(ctx, cfg); err != nil {
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
	cfg.starting = []string{"api", "temporal", "projector", "worker"}
	a, err := newApp(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.connectTemporal(ctx, temporalRequired); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.runWorker(gctx, a.sagas.C) })
	g.Go(func() error { return a.serveAPI(gctx) })
	g.Go(func() error { return a.runProjector(gctx) })
	err = g.Wait()
	if ctx.Err() != nil {
		log.Info("roles stopped; stopping what dev embeds")
	}
	return err
}

// runMigrate is the migrate role: it brings the schema up to date.
func runMigrate(ctx context.Context, cfg Config) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := migrations.Up(ctx, pool)
	if err != nil {
		return err
	}
	cfg.log.Info("migrations applied", "new", applied)
	return nil
}

// runTemporalServer runs the Temporal server dev embeds as a process of its
// own, until a signal: the cluster script's Temporal, on PostgreSQL.
func runTemporalServer(ctx context.Context, cfg Config) error {
	if cfg.TemporalPersistence == "postgres" && cfg.DatabaseURL == "" {
		return errors.New("DATABASE_URL is not set (or use -temporal-persistence sqlite)")
	}
	stop, err := startDevTemporal(ctx, &cfg)
	if err != nil {
		return err
	}
	defer stop()
	<-ctx.Done()
	return nil
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
	bus := a.newBus(pool, store)
	a.metrics.WatchPool("api", pool)
	provider, runProvider := a.paymentProvider(pool)
	if runProvider != nil {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = runProvider(ctx) }()
	}
	c := a.cfg
	e, err := httpapi.New(httpapi.Config{Payments: httpapi.Payments{Provider: provider, WebhookSecret: c.PaymentWebhookSecret, Tolerance: c.PaymentWebhookTolerance},
		Pool: pool, Bus: bus, Store: store, Reader: projections.NewReader(pool), Log: a.log, Sagas: a.sagas, Consumers: a.replayable(),
		MaxBodyBytes: c.MaxBodyBytes, ConsistencyTimeout: c.ConsistencyTimeout, CancelWait: c.CancelWait, Verifier: verifier, Limits: c.Limits,
		TrustedProxies: c.TrustedProxies, Observe: a.metrics.HTTP, Ready: a.ready.all, InFlight: c.InFlight})
	if err != nil {
		return err
	}
	// No WriteTimeout: live streams (SSE) stay open; each write of theirs
	// has its own deadline instead.
	// Every request's context derives from requests: on a stop, those still
	// running after apiStopGrace (live streams, min_position and cancel
	// waits, which a connected client keeps going) see it cancelled and
	// end, so that no client holds the stop until its timeout.
	requests, cutRequests := context.WithCancel(context.Background())
	defer cutRequests()
	srv := &http.Server{Addr: c.HTTPAddr, Handler: e, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: c.MaxHeaderBytes, BaseContext: func(net.Listener) context.Context { return requests }}
	l, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("API: %w", err)
	}
	// Ready once it listens, and no longer once it stops: a balancer
	// sends no new requests to an API that is shutting down.
	var stopping atomic.Bool
	a.ready.add("api", func(context.Context) error {
		if stopping.Load() {
			return errors.New("the API is stopping")
		}
		return nil
	})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	a.log.Info("API listening", "addr", "http://"+l.Addr().String(), "docs", "http://"+l.Addr().String()+"/docs")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopping.Store(true)
	a.log.Info("API shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	defer time.AfterFunc(apiStopGrace, cutRequests).Stop()
	return srv.Shutdown(shutdownCtx)
}

// apiStopGrace is how long the requests in flight when the API stops may
// take before their contexts are cancelled: ordinary ones finish well
// within it (a command's commit, a read).
const apiStopGrace = 2 * time.Second

// runProjector runs the projections (and the NATS bridge when configured)
// until ctx ends.
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

// runWorker runs the saga's Temporal worker, the saga starter (a Watermill
// handler on order_events that queues starts) and the launcher (which starts
// them) until ctx ends.
func (a *app) runWorker(ctx context.Context, c client.Client) error {
	if err := sagas.EnsureNamespace(ctx, c, a.cfg.TemporalNamespace, a.cfg.TemporalRetention); err != nil {
		return err
	}
	w := worker.New(c, workflows.TaskQueue, workflows.WorkerOptions())
	workflows.Register(w, &activities.Activities{Bus: a.bus, Store: a.store, CustomerKeys: personal.NewKeys(a.pool), Carrier: a.carrier()})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	defer w.Stop()
	router, err := delivery.NewRouter(a.pool, a.routerConfig(), sagas.Starter(a.cfg.ShippingDeadline))
	if err != nil {
		return err
	}
	a.ready.add("worker", func(context.Context) error {
		if !router.IsRunning() {
			return errors.New("the saga starter is not running")
		}
		return nil
	})
	a.log.Info("saga worker running", "temporal", a.cfg.TemporalAddress, "namespace", a.cfg.TemporalNamespace, "task_queue", workflows.TaskQueue)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return router.Run(ctx) })
	g.Go(func() error {
		return sagas.Launcher{Pool: a.pool, Client: c, Log: a.log, MaxRunning: a.cfg.SagaMaxRunning, Window: a.cfg.SagaWindow}.Run(ctx)
	})
	return g.Wait()
}
