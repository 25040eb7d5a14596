package commands

// The first step of dispatch: who may send a command, and whether the
// service takes a client's command now.

import (
	"context"
	"fmt"
	"strings"

	"github.com/orderflow/orderflow/auth"
)

// authorise finds the command's definition and applies the policy that
// holds whoever calls the bus: an internal-only command is unknown to
// clients; a client's request needs a principal whose role may send it and
// a key outside the saga's reserved namespace, and its actor is that
// principal. Internal requests skip the policy and admission.
func (b *Bus) authorise(ctx context.Context, req Request) (*command, error) {
	def, ok := b.defs[req.Type]
	if !ok || (def.internal && !req.Internal) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, req.Type)
	}
	c := &command{req: req, def: def}
	if req.Internal {
		return c, nil
	}
	p := req.Principal
	switch {
	case p == nil:
		return nil, ErrUnauthenticated
	case !p.Allows(auth.CommandAccess(req.Type)):
		return nil, fmt.Errorf("%w: a %s may not send %s", ErrForbidden, p.Role, req.Type)
	case strings.HasPrefix(req.CommandID, ReservedPrefix):
		return nil, fmt.Errorf("%w: command ids starting with %q belong to orderflow's sagas", ErrReservedKey, ReservedPrefix)
	}
	c.principal, c.req.Actor = p, p.Subject
	if err := b.admitted(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// admitted asks Admit about a client's command before anything of it is
// decoded, decided or logged. A refused command goes on only when its key
// names a command logged before: that retry adds nothing and is answered
// as before, from the record kept in c.prior. Without a key, or with one
// the log does not hold (or a log that does not answer), it is refused.
func (b *Bus) admitted(ctx context.Context, c *command) error {
	if b.admit == nil {
		return nil
	}
	refused := b.admit(ctx, c.req.Type)
	if refused == nil {
		return nil
	}
	key := c.req.CommandID
	if key == "" || !ValidID(key) {
		return refused
	}
	prior, err := b.logged(ctx, ScopedID(c.principal.Subject, key))
	if err != nil {
		return refused
	}
	c.prior = &prior
	return nil
}
