package httpapi

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/orderflow/orderflow/auth"
)

// Limits bound what one principal can take from the service. Zero values
// take the defaults of DefaultLimits.
type Limits struct {
	// CustomerRate and OperatorRate are requests per second per principal
	// (clients without a token: per address, at the customer rate), with
	// bursts of the Burst fields; beyond, 429 with Retry-After.
	CustomerRate  float64
	CustomerBurst int
	OperatorRate  float64
	OperatorBurst int
	// Streams is how many live streams one principal may hold open, and
	// Waits how many read-your-writes (min_position) waits may be pending.
	Streams int
	Waits   int
}

// DefaultLimits are generous for a client and leave the load tool (an
// operator) unthrottled on one machine.
var DefaultLimits = Limits{CustomerRate: 20, CustomerBurst: 40, OperatorRate: 2000, OperatorBurst: 4000, Streams: 4, Waits: 32}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	orDefault(&l.CustomerRate, d.CustomerRate)
	orDefault(&l.OperatorRate, d.OperatorRate)
	orDefault(&l.CustomerBurst, d.CustomerBurst)
	orDefault(&l.OperatorBurst, d.OperatorBurst)
	orDefault(&l.Streams, d.Streams)
	orDefault(&l.Waits, d.Waits)
	return l
}

func orDefault[T int | float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

const principalCtxKey = "principal"

// principal is the authenticated caller of a route that needs one.
func principal(c echo.Context) auth.Principal {
	p, _ := c.Get(principalCtxKey).(auth.Principal)
	return p
}

// authenticate applies the policy to every route: public ones pass; the
// others need a valid bearer token (401 with WWW-Authenticate) and a role
// the policy allows (403). The principal is rate limited (429).
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		access := auth.RouteAccess(c.Request().Method, c.Path())
		if access == auth.Public {
			return s.limited(c, addrKey(c.RealIP()), auth.Customer, next)
		}
		if access == auth.Nobody {
			return next(c) // not a route: echo's 404 or 405
		}
		// A request without a valid token is refused, within its address's
		// budget (guessing tokens costs requests too).
		refuse := func(challenge string, p *Problem) error {
			if err := s.limit(c, addrKey(c.RealIP()), auth.Customer); err != nil {
				return err
			}
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
			return p
		}
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, token, _ := strings.Cut(h, " ")
		if h == "" || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return refuse(`Bearer realm="orderflow"`,
				problem(http.StatusUnauthorized, "unauthenticated", "send a bearer token: Authorization: Bearer <token>"))
		}
		p, err := s.verifier.Verify(strings.TrimSpace(token))
		if err != nil {
			return refuse(fmt.Sprintf(`Bearer realm="orderflow", error="invalid_token", error_description=%q`, err.Error()),
				problem(http.StatusUnauthorized, "invalid_token", err.Error()))
		}
		if !p.Allows(access) {
			return problem(http.StatusForbidden, "forbidden", fmt.Sprintf("a %s may not call %s %s", p.Role, c.Request().Method, c.Path())+forbiddenHint(c.Path()))
		}
		c.Set(principalCtxKey, p)
		return s.limited(c, "sub:"+p.Subject, p.Role, next)
	}
}

func (s *Server) limited(c echo.Context, id string, role auth.Role, next echo.HandlerFunc) error {
	if err := s.limit(c, id, role); err != nil {
		return err
	}
	return next(c)
}

// limit takes one request from the principal's budget.
func (s *Server) limit(c echo.Context, id string, role auth.Role) error {
	store, r := s.customerRate, s.limits.CustomerRate
	if role == auth.Operator {
		store, r = s.operatorRate, s.limits.OperatorRate
	}
	if store.Allow(id) {
		return nil
	}
	c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(1/r)))))
	return problem(http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("more than %g requests per second; retry later", r))
}

// rateStore keeps one token bucket per principal or address: at most
// rateKeys of them (the least recently used goes first), each dropped after
// rateIdle without a request, so many addresses cannot grow it unbounded.
type rateStore struct {
	limit   rate.Limit
	burst   int
	mu      sync.Mutex
	buckets *expirable.LRU[string, *rate.Limiter]
}

const (
	rateKeys = 1 << 16
	rateIdle = 3 * time.Minute
)

func newRateStore(perSecond float64, burst int) *rateStore {
	return &rateStore{limit: rate.Limit(perSecond), burst: burst, buckets: expirable.NewLRU[string, *rate.Limiter](rateKeys, nil, rateIdle)}
}

// Allow takes one request from id's bucket.
func (r *rateStore) Allow(id string) bool {
	r.mu.Lock()
	l, ok := r.buckets.Get(id)
	if !ok {
		l = rate.NewLimiter(r.limit, r.burst)
		r.buckets.Add(id, l)
	}
	r.mu.Unlock()
	return l.Allow()
}

// clientIP is the client's address: the direct peer, or, when the peer is
// one of the trusted proxies, what X-Forwarded-For (or X-Real-IP) says
// (echo's extractors, with nothing trusted by default: not loopback, not
// private networks).
func clientIP(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	xff, realIP := echo.ExtractIPFromXFFHeader(opts...), echo.ExtractIPFromRealIPHeader(opts...)
	return func(r *http.Request) string {
		if r.Header.Get(echo.HeaderXForwardedFor) == "" {
			return realIP(r)
		}
		return xff(r)
	}
}

// addrKey is the rate limit's key of an address: an IPv6 client holds a
// whole /64, so it is counted as one.
func addrKey(ip string) string {
	a := net.ParseIP(ip)
	if a != nil && a.To4() == nil {
		return "addr:" + a.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return "addr:" + ip
}

// slots counts what each principal holds open (live streams, waits).
type slots struct {
	mu   sync.Mutex
	max  int
	held map[string]int
}

func newSlots(max int) *slots { return &slots{max: max, held: map[string]int{}} }

// take returns a release func, or nil when the principal holds max already.
func (l *slots) take(id string) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[id] >= l.max {
		return nil
	}
	l.held[id]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held[id]--; l.held[id] <= 0 {
			delete(l.held, id)
		}
	}
}

// headerPattern is what X-Correlation-ID and X-Actor may carry: short,
// printable ASCII (they are copied into every event and step).
var headerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$`)

// traceHeaders checks the free-text headers orderflow records.
func traceHeaders(c echo.Context) (correlationID, onBehalfOf string, err error) {
	h := c.Request().Header
	correlationID, onBehalfOf = h.Get("X-Correlation-ID"), h.Get("X-Actor")
	if correlationID != "" && !headerPattern.MatchString(correlationID) {
		return "", "", problem(http.StatusBadRequest, "invalid_correlation_id",
			"X-Correlation-ID must be 1 to 128 characters: letters, digits and . _ : @ / + = -")
	}
	if principal(c).Role != auth.Operator {
		return correlationID, "", nil // only operators act on someone's behalf
	}
	if onBehalfOf != "" && !headerPattern.MatchString(onBehalfOf) {
		return "", "", problem(http.StatusBadRequest, "invalid_actor",
			"X-Actor must be 1 to 128 characters: letters, digits and . _ : @ / + = -")
	}
	return correlationID, onBehalfOf, nil
}

// forbiddenHint points a client refused a route or command to the one it
// may use instead.
func forbiddenHint(routeOrCommand string) string {
	switch routeOrCommand {
	case "/wallets/:id/top-ups", "TopUpWallet":
		return "; a customer pays into its wallet through POST /wallets/{id}/payments (the payment provider confirms it, then the wallet is credited)"
	}
	return ""
}
