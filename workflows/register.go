package workflows

import (
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
)

// Register puts the saga and its activities on a worker (or a test
// environment); activity names are the method names of Activities.
func Register(r worker.Registry, acts *activities.Activities) {
	RegisterWorkflow(r)
	r.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
}

// RegisterWorkflow registers the saga alone (a replayer needs no activities).
func RegisterWorkflow(r worker.WorkflowRegistry) {
	r.RegisterWorkflowWithOptions(OrderFulfilment, workflow.RegisterOptions{Name: Name})
}
