package httpapi_test

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/httpapi/apitest"
	"github.com/orderflow/orderflow/workflows"
)

// The problem codes the service can produce, with their statuses, found in
// its source: every problem(status, "code", …) and Problem{Code: …} of this
// package, every domain error (aggregate.Rule → 422, State → 409,
// NotFound → 404) of the module, and the saga's refusals. A code built at
// run time must be listed in dynamicCodes, or the test fails.
//
// The codes this package's answers make themselves (not the domain's, not
// the saga's) are kept in httpLayer: TestMain checks the tests saw them.
func serviceCodes(t *testing.T) map[string][]int {
	t.Helper()
	codes := map[string][]int{}
	add := func(code string, status int) {
		if !slices.Contains(codes[code], status) {
			codes[code] = append(codes[code], status)
			slices.Sort(codes[code])
		}
	}
	fset := token.NewFileSet()
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		inHTTP := filepath.Dir(path) == filepath.Join("..", "httpapi")
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := callName(n.Fun)
				switch {
				case inHTTP && name == "problem" && len(n.Args) >= 2:
					status, ok := statusOf(n.Args[0])
					if !ok {
						// domainProblem's (the domain's codes, below) and echo's
						// errors (http_<status>) carry their own status.
						switch src := source(fset, n.Args[1]); {
						case src == "e.Code":
						case strings.HasPrefix(src, `"http_"`):
							for _, code := range dynamicCodes[src] {
								st, _ := strconv.Atoi(strings.TrimPrefix(code, "http_"))
								add(code, st)
								httpLayer[code] = true
							}
						default:
							t.Errorf("%s: problem with a status not known here: %s", fset.Position(n.Pos()), source(fset, n.Args[0]))
						}
						return true
					}
					codeOf(t, fset, n.Args[1], func(code string) { add(code, status); httpLayer[code] = true })
				case name == "aggregate.Rule" || name == "aggregate.State" || name == "aggregate.NotFound":
					status := map[string]int{"aggregate.Rule": 422, "aggregate.State": 409, "aggregate.NotFound": 404}[name]
					codeOf(t, fset, n.Args[0], func(code string) { add(code, status) })
				}
			case *ast.CompositeLit:
				name := callName(n.Type)
				if !(inHTTP && name == "Problem") && name != "aggregate.Error" {
					return true
				}
				var code ast.Expr
				status, kind := 0, ""
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						switch callName(kv.Key) {
						case "Code":
							code = kv.Value
						case "Status":
							status, _ = statusOf(kv.Value)
						case "Kind":
							kind = callName(kv.Value)
						}
					}
				}
				if code == nil {
					return true
				}
				if name == "aggregate.Error" {
					status = map[string]int{"aggregate.ErrRule": 422, "aggregate.ErrState": 409, "aggregate.ErrNotFound": 404}[kind]
				}
				if expansions, ok := dynamicCodes[source(fset, code)]; ok && expansions == nil {
					return true // a code passed on, listed where it is made
				}
				if status == 0 {
					t.Errorf("%s: a problem code without a status known here", fset.Position(n.Pos()))
					return true
				}
				codeOf(t, fset, code, func(code string) {
					add(code, status)
					if inHTTP {
						httpLayer[code] = true
					}
				})
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The saga's refusals of an update (sagas.RefusedError), answered by
	// refusal(): 422 for text it cannot store, 409 for the rest.
	// saga_finished is answered as the order's end instead (no_saga).
	for _, code := range []string{workflows.ErrShipped, workflows.ErrCancelling, workflows.ErrNotWaiting, workflows.ErrActionNotAllowed} {
		add(code, 409)
	}
	for _, code := range []string{workflows.ErrInvalidText, workflows.ErrReasonRequired} {
		add(code, 422)
	}
	return codes
}

// httpLayer are the codes made by this package (serviceCodes fills it).
var httpLayer = map[string]bool{}

// dynamicCodes are the codes built at run time, by the source text of
// their expression.
var dynamicCodes = map[string][]string{
	// echo's own errors (status he.Code): an unknown path, another method.
	`"http_"+fmt.Sprint(he.Code)`: {"http_404", "http_405"},
	// A cancel of an order whose saga has ended (cancelEnded, and the
	// order's status after the saga finished meanwhile).
	`"order_"+string(st)`:         {"order_completed", "order_written_off"},
	`"order_"+string(o.Status())`: {"order_placed", "order_confirmed", "order_shipped"},
	// The domain's refusal of an action in a state that does not allow it.
	`"order_"+string(o.s.Status)`:    {"order_placed", "order_confirmed", "order_shipped", "order_completed", "order_cancelled", "order_rejected", "order_written_off"},
	`"shipment_"+string(s.s.Status)`: {"shipment_scheduled", "shipment_dispatched", "shipment_delivered", "shipment_failed"},
	// Another customer's stream, or a stream whose personal data has no owner.
	`c.def.StreamType+"_not_found"`: {"order_not_found", "wallet_not_found", "inventory_not_found", "shipment_not_found", "payment_not_found"},
	`typ+"_not_found"`:              {"order_not_found", "wallet_not_found"},
	// Codes passed on, listed where they are made: the domain's (its
	// problem), the saga's refusal (workflows' constants, below), a
	// rejection recorded earlier, problem()'s own.
	`e.Code`:           nil,
	`refused.Code`:     nil,
	`prior.ReasonCode`: nil,
	`code`:             nil,
}

func codeOf(t *testing.T, fset *token.FileSet, e ast.Expr, add func(string)) {
	t.Helper()
	if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
		code, _ := strconv.Unquote(lit.Value)
		add(code)
		return
	}
	src := source(fset, e)
	expansions, ok := dynamicCodes[src]
	if !ok {
		t.Errorf("%s: a problem code built at run time (%s): list what it can be in dynamicCodes", fset.Position(e.Pos()), src)
	}
	for _, code := range expansions {
		add(code)
	}
}

func callName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			return x.Name + "." + e.Sel.Name
		}
		return e.Sel.Name
	case *ast.UnaryExpr:
		return callName(e.X)
	}
	return ""
}

var statuses = map[string]int{
	"http.StatusBadRequest": 400, "http.StatusUnauthorized": 401, "http.StatusForbidden": 403, "http.StatusNotFound": 404,
	"http.StatusConflict": 409, "http.StatusRequestEntityTooLarge": 413, "http.StatusUnsupportedMediaType": 415,
	"http.StatusUnprocessableEntity": 422, "http.StatusTooManyRequests": 429, "http.StatusInternalServerError": 500,
	"http.StatusBadGateway": 502, "http.StatusServiceUnavailable": 503,
}

func statusOf(e ast.Expr) (int, bool) {
	s, ok := statuses[callName(e)]
	return s, ok
}

var sources = map[string][]byte{}

func source(fset *token.FileSet, e ast.Expr) string {
	pos, end := fset.Position(e.Pos()), fset.Position(e.End())
	src, ok := sources[pos.Filename]
	if !ok {
		src, _ = os.ReadFile(pos.Filename)
		sources[pos.Filename] = src
	}
	return string(src[pos.Offset:end.Offset])
}

// docsCodes reads docs/api.md's error table: status → the codes of its
// last column.
func docsCodes(t testing.TB) map[string][]int {
	raw, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(raw), "| status | when | codes |")
	if !ok {
		t.Fatal("docs/api.md has no error table")
	}
	codes := map[string][]int{}
	row := regexp.MustCompile("^\\| ([0-9]{3}) \\|.*\\|([^|]*)\\|$")
	code := regexp.MustCompile("`([a-z][a-z0-9_]*)`")
	for _, line := range strings.Split(table, "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("docs/api.md: an error table row that does not read: %s", line)
		}
		status, _ := strconv.Atoi(m[1])
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			codes[c[1]] = append(codes[c[1]], status)
		}
	}
	return codes
}

// docs/api.md's table lists every code the service can produce, under
// every status it comes with, and nothing else.
func TestTheErrorTableListsEveryCodeTheServiceProduces(t *testing.T) {
	service, docs := serviceCodes(t), docsCodes(t)
	for code, sts := range service {
		for _, st := range sts {
			if !slices.Contains(docs[code], st) {
				t.Errorf("the service answers %d %s: not in docs/api.md's error table", st, code)
			}
		}
	}
	for code, sts := range docs {
		for _, st := range sts {
			if !slices.Contains(service[code], st) {
				t.Errorf("docs/api.md's error table lists %d %s: the service never answers it", st, code)
			}
		}
	}
	if len(service) < 50 {
		t.Fatalf("only %d codes found in the source: %v", len(service), service)
	}
}

// notSeenHere are the codes made by this package that no test of it
// produces over HTTP (its responses validated and recorded), and why;
// apitest.ExercisedInCmdOrderflow are excused too (cmd/orderflow's
// TestMain checks them). A code excused here and seen fails the run (take
// it out), unless its reason starts "sometimes:" (load decides). The
// domain's codes are its tests' (domain/, commands/): docs/api.md lists
// them, and these tests are not asked to reach each rule through HTTP.
var notSeenHere = map[string]string{
	"busy":                   "sometimes: the in-flight bound: TestInFlightAnswersBusyInsteadOfQueueing (an internal test, on a stub handler)",
	"outcome_unknown":        "a connection lost at COMMIT: TestLostCommitsAndTransientDatabaseFailuresAre503 (internal)",
	"database_unavailable":   "sometimes: the fuzz tests' requests that time out under load; the database away is TestLostCommitsAndTransientDatabaseFailuresAre503 (internal)",
	"internal":               "a fault of ours: no test expects one (apitest fails on any 500)",
	"unreadable_body":        "a body the connection loses while it is read",
	"invalid_webhook":        "a correctly signed event that does not decode: the provider's bug",
	"temporal_unavailable":   "Temporal unreachable while a cancel is asked",
	"saga_starting":          "a cancel while its saga's start is queued (cmd/orderflow's overload test retries through it)",
	"order_placed":           "a cancel of an order whose saga ended without cancelling it: a terminated saga's repair answers first",
	"order_confirmed":        "as order_placed",
	"order_written_off":      "a cancel of an order its saga wrote off (an operator's write_off)",
	"provider_unavailable":   "the payment provider not answering",
	"too_many_waits":         "more concurrent min_position waits than the limit",
	"poison_resolved":        "a poison message replayed twice (projections' tests replay poison without HTTP)",
	"poison_out_of_order":    "as poison_resolved",
	"poison_handler_unknown": "as poison_resolved",
	// The schema refuses these first (422 validation_failed); the handler
	// keeps its own check as a second line.
	"invalid_as_of":        "as_of is a date-time in the document",
	"invalid_min_position": "min_position is an integer, X-Min-Position a pattern, in the document",
	"unknown_stream_type":  "the stream type is an enum in the document",
	"invalid_payload":      "a payload the document lets through and the bus cannot read (an id its pattern refuses)",
}

// checkCodesSeen is run by TestMain after a run of every test of the
// package: every code the responses carried is in docs/api.md's table
// under its status, and every code this package makes was seen (but those
// of notSeenHere and apitest.ExercisedInCmdOrderflow).
func checkCodesSeen() error {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f == nil || f.Value.String() != "" {
			return nil // a part of the tests ran: the codes they saw prove nothing
		}
	}
	docs := docsCodes(fatalTB{})
	var problems []string
	seen := map[string]bool{}
	for _, s := range apitest.Seen() {
		status, code, _ := strings.Cut(s, " ")
		seen[code] = true
		if st, _ := strconv.Atoi(status); !slices.Contains(docs[code], st) {
			problems = append(problems, fmt.Sprintf("a test got %s %s: not in docs/api.md's error table", status, code))
		}
	}
	if len(httpLayer) == 0 {
		return fmt.Errorf("TestTheErrorTableListsEveryCodeTheServiceProduces did not run")
	}
	for code := range httpLayer {
		_, excused := notSeenHere[code]
		excused = excused || slices.Contains(apitest.ExercisedInCmdOrderflow, code)
		switch {
		case !seen[code] && !excused:
			problems = append(problems, fmt.Sprintf("no test of this package produced %s (produce it, or say why in notSeenHere)", code))
		case seen[code] && excused && !strings.HasPrefix(notSeenHere[code], "sometimes:"):
			problems = append(problems, fmt.Sprintf("%s is excused in notSeenHere or apitest.ExercisedInCmdOrderflow, and a test of this package produced it: take it out", code))
		}
	}
	slices.Sort(problems)
	if len(problems) > 0 {
		return fmt.Errorf("the problem codes of the tests:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

type fatalTB struct{ testing.TB }

func (fatalTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

func (fatalTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
