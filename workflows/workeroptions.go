package workflows

import "go.temporal.io/sdk/worker"

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
