// The campaign's report: what it did (actions, doors, answers, faults) and what it found.

package campaign

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/orderflow/orderflow/internal/verify"
)

// Report is what the campaign did and found.
type Report struct {
	Seed     uint64
	Duration time.Duration
	Took     time.Duration
	// Actions counts the actions sent, by kind (an action counts once a
	// request of its was written to an API); NotSent those drawn that sent
	// nothing (no order of the customer's to act on, every API down).
	// Answers are the answers by action and door ("cancel_during POST
	// /commands" → "202": 4).
	Actions map[string]int
	NotSent map[string]int
	Answers map[string]map[string]int
	// Faults counts the faults injected: a cut only when it cut a
	// connection, a script's fault once it ran (FaultErrors otherwise).
	Faults map[string]int
	// Cuts counts the connections cut by process; CutNothing the cuts
	// that found no connection open.
	Cuts       map[string]int
	CutNothing int
	// FaultErrors are faults whose script failed.
	FaultErrors []string
	// Operator counts the operators' decisions in the end phase and during
	// the run (resolutions by action, repairs, terminations).
	Operator map[string]int
	// Anomalies are answers a door must never give (a customer naming an
	// order id accepted, a keyed retry that made a second order, another
	// customer's order cancelled...). Answers during a fault (no answer,
	// 502/503/504) are not anomalies.
	Anomalies []string
	// Unended are sagas still not ended when the end phase gave up.
	Unended []string
	// Checks are the campaign's own invariants (what each door promised
	// against the end, keyless retries against the command log); Counters
	// what they looked at; Carrier the orders by the carrier's path and
	// their end.
	Checks   []verify.Check
	Counters map[string]int
	Carrier  map[string]int
	Verify   *verify.Report
}

// Violations is the number of invariant violations verify found.
func (r *Report) Violations() int {
	n := 0
	for _, c := range r.Checks {
		n += len(c.Failures)
	}
	if r.Verify == nil {
		return n
	}
	for _, c := range r.Verify.Checks {
		n += len(c.Failures)
	}
	return n
}

// OK: no violation, no anomaly, every saga ended.
// A run that placed or cancelled nothing (every order refused, an API
// never up) tested nothing, and is no pass.
func (r *Report) OK() bool {
	return r.Verify != nil && r.Verify.OK() && r.Violations() == 0 && len(r.Anomalies) == 0 && len(r.Unended) == 0 && len(r.FaultErrors) == 0 &&
		r.succeeded("place") > 0 && r.succeeded("cancel") > 0
}

// succeeded counts the 2xx answers of the actions whose kind starts with
// prefix.
func (r *Report) succeeded(prefix string) int {
	n := 0
	for door, answers := range r.Answers {
		if !strings.HasPrefix(door, prefix) {
			continue
		}
		for ans, count := range answers {
			if strings.HasPrefix(ans, "2") {
				n += count
			}
		}
	}
	return n
}

func (r *Report) String() string {
	var b strings.Builder
	total := 0
	for _, n := range r.Actions {
		total += n
	}
	fmt.Fprintf(&b, "campaign seed %d: %d actions in %s of load (%s in all)\n", r.Seed, total, r.Duration, r.Took.Round(time.Second))
	fmt.Fprintln(&b, "actions by kind (answers by door):")
	for _, k := range sortedKeys(r.Actions) {
		fmt.Fprintf(&b, "  %-28s %5d\n", k, r.Actions[k])
		for _, door := range sortedKeys(r.Answers) {
			if door == k || strings.HasPrefix(door, k+" ") {
				fmt.Fprintf(&b, "      %-40s %s\n", door, counts(r.Answers[door]))
			}
		}
	}
	nf := 0
	for _, n := range r.Faults {
		nf += n
	}
	if len(r.NotSent) > 0 {
		fmt.Fprintf(&b, "actions drawn that sent nothing: %s\n", counts(r.NotSent))
	}
	fmt.Fprintf(&b, "faults injected: %d %s\n", nf, counts(r.Faults))
	if len(r.Cuts) > 0 || r.CutNothing > 0 {
		fmt.Fprintf(&b, "  connections cut, by process: %s; cuts that found none open: %d\n", counts(r.Cuts), r.CutNothing)
	}
	for _, e := range r.FaultErrors {
		fmt.Fprintf(&b, "  fault failed: %s\n", e)
	}
	fmt.Fprintf(&b, "operator decisions: %s\n", counts(r.Operator))
	fmt.Fprintf(&b, "anomalies (answers no door may give): %d\n", len(r.Anomalies))
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  %s\n", a)
	}
	if len(r.Unended) > 0 {
		fmt.Fprintf(&b, "sagas not ended: %d: %s\n", len(r.Unended), strings.Join(r.Unended, ", "))
	}
	if len(r.Carrier) > 0 {
		fmt.Fprintf(&b, "orders by the carrier's path: %s\n", counts(r.Carrier))
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(&b, "campaign checks: %s\n", counts(r.Counters))
		for _, c := range r.Checks {
			if len(c.Failures) == 0 {
				fmt.Fprintf(&b, "  ok    %s\n", c.Name)
				continue
			}
			fmt.Fprintf(&b, "  FAIL  %s (%d)\n", c.Name, len(c.Failures))
			for _, f := range c.Failures {
				fmt.Fprintf(&b, "        %s\n", f)
			}
		}
	}
	if r.Verify != nil {
		fmt.Fprint(&b, r.Verify.String())
	}
	fmt.Fprintf(&b, "invariant violations: %d\n", r.Violations())
	return b.String()
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
