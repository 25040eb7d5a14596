// Package tracing is OpenTelemetry tracing across orderflow: one trace from an
// HTTP request through the command, its events, the projector and the saga,
// carried as a W3C traceparent wherever the work crosses a process or a table.
package tracing

import (
	"context"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer is orderflow's tracer (the global provider's: a no-op until
// Start or a test sets one).
func Tracer() trace.Tracer { return otel.Tracer("github.com/orderflow/orderflow") }

// Propagator carries trace context in W3C traceparent form: in HTTP
// headers, event metadata, Watermill messages and the saga's starts.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Enabled reports whether the standard OTEL_* variables ask for
// traces to be exported over OTLP.
func Enabled() bool {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" ||
		os.Getenv("OTEL_TRACES_EXPORTER") == "otlp"
}

// Start installs the global propagator and, when the OTEL_*
// variables say so, a tracer provider exporting over OTLP/gRPC (endpoint,
// headers, sampler and the like read by the SDK from the same variables).
// The returned func flushes and stops it.
func Start(ctx context.Context, service string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(Propagator)
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Inject returns the trace context of ctx as a W3C traceparent ("" when
// ctx carries no span).
func Inject(ctx context.Context) string {
	c := propagation.MapCarrier{}
	Propagator.Inject(ctx, c)
	return c["traceparent"]
}

// Extract returns ctx continuing the trace of a traceparent.
func Extract(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
