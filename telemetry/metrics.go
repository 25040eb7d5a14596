// Package telemetry is what operators see of a running orderflow: Prometheus
// metrics (one registry: HTTP, commands, events, outbox backlog, projection
// lag, sagas, the Temporal SDK's worker metrics, connection pools) and
// OpenTelemetry tracing.
package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.temporal.io/sdk/client"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"

	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
)

// Metrics is the process's one registry and the instruments fed by code.
type Metrics struct {
	Registry        *prometheus.Registry
	httpRequests    *prometheus.CounterVec
	httpDuration    *prometheus.HistogramVec
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	events          *prometheus.CounterVec
	messages        *prometheus.CounterVec
	conflicts       *prometheus.CounterVec
	groups          prometheus.Histogram
	log             *slog.Logger
}

// latency buckets, seconds: 0.5 ms to 10 s.
var latency = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics returns a registry with the Go runtime and process collectors
// and orderflow's instruments.
func NewMetrics(log *slog.Logger) *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{Registry: r, log: log,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_http_requests_total",
			Help: "HTTP requests by route pattern, method and status."}, []string{"route", "method", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "orderflow_http_request_duration_seconds",
			Help: "HTTP request latency by route pattern and method.", Buckets: latency}, []string{"route", "method"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_commands_total",
			Help: "Commands by type and outcome (accepted, rejected, replayed, failed)."}, []string{"type", "outcome"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "orderflow_command_duration_seconds",
			Help: "Command latency in the bus (load, decide, commit) by type.", Buckets: latency}, []string{"type"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_events_appended_total",
			Help: "Events appended, by stream type."}, []string{"stream_type"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_messages_handled_total",
			Help: "Watermill messages handled in this process, by handler (consumer group) and outcome (ok, failed: retried or poisoned)."},
			[]string{"handler", "outcome"}),
	}
	m.conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_command_conflict_retries_total",
		Help: "Commands decided again after a version conflict, by type."}, []string{"type"})
	m.groups = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "orderflow_command_group_size",
		Help: "Commands committed per transaction by the group committer.", Buckets: prometheus.ExponentialBuckets(1, 2, 9)})
	r.MustRegister(m.httpRequests, m.httpDuration, m.commands, m.commandDuration, m.events, m.messages, m.conflicts, m.groups)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// HTTP records one request (httpapi.Config.Observe).
func (m *Metrics) HTTP(route, method string, status int, d time.Duration) {
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
}

// Command records one dispatched command (commands.Options.Observe).
func (m *Metrics) Command(typ, streamType, outcome string, events int, d time.Duration) {
	m.commands.WithLabelValues(typ, outcome).Inc()
	m.commandDuration.WithLabelValues(typ).Observe(d.Seconds())
	if events > 0 {
		m.events.WithLabelValues(streamType).Add(float64(events))
	}
}

// Conflict records one re-decision after a version conflict
// (commands.Options.Conflict).
func (m *Metrics) Conflict(typ string) { m.conflicts.WithLabelValues(typ).Inc() }

// Group records the size of one committed group (commands.GroupCommit.Observe).
func (m *Metrics) Group(commands int) { m.groups.Observe(float64(commands)) }

// Message records one handled message (delivery.RouterConfig.Observe).
func (m *Metrics) Message(handler string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	m.messages.WithLabelValues(handler, outcome).Inc()
}

// TemporalHandler feeds the Temporal SDK's metrics (worker, workflow and
// activity metrics, and the saga's own counters) into the registry.
func (m *Metrics) TemporalHandler() (client.MetricsHandler, error) {
	exp, err := otelprom.New(otelprom.WithRegisterer(m.Registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	// The SDK's instruments carry no description: give each a help text,
	// and durations (seconds) the same buckets as orderflow's own.
	view := func(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
		s := sdkmetric.Stream{Name: i.Name, Unit: i.Unit, Description: i.Description}
		if s.Description == "" {
			s.Description = "Temporal Go SDK metric " + i.Name + " (docs.temporal.io/references/sdk-metrics), or the saga's own."
		}
		if i.Kind == sdkmetric.InstrumentKindHistogram {
			s.Aggregation = sdkmetric.AggregationExplicitBucketHistogram{Boundaries: latency}
		}
		return s, true
	}
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(view)).Meter("temporal-sdk")
	return temporalotel.NewMetricsHandler(temporalotel.MetricsHandlerOptions{Meter: meter, UseMonotonicCounters: true}), nil
}

// collector runs collect at scrape time: values read from the database or
// Temporal when Prometheus asks, bounded by a timeout.
type collector struct {
	descs   []*prometheus.Desc
	collect func(ctx context.Context, ch chan<- prometheus.Metric) error
	log     *slog.Logger
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil && c.log != nil {
		c.log.Warn("metrics: collect", "err", err)
	}
}

// WatchPool exports a pgx pool's statistics, labelled pool=name.
func (m *Metrics) WatchPool(name string, pool *pgxpool.Pool) {
	label := prometheus.Labels{"pool": name}
	desc := func(n, help string) *prometheus.Desc {
		return prometheus.NewDesc("orderflow_db_pool_"+n, help, nil, label)
	}
	total, idle, acquired, max := desc("connections", "Open connections."), desc("idle_connections", "Idle connections."),
		desc("acquired_connections", "Connections in use."), desc("max_connections", "The pool's size.")
	acquires, waits, waited := desc("acquires_total", "Connections acquired."), desc("empty_acquires_total", "Acquires that waited for a connection."),
		desc("acquire_wait_seconds_total", "Time spent waiting for a connection.")
	m.Registry.MustRegister(collector{descs: []*prometheus.Desc{total, idle, acquired, max, acquires, waits, waited},
		collect: func(_ context.Context, ch chan<- prometheus.Metric) error {
			s := pool.Stat()
			ch <- prometheus.MustNewConstMetric(total, prometheus.GaugeValue, float64(s.TotalConns()))
			ch <- prometheus.MustNewConstMetric(idle, prometheus.GaugeValue, float64(s.IdleConns()))
			ch <- prometheus.MustNewConstMetric(acquired, prometheus.GaugeValue, float64(s.AcquiredConns()))
			ch <- prometheus.MustNewConstMetric(max, prometheus.GaugeValue, float64(s.MaxConns()))
			ch <- prometheus.MustNewConstMetric(acquires, prometheus.CounterValue, float64(s.AcquireCount()))
			ch <- prometheus.MustNewConstMetric(waits, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
			ch <- prometheus.MustNewConstMetric(waited, prometheus.CounterValue, s.AcquireDuration().Seconds())
			return nil
		}})
}

// WatchDelivery exports the outbox backlog per topic and consumer group,
// and each projection's lag and unresolved poison messages, read at scrape
// time (one process of a deployment is enough: they are database-wide).
func (m *Metrics) WatchDelivery(pool *pgxpool.Pool, reader *projections.Reader) {
	backlog := prometheus.NewDesc("orderflow_outbox_backlog_messages", "Messages of a topic its consumer group has not acked yet.",
		[]string{"topic", "consumer_group"}, nil)
	lagEvents := prometheus.NewDesc("orderflow_projection_lag_events", "Events of its topic a projection has not applied.", []string{"projection"}, nil)
	lagSeconds := prometheus.NewDesc("orderflow_projection_lag_seconds", "Age of the oldest event a projection has not applied.", []string{"projection"}, nil)
	poisoned := prometheus.NewDesc("orderflow_projection_poison_messages", "Unresolved poison messages of a projection.", []string{"projection"}, nil)
	m.Registry.MustRegister(collector{log: m.log, descs: []*prometheus.Desc{backlog, lagEvents, lagSeconds, poisoned},
		collect: func(ctx context.Context, ch chan<- prometheus.Metric) error {
			bs, err := outbox.Backlogs(ctx, pool)
			if err != nil {
				return err
			}
			for _, b := range bs {
				ch <- prometheus.MustNewConstMetric(backlog, prometheus.GaugeValue, float64(b.Messages), b.Topic, b.ConsumerGroup)
			}
			st, err := reader.Status(ctx)
			if err != nil {
				return err
			}
			for _, s := range st {
				ch <- prometheus.MustNewConstMetric(lagEvents, prometheus.GaugeValue, float64(s.LagEvents), s.Name)
				ch <- prometheus.MustNewConstMetric(lagSeconds, prometheus.GaugeValue, s.LagSeconds, s.Name)
				ch <- prometheus.MustNewConstMetric(poisoned, prometheus.GaugeValue, float64(s.Poisoned), s.Name)
			}
			return nil
		}})
}

// WatchSagas exports the sagas waiting for an operator (NEEDS_ATTENTION),
// counted in Temporal's visibility store at scrape time.
func (m *Metrics) WatchSagas(count func(ctx context.Context, status string) (int64, error)) {
	waiting := prometheus.NewDesc("orderflow_sagas_needing_attention", "Running sagas waiting for an operator's decision.", nil, nil)
	m.Registry.MustRegister(collector{log: m.log, descs: []*prometheus.Desc{waiting},
		collect: func(ctx context.Context, ch chan<- prometheus.Metric) error {
			n, err := count(ctx, "NEEDS_ATTENTION")
			if err != nil {
				return err
			}
			ch <- prometheus.MustNewConstMetric(waiting, prometheus.GaugeValue, float64(n))
			return nil
		}})
}

// BridgeStatus is the NATS bridge's state at scrape time.
type BridgeStatus struct {
	Connected  bool
	AwaySince  time.Time // zero while connected
	Forwarded  uint64
	Reconnects uint64
}

// WatchNATSBridge exports the NATS bridge's state: whether NATS is
// connected, for how long it has been away, messages forwarded and
// connections regained. Its lag is orderflow_outbox_backlog_messages with
// consumer_group="nats_bridge".
func (m *Metrics) WatchNATSBridge(status func() BridgeStatus) {
	connected := prometheus.NewDesc("orderflow_nats_bridge_connected", "1 while the NATS bridge is connected to NATS, 0 while NATS is away.", nil, nil)
	away := prometheus.NewDesc("orderflow_nats_bridge_away_seconds", "How long NATS has been away from the bridge (0 while connected).", nil, nil)
	forwarded := prometheus.NewDesc("orderflow_nats_bridge_forwarded_total", "Messages the NATS bridge forwarded and JetStream acknowledged, in this process.", nil, nil)
	reconnects := prometheus.NewDesc("orderflow_nats_bridge_reconnects_total", "Connections to NATS the bridge regained after losing one, in this process.", nil, nil)
	m.Registry.MustRegister(collector{
		descs: []*prometheus.Desc{connected, away, forwarded, reconnects},
		collect: func(_ context.Context, ch chan<- prometheus.Metric) error {
			s := status()
			up, awayFor := 0.0, 0.0
			if s.Connected {
				up = 1
			} else if !s.AwaySince.IsZero() {
				awayFor = time.Since(s.AwaySince).Seconds()
			}
			ch <- prometheus.MustNewConstMetric(connected, prometheus.GaugeValue, up)
			ch <- prometheus.MustNewConstMetric(away, prometheus.GaugeValue, awayFor)
			ch <- prometheus.MustNewConstMetric(forwarded, prometheus.CounterValue, float64(s.Forwarded))
			ch <- prometheus.MustNewConstMetric(reconnects, prometheus.CounterValue, float64(s.Reconnects))
			return nil
		},
	})
}
