// Package httpapi is orderflow's REST API on echo/v4: commands, the command
// and event logs, stream state, health, the OpenAPI document and its docs
// page. Every request is validated against httpapi/openapi.yaml, and every
// error leaves as application/problem+json (problem.go maps them).
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	swaggerfiles "github.com/swaggo/files/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/asyncapi"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/tracing"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Config holds the server's dependencies.
type Config struct {
	Pool  *pgxpool.Pool
	Bus   *commands.Bus
	Store *eventstore.Store
	Log   *slog.Logger
	// MaxBodyBytes bounds request bodies (413 beyond).
	MaxBodyBytes int64
	Reader       *projections.Reader
	// ConsistencyTimeout bounds a read-your-writes wait (min_position).
	ConsistencyTimeout time.Duration
	// Heartbeat is the idle interval of live streams' comment lines.
	Heartbeat time.Duration
	// Sagas, when set, routes cancels through the running fulfilment saga
	// and adds its progress to GET /orders/{id}.
	Sagas *sagas.Client
	// Consumers are the handlers besides the projections whose poison
	// POST /poison/{offset}/replay runs again (the saga starter).
	Consumers []delivery.Handler
	// Verifier checks bearer tokens (required: every route but health and
	// the docs needs one).
	Verifier *auth.Verifier
	Limits   Limits
	// TrustedProxies are the proxies whose X-Forwarded-For and X-Real-IP
	// name the client; without any, the client is the direct peer.
	TrustedProxies []*net.IPNet
	// Observe, when set, is told of every request: its route pattern,
	// method, status and duration (telemetry.Metrics.HTTP).
	Observe func(route, method string, status int, took time.Duration)
	// Ready returns the readiness checks of GET /readyz by name, besides
	// the database (the process's roles add theirs as they start).
	Ready func() map[string]func(context.Context) error
	// InFlight bounds the requests served at once (overload.go).
	InFlight InFlight
	// Payments: the provider and its webhook secret (payments.go).
	Payments Payments
	// CancelWait bounds how long a cancel waits for the saga's answer
	// (DefaultCancelWait when 0).
	CancelWait time.Duration
}

// Defaults of Config (the service's flags start from them too).
const (
	DefaultMaxBodyBytes       = 1 << 20
	DefaultConsistencyTimeout = 5 * time.Second
	DefaultCancelWait         = 10 * time.Second
)

// Server handles the API.
type Server struct {
	pool    *pgxpool.Pool
	bus     *commands.Bus
	store   *eventstore.Store
	log     *slog.Logger
	maxBody int64
	reader  *projections.Reader
	sagas   *sagas.Client
	// consumers replay poison besides the projections (Config.Consumers).
	consumers []delivery.Handler
	// cancelWait bounds how long a cancel waits for the saga's answer.
	cancelWait time.Duration
	horizon    *horizon
	doc        *openapi3.T

	consistencyTimeout time.Duration
	heartbeat          time.Duration
	sseWriteTimeout    time.Duration
	router             routers.Router
	spec               []byte

	verifier     *auth.Verifier
	customerKeys *personal.Keys
	limits       Limits
	customerRate *rateStore
	operatorRate *rateStore
	streams      *slots
	waits        *slots
	payments     Payments
}

// New builds the echo instance with every route.
func New(cfg Config) (*echo.Echo, error) {
	doc, router, err := loadSpec()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	if cfg.Verifier == nil {
		return nil, errors.New("httpapi: a token verifier is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ConsistencyTimeout <= 0 {
		cfg.ConsistencyTimeout = DefaultConsistencyTimeout
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.CancelWait <= 0 {
		cfg.CancelWait = DefaultCancelWait
	}
	s := &Server{pool: cfg.Pool, bus: cfg.Bus, store: cfg.Store, log: cfg.Log, maxBody: cfg.MaxBodyBytes, doc: doc, router: router, spec: spec,
		reader: cfg.Reader, sagas: cfg.Sagas, consumers: cfg.Consumers, horizon: newHorizon(cfg.Pool, 50*time.Millisecond),
		consistencyTimeout: cfg.ConsistencyTimeout, cancelWait: cfg.CancelWait, heartbeat: cfg.Heartbeat, sseWriteTimeout: 10 * time.Second,
		verifier: cfg.Verifier, customerKeys: personal.NewKeys(cfg.Pool), limits: cfg.Limits.withDefaults(), payments: cfg.Payments}
	s.customerRate = newRateStore(s.limits.CustomerRate, s.limits.CustomerBurst)
	s.operatorRate = newRateStore(s.limits.OperatorRate, s.limits.OperatorBurst)
	s.streams, s.waits = newSlots(s.limits.Streams), newSlots(s.limits.Waits)
	if s.reader == nil {
		s.reader = projections.NewReader(cfg.Pool)
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = clientIP(cfg.TrustedProxies)
	e.HTTPErrorHandler = errorHandler(cfg.Log)
	if cfg.Observe == nil {
		cfg.Observe = func(string, string, int, time.Duration) {}
	}
	// First, on the request echo routes with (later steps replace it).
	e.Pre(headAsGet)
	// Instrumented from before routing: requests the edge refuses count too.
	e.Pre(instrument(cfg.Observe))
	e.Pre(s.edge)
	e.Use(middleware.Recover())
	e.Use(cfg.InFlight.middleware())
	e.Use(middleware.RequestID())
	e.Use(s.authenticate)
	e.Use(s.checkBody)
	e.Use(s.validate)

	e.GET("/healthz", echo.WrapHandler(http.HandlerFunc(Alive)))
	e.GET("/readyz", echo.WrapHandler(Ready(cfg.Pool.Ping, cfg.Ready)))
	e.GET("/openapi.json", s.openapi)
	e.GET("/docs", s.docsIndex)
	e.GET("/docs/*", s.docsAsset)
	e.GET("/asyncapi.json", asyncapiDoc)
	e.GET("/docs/events", asyncapiPage)

	e.POST("/wallets", command[commands.OpenWallet](s, nil))
	e.POST("/wallets/:id/top-ups", command(s, func(p *commands.TopUpWallet, c echo.Context) { p.WalletID = c.Param("id") }))
	e.POST("/products/:sku/stock", command(s, func(p *commands.ReceiveStock, c echo.Context) { p.SKU = c.Param("sku") }))
	e.PUT("/products/:sku/price", command(s, func(p *commands.SetPrice, c echo.Context) { p.SKU = c.Param("sku") }))
	e.POST("/orders", command[commands.PlaceOrder](s, nil))
	e.POST("/orders/:id/cancel", s.cancelOrder)
	e.POST("/commands", s.submitCommand)
	e.DELETE("/customers/:id/personal-data", s.forgetCustomer)

	e.GET("/commands/updates", s.commandUpdates)
	e.GET("/events/updates", s.eventUpdates)
	s.readRoutes(e)
	s.paymentRoutes(e)
	e.GET("/commands", s.listCommands)
	e.GET("/commands/:id", s.getCommand)
	e.GET("/events", s.listEvents)
	e.GET("/events/:id", s.getEvent)
	e.GET("/streams/:type/:id", s.getStream)
	return e, nil
}

// Alive answers /healthz: the process answers, whatever its dependencies.
func Alive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
}

// ErrDegraded marks a readiness check's failure that leaves the process
// ready: a part that can wait (the NATS bridge while NATS is away) is
// reported "degraded" in /readyz's checks, and /readyz still answers 200.
var ErrDegraded = errors.New("degraded")

// Ready answers /readyz: 200 with each check when the database (ping) and
// everything else given (Temporal, this process's projector) answer, 503
// problem+json naming the failing ones otherwise. A check failing with
// ErrDegraded is reported "degraded" and fails nothing. The API and every
// role's ops listener serve it alike.
func Ready(ping func(context.Context) error, checks func() map[string]func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		all := map[string]func(context.Context) error{"database": ping}
		if checks != nil {
			maps.Copy(all, checks())
		}
		status, failed := readiness(r.Context(), all)
		if len(failed) > 0 {
			p := problem(http.StatusServiceUnavailable, "not_ready", "not ready: "+strings.Join(failed, ", "))
			p.Instance = r.URL.Path
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(p.Status)
			_ = json.NewEncoder(w).Encode(p)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ready", "checks": status})
	}
}

// readiness runs every check with a short timeout; failed names the checks
// that did not pass, sorted.
func readiness(ctx context.Context, checks map[string]func(context.Context) error) (status map[string]string, failed []string) {
	status = map[string]string{}
	for name, check := range checks {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := check(ctx); errors.Is(err, ErrDegraded) {
			status[name] = "degraded"
		} else if err != nil {
			status[name] = "failing"
			failed = append(failed, name)
		} else {
			status[name] = "ok"
		}
		cancel()
	}
	slices.Sort(failed)
	return status, failed
}

// instrument runs the request in a server span (continuing the client's
// trace when it sends a traceparent header) and reports its route, status
// and duration to record. It runs the error handler itself, so that both
// see the status the client got.
func instrument(record func(route, method string, status int, took time.Duration)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start, req := time.Now(), c.Request()
			ctx := tracing.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
			ctx, span := tracing.Tracer().Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", req.Method)))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			if err := next(c); err != nil {
				c.Error(err)
			}
			// The route is known once routed (empty when the edge refused first).
			route := c.Path()
			if auth.RouteAccess(req.Method, route) == auth.Nobody {
				route = "unmatched" // never a client's path as a span name or label
			}
			span.SetName(req.Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
			status := c.Response().Status
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			record(route, req.Method, status, time.Since(start))
			return nil
		}
	}
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.spec)
}

// docsIndex serves Swagger UI (embedded by github.com/swaggo/files) on /openapi.json.
func (s *Server) docsIndex(c echo.Context) error {
	return c.HTML(http.StatusOK, `<!doctype html>
<html><head><meta charset="utf-8"><title>orderflow API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", persistAuthorization: true});</script>
</body></html>`)
}

// asyncapiDoc serves the AsyncAPI document of the Watermill topics, and
// asyncapiPage its rendering: the contract of event consumers.
func asyncapiDoc(c echo.Context) error {
	doc, err := asyncapi.JSON()
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, doc)
}

func asyncapiPage(c echo.Context) error {
	page, err := asyncapi.Page()
	if err != nil {
		return err
	}
	return c.HTMLBlob(http.StatusOK, page)
}

func (s *Server) docsAsset(c echo.Context) error {
	name := strings.TrimPrefix(c.Param("*"), "/")
	if name == "" || strings.HasSuffix(name, ".map") {
		return echo.ErrNotFound
	}
	data, err := fs.ReadFile(swaggerfiles.FS, name)
	if err != nil {
		return echo.ErrNotFound
	}
	return c.Blob(http.StatusOK, mime.TypeByExtension(path.Ext(name)), data)
}
