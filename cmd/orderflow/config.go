package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/settings"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Admission control's defaults: chosen by measurement (docs/operations.md).
const (
	defaultSagaBacklogWait = 2 * time.Second
	defaultSagaBacklogMin  = 4
)

// Config is read once, here, from flags with environment defaults; library
// packages never read the environment.
type Config struct {
	HTTPAddr       string // ORDERFLOW_HTTP_ADDR
	DatabaseURL    string // DATABASE_URL
	DataDir        string // ORDERFLOW_DATA_DIR: dev-mode state (embedded PostgreSQL)
	SnapshotEvery  int    // ORDERFLOW_SNAPSHOT_EVERY
	CommandRetries int    // ORDERFLOW_COMMAND_RETRIES
	// ConcurrentStreams (ORDERFLOW_CONCURRENT_STREAMS) turns off the
	// in-process serialisation of each stream's commands.
	ConcurrentStreams bool
	AggregateCache    int // ORDERFLOW_AGGREGATE_CACHE
	// GroupCommit: ORDERFLOW_GROUP_COMMIT_MAX, _WAIT and ORDERFLOW_COMMITTERS.
	GroupCommit  commands.GroupCommit
	MaxBodyBytes int64 // ORDERFLOW_MAX_BODY_BYTES

	PollInterval       time.Duration // ORDERFLOW_POLL_INTERVAL: projector's idle poll
	BatchSize          int           // ORDERFLOW_BATCH_SIZE: messages per subscriber transaction
	SetBatchSize       int           // ORDERFLOW_SET_BATCH_SIZE: messages per transaction of a set-based projection
	HandlerRetries     int           // ORDERFLOW_HANDLER_RETRIES: before a message is poisoned
	ConsistencyTimeout time.Duration // ORDERFLOW_CONSISTENCY_TIMEOUT: longest read-your-writes wait
	CancelWait         time.Duration // ORDERFLOW_CANCEL_WAIT: how long a cancel waits for its saga's answer
	NATSURL            string        // ORDERFLOW_NATS_URL: forward topics to NATS JetStream when set
	// NATSReconnectWait (ORDERFLOW_NATS_RECONNECT_WAIT) spaces the bridge's
	// attempts to reach NATS again (plus up to a second of jitter), with no
	// budget: the bridge outlives any outage.
	NATSReconnectWait time.Duration
	// NATSLimits are the limits set on the bridge's streams:
	// ORDERFLOW_NATS_MAX_AGE, _MAX_BYTES and _DUPLICATE_WINDOW.
	NATSLimits bridge.StreamLimits
	// FaultFailEvent (ORDERFLOW_FAULT_FAIL_EVENT=<stream id>:<version>) makes
	// the projections fail on that one event: a fault injected on purpose by
	// the fault scenarios, never set in normal operation.
	FaultFailEvent string

	TemporalAddress   string // TEMPORAL_ADDRESS: external Temporal; dev embeds one when empty
	TemporalNamespace string // TEMPORAL_NAMESPACE
	TemporalAPIKey    string // TEMPORAL_API_KEY: a token for a server with its authorizer on
	// TemporalCompression (ORDERFLOW_TEMPORAL_COMPRESSION) is the client's
	// gRPC compression: auto, gzip or none (workflows.GrpcCompression).
	TemporalCompression string
	TemporalUIAddr      string // ORDERFLOW_TEMPORAL_UI_ADDR: dev's embedded Web UI
	TemporalDevAddr     string // ORDERFLOW_TEMPORAL_DEV_ADDR: dev's embedded frontend
	// TemporalPersistence (ORDERFLOW_TEMPORAL_PERSISTENCE) is where dev's
	// embedded Temporal keeps its state: postgres (dev's PostgreSQL, the
	// default: measured faster) or sqlite (a file in the data directory).
	TemporalPersistence string
	TemporalShards      int           // ORDERFLOW_TEMPORAL_SHARDS: history shards of a new embedded cluster on PostgreSQL
	TemporalLogLevel    string        // ORDERFLOW_TEMPORAL_LOG_LEVEL: the embedded server's
	TemporalRetention   time.Duration // ORDERFLOW_TEMPORAL_RETENTION: how long finished sagas stay visible
	ShippingDeadline    time.Duration // ORDERFLOW_SHIPPING_DEADLINE: the carrier's business deadline
	CarrierLatency      time.Duration // ORDERFLOW_CARRIER_LATENCY: simulated carrier
	CarrierFailRate     float64       // ORDERFLOW_CARRIER_FAILURE_RATE: share of parcels it refuses
	CarrierRejectZip    string        // ORDERFLOW_CARRIER_REJECT_POSTAL_CODE: always refused
	CarrierSlowZip      string        // ORDERFLOW_CARRIER_SLOW_POSTAL_CODE: taken after CarrierSlowLatency instead
	CarrierSlowLatency  time.Duration // ORDERFLOW_CARRIER_SLOW_LATENCY

	// Payments (docs/security.md): the provider (simulated or stripe), the
	// webhook secret (required by the api role; dev generates one when
	// none is given), the signature's tolerance, and the simulated
	// provider's latency, random declines, card limit (amounts above it are
	// declined) and the URL it delivers webhooks to.
	PaymentProvider         string        // ORDERFLOW_PAYMENT_PROVIDER
	PaymentWebhookSecret    string        // ORDERFLOW_PAYMENT_WEBHOOK_SECRET
	PaymentWebhookTolerance time.Duration // ORDERFLOW_PAYMENT_WEBHOOK_TOLERANCE
	PaymentLatency          time.Duration // ORDERFLOW_PAYMENT_LATENCY
	PaymentDeclineRate      float64       // ORDERFLOW_PAYMENT_DECLINE_RATE
	PaymentCardLimit        int           // ORDERFLOW_PAYMENT_CARD_LIMIT
	PaymentWebhookURL       string        // ORDERFLOW_PAYMENT_WEBHOOK_URL
	StripeSecretKey         string        // ORDERFLOW_STRIPE_SECRET_KEY

	PprofAddr string // ORDERFLOW_PPROF_ADDR: net/http/pprof on this address when set (profiling)
	OpsAddr   string // ORDERFLOW_OPS_ADDR: /metrics, /healthz and /readyz of every role

	// Tokens: verified against a public key file or a JWKS URL; dev signs
	// and verifies with its own key in the data directory when neither is set.
	JWTPublicKey string // ORDERFLOW_JWT_PUBLIC_KEY: PEM file
	JWKSURL      string // ORDERFLOW_JWKS_URL
	JWTIssuer    string // ORDERFLOW_JWT_ISSUER
	JWTAudience  string // ORDERFLOW_JWT_AUDIENCE
	JWTAlgorithm string // ORDERFLOW_JWT_ALGORITHM: the only one accepted
	// JWTMaxTTL (ORDERFLOW_JWT_MAX_TTL) is the longest life a token may
	// have (exp - iat); `orderflow token` mints none longer.
	JWTMaxTTL time.Duration
	// TrustedProxies (ORDERFLOW_TRUSTED_PROXIES: CIDRs or addresses,
	// comma-separated) may name the client in X-Forwarded-For/X-Real-IP;
	// without any, the client is the direct peer.
	TrustedProxies []*net.IPNet
	// Limits per principal, and the API pool's statement timeout.
	Limits           httpapi.Limits
	StatementTimeout time.Duration // ORDERFLOW_STATEMENT_TIMEOUT
	APIPoolSize      int           // ORDERFLOW_API_POOL_SIZE
	MaxHeaderBytes   int           // ORDERFLOW_MAX_HEADER_BYTES
	// Overload (docs/operations.md): how long the queued saga starts may
	// wait before orders are refused, the queue always admitted, the sagas
	// a launcher keeps running, how long a saga counts as running at most,
	// and the API's bound on requests at once.
	SagaBacklogWait time.Duration // ORDERFLOW_SAGA_BACKLOG_WAIT
	SagaBacklogMin  int           // ORDERFLOW_SAGA_BACKLOG_MIN
	SagaMaxRunning  int           // ORDERFLOW_SAGA_MAX_RUNNING
	SagaWindow      time.Duration // ORDERFLOW_SAGA_WINDOW
	InFlight        httpapi.InFlight

	// Args are the positional arguments.
	Args []string

	log *slog.Logger
	// oneProcess: every role runs in this process (dev, tests), so commits
	// wake subscribers without a NOTIFY.
	oneProcess bool
	// starting names the readiness checks of the roles this process runs
	// that fail until each role adds its own (checks.starting).
	starting []string
}

// Who uses a setting, by subcommand.
var (
	apiRoles      = []string{"dev", "api"}
	workerRoles   = []string{"dev", "worker"}
	consumerRoles = []string{"dev", "projector", "worker"} // Watermill routers
	serveRoles    = []string{"dev", "api", "worker", "projector"}
	temporalUsers = []string{"dev", "api", "worker", "verify", "sagas repair", "temporal-server"}
	dbUsers       = []string{"dev", "api", "worker", "projector", "migrate", "projections status", "projections rebuild",
		"poison list", "poison replay", "events tail", "verify", "sagas repair", "temporal-server"}
	everyone = settings.Everyone
)

// parseConfig reads the settings of subcommand cmd from the environment and
// args.
func parseConfig(fs *flag.FlagSet, cmd string, args []string) (Config, error) {
	c := Config{log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	s := settings.New(fs, cmd)
	var maxBody int
	s.Str(&c.HTTPAddr, "http-addr", "ORDERFLOW_HTTP_ADDR", "127.0.0.1:8080", "listen address of the API", apiRoles)
	s.Str(&c.DatabaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL URL; dev starts its own when empty, and the tools then use dev's", dbUsers)
	s.Str(&c.DataDir, "data-dir", "ORDERFLOW_DATA_DIR", ".orderflow", "where dev keeps its state (its database URL and token key included)", everyone)
	s.Int(&c.SnapshotEvery, "snapshot-every", "ORDERFLOW_SNAPSHOT_EVERY", 100, "snapshot a stream every N events, 0 = never", serveRoles)
	s.Int(&c.CommandRetries, "command-retries", "ORDERFLOW_COMMAND_RETRIES", 5, "times a command is decided again after a version conflict", serveRoles)
	s.Int(&c.AggregateCache, "aggregate-cache", "ORDERFLOW_AGGREGATE_CACHE", 10000, "aggregates kept in memory at their last committed version, 0 = none", serveRoles)
	s.Int(&c.GroupCommit.MaxCommands, "group-commit-max", "ORDERFLOW_GROUP_COMMIT_MAX", commands.DefaultGroupMax, "most commands committed in one transaction, 1 = a transaction per command", serveRoles)
	s.Duration(&c.GroupCommit.MaxWait, "group-commit-wait", "ORDERFLOW_GROUP_COMMIT_WAIT", 0, "how long a committer waits for more commands before it commits, 0 = it takes what is queued", serveRoles)
	s.Int(&c.GroupCommit.Committers, "committers", "ORDERFLOW_COMMITTERS", commands.DefaultCommitters, "groups committed at once, per bus", serveRoles)
	s.Bool(&c.ConcurrentStreams, "concurrent-streams", "ORDERFLOW_CONCURRENT_STREAMS", false, "let commands on one stream run at once in a process instead of one writer per stream (for measuring)", serveRoles)
	s.Int(&maxBody, "max-body-bytes", "ORDERFLOW_MAX_BODY_BYTES", httpapi.DefaultMaxBodyBytes, "largest request body accepted", apiRoles)
	s.Duration(&c.PollInterval, "poll-interval", "ORDERFLOW_POLL_INTERVAL", delivery.DefaultPollInterval, "idle poll of each topic by each consumer group", consumerRoles)
	s.Int(&c.BatchSize, "batch-size", "ORDERFLOW_BATCH_SIZE", delivery.DefaultBatchSize, "messages per subscriber transaction", consumerRoles)
	s.Int(&c.SetBatchSize, "set-batch-size", "ORDERFLOW_SET_BATCH_SIZE", delivery.DefaultSetBatchSize, "messages per transaction of a set-based projection", consumerRoles)
	s.Int(&c.HandlerRetries, "handler-retries", "ORDERFLOW_HANDLER_RETRIES", 3, "retries before a message goes to the poison topic", consumerRoles)
	s.Duration(&c.ConsistencyTimeout, "consistency-timeout", "ORDERFLOW_CONSISTENCY_TIMEOUT", httpapi.DefaultConsistencyTimeout, "longest wait of a query for min_position", apiRoles)
	s.Duration(&c.CancelWait, "cancel-wait", "ORDERFLOW_CANCEL_WAIT", httpapi.DefaultCancelWait, "how long a cancel waits for its saga's answer (202 pending once the saga took it, 503 outcome_unknown when it did not answer)", apiRoles)
	s.Str(&c.TemporalAddress, "temporal-address", "TEMPORAL_ADDRESS", "", "Temporal frontend host:port; dev starts its own when empty", temporalUsers)
	s.Str(&c.TemporalAPIKey, "temporal-api-key", "TEMPORAL_API_KEY", "", "token sent to Temporal as a bearer credential, for a server with its authorizer on", temporalUsers)
	s.Str(&c.TemporalNamespace, "temporal-namespace", "TEMPORAL_NAMESPACE", "default", "Temporal namespace", temporalUsers)
	s.Str(&c.TemporalCompression, "temporal-compression", "ORDERFLOW_TEMPORAL_COMPRESSION", "auto", "the Temporal client's compression of its requests: auto (none to a loopback address, gzip elsewhere), gzip or none", temporalUsers)
	s.Str(&c.TemporalUIAddr, "temporal-ui-addr", "ORDERFLOW_TEMPORAL_UI_ADDR", "127.0.0.1:8233", "the embedded Temporal Web UI's address, empty = none", []string{"dev", "temporal-server"})
	s.Duration(&c.TemporalRetention, "temporal-retention", "ORDERFLOW_TEMPORAL_RETENTION", 30*24*time.Hour, "how long finished sagas stay in Temporal", workerRoles)
	s.Duration(&c.ShippingDeadline, "shipping-deadline", "ORDERFLOW_SHIPPING_DEADLINE", 24*time.Hour, "time the carrier has to dispatch before the saga compensates", workerRoles)
	s.Duration(&c.CarrierLatency, "carrier-latency", "ORDERFLOW_CARRIER_LATENCY", 200*time.Millisecond, "simulated carrier: time to dispatch", workerRoles)
	s.Float(&c.CarrierFailRate, "carrier-failure-rate", "ORDERFLOW_CARRIER_FAILURE_RATE", 0, "simulated carrier: share of parcels refused, 0..1", workerRoles)
	s.Str(&c.CarrierRejectZip, "carrier-reject-postal-code", "ORDERFLOW_CARRIER_REJECT_POSTAL_CODE", "00000", "simulated carrier: postal code it always refuses", workerRoles)
	s.Str(&c.CarrierSlowZip, "carrier-slow-postal-code", "ORDERFLOW_CARRIER_SLOW_POSTAL_CODE", "", "simulated carrier: postal code taken after -carrier-slow-latency instead, empty = none", workerRoles)
	s.Duration(&c.CarrierSlowLatency, "carrier-slow-latency", "ORDERFLOW_CARRIER_SLOW_LATENCY", 2*time.Second, "simulated carrier: time to dispatch to -carrier-slow-postal-code", workerRoles)
	s.Str(&c.TemporalDevAddr, "temporal-dev-addr", "ORDERFLOW_TEMPORAL_DEV_ADDR", "127.0.0.1:7233", "dev's embedded Temporal frontend (the tools use it against dev)", []string{"dev", "verify", "sagas repair", "temporal-server"})
	s.Str(&c.TemporalPersistence, "temporal-persistence", "ORDERFLOW_TEMPORAL_PERSISTENCE", "postgres", "the embedded Temporal's store, postgres or sqlite", []string{"dev", "temporal-server"})
	s.Int(&c.TemporalShards, "temporal-shards", "ORDERFLOW_TEMPORAL_SHARDS", 4, "history shards when the embedded Temporal's PostgreSQL cluster is created", []string{"dev", "temporal-server"})
	s.Str(&c.OpsAddr, "ops-addr", "ORDERFLOW_OPS_ADDR", "127.0.0.1:9464", "/metrics, /healthz and /readyz of this process, empty = none", serveRoles)
	s.Str(&c.PprofAddr, "pprof-addr", "ORDERFLOW_PPROF_ADDR", "", "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060", serveRoles)
	s.Str(&c.FaultFailEvent, "fault-fail-event", "ORDERFLOW_FAULT_FAIL_EVENT", "", "fault injection: projections fail on <stream id>:<version>", []string{"dev", "projector"})
	s.Str(&c.NATSURL, "nats-url", "ORDERFLOW_NATS_URL", "", "forward every topic to this NATS JetStream, e.g. nats://127.0.0.1:4222", []string{"dev", "projector"})
	s.Duration(&c.NATSReconnectWait, "nats-reconnect-wait", "ORDERFLOW_NATS_RECONNECT_WAIT", bridge.DefaultReconnectWait, "NATS bridge: wait between attempts to reach NATS again (plus up to 1s of jitter), for as long as it takes", []string{"dev", "projector"})
	s.Duration(&c.NATSLimits.MaxAge, "nats-max-age", "ORDERFLOW_NATS_MAX_AGE", bridge.DefaultMaxAge, "NATS bridge: oldest message each JetStream stream keeps, 0 = no limit", []string{"dev", "projector"})
	var natsMaxBytes int
	s.Int(&natsMaxBytes, "nats-max-bytes", "ORDERFLOW_NATS_MAX_BYTES", bridge.DefaultMaxBytes, "NATS bridge: bytes each JetStream stream keeps (the oldest messages go first), 0 = no limit", []string{"dev", "projector"})
	s.Duration(&c.NATSLimits.DuplicateWindow, "nats-duplicate-window", "ORDERFLOW_NATS_DUPLICATE_WINDOW", bridge.DefaultDuplicateWindow, "NATS bridge: how long JetStream drops a message forwarded again (same Nats-Msg-Id)", []string{"dev", "projector"})
	s.Str(&c.JWTPublicKey, "jwt-public-key", "ORDERFLOW_JWT_PUBLIC_KEY", "", "PEM file of the key that signs bearer tokens; dev uses its own when neither this nor -jwks-url is set", apiRoles)
	s.Str(&c.JWKSURL, "jwks-url", "ORDERFLOW_JWKS_URL", "", "identity provider's JWKS URL to verify bearer tokens with", apiRoles)
	s.Str(&c.JWTIssuer, "jwt-issuer", "ORDERFLOW_JWT_ISSUER", "", "required iss of bearer tokens; dev: "+auth.DevIssuer, apiRoles)
	s.Str(&c.JWTAudience, "jwt-audience", "ORDERFLOW_JWT_AUDIENCE", auth.DevAudience, "required aud of bearer tokens", []string{"dev", "api", "token"})
	s.Str(&c.JWTAlgorithm, "jwt-algorithm", "ORDERFLOW_JWT_ALGORITHM", auth.DevAlgorithm, "the only signing algorithm accepted, e.g. EdDSA, RS256, ES256", apiRoles)
	s.Duration(&c.JWTMaxTTL, "jwt-max-ttl", "ORDERFLOW_JWT_MAX_TTL", auth.DefaultMaxTTL, "longest life of a bearer token (exp - iat)", []string{"dev", "api", "token"})
	var proxies string
	s.Str(&proxies, "trusted-proxies", "ORDERFLOW_TRUSTED_PROXIES", "", "proxies (CIDRs, comma-separated) whose X-Forwarded-For/X-Real-IP name the client; none: the direct peer", apiRoles)
	d := httpapi.DefaultLimits
	s.Float(&c.Limits.CustomerRate, "rate-customer", "ORDERFLOW_RATE_CUSTOMER", d.CustomerRate, "requests per second per customer, and per address without a token", apiRoles)
	s.Int(&c.Limits.CustomerBurst, "burst-customer", "ORDERFLOW_BURST_CUSTOMER", d.CustomerBurst, "burst above -rate-customer", apiRoles)
	s.Float(&c.Limits.OperatorRate, "rate-operator", "ORDERFLOW_RATE_OPERATOR", d.OperatorRate, "requests per second per operator", apiRoles)
	s.Int(&c.Limits.OperatorBurst, "burst-operator", "ORDERFLOW_BURST_OPERATOR", d.OperatorBurst, "burst above -rate-operator", apiRoles)
	s.Int(&c.Limits.Streams, "max-streams", "ORDERFLOW_MAX_STREAMS", d.Streams, "live streams one principal may hold open", apiRoles)
	s.Int(&c.Limits.Waits, "max-waits", "ORDERFLOW_MAX_WAITS", d.Waits, "pending min_position waits per principal", apiRoles)
	s.Duration(&c.StatementTimeout, "statement-timeout", "ORDERFLOW_STATEMENT_TIMEOUT", 15*time.Second, "longest SQL statement of the API's pool", apiRoles)
	s.Int(&c.APIPoolSize, "api-pool-size", "ORDERFLOW_API_POOL_SIZE", 16, "connections of the API's own pool, apart from the projector's and the saga's", apiRoles)
	s.Int(&c.MaxHeaderBytes, "max-header-bytes", "ORDERFLOW_MAX_HEADER_BYTES", 16<<10, "largest request header block accepted", apiRoles)
	s.Duration(&c.SagaBacklogWait, "saga-backlog-wait", "ORDERFLOW_SAGA_BACKLOG_WAIT", defaultSagaBacklogWait, "orders are refused (503, Retry-After) while the queued saga starts would wait longer than this at the pace sagas start now, 0 = never", apiRoles)
	s.Int(&c.SagaBacklogMin, "saga-backlog-min", "ORDERFLOW_SAGA_BACKLOG_MIN", defaultSagaBacklogMin, "fewer queued saga starts never refuse an order (a cold start has no pace yet)", apiRoles)
	s.Int(&c.SagaMaxRunning, "saga-max-running", "ORDERFLOW_SAGA_MAX_RUNNING", sagas.DefaultMaxRunning, "sagas the launcher keeps running at once; further starts wait in the inbox (the API admits orders to fill free ones)", []string{"dev", "api", "worker"})
	s.Duration(&c.SagaWindow, "saga-window", "ORDERFLOW_SAGA_WINDOW", sagas.DefaultWindow, "a saga running longer waits for the carrier or an operator: it no longer counts as running", []string{"dev", "api", "worker"})
	s.Int(&c.InFlight.Max, "max-in-flight", "ORDERFLOW_MAX_IN_FLIGHT", httpapi.DefaultMaxInFlight, "requests the API serves at once (streams and min_position waits apart), 0 = no bound", apiRoles)
	s.Duration(&c.InFlight.Wait, "in-flight-wait", "ORDERFLOW_IN_FLIGHT_WAIT", httpapi.DefaultInFlightWait, "longest wait of a request for one of -max-in-flight before it is answered 503", apiRoles)
	s.Str(&c.TemporalLogLevel, "temporal-log-level", "ORDERFLOW_TEMPORAL_LOG_LEVEL", "fatal", "the embedded Temporal server's log level (it logs start and stop noise as errors)", []string{"dev", "temporal-server"})
	s.Str(&c.PaymentProvider, "payment-provider", "ORDERFLOW_PAYMENT_PROVIDER", "simulated", "payment provider: simulated (its ledger in this database) or stripe", apiRoles)
	s.Str(&c.PaymentWebhookSecret, "payment-webhook-secret", "ORDERFLOW_PAYMENT_WEBHOOK_SECRET", "", "secret of the provider's webhook signatures (required by api; dev generates one when empty)", apiRoles)
	s.Duration(&c.PaymentWebhookTolerance, "payment-webhook-tolerance", "ORDERFLOW_PAYMENT_WEBHOOK_TOLERANCE", 5*time.Minute, "oldest webhook signature accepted", apiRoles)
	s.Duration(&c.PaymentLatency, "payment-latency", "ORDERFLOW_PAYMENT_LATENCY", 200*time.Millisecond, "simulated payment provider: time to decide a payment", apiRoles)
	s.Float(&c.PaymentDeclineRate, "payment-decline-rate", "ORDERFLOW_PAYMENT_DECLINE_RATE", 0, "simulated payment provider: share of payments declined at random, 0..1", apiRoles)
	s.Int(&c.PaymentCardLimit, "payment-card-limit", "ORDERFLOW_PAYMENT_CARD_LIMIT", 1_000_000, "simulated payment provider: payments above this amount (minor units) are declined (insufficient_funds), 0 = no limit", apiRoles)
	s.Str(&c.PaymentWebhookURL, "payment-webhook-url", "ORDERFLOW_PAYMENT_WEBHOOK_URL", "", "simulated payment provider: where it delivers webhooks (default http://<http-addr>/webhooks/payments)", apiRoles)
	s.Str(&c.StripeSecretKey, "stripe-secret-key", "ORDERFLOW_STRIPE_SECRET_KEY", "", "Stripe secret key, with -payment-provider stripe", apiRoles)
	if err := s.Err(); err != nil {
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
	c.MaxBodyBytes = int64(maxBody)
	c.NATSLimits.MaxBytes = int64(natsMaxBytes)
	var err error
	if c.TrustedProxies, err = parseCIDRs(proxies); err != nil {
		return c, fmt.Errorf("trusted-proxies: %w", err)
	}
	switch {
	case c.AggregateCache < 0:
		return c, errors.New("aggregate-cache must be >= 0")
	case c.SnapshotEvery < 0:
		return c, errors.New("snapshot-every must be >= 0")
	case c.CommandRetries < 0:
		return c, errors.New("command-retries must be >= 0")
	case c.MaxBodyBytes < 1024:
		return c, fmt.Errorf("max-body-bytes must be at least 1024, got %d", c.MaxBodyBytes)
	case c.PollInterval <= 0 || c.ConsistencyTimeout <= 0:
		return c, errors.New("poll-interval and consistency-timeout must be positive")
	case c.PaymentProvider != "simulated" && c.PaymentProvider != "stripe":
		return c, fmt.Errorf("payment-provider must be simulated or stripe, got %q", c.PaymentProvider)
	case c.PaymentProvider == "stripe" && c.StripeSecretKey == "" && slices.Contains(apiRoles, cmd):
		return c, errors.New("payment-provider stripe needs ORDERFLOW_STRIPE_SECRET_KEY")
	case c.PaymentDeclineRate < 0 || c.PaymentDeclineRate > 1 || c.PaymentCardLimit < 0:
		return c, errors.New("payment-decline-rate must be between 0 and 1 and payment-card-limit >= 0")
	case c.PaymentWebhookTolerance < time.Second || c.PaymentLatency < 0:
		return c, errors.New("payment-webhook-tolerance must be at least 1s and payment-latency >= 0")
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
	case c.JWTMaxTTL < time.Minute:
		return c, errors.New("jwt-max-ttl must be at least 1m")
	case c.SagaBacklogWait < 0 || c.SagaBacklogMin < 1 || c.SagaMaxRunning < 1 || c.SagaWindow < time.Second:
		return c, errors.New("saga-backlog-wait must be >= 0, saga-backlog-min and saga-max-running >= 1, saga-window at least 1s")
	case c.NATSReconnectWait < 10*time.Millisecond || c.NATSLimits.MaxAge < 0 || c.NATSLimits.MaxBytes < 0:
		return c, errors.New("nats-reconnect-wait must be at least 10ms, nats-max-age and nats-max-bytes >= 0")
	case c.NATSLimits.DuplicateWindow < time.Second || c.NATSLimits.MaxAge > 0 && c.NATSLimits.DuplicateWindow > c.NATSLimits.MaxAge:
		return c, errors.New("nats-duplicate-window must be at least 1s and at most nats-max-age (JetStream's rule)")
	case c.InFlight.Max < 0 || c.InFlight.Wait < 0 || c.InFlight.Wait > time.Second:
		return c, errors.New("max-in-flight must be >= 0 and in-flight-wait between 0 and 1s (every request is answered within a second)")
	}
	return c, nil
}

// parseCIDRs reads comma-separated CIDRs; a bare address is its own range.
func parseCIDRs(list string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if ip := net.ParseIP(item); ip != nil {
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", item)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c Config) arg(i int) string {
	if i < len(c.Args) {
		return c.Args[i]
	}
	return ""
}
