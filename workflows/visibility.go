package workflows

// What operators see of a run: its search attributes (kept in Temporal's
// visibility store: the Temporal UI's filters, and the saga lists and
// counts of package sagas), its static summary and current details, and
// the saga's metrics.

import (
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/domain/money"
)

// Search attributes kept up to date for operators (Temporal UI filters such
// as OrderStatus="NEEDS_ATTENTION").
var (
	AttrOrderID     = temporal.NewSearchAttributeKeyKeyword("OrderId")
	AttrCustomerID  = temporal.NewSearchAttributeKeyKeyword("CustomerId")
	AttrOrderStatus = temporal.NewSearchAttributeKeyKeyword("OrderStatus")
	AttrFailedStep  = temporal.NewSearchAttributeKeyKeyword("FailedStep")
)

// SearchAttributes are the custom search attributes the namespace needs.
func SearchAttributes() map[string]enumspb.IndexedValueType {
	return map[string]enumspb.IndexedValueType{
		AttrOrderID.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD, AttrCustomerID.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		AttrOrderStatus.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD, AttrFailedStep.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
}

// end records the saga's outcome.
func (f *fulfilment) end(ctx workflow.Context, status, step string) {
	f.phase, f.p.Status, f.p.Step = phaseDone, status, step
	f.answerCancel(answerTaken)
	f.publish(ctx)
	// The SDK's metrics handler records nothing while replaying.
	m := workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"outcome": status})
	m.Counter(MetricFinished).Inc(1)
	m.Timer(MetricDuration).Record(workflow.Now(ctx).Sub(workflow.GetInfo(ctx).WorkflowStartTime))
}

// The saga's metrics, through the Temporal SDK's metrics handler.
const (
	MetricStarted   = "orderflow_sagas_started"
	MetricFinished  = "orderflow_sagas_finished"
	MetricDuration  = "orderflow_saga_duration"
	MetricAttention = "orderflow_saga_attention_requests"
)

// Summary is the run's static summary and details in the Temporal UI: who
// ordered what, so an operator reads the list without opening each run.
func Summary(in Input) (summary, details string) {
	what := "order"
	if in.Repair {
		what = "repair of order"
	}
	summary = fmt.Sprintf("%s %s · customer %s · %d line(s) · %s", what, in.OrderID, in.CustomerID, len(in.Lines), money.New(in.Total, in.Currency))
	var b strings.Builder
	fmt.Fprintf(&b, "**Order** %s for customer %s, wallet %s, total %s (minor units)\n\n", in.OrderID, in.CustomerID, in.WalletID, money.New(in.Total, in.Currency))
	for _, l := range in.Lines {
		fmt.Fprintf(&b, "- %s × %d at %d\n", l.SKU, l.Quantity, l.UnitPrice)
	}
	return clip(summary), b.String()
}

// show keeps the run's current details in the Temporal UI up to date (no
// history event: the UI asks the workflow when it shows the run).
func (f *fulfilment) show(ctx workflow.Context) {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s** at `%s`", f.p.Status, f.p.Step)
	if a := f.p.Attention; a != nil {
		fmt.Fprintf(&b, "\n\n**Waiting for an operator** at `%s` since %s: %s\n\nAllowed: %s (POST /orders/%s/saga/resolve)",
			a.Step, a.Since.Format(time.RFC3339), a.Error, strings.Join(a.Options, ", "), f.in.OrderID)
	}
	if f.p.Reason != "" {
		fmt.Fprintf(&b, "\n\nReason: %s", f.p.Reason)
	}
	if f.p.TrackingNumber != "" {
		fmt.Fprintf(&b, "\n\nTracking number: %s", f.p.TrackingNumber)
	}
	if f.p.Carrier != "" {
		fmt.Fprintf(&b, "\n\nCarrier asked to withdraw: %s", f.p.Carrier)
	}
	for _, d := range f.p.Decisions {
		fmt.Fprintf(&b, "\n\n- %s", d)
	}
	workflow.SetCurrentDetails(ctx, b.String())
}

// publish writes the search attributes when they changed since last time.
// They are written only where the saga waits (for the carrier, for an
// operator) and where it ends: between those points the steps run as local
// activities inside one workflow task, and the intermediate values would
// never be seen. The progress query has the current step at any time.
func (f *fulfilment) publish(ctx workflow.Context) {
	f.show(ctx)
	failed := f.p.FailedStep
	if f.p.Attention != nil {
		failed = f.p.Attention.Step
	}
	if f.written == [2]string{f.p.Status, failed} {
		return
	}
	unset := failed == "" && f.written[1] != ""
	f.written = [2]string{f.p.Status, failed}
	writeAttrs(ctx, f.in, f.p.Status, failed, unset)
}

// writeAttrs upserts the saga's search attributes.
func writeAttrs(ctx workflow.Context, in Input, status, failedStep string, unsetFailed bool) {
	updates := []temporal.SearchAttributeUpdate{
		AttrOrderID.ValueSet(in.OrderID), AttrCustomerID.ValueSet(in.CustomerID), AttrOrderStatus.ValueSet(status),
	}
	if failedStep != "" {
		updates = append(updates, AttrFailedStep.ValueSet(failedStep))
	} else if unsetFailed {
		updates = append(updates, AttrFailedStep.ValueUnset())
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "err", err)
	}
}
