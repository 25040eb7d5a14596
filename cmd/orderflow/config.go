package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/orderflow/orderflow/auth"
	httpapi "github.com/orderflow/orderflow/http"
)

// Config is read once, here, from flags with environment defaults; library
// packages never read the environment.
type Config struct {
	HTTPAddr       string // ORDERFLOW_HTTP_ADDR
	DatabaseURL    string // DATABASE_URL
	DataDir        string // ORDERFLOW_DATA_DIR: dev-mode state (embedded PostgreSQL)
	SnapshotEvery  int    // ORDERFLOW_SNAPSHOT_EVERY
	CommandRetries int    // ORDERFLOW_COMMAND_RETRIES
	MaxBodyBytes   int64  // ORDERFLOW_MAX_BODY_BYTES

	PollInterval       time.Duration // ORDERFLOW_POLL_INTERVAL: projector's idle poll
	BatchSize          int           // ORDERFLOW_BATCH_SIZE: messages per subscriber transaction
	HandlerRetries     int           // ORDERFLOW_HANDLER_RETRIES: before a message is poisoned
	ConsistencyTimeout time.Duration // ORDERFLOW_CONSISTENCY_TIMEOUT: longest read-your-writes wait
	NATSURL            string        // ORDERFLOW_NATS_URL: forward topics to NATS JetStream when set
	// FaultFailEvent (ORDERFLOW_FAULT_FAIL_EVENT=<stream id>:<version>) makes
	// the projections fail on that one event: a fault injected on purpose by
	// the fault scenarios, never set in normal operation.
	FaultFailEvent string

	TemporalAddress   string // TEMPORAL_ADDRESS: external Temporal; dev embeds one when empty
	TemporalNamespace string // TEMPORAL_NAMESPACE
	TemporalAPIKey    string // TEMPORAL_API_KEY: a token for a server with its authorizer on
	TemporalUIAddr    string // ORDERFLOW_TEMPORAL_UI_ADDR: dev's embedded Web UI
	TemporalDevAddr   string // ORDERFLOW_TEMPORAL_DEV_ADDR: dev's embedded frontend
	// TemporalPersistence (ORDERFLOW_TEMPORAL_PERSISTENCE) is where dev's
	// embedded Temporal keeps its state: postgres (dev's PostgreSQL, the
	// default: measured faster) or sqlite (a file in the data directory).
	TemporalPersistence string
	TemporalShards      int           // ORDERFLOW_TEMPORAL_SHARDS: history shards of a new embedded cluster on PostgreSQL
	TemporalRetention   time.Duration // ORDERFLOW_TEMPORAL_RETENTION: how long finished sagas stay visible
	ShippingDeadline    time.Duration // ORDERFLOW_SHIPPING_DEADLINE: the carrier's business deadline
	CarrierLatency      time.Duration // ORDERFLOW_CARRIER_LATENCY: simulated carrier
	CarrierFailRate     float64       // ORDERFLOW_CARRIER_FAILURE_RATE: share of parcels it refuses
	CarrierRejectZip    string        // ORDERFLOW_CARRIER_REJECT_POSTAL_CODE: always refused

	PprofAddr string // ORDERFLOW_PPROF_ADDR: net/http/pprof on this address when set (profiling)
	OpsAddr   string // ORDERFLOW_OPS_ADDR: /metrics, /healthz and /readyz of every role

	// Tokens: verified against a public key file or a JWKS URL; dev signs
	// and verifies with its own key in the data directory when neither is set.
	JWTPublicKey string // ORDERFLOW_JWT_PUBLIC_KEY: PEM file
	JWKSURL      string // ORDERFLOW_JWKS_URL
	JWTIssuer    string // ORDERFLOW_JWT_ISSUER
	JWTAudience  string // ORDERFLOW_JWT_AUDIENCE
	JWTAlgorithm string // ORDERFLOW_JWT_ALGORITHM: the only one accepted
	// Limits per principal, and the API pool's statement timeout.
	Limits           httpapi.Limits
	StatementTimeout time.Duration // ORDERFLOW_STATEMENT_TIMEOUT
	APIPoolSize      int           // ORDERFLOW_API_POOL_SIZE
	MaxHeaderBytes   int           // ORDERFLOW_MAX_HEADER_BYTES

	// Args are the positional arguments.
	Args []string

	log *slog.Logger
	// oneProcess: every role runs in this process (dev, tests), so commits
	// wake subscribers without a NOTIFY.
	oneProcess bool
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// envs reads typed defaults from the environment and remembers every value
// that does not parse, so that start-up stops naming the variable instead of
// silently falling back to the default.
type envs struct{ errs []error }

func (e *envs) bad(key, v, what string) {
	e.errs = append(e.errs, fmt.Errorf("%s=%q is not %s", key, v, what))
}

func (e *envs) Int(key string, def int) int {
	v, ok := os.LookupEnv(key)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.bad(key, v, "an integer")
		return def
	}
	return n
}

func (e *envs) Duration(key string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(key)
	if !ok || v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.bad(key, v, "a duration such as 250ms or 24h")
		return def
	}
	return d
}

func (e *envs) Float(key string, def float64) float64 {
	v, ok := os.LookupEnv(key)
	if !ok || v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		e.bad(key, v, "a number")
		return def
	}
	return f
}

func parseConfig(fs *flag.FlagSet, args []string) (Config, error) {
	c := Config{log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	env := &envs{}
	envInt, envDuration, envFloat := env.Int, env.Duration, env.Float
	fs.StringVar(&c.HTTPAddr, "http-addr", envOr("ORDERFLOW_HTTP_ADDR", "127.0.0.1:8080"), "listen address of the API (ORDERFLOW_HTTP_ADDR)")
	fs.StringVar(&c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (DATABASE_URL); dev starts its own when empty")
	fs.StringVar(&c.DataDir, "data-dir", envOr("ORDERFLOW_DATA_DIR", ".orderflow"), "where dev keeps its state (ORDERFLOW_DATA_DIR)")
	fs.IntVar(&c.SnapshotEvery, "snapshot-every", envInt("ORDERFLOW_SNAPSHOT_EVERY", 100), "snapshot a stream every N events, 0 = never (ORDERFLOW_SNAPSHOT_EVERY)")
	fs.IntVar(&c.CommandRetries, "command-retries", envInt("ORDERFLOW_COMMAND_RETRIES", 5), "times a command is decided again after a version conflict (ORDERFLOW_COMMAND_RETRIES)")
	maxBody := fs.Int("max-body-bytes", envInt("ORDERFLOW_MAX_BODY_BYTES", 1<<20), "largest request body accepted (ORDERFLOW_MAX_BODY_BYTES)")
	fs.DurationVar(&c.PollInterval, "poll-interval", envDuration("ORDERFLOW_POLL_INTERVAL", 50*time.Millisecond), "projector: idle poll of each topic (ORDERFLOW_POLL_INTERVAL)")
	fs.IntVar(&c.BatchSize, "batch-size", envInt("ORDERFLOW_BATCH_SIZE", 100), "projector: messages per subscriber transaction (ORDERFLOW_BATCH_SIZE)")
	fs.IntVar(&c.HandlerRetries, "handler-retries", envInt("ORDERFLOW_HANDLER_RETRIES", 3), "projector: retries before a message goes to the poison topic (ORDERFLOW_HANDLER_RETRIES)")
	fs.DurationVar(&c.ConsistencyTimeout, "consistency-timeout", envDuration("ORDERFLOW_CONSISTENCY_TIMEOUT", 5*time.Second), "longest wait of a query for min_position (ORDERFLOW_CONSISTENCY_TIMEOUT)")
	fs.StringVar(&c.TemporalAddress, "temporal-address", os.Getenv("TEMPORAL_ADDRESS"), "Temporal frontend host:port (TEMPORAL_ADDRESS); dev starts its own on 127.0.0.1:7233 when empty")
	fs.StringVar(&c.TemporalAPIKey, "temporal-api-key", os.Getenv("TEMPORAL_API_KEY"), "token sent to Temporal as a bearer credential, for a server with its authorizer on (TEMPORAL_API_KEY)")
	fs.StringVar(&c.TemporalNamespace, "temporal-namespace", envOr("TEMPORAL_NAMESPACE", "default"), "Temporal namespace (TEMPORAL_NAMESPACE)")
	fs.StringVar(&c.TemporalUIAddr, "temporal-ui-addr", envOr("ORDERFLOW_TEMPORAL_UI_ADDR", "127.0.0.1:8233"), "dev: Temporal Web UI address, empty = none (ORDERFLOW_TEMPORAL_UI_ADDR)")
	fs.DurationVar(&c.TemporalRetention, "temporal-retention", envDuration("ORDERFLOW_TEMPORAL_RETENTION", 30*24*time.Hour), "how long finished sagas stay in Temporal (ORDERFLOW_TEMPORAL_RETENTION)")
	fs.DurationVar(&c.ShippingDeadline, "shipping-deadline", envDuration("ORDERFLOW_SHIPPING_DEADLINE", 24*time.Hour), "time the carrier has to dispatch before the saga compensates (ORDERFLOW_SHIPPING_DEADLINE)")
	fs.DurationVar(&c.CarrierLatency, "carrier-latency", envDuration("ORDERFLOW_CARRIER_LATENCY", 200*time.Millisecond), "simulated carrier: time to dispatch (ORDERFLOW_CARRIER_LATENCY)")
	fs.Float64Var(&c.CarrierFailRate, "carrier-failure-rate", envFloat("ORDERFLOW_CARRIER_FAILURE_RATE", 0), "simulated carrier: share of parcels refused, 0..1 (ORDERFLOW_CARRIER_FAILURE_RATE)")
	fs.StringVar(&c.CarrierRejectZip, "carrier-reject-postal-code", envOr("ORDERFLOW_CARRIER_REJECT_POSTAL_CODE", "00000"), "simulated carrier: postal code it always refuses (ORDERFLOW_CARRIER_REJECT_POSTAL_CODE)")
	fs.StringVar(&c.TemporalDevAddr, "temporal-dev-addr", envOr("ORDERFLOW_TEMPORAL_DEV_ADDR", "127.0.0.1:7233"), "dev: embedded Temporal frontend address (ORDERFLOW_TEMPORAL_DEV_ADDR)")
	fs.StringVar(&c.TemporalPersistence, "temporal-persistence", envOr("ORDERFLOW_TEMPORAL_PERSISTENCE", "postgres"), "dev: embedded Temporal's store, postgres or sqlite (ORDERFLOW_TEMPORAL_PERSISTENCE)")
	fs.IntVar(&c.TemporalShards, "temporal-shards", envInt("ORDERFLOW_TEMPORAL_SHARDS", 4), "dev: history shards when the embedded Temporal's PostgreSQL cluster is created (ORDERFLOW_TEMPORAL_SHARDS)")
	fs.StringVar(&c.OpsAddr, "ops-addr", envOr("ORDERFLOW_OPS_ADDR", "127.0.0.1:9464"), "/metrics, /healthz and /readyz of this process, empty = none (ORDERFLOW_OPS_ADDR)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", os.Getenv("ORDERFLOW_PPROF_ADDR"), "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060 (ORDERFLOW_PPROF_ADDR)")
	fs.StringVar(&c.FaultFailEvent, "fault-fail-event", os.Getenv("ORDERFLOW_FAULT_FAIL_EVENT"), "fault injection: projections fail on <stream id>:<version> (ORDERFLOW_FAULT_FAIL_EVENT)")
	fs.StringVar(&c.NATSURL, "nats-url", os.Getenv("ORDERFLOW_NATS_URL"), "forward every topic to this NATS JetStream, e.g. nats://127.0.0.1:4222 (ORDERFLOW_NATS_URL)")
	fs.StringVar(&c.JWTPublicKey, "jwt-public-key", os.Getenv("ORDERFLOW_JWT_PUBLIC_KEY"), "PEM file of the key that signs bearer tokens (ORDERFLOW_JWT_PUBLIC_KEY); dev uses its own when neither this nor -jwks-url is set")
	fs.StringVar(&c.JWKSURL, "jwks-url", os.Getenv("ORDERFLOW_JWKS_URL"), "identity provider's JWKS URL to verify bearer tokens with (ORDERFLOW_JWKS_URL)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", os.Getenv("ORDERFLOW_JWT_ISSUER"), "required iss of bearer tokens (ORDERFLOW_JWT_ISSUER); dev: "+auth.DevIssuer)
	fs.StringVar(&c.JWTAudience, "jwt-audience", envOr("ORDERFLOW_JWT_AUDIENCE", auth.DevAudience), "required aud of bearer tokens (ORDERFLOW_JWT_AUDIENCE)")
	fs.StringVar(&c.JWTAlgorithm, "jwt-algorithm", envOr("ORDERFLOW_JWT_ALGORITHM", auth.DevAlgorithm), "the only signing algorithm accepted, e.g. EdDSA, RS256, ES256 (ORDERFLOW_JWT_ALGORITHM)")
	d := httpapi.DefaultLimits
	fs.Float64Var(&c.Limits.CustomerRate, "rate-customer", envFloat("ORDERFLOW_RATE_CUSTOMER", d.CustomerRate), "requests per second per customer, and per address without a token (ORDERFLOW_RATE_CUSTOMER)")
	fs.IntVar(&c.Limits.CustomerBurst, "burst-customer", envInt("ORDERFLOW_BURST_CUSTOMER", d.CustomerBurst), "burst above -rate-customer (ORDERFLOW_BURST_CUSTOMER)")
	fs.Float64Var(&c.Limits.OperatorRate, "rate-operator", envFloat("ORDERFLOW_RATE_OPERATOR", d.OperatorRate), "requests per second per operator (ORDERFLOW_RATE_OPERATOR)")
	fs.IntVar(&c.Limits.OperatorBurst, "burst-operator", envInt("ORDERFLOW_BURST_OPERATOR", d.OperatorBurst), "burst above -rate-operator (ORDERFLOW_BURST_OPERATOR)")
	fs.IntVar(&c.Limits.Streams, "max-streams", envInt("ORDERFLOW_MAX_STREAMS", d.Streams), "live streams one principal may hold open (ORDERFLOW_MAX_STREAMS)")
	fs.IntVar(&c.Limits.Waits, "max-waits", envInt("ORDERFLOW_MAX_WAITS", d.Waits), "pending min_position waits per principal (ORDERFLOW_MAX_WAITS)")
	fs.DurationVar(&c.StatementTimeout, "statement-timeout", envDuration("ORDERFLOW_STATEMENT_TIMEOUT", 15*time.Second), "longest SQL statement of the API's pool (ORDERFLOW_STATEMENT_TIMEOUT)")
	fs.IntVar(&c.APIPoolSize, "api-pool-size", envInt("ORDERFLOW_API_POOL_SIZE", 16), "connections of the API's own pool, apart from the projector's and the saga's (ORDERFLOW_API_POOL_SIZE)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", envInt("ORDERFLOW_MAX_HEADER_BYTES", 16<<10), "largest request header block accepted (ORDERFLOW_MAX_HEADER_BYTES)")
	if err := errors.Join(env.errs...); err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	// Flags may also follow a positional argument (rebuild NAME -database-url ...).
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		c.Args = append(c.Args, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return c, err
		}
	}
	c.MaxBodyBytes = int64(*maxBody)
	switch {
	case c.SnapshotEvery < 0:
		return c, errors.New("snapshot-every must be >= 0")
	case c.CommandRetries < 0:
		return c, errors.New("command-retries must be >= 0")
	case c.MaxBodyBytes < 1024:
		return c, fmt.Errorf("max-body-bytes must be at least 1024, got %d", c.MaxBodyBytes)
	case c.PollInterval <= 0 || c.ConsistencyTimeout <= 0:
		return c, errors.New("poll-interval and consistency-timeout must be positive")
	case c.CarrierFailRate < 0 || c.CarrierFailRate > 1:
		return c, errors.New("carrier-failure-rate must be between 0 and 1")
	case c.TemporalRetention < 24*time.Hour || c.ShippingDeadline <= 0:
		return c, errors.New("temporal-retention must be at least 24h and shipping-deadline positive")
	case c.BatchSize < 1 || c.HandlerRetries < 0:
		return c, errors.New("batch-size must be >= 1 and handler-retries >= 0")
	case c.TemporalPersistence != "postgres" && c.TemporalPersistence != "sqlite":
		return c, fmt.Errorf("temporal-persistence must be postgres or sqlite, got %q", c.TemporalPersistence)
	case c.TemporalShards < 1:
		return c, errors.New("temporal-shards must be >= 1")
	case c.HTTPAddr == "":
		return c, errors.New("http-addr is required")
	case c.Limits.CustomerRate <= 0 || c.Limits.OperatorRate <= 0 || c.Limits.CustomerBurst < 1 || c.Limits.OperatorBurst < 1:
		return c, errors.New("rates must be positive and bursts at least 1")
	case c.Limits.Streams < 1 || c.Limits.Waits < 1 || c.APIPoolSize < 2 || c.MaxHeaderBytes < 4096:
		return c, errors.New("max-streams and max-waits must be >= 1, api-pool-size >= 2, max-header-bytes >= 4096")
	case c.StatementTimeout < time.Second:
		return c, errors.New("statement-timeout must be at least 1s")
	}
	return c, nil
}

func (c Config) arg(i int) string {
	if i < len(c.Args) {
		return c.Args[i]
	}
	return ""
}
