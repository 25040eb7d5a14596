package loadgen

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Result is a run's measurements and summary; it is written as JSON.
type Result struct {
	RunID       string         `json:"run_id"`
	Config      Config         `json:"-"`
	StartedAt   time.Time      `json:"started_at"`
	PlacingTook time.Duration  `json:"placing_took_ns"`
	Took        time.Duration  `json:"took_ns"`
	Summary     Summary        `json:"summary"`
	Errors      map[string]int `json:"errors_by_status"`
	Samples     []Sample       `json:"samples"`
}

// Summary is what the report shows.
type Summary struct {
	Orders   int `json:"orders"`
	Accepted int `json:"accepted"`
	// Refused are the orders answered 429 or 503 with Retry-After: the
	// service pushed back, at once. Failed got any other answer but 201;
	// NoStatus got none (a transport failure: connection refused or
	// reset, or no answer within the run's drain).
	Refused  int `json:"refused"`
	Failed   int `json:"failed"`
	NoStatus int `json:"no_status"`
	// Late were answered (whatever the status) after more than a second.
	Late         int                       `json:"answered_after_1s"`
	OrdersPerS   float64                   `json:"accepted_orders_per_second"`
	CommandsPerS float64                   `json:"commands_per_second"`
	AcceptedMs   Percentiles               `json:"command_accepted_ms"`
	AnsweredMs   Percentiles               `json:"answered_ms"`
	VisibleMs    Percentiles               `json:"read_model_visible_ms"`
	SagaMs       Percentiles               `json:"saga_finished_ms"`
	Outcomes     map[string]map[string]int `json:"saga_outcomes_by_kind"`
	Duplicates   int                       `json:"duplicate_submissions"`
	// AcceptedByAPI counts the accepted orders of each API the run drove.
	AcceptedByAPI map[string]int `json:"accepted_by_api"`
}

// Percentiles of a latency, in milliseconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return ms(ds[min(len(ds)-1, int(q*float64(len(ds))))]) }
	return Percentiles{N: len(ds), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *Result) summarise() {
	sort.Slice(r.Samples, func(i, j int) bool { return r.Samples[i].At < r.Samples[j].At })
	var acc, answered, vis, saga []time.Duration
	s := Summary{Orders: len(r.Samples), Outcomes: map[string]map[string]int{}, AcceptedByAPI: map[string]int{}}
	commands := 0
	for _, x := range r.Samples {
		if x.Status != 0 {
			answered = append(answered, x.Accepted)
			if x.Accepted > time.Second {
				s.Late++
			}
		}
		if x.Status != 201 {
			r.Errors[strconv.Itoa(x.Status)]++
			switch {
			case x.Status == 0:
				s.NoStatus++
			case refused(x):
				s.Refused++
			default:
				s.Failed++
			}
			continue
		}
		acc = append(acc, x.Accepted)
		s.Accepted++
		s.AcceptedByAPI[x.API]++
		commands++
		if x.Kind == KindCancelled {
			commands++
		}
		if x.Duplicate {
			s.Duplicates++
		}
		if x.Visible > 0 {
			vis = append(vis, x.Visible)
		}
		if x.Saga > 0 {
			saga = append(saga, x.Saga)
		}
		if s.Outcomes[x.Kind] == nil {
			s.Outcomes[x.Kind] = map[string]int{}
		}
		s.Outcomes[x.Kind][x.Outcome]++
	}
	s.AcceptedMs, s.AnsweredMs, s.VisibleMs, s.SagaMs = percentiles(acc), percentiles(answered), percentiles(vis), percentiles(saga)
	if secs := r.PlacingTook.Seconds(); secs > 0 {
		s.OrdersPerS = float64(s.Accepted) / secs
		s.CommandsPerS = float64(commands) / secs
	}
	r.Summary = s
}

// WriteJSON writes the result with every sample.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Text is the summary printed at the end of a run.
func (r *Result) Text() string {
	s := r.Summary
	out := fmt.Sprintf("orders: %d placed, %d accepted in %s (%.1f accepted orders/s, %.1f commands/s)\n",
		s.Orders, s.Accepted, r.PlacingTook.Round(time.Millisecond), s.OrdersPerS, s.CommandsPerS)
	out += fmt.Sprintf("refused (429/503 with Retry-After): %d, failed: %d, without a status: %d, answered after more than 1 s: %d\n",
		s.Refused, s.Failed, s.NoStatus, s.Late)
	for _, l := range []struct {
		name string
		p    Percentiles
	}{{"command accepted", s.AcceptedMs}, {"answered (any)", s.AnsweredMs}, {"read model visible", s.VisibleMs}, {"saga finished", s.SagaMs}} {
		out += fmt.Sprintf("%-19s n=%-6d p50 %8.1f ms  p90 %8.1f ms  p99 %8.1f ms  max %8.1f ms\n", l.name, l.p.N, l.p.P50, l.p.P90, l.p.P99, l.p.Max)
	}
	kinds := make([]string, 0, len(s.Outcomes))
	for k := range s.Outcomes {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	out += "saga outcomes by kind:\n"
	for _, k := range kinds {
		out += fmt.Sprintf("  %-20s %v\n", k, s.Outcomes[k])
	}
	if s.Duplicates > 0 {
		out += fmt.Sprintf("duplicate submissions answered differently: %d\n", s.Duplicates)
	}
	if len(s.AcceptedByAPI) > 1 {
		out += fmt.Sprintf("accepted per API: %v\n", s.AcceptedByAPI)
	}
	out += fmt.Sprintf("errors by status: %v\n", r.Errors)
	return out
}

var (
	//go:embed assets/uPlot.iife.min.js
	uplotJS string
	//go:embed assets/uPlot.min.css
	uplotCSS string
)

// WriteHTML writes a self-contained report: latency over time and
// histograms, drawn by uPlot (embedded, no network needed to view it).
func (r *Result) WriteHTML(w io.Writer) error {
	type series struct {
		T, Accepted, Visible, Saga []float64
	}
	var ts series
	for _, x := range r.Samples {
		if x.Status != 201 {
			continue
		}
		ts.T = append(ts.T, float64(r.StartedAt.Add(x.At).UnixMilli())/1000)
		ts.Accepted = append(ts.Accepted, ms(x.Accepted))
		ts.Visible = append(ts.Visible, ms(x.Visible))
		ts.Saga = append(ts.Saga, ms(x.Saga))
	}
	data, err := json.Marshal(map[string]any{"series": ts, "hist": map[string]any{
		"accepted": histogram(ts.Accepted), "visible": histogram(ts.Visible), "saga": histogram(ts.Saga)}})
	if err != nil {
		return err
	}
	summary, _ := json.MarshalIndent(r.Summary, "", "  ")
	return reportTmpl.Execute(w, map[string]any{
		"JS": template.JS(uplotJS), "CSS": template.CSS(uplotCSS), "Data": template.JS(data),
		"Text": r.Text(), "Summary": string(summary), "Run": r.RunID, "Started": r.StartedAt.Format(time.RFC3339),
	})
}

// histogram buckets latencies (ms) on a log scale.
func histogram(values []float64) map[string][]float64 {
	edges := []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 120000}
	counts := make([]float64, len(edges))
	for _, v := range values {
		if v <= 0 {
			continue
		}
		i := sort.SearchFloat64s(edges, v)
		counts[min(i, len(edges)-1)]++
	}
	xs := make([]float64, len(edges))
	for i := range edges {
		xs[i] = float64(i)
	}
	return map[string][]float64{"x": xs, "edges": edges, "counts": counts}
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>orderflow load report {{.Run}}</title>
<style>{{.CSS}} body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px} pre{background:#f5f5f5;padding:1em;overflow:auto}</style>
<script>{{.JS}}</script></head>
<body>
<h1>orderflow load report</h1>
<p>Run {{.Run}}, started {{.Started}}.</p>
<pre>{{.Text}}</pre>
<h2>Latency over time</h2><div id="time"></div>
<h2>Histograms (count per bucket, upper bound in ms)</h2><div id="hacc"></div><div id="hvis"></div><div id="hsaga"></div>
<h2>Summary (JSON)</h2><pre>{{.Summary}}</pre>
<script>
const d = {{.Data}};
const s = d.series;
new uPlot({title: "per order: command accepted, read model visible, saga finished (ms, log scale)", width: 1000, height: 420,
  scales: {y: {distr: 3}},
  series: [{}, {label: "accepted", stroke: "#1f77b4", paths: () => null, points: {show: true, size: 3}},
               {label: "visible", stroke: "#2ca02c", paths: () => null, points: {show: true, size: 3}},
               {label: "saga", stroke: "#d62728", paths: () => null, points: {show: true, size: 3}}],
  axes: [{}, {label: "ms"}]},
  [s.T || [], s.Accepted || [], s.Visible || [], s.Saga || []], document.getElementById("time"));
function hist(el, title, h) {
  new uPlot({title: title, width: 1000, height: 250, scales: {x: {time: false}},
    series: [{}, {label: "orders", fill: "rgba(31,119,180,0.4)", stroke: "#1f77b4", paths: uPlot.paths.bars({size: [0.8]})}],
    axes: [{values: (u, v) => v.map(i => h.edges[i] === undefined ? "" : "≤" + h.edges[i])}, {}]},
    [h.x, h.counts], document.getElementById(el));
}
hist("hacc", "command accepted", d.hist.accepted);
hist("hvis", "read model visible after accept", d.hist.visible);
hist("hsaga", "saga finished after placing", d.hist.saga);
</script>
</body></html>
`))

// refused: the service pushed back (429 or 503) and said when to come back.
func refused(x Sample) bool {
	return (x.Status == 429 || x.Status == 503) && x.RetryAfter
}
