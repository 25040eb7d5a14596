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
	r.RegisterWorkflowWithOptions(OrderFulfilment, workflow.RegisterOptions{Name: Name})
	r.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
}
