package commands

// The last steps of dispatch: the command's checks on other streams, its
// aggregate's decision, and the commit of the outcome, decided again after
// a version conflict.

import (
	"context"
	"errors"
	"time"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
)

// decideAndCommit checks the command's preconditions on other streams,
// then, as its stream's one writer in this process (concurrent commands on
// a hot stream queue here instead of conflicting in the database), has the
// aggregate decide and commits the outcome: events, or a logged refusal.
// A version conflict (another process wrote the stream meanwhile) decides
// again, unless the client named the version it expects.
func (b *Bus) decideAndCommit(ctx context.Context, c *command) (commandlog.Record, error) {
	if err := b.precheck(ctx, c); err != nil {
		// A retry of a command committed before answers as before, though
		// a rule it meets now did not hold then (one added since, as the
		// saga's holdings were) or what it was checked against moved on.
		return commandlog.Record{}, &unlessLogged{err}
	}
	if b.streams != nil {
		defer b.streams.lock(c.def.StreamType + "/" + c.streamID)()
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			b.conflicts(c.req.Type)
		}
		agg, refusal, err := b.decide(ctx, c)
		switch {
		case err != nil:
			return commandlog.Record{}, err
		case refusal != nil:
			return b.reject(c.rec, agg.Version(), refusal)
		}
		out, err := b.commit(c.rec, agg, c.md)
		if errors.Is(err, eventstore.ErrConflict) && c.req.ExpectedVersion == nil && attempt < b.retries {
			continue
		}
		return out, err
	}
}

// precheck runs a command's preconditions on other streams: its own check,
// and for a client's request, what its order's saga holds.
func (b *Bus) precheck(ctx context.Context, c *command) error {
	if c.def.held != nil && !c.req.Internal {
		if err := c.def.held(ctx, b.load, c.payload); err != nil {
			return err
		}
	}
	if c.def.check != nil {
		return c.def.check(ctx, b.load, c.payload)
	}
	return nil
}

// decide loads the command's aggregate and asks it to decide: the events
// it records are pending on agg, or refusal is its answer (logged as a
// rejection). Another customer's stream reads as missing, so that its
// existence does not leak; a stale If-Match is a conflict, unless the
// command was logged before.
func (b *Bus) decide(ctx context.Context, c *command) (agg aggregate.Root, refusal *aggregate.Error, err error) {
	if agg, err = b.load(ctx, c.def.StreamType, c.streamID); err != nil {
		return nil, nil, err
	}
	owner := c.customer
	if o, ok := agg.(interface{ CustomerID() string }); ok && agg.Version() > 0 {
		owner = o.CustomerID()
	}
	if c.principal != nil && !c.principal.Owns(owner) {
		return nil, nil, aggregate.NotFound(c.def.StreamType+"_not_found", "%s %s does not exist", c.def.StreamType, c.streamID)
	}
	c.md.CustomerID = owner
	if v := c.req.ExpectedVersion; v != nil && *v != agg.Version() {
		// A retry of a command that was committed answers as before,
		// though the stream has moved past its expected version.
		return nil, nil, &unlessLogged{&eventstore.ConflictError{StreamType: c.def.StreamType, StreamID: c.streamID, Expected: *v, Current: agg.Version()}}
	}
	if err := c.def.decide(agg, c.payload); errors.As(err, &refusal) {
		return agg, refusal, nil
	} else if err != nil {
		return nil, nil, err
	}
	return agg, nil, nil
}

// commit commits an accepted command through the group committer.
func (b *Bus) commit(rec commandlog.Record, agg aggregate.Root, md eventstore.Metadata) (commandlog.Record, error) {
	rec.Status = commandlog.StatusAccepted
	rec.StreamVersion = agg.Version()
	envs, err := b.store.Pending(agg, md)
	if err != nil {
		return commandlog.Record{}, err
	}
	for _, e := range envs {
		rec.EventIDs = append(rec.EventIDs, e.EventID)
	}
	out, err := b.submit(&unit{rec: rec, agg: agg, envs: envs})
	if err == nil {
		b.store.Remember(agg)
	}
	return out, err
}

// reject logs a refused command (no events) through the group committer.
func (b *Bus) reject(rec commandlog.Record, version int64, refusal *aggregate.Error) (commandlog.Record, error) {
	rec.Status = commandlog.StatusRejected
	rec.StreamVersion = version
	rec.ReasonKind, rec.ReasonCode, rec.Reason = kindName(refusal.Kind), refusal.Code, refusal.Message
	out, err := b.submit(&unit{rec: rec})
	if err != nil {
		return out, err
	}
	return out, &RejectedError{Record: out, Err: refusal}
}

// submit stamps u's record and hands it to the committer. A command id
// the committer finds logged already (a twin request committed it while
// this one was decided) is answered from the log (unlessLogged).
func (b *Bus) submit(u *unit) (commandlog.Record, error) {
	u.rec.RecordedAt = b.now().UTC().Truncate(time.Microsecond)
	err := b.committer.commit(u)
	if errors.Is(err, errLogged) {
		return commandlog.Record{}, &unlessLogged{err}
	}
	if err != nil {
		return commandlog.Record{}, err
	}
	return u.rec, nil
}
