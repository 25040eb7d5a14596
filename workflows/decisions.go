package workflows

// Compensation and operators' decisions: a step that fails for good
// stops the saga in NEEDS_ATTENTION until an operator decides (retry,
// compensate, skip, write off); compensations undo what was done, in
// reverse; a write-off closes an order whose parcel left.

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/orderflow/orderflow/activities"
)

// decided is an operator's resolution other than retry.
type decided struct{ Resolution }

func (d *decided) Error() string { return d.Action + ": " + d.Reason }

func (f *fulfilment) validateResolve(r Resolution) error {
	if err := checkText(r.Reason); err != nil {
		return err
	}
	switch {
	case f.p.Attention == nil || f.decision != nil:
		return temporal.NewApplicationError("the saga is not waiting for an operator", ErrNotWaiting)
	case !slices.Contains(f.p.Attention.Options, r.Action):
		return temporal.NewApplicationError(fmt.Sprintf("at %s an operator may decide %s, not %q",
			f.p.Attention.Step, strings.Join(f.p.Attention.Options, " or "), r.Action), ErrActionNotAllowed)
	}
	return nil
}

func (f *fulfilment) onResolve(_ workflow.Context, r Resolution) (Progress, error) {
	f.decision = &r
	return f.p, nil
}

// checkText refuses text that cannot reach an event: what a customer or an
// operator writes ends up in the order's or the shipment's events.
func checkText(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return temporal.NewApplicationError("a reason is required", ErrReasonRequired)
	case !utf8.ValidString(s):
		return temporal.NewApplicationError("the reason is not valid UTF-8", ErrInvalidText)
	case strings.ContainsRune(s, 0):
		return temporal.NewApplicationError("the reason contains a NUL character", ErrInvalidText)
	case utf8.RuneCountInString(s) > MaxReason:
		return temporal.NewApplicationError(fmt.Sprintf("the reason is longer than %d characters", MaxReason), ErrInvalidText)
	}
	return nil
}

// clip makes text the saga composes safe for an event: valid UTF-8, no
// NUL, at most MaxReason characters.
func clip(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if r := []rune(s); len(r) > MaxReason {
		s = string(r[:MaxReason-1]) + "…"
	}
	return s
}

// refused reports a business refusal: a non-retryable application error
// from the domain (out of stock, no funds, carrier refusal). Timeouts,
// exhausted retries and key collisions are not: no customer's choice, no
// compensation — an operator looks. An invalid command (an id the order
// gave that does not fit) is one from VersionDoors on: before the carrier
// nothing is gained by waiting, the order cannot be fulfilled as placed.
func (f *fulfilment) refused(err error) bool {
	if !logged(err) {
		return false
	}
	var app *temporal.ApplicationError
	errors.As(err, &app)
	return app.Type() != activities.ErrTypeKeyCollision && (f.v >= VersionDoors || app.Type() != activities.ErrTypeInvalid)
}

// logged reports a failure that is the command's recorded outcome (a
// refusal, a collision, an invalid command): sending it again under the
// same key can only get the same answer.
func logged(err error) bool {
	var timeout *temporal.TimeoutError
	var app *temporal.ApplicationError
	return !errors.As(err, &timeout) && errors.As(err, &app) && app.NonRetryable()
}

// do runs one step until it succeeds. A business refusal is returned when
// refusalsStop is false (before the carrier the caller compensates);
// anything else stops the saga for an operator, who may choose among
// options: retry runs the step again, another choice is returned as
// *decided. A customer's cancel ends the wait too where compensating is
// an option.
func (f *fulfilment) do(ctx workflow.Context, step string, run func(workflow.Context) error, refusalsStop bool, options ...string) error {
	for {
		err := run(ctx)
		if err == nil || (!refusalsStop && f.refused(err)) || temporal.IsCanceledError(err) {
			return err
		}
		r, aerr := f.attend(ctx, step, err, options)
		if aerr != nil {
			return aerr
		}
		if r.Action != ActionRetry {
			return &decided{r}
		}
		// (Never the carrier's: its booking key must not change, or the
		// carrier would take a second parcel.)
		if f.v >= VersionDoors && logged(err) && step != "dispatch_shipment" {
			// The refused attempt stays in the log; the retry is a new
			// command (the cause was fixed, e.g. the hold re-authorised).
			f.attempts[step]++
		}
	}
}

// attend waits for an operator (or a customer's cancel, where compensating
// is allowed) with the saga in NEEDS_ATTENTION.
func (f *fulfilment) attend(ctx workflow.Context, step string, cause error, options []string) (Resolution, error) {
	status := f.p.Status
	f.p.Status = StatusNeedsAttention
	f.p.Attention = &Attention{Step: step, Error: clip(reasonOf(cause)), Options: options, Since: workflow.Now(ctx)}
	f.publish(ctx)
	workflow.GetLogger(ctx).Warn("saga needs attention", "step", step, "error", cause)
	kind, _, _ := strings.Cut(step, ":") // reserve_stock:<sku> counts as reserve_stock
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"step": kind}).Counter(MetricAttention).Inc(1)
	canCancel := slices.Contains(options, ActionCompensate)
	err := workflow.Await(ctx, func() bool { return f.decision != nil || (canCancel && f.cancelling()) })
	var r Resolution
	switch {
	case f.decision != nil:
		r = *f.decision
		who := r.Operator
		if who == "" {
			who = "an operator"
		}
		f.p.Decisions = append(f.p.Decisions, fmt.Sprintf("%s at %s by %s: %s", r.Action, step, who, r.Reason))
	case err == nil:
		err = errCancelled // the customer's cancel ended the wait
	}
	f.decision, f.p.Attention, f.p.Status = nil, nil, status
	f.publish(ctx)
	return r, err
}

// writeOff closes the order on an operator's decision: the goods left, so
// the stock is committed; what was not captured is released; the order
// records the write-off and its reason.
func (f *fulfilment) writeOff(ctx workflow.Context, r Resolution) (Progress, error) {
	f.p.FailedStep, f.p.Reason = f.p.Step, clip("written off: "+r.Reason)
	f.p.Status = StatusShipped
	steps := []namedStep{{"write_off:void_payment", func(ctx workflow.Context) error {
		return call(ctx, a.VoidPayment, f.payment("write_off:void_payment"), nil)
	}}}
	steps = append(steps, f.commitStock("write_off:commit_stock:")...)
	steps = append(steps, namedStep{"write_off:order", func(ctx workflow.Context) error {
		return call(ctx, a.WriteOffOrder, activities.OrderChange{Step: f.at("write_off:order"), Reason: f.p.Reason}, nil)
	}})
	f.settle(ctx, steps)
	f.end(ctx, StatusWrittenOff, "written_off")
	return f.p, nil
}

// compensate undoes every registered step in reverse on a disconnected
// context, so that a cancelled workflow still cleans up. A compensation
// that keeps failing waits for an operator (retry, or skip it as settled
// by hand); it never stops the others for good.
func (f *fulfilment) compensate(ctx workflow.Context, cause error) (Progress, error) {
	f.fail(cause)
	f.phase, f.p.Status = phaseCompensating, StatusCompensating
	f.answerCancel(answerWithdrawn)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	undo := slices.Clone(f.undo)
	slices.Reverse(undo)
	f.p.Compensated = f.settle(dctx, undo)
	f.end(dctx, StatusCompensated, "compensated")
	return f.p, nil
}

// settle runs steps that must all happen (compensations, a write-off): one
// that keeps failing waits for an operator, who retries it or skips it as
// settled by hand (listed in Skipped). It returns the steps done.
func (f *fulfilment) settle(ctx workflow.Context, steps []namedStep) []string {
	var done []string
	for _, s := range steps {
		f.p.Step = s.step
		options := []string{ActionRetry, ActionSkip}
		if s.step == "compensate:cancel_order" || s.step == "write_off:order" {
			// The order's end is the saga's to record, and until it is
			// recorded the order's money and goods are the saga's (no
			// operator's command moves them): never skipped, only retried.
			options = options[:1]
		}
		if err := f.do(ctx, s.step, s.run, true, options...); err != nil {
			f.p.Skipped = append(f.p.Skipped, s.step)
			continue
		}
		done = append(done, s.step)
	}
	return done
}

// fail records why the forward path stopped.
func (f *fulfilment) fail(err error) {
	var d *decided
	switch {
	case errors.Is(err, errCancelled):
		f.p.Reason = clip("cancelled by the customer: " + f.cancel)
		return
	case errors.As(err, &d):
		f.p.Reason = clip("compensated by an operator: " + d.Reason)
	default:
		f.p.Reason = clip(reasonOf(err))
	}
	if f.p.Step != "" {
		f.p.FailedStep = f.p.Step
	}
}

// reasonOf says why a step failed, in words for the order's events.
func reasonOf(err error) string {
	var app *temporal.ApplicationError
	switch {
	case temporal.IsCanceledError(err):
		return "cancelled by an operator"
	case errors.As(err, &app):
		reason := app.Message()
		if app.Type() != "" && !strings.HasPrefix(reason, app.Type()) {
			reason = app.Type() + ": " + reason
		}
		return reason
	}
	return err.Error()
}
