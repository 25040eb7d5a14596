package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/auth"
)

// edge runs before routing (echo's Pre), on every request whatever its
// route: echo matches an empty path parameter that the OpenAPI router
// does not, so a check that waits for a route to be found can be skipped.
// It refuses a path with an empty segment (/wallets//top-ups), a path or
// query parameter with a NUL character or invalid UTF-8, a malformed
// query, and a body announced larger than the limit; every other body is
// wrapped so that no code after it can read past the limit.
func (s *Server) edge(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if err := checkPath(req.URL.Path); err != nil {
			return err
		}
		if err := checkQuery(req.URL.RawQuery); err != nil {
			return err
		}
		if req.ContentLength > s.maxBody {
			return tooLarge(s.maxBody)
		}
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = http.MaxBytesReader(nil, req.Body, s.maxBody)
		}
		return next(c)
	}
}

func tooLarge(limit int64) *Problem {
	return problem(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", limit))
}

// checkPath refuses empty segments (an empty path parameter) and text
// orderflow will not store or compare.
func checkPath(path string) error {
	if !utf8.ValidString(path) || strings.ContainsRune(path, 0) {
		return problem(http.StatusBadRequest, "invalid_text", "the path contains a NUL character or invalid UTF-8")
	}
	if strings.Contains(path, "//") || len(path) > 1 && strings.HasSuffix(path, "/") {
		return problem(http.StatusBadRequest, "empty_path_segment", "the path has an empty segment (an empty identifier)")
	}
	return nil
}

// checkQuery refuses a query string that does not parse, and any name or
// value with a NUL character or invalid UTF-8 (PostgreSQL refuses NUL in
// text; a query would fail with it instead of answering).
func checkQuery(raw string) error {
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return problem(http.StatusBadRequest, "invalid_query", "the query string is malformed (an invalid %-escape or a ';')")
	}
	for name, values := range q {
		for _, v := range append(values, name) {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return problem(http.StatusBadRequest, "invalid_text",
					fmt.Sprintf("query parameter %q contains a NUL character or invalid UTF-8", name))
			}
		}
	}
	return nil
}

// bodyKey holds a request's body as checkBody decoded it: read and parsed
// once, then validated against its schema (validate) and taken by the
// handler (bind), neither reading the body again.
const bodyKey = "body"

// checked is a decoded body (its value may be nil: the JSON null).
type checked struct{ value any }

// checkBody reads and checks the body of every request to a route (after
// authentication: a client without a token costs no read): its size, and
// for a non-empty one, that it comes with a POST, as JSON, well formed,
// nested at most MaxDepth deep, without NUL characters or invalid UTF-8.
// What is not a route gets echo's 404/405 without a read.
func (s *Server) checkBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Body == nil || req.Body == http.NoBody || auth.RouteAccess(req.Method, c.Path()) == auth.Nobody {
			return next(c)
		}
		body, err := io.ReadAll(req.Body) // bounded by edge's MaxBytesReader
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return tooLarge(s.maxBody)
		}
		if err != nil {
			return problem(http.StatusBadRequest, "unreadable_body", "the body could not be read")
		}
		// Nothing after reads the body: its value is in the context, and
		// its bytes as received (a webhook's signature is over them).
		req.Body, req.ContentLength = http.NoBody, int64(len(body))
		c.Set(rawBodyKey, body)
		if len(body) == 0 {
			return next(c)
		}
		if req.Method != http.MethodPost && req.Method != http.MethodPut {
			return problem(http.StatusBadRequest, "unexpected_body", req.Method+" takes no body")
		}
		v, err := checkContent(req, body)
		if err != nil {
			return err
		}
		c.Set(bodyKey, checked{v})
		return next(c)
	}
}

// body is the request's body's value, checked: by checkBody, or here when
// it was empty there (a route that requires one gets 415 or 400).
func (s *Server) body(c echo.Context) (any, error) {
	if b, ok := c.Get(bodyKey).(checked); ok {
		return b.value, nil
	}
	v, err := readBody(c.Request(), s.maxBody)
	if err == nil {
		c.Set(bodyKey, checked{v})
	}
	return v, err
}

// headAsGet answers HEAD wherever GET is served (RFC 9110 §9.3.2): the GET
// route runs — with its policy, checks and headers — and its body is
// dropped.
func headAsGet(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodHead {
			c.Request().Method = http.MethodGet
			c.Response().Writer = headWriter{c.Response().Writer}
		}
		return next(c)
	}
}

// headWriter drops a response's body, keeping its status and headers.
type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(p []byte) (int, error) { return len(p), nil }

func (w headWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
