package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/internal/devruntime/devpg"
	"github.com/orderflow/orderflow/internal/pgpool"
	"github.com/orderflow/orderflow/internal/settings"
	"github.com/orderflow/orderflow/internal/temporalclient"
)

// config is the harness's configuration: where the service it drives
// keeps its database, its Temporal and its signing key, and the service's
// settings the harness must know (its carrier's postal codes and latency).
// The names, flags and variables are the service's own (cmd/orderflow).
type config struct {
	DataDir           string // ORDERFLOW_DATA_DIR: a running dev's state
	DatabaseURL       string // DATABASE_URL (default: dev's)
	TemporalAddress   string // TEMPORAL_ADDRESS (default: dev's)
	TemporalNamespace string // TEMPORAL_NAMESPACE
	TemporalAPIKey    string // TEMPORAL_API_KEY
	// TemporalCompression (ORDERFLOW_TEMPORAL_COMPRESSION): as the
	// service's, so that the bench's bound runs as the saga does.
	TemporalCompression string
	TemporalDevAddr     string // ORDERFLOW_TEMPORAL_DEV_ADDR
	JWTAudience         string // ORDERFLOW_JWT_AUDIENCE
	JWTMaxTTL           time.Duration
	CarrierRejectZip    string        // ORDERFLOW_CARRIER_REJECT_POSTAL_CODE
	CarrierSlowZip      string        // ORDERFLOW_CARRIER_SLOW_POSTAL_CODE
	CarrierLatency      time.Duration // ORDERFLOW_CARRIER_LATENCY
	SnapshotEvery       int           // ORDERFLOW_SNAPSHOT_EVERY: of the campaign's verify
	AggregateCache      int           // ORDERFLOW_AGGREGATE_CACHE: of the campaign's verify

	log *slog.Logger
}

// parseConfig reads the settings of subcommand cmd from the environment
// and args; each shows the flags it used under cmd/orderflow.
func parseConfig(fs *flag.FlagSet, cmd string, args []string) (config, error) {
	c := config{log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	s := settings.New(fs, cmd)
	hidden := []string{} // read from the environment, no flag
	s.Str(&c.DataDir, "data-dir", "ORDERFLOW_DATA_DIR", ".orderflow", "where dev keeps its state (its database URL and token key included)", settings.Everyone)
	s.Str(&c.DatabaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL URL; default: dev's", []string{"campaign"})
	s.Str(&c.TemporalAddress, "temporal-address", "TEMPORAL_ADDRESS", "", "Temporal frontend host:port; default: dev's", []string{"bench", "campaign"})
	s.Str(&c.TemporalAPIKey, "temporal-api-key", "TEMPORAL_API_KEY", "", "token sent to Temporal as a bearer credential, for a server with its authorizer on", []string{"bench", "campaign"})
	s.Str(&c.TemporalNamespace, "temporal-namespace", "TEMPORAL_NAMESPACE", "default", "Temporal namespace", []string{"bench", "campaign"})
	s.Str(&c.TemporalCompression, "temporal-compression", "ORDERFLOW_TEMPORAL_COMPRESSION", "auto", "the Temporal client's compression of its requests: auto (none to a loopback address, gzip elsewhere), gzip or none", []string{"bench", "campaign"})
	s.Str(&c.TemporalDevAddr, "temporal-dev-addr", "ORDERFLOW_TEMPORAL_DEV_ADDR", "127.0.0.1:7233", "dev's embedded Temporal frontend", []string{"bench"})
	s.Str(&c.JWTAudience, "jwt-audience", "ORDERFLOW_JWT_AUDIENCE", auth.DevAudience, "required aud of bearer tokens", settings.Everyone)
	s.Duration(&c.JWTMaxTTL, "jwt-max-ttl", "ORDERFLOW_JWT_MAX_TTL", auth.DefaultMaxTTL, "longest life of a bearer token (exp - iat)", hidden)
	s.Str(&c.CarrierRejectZip, "carrier-reject-postal-code", "ORDERFLOW_CARRIER_REJECT_POSTAL_CODE", "00000", "simulated carrier: postal code it always refuses", []string{"load", "campaign"})
	s.Str(&c.CarrierSlowZip, "carrier-slow-postal-code", "ORDERFLOW_CARRIER_SLOW_POSTAL_CODE", "", "simulated carrier: postal code taken after -carrier-slow-latency instead, empty = none", []string{"campaign"})
	s.Duration(&c.CarrierLatency, "carrier-latency", "ORDERFLOW_CARRIER_LATENCY", 200*time.Millisecond, "simulated carrier: time to dispatch", hidden)
	s.Int(&c.SnapshotEvery, "snapshot-every", "ORDERFLOW_SNAPSHOT_EVERY", 100, "snapshot a stream every N events, 0 = never", hidden)
	s.Int(&c.AggregateCache, "aggregate-cache", "ORDERFLOW_AGGREGATE_CACHE", 10000, "aggregates kept in memory, 0 = none", hidden)
	if err := s.Err(); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.DatabaseURL == "" {
		// Against dev, the harness needs no flag: dev's database and Temporal.
		if c.DatabaseURL = devpg.ReadURL(c.DataDir); c.DatabaseURL != "" && c.TemporalAddress == "" {
			c.TemporalAddress = c.TemporalDevAddr
		}
	}
	return c, nil
}

// connect opens a pool on DATABASE_URL: 32 connections, for the campaign's
// actors and verify at once.
func connect(ctx context.Context, cfg config) (*pgxpool.Pool, error) {
	return pgpool.Open(ctx, cfg.DatabaseURL, 32, 0)
}

// dialTemporal connects to TEMPORAL_ADDRESS, waiting for a server that is
// still starting, with the service's tracing (the bench's bound runs as
// the saga does).
func dialTemporal(ctx context.Context, cfg config) (client.Client, error) {
	if cfg.TemporalAddress == "" {
		return nil, errors.New("TEMPORAL_ADDRESS is not set")
	}
	dial := temporalclient.Config{Address: cfg.TemporalAddress, Namespace: cfg.TemporalNamespace, APIKey: cfg.TemporalAPIKey,
		Compression: cfg.TemporalCompression, Log: cfg.log}
	if tracing, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{}); err != nil {
		cfg.log.Error("Temporal tracing", "err", err)
	} else {
		dial.Interceptors = []interceptor.ClientInterceptor{tracing}
	}
	return temporalclient.Dial(ctx, dial)
}

// operatorToken is the token load and bench send: the one given, or an
// operator's signed with dev's key, so that they need no flag against
// `orderflow dev`.
func operatorToken(cfg config, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	return auth.DevOperatorToken(cfg.DataDir, cfg.JWTAudience, cfg.JWTMaxTTL)
}
