package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	serverlog "go.temporal.io/server/common/log"
	"golang.org/x/sync/errgroup"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/internal/devruntime/devtemporal"
	"github.com/orderflow/orderflow/personal"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// startDevTemporal runs the embedded Temporal server and Web UI for dev, on
// dev's PostgreSQL (or a SQLite file under the data directory), so a restart
// keeps history.
func startDevTemporal(ctx context.Context, cfg *Config) (stop func(), err error) {
	// The server logs membership and polling noise at error level while it
	// starts and stops; dev keeps only fatal ones unless told otherwise.
	level := cfg.TemporalLogLevel
	opts := devtemporal.Options{
		FrontendAddr: cfg.TemporalDevAddr, UIAddr: cfg.TemporalUIAddr, Namespace: cfg.TemporalNamespace,
		Logger: serverlog.NewZapLogger(serverlog.BuildZapLogger(serverlog.Config{Level: level})),
	}
	where := ""
	switch cfg.TemporalPersistence {
	case "postgres":
		opts.PostgresURL, opts.Shards = cfg.DatabaseURL, cfg.TemporalShards
		where = "postgres: " + devtemporal.PostgresDB
	case "sqlite":
		opts.DBFile = filepath.Join(cfg.DataDir, "temporal", "temporal.db")
		where = "sqlite: " + opts.DBFile
	}
	srv, err := devtemporal.Start(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded Temporal: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.WaitReady(readyCtx); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	cfg.TemporalAddress = srv.Frontend
	cfg.log.Info("embedded Temporal is up", "frontend", srv.Frontend, "persistence", where, "ui", "http://"+cfg.TemporalUIAddr)
	return func() {
		if err := srv.Stop(); err != nil {
			cfg.log.Error("stop embedded Temporal", "err", err)
		}
	}, nil
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

// dialTemporal connects to TEMPORAL_ADDRESS, waiting for a server that is
// still starting.
func (a *app) dialTemporal(ctx context.Context) (client.Client, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		opts := client.Options{
			HostPort: a.cfg.TemporalAddress, Namespace: a.cfg.TemporalNamespace, Logger: tlog.NewStructuredLogger(a.log),
		}
		a.temporalOnce.Do(func() {
			var err error
			// Workflow starts, runs and every activity continue the trace
			// of the request that placed the order.
			if a.temporalTracing, err = temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{}); err != nil {
				a.log.Error("Temporal tracing", "err", err)
			}
			if a.metrics == nil {
				return // a tool (bench): no registry
			}
			if a.temporalMetrics, err = a.metrics.TemporalHandler(); err != nil {
				a.log.Error("Temporal SDK metrics", "err", err)
			}
		})
		if a.temporalMetrics != nil {
			opts.MetricsHandler = a.temporalMetrics
		}
		if a.temporalTracing != nil {
			opts.Interceptors = []interceptor.ClientInterceptor{a.temporalTracing}
		}
		if a.cfg.TemporalAPIKey != "" {
			// Sent as "Authorization: Bearer <key>": a JWT for a server
			// whose authorizer and claim mapper are on (see the README).
			opts.Credentials = client.NewAPIKeyStaticCredentials(a.cfg.TemporalAPIKey)
		}
		c, err := client.DialContext(ctx, opts)
		if err == nil {
			if a.metrics != nil {
				a.ready.add("temporal", temporalCheck(c))
				a.sagasGauge.Do(func() { a.metrics.WatchSagas(sagas.Client{C: c}.Count) })
			}
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to Temporal at %s: %w", a.cfg.TemporalAddress, err)
		}
		time.Sleep(time.Second)
	}
}

// runWorker runs the saga's Temporal worker, the saga starter (a Watermill
// handler on order_events that queues starts) and the launcher (which starts
// them) until ctx ends.
func (a *app) runWorker(ctx context.Context, c client.Client) error {
	if err := sagas.EnsureNamespace(ctx, c, a.cfg.TemporalNamespace, a.cfg.TemporalRetention); err != nil {
		return err
	}
	w := worker.New(c, workflows.TaskQueue, workerOptions())
	workflows.Register(w, &activities.Activities{Bus: a.bus, Store: a.store, Keys: personal.NewKeys(a.pool), Carrier: activities.SimulatedCarrier{
		Pool: a.pool, Latency: a.cfg.CarrierLatency, FailureRate: a.cfg.CarrierFailRate, RejectPostalCode: a.cfg.CarrierRejectZip,
		SlowPostalCode: a.cfg.CarrierSlowZip, SlowLatency: a.cfg.CarrierSlowLatency,
	}})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	defer w.Stop()
	router, err := delivery.NewRouter(a.pool, a.routerConfig(), sagas.Starter(a.cfg.ShippingDeadline))
	if err != nil {
		return err
	}
	a.log.Info("saga worker running", "temporal", a.cfg.TemporalAddress, "namespace", a.cfg.TemporalNamespace, "task_queue", workflows.TaskQueue)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return router.Run(ctx) })
	g.Go(func() error {
		return sagas.Launcher{Pool: a.pool, Client: c, Log: a.log, MaxRunning: a.cfg.SagaMaxRunning, Window: a.cfg.SagaWindow}.Run(ctx)
	})
	return g.Wait()
}

// workerOptions are the saga worker's settings, shared with the benchmark's
// bound so that both run alike. Measured on 2 cores (orderflow bench): the
// SDK's defaults (2 pollers of each kind) leave tasks waiting in matching
// at 50 sagas/s; more pollers than 8 only add idle long polls.
func workerOptions() worker.Options {
	return worker.Options{
		MaxConcurrentWorkflowTaskPollers: 8,
		MaxConcurrentActivityTaskPollers: 4,
		// Local activities are commands through the bus: bounded by the
		// database pool, not by this number.
		MaxConcurrentLocalActivityExecutionSize: 256,
	}
}
