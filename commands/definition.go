package commands

// The catalog's building blocks: a Definition names a command's payload,
// the stream it targets and its decision, and what else applies to it
// (defaults, checks on other streams, personal fields, who may send it).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// Command is a typed command payload: it names its command type.
type Command interface{ CommandType() string }

// Definition is one command type: its payload, the stream it targets and the
// decision it asks of the aggregate.
type Definition struct {
	Name       string
	StreamType string
	payload    func() any
	// typed copies a caller's typed payload (P or *P) into a new *P.
	typed    func(Command) (any, bool)
	streamID func(any) string
	prepare  func(p any, r Request) error
	decide   func(aggregate.Root, any) error
	internal bool
	// routeOnly: clients send it only through its own route (RouteOnly).
	routeOnly bool
	// customer names the customer a command that creates a stream acts
	// for (the stream has no owner yet); others take the stream's own.
	customer func(p any) string
	// check is a precondition on other streams (PlaceOrder's wallet).
	check func(ctx context.Context, load Loader, p any) error
	// held is the check of a command on what an order's saga holds, for
	// requests from outside orderflow's processes (SagaHeld).
	held func(ctx context.Context, load Loader, p any) error
	// personal lists the payload's personal fields, sealed with their
	// customer's key before anything is logged (crypto-shredding).
	personal func(p any) []*string
	// owner names the stream whose customer owns a command's personal
	// fields when its own stream has no owner yet (a shipment: its order).
	owner func(p any) (streamType, id string)
}

// Loader loads another aggregate for a Definition's check.
type Loader func(ctx context.Context, streamType, id string) (aggregate.Root, error)

// Define declares command P on aggregates of type A in streamType.
func Define[A aggregate.Root, P any](name, streamType string, id func(*P) string, decide func(A, *P) error) Definition {
	return Definition{
		Name:       name,
		StreamType: streamType,
		payload:    func() any { return new(P) },
		typed: func(c Command) (any, bool) {
			switch v := any(c).(type) {
			case P:
				return &v, true
			case *P:
				cp := *v
				return &cp, true
			}
			return nil, false
		},
		streamID: func(p any) string { return id(p.(*P)) },
		decide:   func(a aggregate.Root, p any) error { return decide(a.(A), p.(*P)) },
	}
}

// decode returns the request's payload as a new *P: the typed payload
// copied, or the JSON decoded (unknown fields refused).
func (d Definition) decode(req Request) (any, error) {
	if req.Command != nil {
		p, ok := d.typed(req.Command)
		if !ok {
			return nil, &PayloadError{Msg: fmt.Sprintf("a %T is not the payload of %s", req.Command, d.Name)}
		}
		return p, nil
	}
	p := d.payload()
	dec := json.NewDecoder(bytes.NewReader(req.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return nil, &PayloadError{Msg: fmt.Sprintf("payload of %s: %v", d.Name, err)}
	}
	return p, nil
}

// WithPrepare fills the payload before it is logged: defaults such as an id
// derived from the command id (a retried command gets the same one), or
// the actor, which the client cannot choose.
func WithPrepare[P any](d Definition, f func(p *P, r Request)) Definition {
	d.prepare = func(p any, r Request) error { f(p.(*P), r); return nil }
	return d
}

// WithRequestCheck is WithPrepare for a step that may refuse the request
// (a *PayloadError or a domain error), before anything is logged.
func WithRequestCheck[P any](d Definition, f func(p *P, r Request) error) Definition {
	d.prepare = func(p any, r Request) error { return f(p.(*P), r) }
	return d
}

// CreatedFor marks a command that creates a customer's stream: the payload
// names the customer, who must be the principal unless an operator sends it.
func CreatedFor[P any](d Definition, customer func(*P) string) Definition {
	d.customer = func(p any) string { return customer(p.(*P)) }
	return d
}

// WithPersonal names a command's personal fields (names, addresses): they
// are sealed with the customer's key before the command is logged, so no
// cleartext of them reaches the log, the events or anything downstream.
func WithPersonal[P any](d Definition, fields func(*P) []*string) Definition {
	d.personal = func(p any) []*string { return fields(p.(*P)) }
	return d
}

// WithPersonalOf names a command's personal fields whose customer is the
// owner of another stream (streamType, id(p)): a shipment's address is its
// order's customer's.
func WithPersonalOf[P any](d Definition, streamType string, id func(*P) string, fields func(*P) []*string) Definition {
	d = WithPersonal(d, fields)
	d.owner = func(p any) (string, string) { return streamType, id(p.(*P)) }
	return d
}

// WithCheck adds a precondition on other streams, checked before the
// command is logged, whoever sends it.
func WithCheck[P any](d Definition, f func(ctx context.Context, load Loader, p *P) error) Definition {
	d.check = func(ctx context.Context, load Loader, p any) error { return f(ctx, load, p.(*P)) }
	return d
}

// InternalOnly marks a command that only orderflow's own processes (the
// saga) may send: a client's request for it is refused as unknown.
func InternalOnly(d Definition) Definition {
	d.internal = true
	return d
}

// RouteOnly marks a command that clients send only through its own route,
// which does more than log it (RequestPayment: the route asks the payment
// provider for the payment's intent too): POST /commands does not take it.
func RouteOnly(d Definition) Definition {
	d.routeOnly = true
	return d
}
