package campaign

// What the campaign checks itself, beside verify: what each door promised
// against how the order ended, and keyless retries against the command
// log. And how it knows an action was sent at all.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/workflows"
)

// tracker follows one action's requests: whether any was written to an
// API, and the X-Correlation-ID its requests carry while one is set (a
// keyless request and its retries share one, so that the command log tells
// afterwards whether both committed).
type tracker struct {
	sent        atomic.Bool
	mu          sync.Mutex
	correlation string
}

type trackerKey struct{}

func trackerOf(ctx context.Context) *tracker {
	t, _ := ctx.Value(trackerKey{}).(*tracker)
	return t
}

func (t *tracker) setCorrelation(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.correlation = id
}

// tracing is the campaign's HTTP transport: it marks the action of the
// request's context as sent once a request was written whole, and sets the
// action's correlation id.
type tracing struct{ base http.RoundTripper }

func (tr tracing) RoundTrip(req *http.Request) (*http.Response, error) {
	t := trackerOf(req.Context())
	if t == nil {
		return tr.base.RoundTrip(req)
	}
	t.mu.Lock()
	corr := t.correlation
	t.mu.Unlock()
	if corr != "" {
		req = req.Clone(req.Context())
		req.Header.Set("X-Correlation-ID", corr)
	}
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		if info.Err == nil {
			t.sent.Store(true)
		}
	}}
	return tr.base.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}

// cancelAnswer is a customer's cancel and what the door answered.
type cancelAnswer struct {
	action, door, order string
	status              int
	code                string // the problem's code, or the 202/200 body's status
}

// keylessRetry is a keyless request sent again after an answer a fault
// explains: the command log says whether the first had committed.
type keylessRetry struct {
	action, command, correlation string
	first                        string // the first attempt's answer
}

func (r *run) recordCancel(c cancelAnswer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancels = append(r.cancels, c)
}

func (r *run) recordKeyless(k keylessRetry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keyless = append(r.keyless, k)
}

// orderStatus is the order's status from its last event (the event log,
// not a read model that may trail it); "" for no order.
func (r *run) orderStatus(ctx context.Context, id string) (string, error) {
	var last string
	err := r.cfg.Pool.QueryRow(ctx, `SELECT event_type FROM events WHERE stream_type = 'order' AND stream_id = $1
		ORDER BY stream_version DESC LIMIT 1`, id).Scan(&last)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("order %s: %w", id, err)
	}
	switch last {
	case "order.cancelled":
		return "cancelled", nil
	case "order.rejected":
		return "rejected", nil
	case "order.completed":
		return "completed", nil
	case "order.written_off":
		return "written_off", nil
	}
	return "not ended (" + last + ")", nil
}

// sagaCarrier is what the order's saga documents of the carrier's answer
// to a withdrawal ("taken", "withdrawn" or "").
func (r *run) sagaCarrier(ctx context.Context, id string) string {
	saga, err := r.ops.API.GetOrderSagaWithResponse(ctx, id)
	if err != nil || saga.JSON200 == nil {
		st := 0
		if err == nil {
			st = saga.StatusCode()
		}
		return "unknown (GET /orders/{id}/saga answered " + strconv.Itoa(st) + ")"
	}
	if c := saga.JSON200.Progress.Carrier; c != nil {
		return string(*c)
	}
	return ""
}

// checkCancels compares each cancel's answer with the order's end, as
// docs/saga.md (Cancelling an order) promises: 202 "cancelling" — the saga
// compensates: cancelled; 202 "pending" — the cancel was sent and its
// outcome shows in the saga: cancelled, or shipped with the saga
// documenting that the carrier had the parcel; 409 order_shipped — the
// carrier has it: completed or written off; 409 order_<status> and 200
// <status> — the order was at that end already. Other answers (409
// already_cancelling, 503, none) promise nothing.
func (r *run) checkCancels(ctx context.Context) ([]string, error) {
	var out []string
	for _, c := range r.cancels {
		var want []string
		switch {
		case c.status == http.StatusAccepted && c.code == "cancelling":
			want = []string{"cancelled"}
		case c.status == http.StatusAccepted && c.code == "pending":
			want = []string{"cancelled", "completed", "written_off"}
		case c.status == http.StatusConflict && c.code == workflows.ErrShipped:
			want = []string{"completed", "written_off"}
		case c.status == http.StatusConflict && (c.code == "order_completed" || c.code == "order_written_off" || c.code == "order_cancelled" || c.code == "order_rejected"):
			want = []string{c.code[len("order_"):]}
		case c.status == http.StatusOK:
			want = []string{c.code}
		default:
			r.count(r.rep.Counters, "cancel answers promising nothing (not checked)")
			continue
		}
		r.count(r.rep.Counters, "cancel answers checked against the order's end")
		end, err := r.orderStatus(ctx, c.order)
		if err != nil {
			return nil, err
		}
		ok := false
		for _, w := range want {
			ok = ok || end == w
		}
		if ok && c.code == "pending" && end != "cancelled" {
			// Shipped after a pending cancel: only if the saga says the
			// carrier had the parcel.
			if carrier := r.sagaCarrier(ctx, c.order); carrier != "taken" {
				out = append(out, fmt.Sprintf("order %s: a cancel (%s, %s) answered 202 pending, the order ended %s, and its saga does not document that the carrier had the parcel (carrier: %q)",
					c.order, c.action, c.door, end, carrier))
			}
			continue
		}
		if !ok {
			out = append(out, fmt.Sprintf("order %s: a cancel (%s, %s) answered %d %s, but the order ended %s (the saga's carrier answer: %q)",
				c.order, c.action, c.door, c.status, c.code, end, r.sagaCarrier(ctx, c.order)))
		}
	}
	return out, nil
}

// checkKeyless finds the keyless requests whose first attempt committed
// although its answer said otherwise, so that the retry made a second
// order or top-up. After a 502/503/504 that is the service's fault (it
// answered "retry" after a commit); after no answer at all it is the risk a
// keyless client takes, counted.
func (r *run) checkKeyless(ctx context.Context) ([]string, error) {
	var out []string
	for _, k := range r.keyless {
		r.count(r.rep.Counters, "keyless retries checked against the command log")
		rows, err := r.cfg.Pool.Query(ctx, `SELECT command_id, stream_id FROM commands
			WHERE correlation_id = $1 AND command_type = $2 AND status = 'accepted' ORDER BY seq`, k.correlation, k.command)
		if err != nil {
			return nil, fmt.Errorf("keyless %s: %w", k.correlation, err)
		}
		type row struct{ Command, Stream string }
		done, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			return nil, fmt.Errorf("keyless %s: %w", k.correlation, err)
		}
		if len(done) < 2 {
			continue
		}
		what := fmt.Sprintf("%s: one keyless %s (correlation %s) committed %d times:", k.action, k.command, k.correlation, len(done))
		for _, d := range done {
			what += fmt.Sprintf(" %s %s", d.Command, d.Stream)
		}
		if k.first == "no_answer" {
			r.count(r.rep.Counters, "keyless retries that duplicated after no answer (the client's risk)")
			r.cfg.Logf("%s; the first attempt got no answer", what)
			continue
		}
		out = append(out, fmt.Sprintf("%s; the first attempt answered %s, then committed", what, k.first))
	}
	return out, nil
}

// ownChecks runs the campaign's checks once every saga has ended.
func (r *run) ownChecks(ctx context.Context) error {
	cancels, err := r.checkCancels(ctx)
	if err != nil {
		return err
	}
	keyless, err := r.checkKeyless(ctx)
	if err != nil {
		return err
	}
	r.rep.Checks = append(r.rep.Checks,
		verify.Check{Name: "each cancel's answer holds: the order ended as the door promised", Failures: cancels},
		verify.Check{Name: "no keyless request answered 5xx had committed (a retry made it twice)", Failures: keyless})
	return r.carrierPaths(ctx)
}

// carrierPaths counts the orders by the carrier's latency (below or above
// the saga's CarrierFastTimeout) and end: both paths must have run.
func (r *run) carrierPaths(ctx context.Context) error {
	for _, o := range r.orders {
		path := "fast"
		if o.zip == r.cfg.SlowPostalCode && o.zip != "" {
			path = "slow"
		}
		end, err := r.orderStatus(ctx, o.id)
		if err != nil {
			return err
		}
		r.count(r.rep.Carrier, path+" carrier, "+end)
	}
	return nil
}
