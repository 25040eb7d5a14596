package commands

// The second step of dispatch: a request becomes the record to log.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/tracing"
)

// command is one request on its way through dispatch: what authorise
// found, what prepare built from it, and the log's record of its id when
// admission looked it up.
type command struct {
	req       Request
	def       Definition
	principal *auth.Principal // nil for an internal request
	// prior is the record of a command that admission refused and found
	// in the log: it is answered from that record.
	prior *commandlog.Record

	payload  any    // the decoded *P
	customer string // whom a command that creates a stream acts for (CreatedFor)
	streamID string
	rec      commandlog.Record   // what is logged, before its outcome
	md       eventstore.Metadata // what its events carry
}

// prepare turns the request into the record to log: the payload decoded,
// the command id made or scoped to its client, the definition's defaults
// applied, the customer checked, personal fields sealed, and the payload
// as it is logged (a retry is compared with it).
func (b *Bus) prepare(ctx context.Context, c *command) error {
	p, err := c.def.decode(c.req)
	if err != nil {
		return err
	}
	c.payload = p
	if err := c.identify(); err != nil {
		return err
	}
	if c.def.prepare != nil {
		if err := c.def.prepare(p, c.req); err != nil {
			return err
		}
	}
	if err := c.target(); err != nil {
		return err
	}
	if err := b.seal(ctx, c.def, c.streamID, c.customer, p); err != nil {
		return err
	}
	return c.record(ctx)
}

// identify sets the command id and metadata: a new id when the request has
// none; a client's key checked and scoped to its principal (the key itself
// kept as metadata); whom an operator or the saga acts for.
func (c *command) identify() error {
	r := &c.req
	r.Metadata = maps.Clone(r.Metadata)
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	switch {
	case r.CommandID == "":
		r.CommandID = uuid.Must(uuid.NewV7()).String()
	case !ValidID(r.CommandID):
		return &PayloadError{Msg: fmt.Sprintf("idempotency key %q must match %s", r.CommandID, idPattern)}
	case c.principal != nil:
		r.Metadata[MetaIdempotencyKey] = r.CommandID
		r.CommandID = ScopedID(c.principal.Subject, r.CommandID)
	}
	if r.OnBehalfOf != "" {
		r.Metadata[MetaOnBehalfOf] = r.OnBehalfOf
	}
	return nil
}

// target names the stream the command acts on and, for a command that
// creates a customer's stream, that customer: a customer creates its own
// streams only.
func (c *command) target() error {
	if c.def.customer != nil {
		c.customer = c.def.customer(c.payload)
		if c.principal != nil && !c.principal.Owns(c.customer) {
			return fmt.Errorf("%w: a customer sends %s for itself only", ErrForbidden, c.req.Type)
		}
	}
	c.streamID = c.def.streamID(c.payload)
	if !ValidID(c.streamID) {
		return &PayloadError{Msg: fmt.Sprintf("%s id %q must match %s", c.def.StreamType, c.streamID, idPattern)}
	}
	return nil
}

// record builds the log record and the events' metadata. The payload is
// marshalled here, before the checks on other streams (decide.go) fill in
// what they read (a payment's currency from its wallet): the log keeps the
// payload as sent and prepared, so that a retry compares alike.
func (c *command) record(ctx context.Context) error {
	payload, err := json.Marshal(c.payload)
	if err != nil {
		return err
	}
	if err := checkText(payload); err != nil {
		return &PayloadError{Msg: fmt.Sprintf("payload of %s: %v", c.req.Type, err)}
	}
	r := &c.req
	if r.CorrelationID == "" {
		r.CorrelationID = r.CommandID
	}
	if r.Actor == "" {
		r.Actor = "anonymous"
	}
	c.rec = commandlog.Record{
		CommandID: r.CommandID, Type: r.Type, Payload: payload, StreamType: c.def.StreamType, StreamID: c.streamID,
		CorrelationID: r.CorrelationID, CausationID: r.CausationID, Actor: r.Actor, Metadata: r.Metadata,
		EventIDs: []uuid.UUID{},
	}
	c.md = eventstore.Metadata{CorrelationID: r.CorrelationID, CausationID: r.CommandID, Actor: r.Actor, OnBehalfOf: r.OnBehalfOf,
		TraceParent: tracing.Inject(ctx)}
	return nil
}
