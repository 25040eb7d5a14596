package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// InFlight bounds the requests one API process serves at once, so that a
// saturated process answers at once instead of letting requests queue
// behind the CPU: a request finds a free slot within Wait, or is answered
// 503 with Retry-After. Live streams, read-your-writes waits (bounded per
// principal, see Limits.Waits) and the health checks take no slot: they
// mostly wait, and a probe must be answered whatever the load.
type InFlight struct {
	Max  int           // 0: no bound
	Wait time.Duration // longest wait for a slot
}

// Defaults of InFlight (the service's flags start from them).
const (
	DefaultMaxInFlight  = 64
	DefaultInFlightWait = 250 * time.Millisecond
)

func (l InFlight) middleware() echo.MiddlewareFunc {
	if l.Max <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	slots := make(chan struct{}, l.Max)
	busy := &Problem{Type: "urn:orderflow:problem:busy", Title: http.StatusText(http.StatusServiceUnavailable), Status: http.StatusServiceUnavailable,
		Code: "busy", Detail: "the service is serving as many requests as it can; send this one again after Retry-After", RetryAfter: time.Second}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if unbounded(c) {
				return next(c)
			}
			select {
			case slots <- struct{}{}:
			default:
				t := time.NewTimer(l.Wait)
				defer t.Stop()
				select {
				case slots <- struct{}{}:
				case <-t.C:
					p := *busy
					return &p
				case <-c.Request().Context().Done(): // the client left
					p := *busy
					return &p
				}
			}
			defer func() { <-slots }()
			return next(c)
		}
	}
}

// unbounded: the requests that take no slot.
func unbounded(c echo.Context) bool {
	switch c.Path() {
	case "/healthz", "/readyz", "/commands/updates", "/events/updates":
		return true
	}
	// A read-your-writes wait holds a wait slot of its own (Limits.Waits),
	// which only reads take.
	return c.Request().Method == http.MethodGet && (c.QueryParam("min_position") != "" || c.Request().Header.Get("X-Min-Position") != "")
}
