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
		if req.Method == http.MethodPost && (route.Operation.RequestBody != nil || req.ContentLength != 0) {
			body, err := s.body(c)
			if err != nil {
				return err
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		in := &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		}
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			return invalid(fieldErrors(err))
		}
		return next(c)
	}
}

func readBody(req *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, tooLarge(limit)
	}
	if err != nil {
		return nil, problem(http.StatusBadRequest, "unreadable_body", "the body could not be read")
	}
	if err := checkContent(req, body); err != nil {
		return nil, err
	}
	return body, nil
}

// checkContent checks a body's media type and JSON (checkJSON).
func checkContent(req *http.Request, body []byte) error {
	mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json")
	}
	var text *textError
	if err := checkJSON(body); errors.As(err, &text) {
		return problem(http.StatusUnprocessableEntity, "invalid_text", err.Error())
	} else if err != nil {
		return problem(http.StatusBadRequest, "malformed_json", err.Error())
	}
	return nil
}

// textError is well-formed JSON carrying text that cannot be stored.
type textError struct{ msg string }

func (e *textError) Error() string { return e.msg }

// checkJSON reports the first syntax error with its offset, trailing data,
// nesting deeper than MaxDepth, and text orderflow will not store: invalid
// UTF-8 (encoding/json would silently replace it) and NUL characters
// (PostgreSQL refuses them, so they would fail every retry of whatever
// carries them, a saga's compensation included).
func checkJSON(body []byte) error {
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
				depth++
				if depth > MaxDepth {
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

// validatePayload checks a command payload against the schema of its type.
func (s *Server) validatePayload(typ string, payload json.RawMessage) error {
	ref, ok := s.doc.Components.Schemas[typ]
	if !ok {
		return problem(http.StatusUnprocessableEntity, "unknown_command_type", fmt.Sprintf("unknown command type %q", typ))
	}
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return problem(http.StatusBadRequest, "malformed_json", err.Error())
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
