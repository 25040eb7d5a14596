package httpapi

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/labstack/echo/v4"
)

//go:embed openapi.yaml
var openapiYAML []byte

// MaxDepth bounds JSON nesting; deeper bodies are refused before decoding.
const MaxDepth = 32

func loadSpec() (*openapi3.T, routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		return nil, nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, nil, fmt.Errorf("openapi.yaml is invalid: %w", err)
	}
	// Route on paths alone, whatever host the server is reached at.
	routed := *doc
	routed.Servers = nil
	router, err := gorillamux.NewRouter(&routed)
	if err != nil {
		return nil, nil, err
	}
	return doc, router, nil
}

// validate checks every request against the OpenAPI document: first the
// body's size, media type and JSON syntax (400/413/415), then parameters
// and schema (422 with the failing fields).
func (s *Server) validate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		route, params, err := s.router.FindRoute(req)
		if err != nil {
			return next(c) // unknown routes get echo's 404/405
		}
		// A POST that takes no body (the poison replay) needs no content type.
		var value any
		if req.Method == http.MethodPost && (route.Operation.RequestBody != nil || req.ContentLength != 0) {
			body, v, err := s.body(c)
			if err != nil {
				return err
			}
			req.Body, value = io.NopCloser(bytes.NewReader(body)), v
		}
		// Parameters here; the body's value, decoded once by checkJSON,
		// against its schema below (kin-openapi would parse it again).
		in := &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{MultiError: true, ExcludeRequestBody: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		}
		err = openapi3filter.ValidateRequest(req.Context(), in)
		if err == nil && value != nil {
			err = validateBody(route.Operation.RequestBody, value)
		}
		if err != nil {
			return invalid(fieldErrors(err))
		}
		return next(c)
	}
}

func readBody(req *http.Request, limit int64) ([]byte, any, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, nil, tooLarge(limit)
	}
	if err != nil {
		return nil, nil, problem(http.StatusBadRequest, "unreadable_body", "the body could not be read")
	}
	v, err := checkContent(req, body)
	if err != nil {
		return nil, nil, err
	}
	return body, v, nil
}

// checkContent checks a body's media type and JSON (checkJSON), and
// returns its decoded value.
func checkContent(req *http.Request, body []byte) (any, error) {
	mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return nil, problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json")
	}
	var text *textError
	v, err := checkJSON(body)
	if errors.As(err, &text) {
		return nil, problem(http.StatusUnprocessableEntity, "invalid_text", err.Error())
	} else if err != nil {
		return nil, problem(http.StatusBadRequest, "malformed_json", err.Error())
	}
	return v, nil
}

// textError is well-formed JSON carrying text that cannot be stored.
type textError struct{ msg string }

func (e *textError) Error() string { return e.msg }

// checkJSON reports the first syntax error with its offset, trailing data,
// nesting deeper than MaxDepth, and text orderflow will not store: invalid
// UTF-8 (encoding/json would silently replace it) and NUL characters
// (PostgreSQL refuses them, so they would fail every retry of whatever
// carries them, a saga's compensation included). The same pass builds the
// decoded value (as json.Unmarshal into any would), which the schema
// validation takes instead of parsing the body again.
func checkJSON(body []byte) (any, error) {
	if !utf8.Valid(body) {
		valid := 0
		for valid < len(body) {
			r, n := utf8.DecodeRune(body[valid:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			valid += n
		}
		return nil, &textError{fmt.Sprintf("the body is not valid UTF-8 at byte %d", valid)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var b valueBuilder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(b.open) != 0 {
				return nil, errors.New("the body ends inside an object or array")
			}
			break
		}
		if err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("malformed JSON at byte %d: %s", se.Offset, se.Error())
			}
			return nil, fmt.Errorf("malformed JSON at byte %d: %s", dec.InputOffset(), err.Error())
		}
		if s, ok := tok.(string); ok && strings.ContainsRune(s, 0) {
			return nil, &textError{fmt.Sprintf("the string ending at byte %d contains a NUL character (\\u0000)", dec.InputOffset())}
		}
		b.add(tok)
		if len(b.open) > MaxDepth {
			return nil, fmt.Errorf("JSON nested deeper than %d levels", MaxDepth)
		}
		if len(b.open) == 0 && dec.More() {
			return nil, fmt.Errorf("unexpected data after the JSON value at byte %d", dec.InputOffset())
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("the body is empty")
	}
	return b.root, nil
}

// valueBuilder assembles a decoded JSON value from json.Decoder tokens:
// objects as map[string]any, arrays as []any, numbers as float64.
type valueBuilder struct {
	root any
	open []*container
}

type container struct {
	obj    map[string]any
	arr    []any
	key    string
	hasKey bool
}

func (b *valueBuilder) add(tok json.Token) {
	if d, ok := tok.(json.Delim); ok {
		switch d {
		case '{':
			b.open = append(b.open, &container{obj: map[string]any{}})
		case '[':
			b.open = append(b.open, &container{arr: []any{}})
		default:
			top := b.open[len(b.open)-1]
			b.open = b.open[:len(b.open)-1]
			if top.obj != nil {
				b.put(top.obj)
			} else {
				b.put(top.arr)
			}
		}
		return
	}
	if n := len(b.open); n > 0 && b.open[n-1].obj != nil && !b.open[n-1].hasKey {
		b.open[n-1].key, b.open[n-1].hasKey = tok.(string), true
		return
	}
	b.put(tok)
}

func (b *valueBuilder) put(v any) {
	if len(b.open) == 0 {
		b.root = v
		return
	}
	top := b.open[len(b.open)-1]
	if top.obj != nil {
		top.obj[top.key], top.hasKey = v, false
	} else {
		top.arr = append(top.arr, v)
	}
}

func invalid(errs []FieldError) *Problem {
	p := problem(http.StatusUnprocessableEntity, "validation_failed", "the request does not match its schema")
	if len(errs) > 0 {
		p.Detail = errs[0].Field + ": " + errs[0].Message
		if len(errs) > 1 {
			p.Detail += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
	}
	p.Errors = errs
	return p
}

// fieldErrors flattens kin-openapi's errors into field paths and messages.
func fieldErrors(err error) []FieldError {
	var out []FieldError
	var walk func(prefix string, err error)
	walk = func(prefix string, err error) {
		// Match the outermost error first: a RequestError wraps the schema
		// errors of its parameter and would lose the parameter's name.
		switch e := err.(type) {
		case openapi3.MultiError:
			for _, inner := range e {
				walk(prefix, inner)
			}
		case *openapi3filter.RequestError:
			p := prefix
			if e.Parameter != nil {
				p = e.Parameter.In + "." + e.Parameter.Name
			}
			if e.Err == nil {
				out = append(out, FieldError{Field: orBody(p), Message: e.Reason})
				return
			}
			walk(p, e.Err)
		case *openapi3.SchemaError:
			field := prefix
			if ptr := e.JSONPointer(); len(ptr) > 0 {
				field = join(prefix, strings.Join(ptr, "."))
			}
			out = append(out, FieldError{Field: orBody(field), Message: schemaMessage(e)})
		case *openapi3filter.ParseError:
			out = append(out, FieldError{Field: orBody(prefix), Message: e.Error()})
		default:
			if inner := errors.Unwrap(err); inner != nil {
				walk(prefix, inner)
				return
			}
			out = append(out, FieldError{Field: orBody(prefix), Message: err.Error()})
		}
	}
	walk("", err)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

func schemaMessage(e *openapi3.SchemaError) string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Error()
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

func orBody(field string) string {
	if field == "" {
		return "body"
	}
	return field
}

// validateBody checks a body's decoded value against its JSON schema, with
// the options kin-openapi's request validation uses.
func validateBody(body *openapi3.RequestBodyRef, value any) error {
	if body == nil || body.Value == nil {
		return nil
	}
	mt := body.Value.Content.Get(echo.MIMEApplicationJSON)
	if mt == nil || mt.Schema == nil {
		return nil
	}
	return mt.Schema.Value.VisitJSON(value, openapi3.VisitAsRequest(), openapi3.MultiErrors())
}

// validatePayload checks a command payload (decoded already) against the
// schema of its type.
func (s *Server) validatePayload(typ string, v any) error {
	ref, ok := s.doc.Components.Schemas[typ]
	if !ok {
		return problem(http.StatusUnprocessableEntity, "unknown_command_type", fmt.Sprintf("unknown command type %q", typ))
	}
	if err := ref.Value.VisitJSON(v, openapi3.MultiErrors()); err != nil {
		errs := fieldErrors(err)
		for i := range errs {
			errs[i].Field = strings.TrimSuffix("payload."+errs[i].Field, ".body")
		}
		return invalid(errs)
	}
	return nil
}
