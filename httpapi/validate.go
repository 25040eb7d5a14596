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

// OpenAPI returns the OpenAPI document the service validates requests
// with and serves at /openapi.json (YAML, a copy): the tests validate every
// response against it (package apitest).
func OpenAPI() []byte { return bytes.Clone(openapiYAML) }

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
		read := false // a body was read: its value may be JSON null, which the schema refuses
		if req.Method == http.MethodPost && (route.Operation.RequestBody != nil || req.ContentLength != 0) {
			v, err := s.body(c)
			if err != nil {
				return err
			}
			value, read = v, true
		}
		// Parameters here; the body's value, decoded once by checkJSON,
		// against its schema below (kin-openapi would parse it again).
		in := &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{MultiError: true, ExcludeRequestBody: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		}
		err = openapi3filter.ValidateRequest(req.Context(), in)
		if err == nil && read {
			err = validateBody(route.Operation.RequestBody, value)
		}
		if err != nil {
			return invalid(fieldErrors(err))
		}
		return next(c)
	}
}

func readBody(req *http.Request, limit int64) (any, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, tooLarge(limit)
	}
	if err != nil {
		return nil, problem(http.StatusBadRequest, "unreadable_body", "the body could not be read")
	}
	return checkContent(req, body)
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
// carries them, a saga's compensation included). Otherwise it returns the
// body's value as json.Unmarshal decodes it into any: the one parse, which
// the schema validation and the handler both take.
//
// An accepted body costs a byte scan and json.Unmarshal; only a refused one
// is walked again, token by token (jsonError), for the precise error.
func checkJSON(body []byte) (any, error) {
	var v any
	if utf8.Valid(body) && scanJSON(body) && json.Unmarshal(body, &v) == nil {
		return v, nil
	}
	if err := jsonError(body); err != nil {
		return nil, err
	}
	return nil, errors.New("malformed JSON") // unreachable: jsonError refuses what the fast path refuses
}

// scanJSON reports whether a body nests at most MaxDepth deep and has no
// \u0000 escape in a string. It is exact on well-formed JSON; a malformed
// body is refused by json.Unmarshal whatever it answers.
func scanJSON(body []byte) bool {
	depth, inString := 0, false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case inString && c == '\\':
			i++
			if i < len(body) && body[i] == 'u' && bytes.HasPrefix(body[i+1:], []byte("0000")) {
				return false
			}
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			if depth++; depth > MaxDepth {
				return false
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return true
}

// jsonError is the first error of a body that checkJSON's fast path
// refused, with its offset: the answers of the token walk that checked
// every body before, unchanged.
func jsonError(body []byte) error {
	if !utf8.Valid(body) {
		valid := 0
		for valid < len(body) {
			r, n := utf8.DecodeRune(body[valid:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			valid += n
		}
		return &textError{fmt.Sprintf("the body is not valid UTF-8 at byte %d", valid)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if depth != 0 {
				return errors.New("the body ends inside an object or array")
			}
			break
		}
		if err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return fmt.Errorf("malformed JSON at byte %d: %s", se.Offset, se.Error())
			}
			return fmt.Errorf("malformed JSON at byte %d: %s", dec.InputOffset(), err.Error())
		}
		if s, ok := tok.(string); ok && strings.ContainsRune(s, 0) {
			return &textError{fmt.Sprintf("the string ending at byte %d contains a NUL character (\\u0000)", dec.InputOffset())}
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				if depth++; depth > MaxDepth {
					return fmt.Errorf("JSON nested deeper than %d levels", MaxDepth)
				}
			} else {
				depth--
			}
		}
		if depth == 0 && dec.More() {
			return fmt.Errorf("unexpected data after the JSON value at byte %d", dec.InputOffset())
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("the body is empty")
	}
	return nil
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
		// The document's enum of types refuses it first, as a schema violation.
		return invalid([]FieldError{{Field: "type", Message: fmt.Sprintf("unknown command type %q", typ)}})
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
