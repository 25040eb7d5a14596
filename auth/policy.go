package auth

import (
	"maps"
	"slices"
)

// Access is who may call a route or send a command type.
type Access int

const (
	// Nobody: not in the policy; refused (fail closed).
	Nobody Access = iota
	// Public needs no token.
	Public
	// Customers: any authenticated principal; a customer only on what it
	// owns (a customer asking for another's resource gets 404).
	Customers
	// Operators only.
	Operators
)

// routes is the policy of the HTTP API, by method and echo route pattern.
// A route missing here is refused for everyone; a test checks that every
// route of the server is listed.
var routes = map[string]Access{
	"GET /healthz":       Public,
	"GET /readyz":        Public,
	"GET /openapi.json":  Public,
	"GET /docs":          Public,
	"GET /docs/*":        Public,
	"GET /asyncapi.json": Public,
	"GET /docs/events":   Public,
	// Authenticated by the provider's signature over the raw body.
	"POST /webhooks/payments": Public,

	"POST /orders":                        Customers,
	"POST /orders/:id/cancel":             Customers,
	"POST /wallets/:id/payments":          Customers,
	"GET /wallets/:id/payments":           Customers,
	"GET /payments/:id":                   Customers,
	"GET /orders":                         Customers,
	"GET /orders/:id":                     Customers,
	"GET /orders/:id/saga":                Customers,
	"GET /orders/:id/timeline":            Customers,
	"GET /wallets/:id":                    Customers,
	"GET /products/:sku":                  Customers,
	"GET /commands":                       Customers,
	"GET /commands/:id":                   Customers,
	"GET /commands/updates":               Customers,
	"GET /events/updates":                 Customers,
	"POST /commands":                      Customers, // each command type checked below
	"DELETE /customers/:id/personal-data": Customers,

	"POST /wallets":                 Operators,
	"POST /wallets/:id/top-ups":     Operators,
	"POST /products/:sku/stock":     Operators,
	"PUT /products/:sku/price":      Operators,
	"POST /orders/:id/saga/resolve": Operators,
	"GET /sagas":                    Operators,
	"GET /events":                   Operators,
	"GET /events/:id":               Operators,
	"GET /streams/:type/:id":        Operators,
	"GET /projections":              Operators,
	"GET /poison":                   Operators,
	"POST /poison/:offset/replay":   Operators,
}

// commandTypes is the policy of command types, whichever route sends them.
// The saga's own commands (holds, captures, refunds, reservations,
// shipments, order state changes) are operators' only: a customer never
// moves money or stock directly.
var commandTypes = map[string]Access{
	"PlaceOrder":  Customers,
	"CancelOrder": Customers,
	// Customers pay (RequestPayment); money enters a wallet only from a
	// payment the provider confirmed (the payments principal's internal
	// TopUpWallet) or by an operator's decision with a reason.
	"RequestPayment": Customers,
	"TopUpWallet":    Operators,

	"OpenWallet":      Operators,
	"RenameWallet":    Operators,
	"SuspendWallet":   Operators,
	"ReinstateWallet": Operators,
	"AuthoriseHold":   Operators,
	"CaptureHold":     Operators,
	"VoidHold":        Operators,
	"RefundCapture":   Operators,
	"SetPrice":        Operators,
	"ReceiveStock":    Operators,
	"ReserveStock":    Operators,
	"ReleaseStock":    Operators,
	"CommitStock":     Operators,
	// The order's changes of status are the saga's alone
	// (commands.InternalOnly): no client sends them, whatever its role.
	"ConfirmOrder":     Operators,
	"MarkOrderShipped": Operators,
	"CompleteOrder":    Operators,
	"RejectOrder":      Operators,
	"WriteOffOrder":    Operators,
	"ScheduleShipment": Operators,
	"DispatchShipment": Operators,
	"DeliverShipment":  Operators,
	"FailShipment":     Operators,
	// The provider's verdict: the payments principal's alone (internal).
	"RecordPaymentIntent": Operators,
	"ConfirmPayment":      Operators,
	"FailPayment":         Operators,
}

// Routes lists the policy's routes ("GET /orders/:id"), sorted.
func Routes() []string { return slices.Sorted(maps.Keys(routes)) }

// RouteAccess is the policy of one route ("GET /orders/:id").
func RouteAccess(method, pattern string) Access { return routes[method+" "+pattern] }

// CommandAccess is the policy of one command type.
func CommandAccess(commandType string) Access { return commandTypes[commandType] }

// Allows reports whether p's role meets a.
func (p Principal) Allows(a Access) bool {
	switch a {
	case Public:
		return true
	case Customers:
		return p.Role == Customer || p.Role == Operator
	case Operators:
		return p.Role == Operator
	}
	return false
}
