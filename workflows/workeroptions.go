package workflows

import (
	"fmt"
	"net"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// WorkerOptions are the saga worker's settings, shared with the harness's
// bench bound so that both run alike. Measured on 2 cores (orderflow-harness
// bench): the SDK's defaults (2 pollers of each kind) leave tasks waiting in
// matching at 50 sagas/s; more pollers than 8 only add idle long polls.
func WorkerOptions() worker.Options {
	return worker.Options{
		MaxConcurrentWorkflowTaskPollers: 8,
		MaxConcurrentActivityTaskPollers: 4,
		// Local activities are commands through the bus: bounded by the
		// database pool, not by this number.
		MaxConcurrentLocalActivityExecutionSize: 256,
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
