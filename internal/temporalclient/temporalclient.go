// Package temporalclient dials the Temporal frontend for orderflow's
// processes (the service's roles and the harness) alike, so that the
// bench's bound talks to Temporal as the saga does.
package temporalclient

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
)

// Config is where and how to dial.
type Config struct {
	Address   string // TEMPORAL_ADDRESS
	Namespace string // TEMPORAL_NAMESPACE
	// APIKey is sent as "Authorization: Bearer <key>": a JWT for a server
	// whose authorizer and claim mapper are on (see the README).
	APIKey string
	// Compression is auto, gzip or none (GrpcCompression).
	Compression  string
	Log          *slog.Logger
	Metrics      client.MetricsHandler // nil: none
	Interceptors []interceptor.ClientInterceptor
}

// Dial connects to c.Address, waiting up to a minute for a server that is
// still starting.
func Dial(ctx context.Context, c Config) (client.Client, error) {
	opts := client.Options{HostPort: c.Address, Namespace: c.Namespace, Logger: tlog.NewStructuredLogger(c.Log),
		MetricsHandler: c.Metrics, Interceptors: c.Interceptors}
	if c.APIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(c.APIKey)
	}
	compression, err := GrpcCompression(c.Compression, c.Address)
	if err != nil {
		return nil, err
	}
	opts.ConnectionOptions.GrpcCompression = compression
	deadline := time.Now().Add(time.Minute)
	for {
		tc, err := client.DialContext(ctx, opts)
		if err == nil {
			return tc, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to Temporal at %s: %w", c.Address, err)
		}
		time.Sleep(time.Second)
	}
}

// GrpcCompression is the Temporal client's compression of its requests for
// mode: "gzip" (the SDK's default), "none", or "auto" — none to a frontend
// on a loopback address, such as dev's embedded one, where gzip spends CPU
// on both ends (4 % of dev's process over a bench run) and saves no
// network; gzip elsewhere.
func GrpcCompression(mode, hostPort string) (client.GrpcCompression, error) {
	switch mode {
	case "gzip":
		return &client.GrpcCompressionGzip{}, nil
	case "none":
		return &client.GrpcCompressionNone{}, nil
	case "auto", "":
		host, _, err := net.SplitHostPort(hostPort)
		if err != nil {
			host = hostPort
		}
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return &client.GrpcCompressionNone{}, nil
		}
		return &client.GrpcCompressionGzip{}, nil
	}
	return nil, fmt.Errorf("Temporal compression %q: want auto, gzip or none", mode)
}
