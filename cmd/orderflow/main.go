// Command orderflow runs the order-fulfilment service.
//
//	orderflow dev       everything on embedded defaults (starts its own PostgreSQL)
//	orderflow api       the REST API against DATABASE_URL
//	orderflow migrate   apply database migrations to DATABASE_URL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	httpapi "github.com/orderflow/orderflow/http"
	"github.com/orderflow/orderflow/internal/devpg"
	"github.com/orderflow/orderflow/migrations"
)

const usage = `usage: orderflow <command> [flags]

commands:
  dev       run everything on embedded defaults: its own PostgreSQL unless DATABASE_URL is set
  api       serve the REST API (needs DATABASE_URL)
  migrate   apply database migrations (needs DATABASE_URL)

Run 'orderflow <command> -h' for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	name, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet("orderflow "+name, flag.ExitOnError)
	cfg, err := parseConfig(fs, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		os.Exit(2)
	}
	switch name {
	case "dev":
		err = runDev(ctx, cfg, log)
	case "api":
		err = runAPI(ctx, cfg, log)
	case "migrate":
		err = runMigrate(ctx, cfg, log)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		log.Error("orderflow "+name+" failed", "err", err)
		os.Exit(1)
	}
}

func runDev(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.DatabaseURL == "" {
		log.Info("starting embedded PostgreSQL", "dir", filepath.Join(cfg.DataDir, "postgres"))
		srv, err := devpg.Start(ctx, devpg.Options{Dir: cfg.DataDir})
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		defer func() {
			if err := srv.Stop(); err != nil {
				log.Error("stop embedded PostgreSQL", "err", err)
			}
		}()
		cfg.DatabaseURL = srv.URL
		log.Info("embedded PostgreSQL is up", "url", srv.URL)
	}
	if err := runMigrate(ctx, cfg, log); err != nil {
		return err
	}
	return runAPI(ctx, cfg, log)
}

func connect(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("DATABASE_URL is not set")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
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

func runAPI(ctx context.Context, cfg Config, log *slog.Logger) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := eventstore.New(pool, commands.Registry(), eventstore.Options{SnapshotEvery: cfg.SnapshotEvery})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: cfg.CommandRetries})
	e, err := httpapi.New(httpapi.Config{Pool: pool, Bus: bus, Store: store, Log: log, MaxBodyBytes: cfg.MaxBodyBytes})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("API listening", "addr", "http://"+cfg.HTTPAddr, "docs", "http://"+cfg.HTTPAddr+"/docs")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
