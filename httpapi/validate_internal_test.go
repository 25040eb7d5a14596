package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/orderflow/orderflow/commands"
)

// benchOrderBody is a valid PlaceOrder body.
const benchOrderBody = `{"customer_id":"bench-c","wallet_id":"bench-w","currency":"EUR","lines":[{"sku":"sku-1","quantity":2,"unit_price":1250},` +
	`{"sku":"sku-2","quantity":1,"unit_price":990}],"shipping_address":{"name":"Ada Lovelace","line1":"12 Example Street","line2":"Flat 3","city":"London","postal_code":"N1 9GU","country":"GB"}}`

// bodies are the fuzz corpora's and a hand-made set of schema violations.
func bodies(t *testing.T) []string {
	out := []string{
		`{}`, `[]`, `null`, `1`, `"x"`, `{"amount":"5"}`, `{"amount":-1}`, `{"amount":1.5}`, `{"amount":1e400}`,
		`{"amount":12345678901234567890}`, `{"amount":5,"extra":1}`, `{"amount":5,"amount":"x"}`, `{"quantity":0}`,
		`{"reason":""}`, `{"reason":null}`, `{"reason":"` + strings.Repeat("é", 600) + `"}`, `{"reason":"a\u0000b"}`,
		`{"wallet_id":"w 1","customer_id":"c","currency":"eur"}`, `{"wallet_id":"w1","customer_id":"c","currency":"EUR","name":7}`,
		`{"customer_id":"c","wallet_id":"w","currency":"EUR","lines":[],"shipping_address":{}}`,
		`{"customer_id":"c","wallet_id":"w","currency":"EUR","lines":[{"sku":"","quantity":-1,"unit_price":"1"}],"shipping_address":{"name":"a","line1":"b","city":"c","postal_code":"d","country":"France"}}`,
		`{"action":"explode","reason":"x"}`, `{"action":"retry"}`, `{"type":"Nope","payload":{}}`, `{"type":"OpenWallet"}`,
		`{"type":"OpenWallet","payload":[]}`, `{"type":7,"payload":{"a":[1,2,{"b":null}]}}`, `{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
		`{"a":1} {"b":2}`, `{"a":1`, "\xff", ``, ` `, `{"a":"\ud800"}`,
		// What checkJSON's byte scan must tell apart.
		`{"a\u0000":1}`, `["\\u0000"]`, `["\\\u0000"]`, `["\"\u0000"]`, `["\u00000"]`, `["\u0001"]`, `{"a":"x\u0000"`, "[\"a\x00\"]", "[1,\x00]",
		strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1),
		`["` + strings.Repeat("[", 40) + `"]`, `["\"` + strings.Repeat("{", 40) + `"]`, strings.Repeat("[", 40), `[1e400]`, `{"a":1}}`, `{"a":1}]`,
		`]`, `[}`, `"\u0000`, "\ufeff{}", `{"amount":1e3}`, `{"amount":5.0}`, `{"amount":-0}`,
	}
	for _, dir := range []string{"FuzzPostCommand", "FuzzPlaceOrder"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", dir, "*"))
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(raw), "\n") {
				if q, ok := strings.CutPrefix(line, "string("); ok {
					if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
						out = append(out, s)
					}
				}
			}
		}
	}
	if len(out) < 50 {
		t.Fatalf("only %d bodies", len(out))
	}
	return out
}

// One parse per body changes no answer: checkJSON's errors are those of
// the token check before it, its value is json.Unmarshal's, and the schema
// errors of every route's body (and of /commands' payloads), validated on
// that value, are kin-openapi's own request validation's, field by field.
func TestOneParsePerBodyChangesNoError(t *testing.T) {
	doc, router, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	compared, refused := 0, 0
	for _, body := range bodies(t) {
		// jsonError is the token walk that checked every body before: the
		// fast path must accept what it accepts and refuse with its error.
		v, err := checkJSON([]byte(body))
		old := jsonError([]byte(body))
		var t1, t2 *textError
		if fmt.Sprint(err) != fmt.Sprint(old) || errors.As(err, &t1) != errors.As(old, &t2) {
			t.Fatalf("%q: checkJSON %v, before %v", body, err, old)
		}
		if err != nil {
			continue
		}
		var want any
		if err := json.Unmarshal([]byte(body), &want); err != nil || !reflect.DeepEqual(v, want) {
			t.Fatalf("%q: value %#v, json.Unmarshal %#v (%v)", body, v, want, err)
		}
		for path, item := range doc.Paths.Map() {
			op := item.Post
			if op == nil || op.RequestBody == nil {
				continue
			}
			target := strings.NewReplacer("{id}", "x1", "{sku}", "x1", "{offset}", "1").Replace(path)
			req, _ := http.NewRequest("POST", "http://orderflow"+target, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatal(err)
			}
			before := openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}})
			now := validateBody(route.Operation.RequestBody, v)
			errs := func(err error) []FieldError {
				if err == nil {
					return nil
				}
				return fieldErrors(err)
			}
			if a, b := errs(before), errs(now); !reflect.DeepEqual(a, b) {
				t.Errorf("POST %s %q:\n before %v\n now    %v", path, body, a, b)
			} else if len(a) > 0 {
				refused++
			}
			compared++
		}
	}
	if compared < 200 || refused < 100 {
		t.Fatalf("only %d comparisons, %d with errors", compared, refused)
	}
	t.Logf("%d bodies compared, %d refused with the same field errors", compared, refused)
}

// bind's assign sets a command from the body's value as json.Unmarshal
// sets it from the bytes, for every command type and every body (or
// /commands payload) its schema accepts; the one difference is a whole
// number written with a fraction or an exponent (5.0, 1e3), which the
// schema calls an integer and encoding/json refused.
func TestAssignSetsWhatUnmarshalSets(t *testing.T) {
	doc, _, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{doc: doc}
	samples := []string{
		`{"wallet_id":"w1","customer_id":"c1","currency":"EUR","name":"Ada"}`, `{"wallet_id":"w1","customer_id":"c1","currency":"EUR"}`,
		`{"wallet_id":"w1","amount":500}`, `{"wallet_id":"w1","amount":500,"currency":"EUR"}`, `{"wallet_id":"w1","amount":1000000000000000}`,
		`{"wallet_id":"w1","order_id":"o1","amount":1,"currency":"EUR"}`, `{"wallet_id":"w1","order_id":"o1"}`, `{"wallet_id":"w1","reason":"fraud"}`,
		`{"wallet_id":"w1","name":"x"}`, `{"sku":"s1","quantity":1000000000}`, `{"sku":"s1","order_id":"o1","quantity":3}`, `{"sku":"s1","order_id":"o1"}`,
		benchOrderBody, `{"order_id":"o1","customer_id":"c","wallet_id":"w","currency":"EUR","lines":[{"sku":"s","quantity":1}],"shipping_address":{"name":"a","line1":"b","city":"c","postal_code":"d","country":"FR"}}`,
		`{"sku":"s1","unit_price":1250,"currency":"EUR"}`, `{"order_id":"o1","reason":"changed my mind"}`, `{"order_id":"o1","shipment_id":"s1"}`, `{"order_id":"o1"}`,
		`{"shipment_id":"s1","order_id":"o1","address":{"name":"a","line1":"b","line2":"c","city":"d","postal_code":"e","country":"FR"}}`,
		`{"shipment_id":"s1","carrier":"dhl","tracking_number":"t1"}`, `{"shipment_id":"s1"}`, `{"shipment_id":"s1","reason":"lost"}`,
		`{"wallet_id":"w1","amount":5.0}`, `{"wallet_id":"w1","amount":1e3}`, `{"sku":"s1","quantity":1E2}`,
	}
	var payloads []string // bodies, and the payloads of /commands' bodies
	for _, body := range append(bodies(t), samples...) {
		payloads = append(payloads, body)
		var cmd struct{ Payload json.RawMessage }
		if json.Unmarshal([]byte(body), &cmd) == nil && cmd.Payload != nil {
			payloads = append(payloads, string(cmd.Payload))
		}
	}
	bound, wholes := 0, 0
	for _, def := range commands.Definitions() {
		if _, ok := doc.Components.Schemas[def.Name]; !ok {
			continue
		}
		for _, raw := range payloads {
			v, err := checkJSON([]byte(raw))
			if err != nil || s.validatePayload(def.Name, v) != nil {
				continue
			}
			got, want := def.NewPayload(), def.NewPayload()
			if err := assign(reflect.ValueOf(got).Elem(), v, ""); err != nil {
				t.Fatalf("%s %s: %v", def.Name, raw, err)
			}
			dec := json.NewDecoder(strings.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(want); err != nil {
				var ute *json.UnmarshalTypeError
				if !errors.As(err, &ute) || !strings.ContainsAny(ute.Value, ".eE") {
					t.Fatalf("%s %s: assign took it, json.Unmarshal: %v", def.Name, raw, err)
				}
				wholes++
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %s:\n assign    %+v\n Unmarshal %+v", def.Name, raw, got, want)
			}
			bound++
		}
	}
	if bound < 25 || wholes < 3 {
		t.Fatalf("only %d payloads bound, %d whole numbers with a fraction or exponent", bound, wholes)
	}
	t.Logf("%d payloads bound as json.Unmarshal binds them, and %d that it refused (5.0, 1e3)", bound, wholes)
}

// What assign refuses: a value of another type than the field's.
func TestAssignRefusesAValueOfAnotherType(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{map[string]any{"amount": "5"}, `amount: cannot set a int64 from "5"`},
		{map[string]any{"amount": 1.5}, "amount: cannot set a int64 from the number 1.5"},
		{map[string]any{"amount": 1e19}, "amount: cannot set a int64 from the number 1e+19"},
		{map[string]any{"wallet_id": 7.0}, "wallet_id: cannot set a string from the number 7"},
		{[]any{}, "body: cannot set a commands.TopUpWallet from an array"},
	} {
		var p commands.TopUpWallet
		if err := assign(reflect.ValueOf(&p).Elem(), tc.v, ""); fmt.Sprint(err) != tc.want {
			t.Errorf("%v: %v, want %s", tc.v, err, tc.want)
		}
	}
	var o commands.PlaceOrder
	err := assign(reflect.ValueOf(&o).Elem(), map[string]any{"lines": []any{map[string]any{"quantity": "x"}}}, "payload")
	if want := `payload.lines[0].quantity: cannot set a int64 from "x"`; fmt.Sprint(err) != want {
		t.Errorf("%v, want %s", err, want)
	}
}

// Every command payload is made of what assign sets; a field of another
// kind (a pointer, a map, a float, an embedded struct, whose fields assign
// would leave empty) would bind differently from json.Unmarshal, and fails
// here first.
func TestAssignCoversEveryCommandPayload(t *testing.T) {
	var check func(t reflect.Type, path string)
	check = func(typ reflect.Type, path string) {
		switch typ.Kind() {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		case reflect.Interface:
			if typ.NumMethod() != 0 {
				t.Errorf("%s: interface %s", path, typ)
			}
		case reflect.Slice:
			check(typ.Elem(), path+"[]")
		case reflect.Struct:
			for i := range typ.NumField() {
				f := typ.Field(i)
				if f.Anonymous {
					t.Errorf("%s.%s: embedded struct", path, f.Name)
				}
				if f.IsExported() && f.Tag.Get("json") != "-" {
					check(f.Type, path+"."+f.Name)
				}
			}
		default:
			t.Errorf("%s: %s is not bound by assign", path, typ)
		}
	}
	for _, def := range commands.Definitions() {
		check(reflect.TypeOf(def.NewPayload()).Elem(), def.Name)
	}
}
