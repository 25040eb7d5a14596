// Package commands is the write path: one handler per command type that loads
// the aggregate and decides; a group committer then appends the events, logs
// the command (commandlog) and writes the outbox messages in one transaction.
//
// Its rooms: bus.go dispatches (the policy and ownership every door passes,
// the decision, conflicts retried); definition.go and catalog.go declare
// the commands; keys.go is idempotency; personal.go seals personal fields;
// locks.go keeps one writer per stream; commit.go commits groups.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
	"github.com/orderflow/orderflow/tracing"
)

// Request is a command as submitted.
type Request struct {
	// CommandID is the idempotency key; a new one is generated when empty.
	CommandID string
	// Command is the typed payload of an in-process caller (the HTTP
	// handlers, the saga's activities): no JSON is decoded. Otherwise Type
	// and Payload (POST /commands) are.
	Command Command
	Type    string
	Payload json.RawMessage
	// ExpectedVersion, when set, must equal the stream's version; the
	// command is then never retried on a conflict.
	ExpectedVersion *int64
	// CorrelationID defaults to the command id.
	CorrelationID string
	// CausationID is what caused this command (an event, a workflow step).
	CausationID string
	// Actor is who sends the command: for a client, always its principal's
	// subject; OnBehalfOf is whom an operator (or the saga) acts for.
	Actor      string
	OnBehalfOf string
	// Metadata is logged with the command (e.g. the saga step that sent it).
	Metadata map[string]string
	// Principal is the authenticated client. Every request has one, or is
	// Internal: set by orderflow's own processes, never from a client's
	// input; only internal requests may use ReservedPrefix keys and send
	// InternalOnly commands, and they skip the policy.
	Principal *auth.Principal
	Internal  bool
}

// Errors of the command path besides domain errors (*aggregate.Error) and
// version conflicts (*eventstore.ConflictError).
var (
	ErrUnknownType = errors.New("unknown command type")
	// ErrKeyReused: a command id was resubmitted with another type or payload.
	ErrKeyReused = errors.New("idempotency key reused with a different command")
	// ErrReservedKey: a client's command id in the saga's namespace.
	ErrReservedKey = errors.New("idempotency key in a reserved namespace")
	// ErrUnauthenticated: a client's request without a principal.
	ErrUnauthenticated = errors.New("command without a principal")
	// ErrForbidden: the principal's role may not send this command.
	ErrForbidden = errors.New("forbidden")
)

// PayloadError is a payload that does not decode into the command's fields.
type PayloadError struct{ Msg string }

func (e *PayloadError) Error() string { return e.Msg }

// OverloadedError is a command refused for now, before anything of it was
// decided or logged: the service is behind (Options.Admit). The client may
// send it again after RetryAfter.
type OverloadedError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *OverloadedError) Error() string { return e.Reason }

// RejectedError is a command that the aggregate refused; it wraps the
// domain error and carries the logged record.
type RejectedError struct {
	Record commandlog.Record
	Err    *aggregate.Error
}

func (e *RejectedError) Error() string { return e.Err.Error() }

func (e *RejectedError) Unwrap() error { return e.Err }

// Options configure a Bus.
type Options struct {
	// Retries bounds how often a command is decided again after a version
	// conflict (only when the client gave no expected version).
	Retries int
	Clock   func() time.Time
	// Committed is called after every commit (outbox.Signal.Raise wakes
	// this process's subscribers), by the bus's own committer.
	Committed func()
	// Observe, when set, is told of every dispatched command: its type,
	// stream type, outcome (accepted, rejected, replayed, refused, failed),
	// events appended and time taken (telemetry.Metrics.Command).
	Observe func(typ, streamType, outcome string, events int, took time.Duration)
	// Conflict, when set, is told of each version conflict that made a
	// command be decided again (telemetry.Metrics.Conflict).
	Conflict func(typ string)
	// ConcurrentStreams lets commands on one stream run at once in this
	// process (off: they queue, one writer per stream). For measuring.
	ConcurrentStreams bool
	// Streams are the per-stream locks, shared by every bus of a process
	// (the API's and the saga's); nil: the bus's own.
	Streams *StreamLocks
	// Group configures the bus's group committer.
	Group GroupCommit
	// Admit, when set, is asked about every client's command once it is
	// authorised, before it is decoded, decided or logged; an error
	// (*OverloadedError) refuses it. Orderflow's own commands skip it.
	Admit func(ctx context.Context, commandType string) error
}

// Bus dispatches commands.
type Bus struct {
	store   *eventstore.Store
	log     *commandlog.Log
	keys    *personal.Keys
	defs    map[string]Definition
	retries int
	now     func() time.Time
	observe func(typ, streamType, outcome string, events int, took time.Duration)
	// conflicts counts re-decisions after a version conflict.
	conflicts func(typ string)
	streams   *StreamLocks
	committer *committer
	admit     func(ctx context.Context, commandType string) error
}

// NewBus returns a bus for the given definitions.
func NewBus(pool *pgxpool.Pool, store *eventstore.Store, defs []Definition, opts Options) *Bus {
	b := &Bus{store: store, log: commandlog.NewLog(pool), keys: personal.NewKeys(pool), defs: map[string]Definition{}, retries: opts.Retries, now: opts.Clock,
		committer: newCommitter(pool, store, opts.Group, opts.Committed), admit: opts.Admit}
	if b.now == nil {
		b.now = time.Now
	}
	if b.observe = opts.Observe; b.observe == nil {
		b.observe = func(string, string, string, int, time.Duration) {}
	}
	if b.conflicts = opts.Conflict; b.conflicts == nil {
		b.conflicts = func(string) {}
	}
	if b.streams = opts.Streams; b.streams == nil && !opts.ConcurrentStreams {
		b.streams = NewStreamLocks()
	}
	if opts.ConcurrentStreams {
		b.streams = nil
	}
	for _, d := range defs {
		if _, dup := b.defs[d.Name]; dup {
			panic("commands: " + d.Name + " defined twice")
		}
		if c, ok := d.payload().(Command); !ok || c.CommandType() != d.Name {
			panic("commands: the payload of " + d.Name + " does not name it (CommandType)")
		}
		b.defs[d.Name] = d
	}
	return b
}

// Log returns the command log.
func (b *Bus) Log() *commandlog.Log { return b.log }

// NewPayload returns a new zero payload (a *P) of the command named typ, for
// a caller that fills it from JSON it decoded itself (POST /commands); false
// for a type the bus does not know. Dispatch refuses it as it refuses the
// type by name: an internal command from a client is unknown.
func (b *Bus) NewPayload(typ string) (Command, bool) {
	def, ok := b.defs[typ]
	if !ok {
		return nil, false
	}
	p, ok := def.payload().(Command)
	return p, ok
}

// DispatchAll dispatches independent commands (on different streams) at
// once: each is decided at the same time as the others, so they reach the
// group committer together and share its transaction and WAL flush when it
// is free — one commit for several commands of one sender (a saga's
// stage). Each keeps its own key, outcome and log row; results are in the
// order of reqs.
func (b *Bus) DispatchAll(ctx context.Context, reqs ...Request) ([]commandlog.Record, []error) {
	recs, errs := make([]commandlog.Record, len(reqs)), make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { recs[i], errs[i] = b.Dispatch(ctx, req) })
	}
	wg.Wait()
	return recs, errs
}

// Dispatch runs one command. A command id seen before returns the recorded
// outcome and appends nothing. A domain refusal is logged and returned as
// *RejectedError with the record.
func (b *Bus) Dispatch(ctx context.Context, req Request) (commandlog.Record, error) {
	start := time.Now()
	if req.Command != nil {
		req.Type = req.Command.CommandType()
	}
	typ := req.Type
	if _, ok := b.defs[typ]; !ok {
		typ = "unknown" // a label or span name never comes from a client's free text
	}
	ctx, span := tracing.Tracer().Start(ctx, "command "+typ, trace.WithAttributes(attribute.String("command.type", typ)))
	defer span.End()
	rec, err := b.dispatch(ctx, req)
	var rejected *RejectedError
	outcome := "accepted"
	switch {
	case rec.Replayed:
		outcome = "replayed"
	case errors.As(err, &rejected):
		outcome = "rejected"
	case errors.As(err, new(*eventstore.ConflictError)):
		outcome = "conflict" // a stale If-Match, or out of retries
	case errors.As(err, new(*OverloadedError)):
		outcome = "overloaded"
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrUnauthenticated), errors.Is(err, ErrUnknownType), errors.Is(err, ErrReservedKey),
		errors.Is(err, ErrKeyReused), errors.As(err, new(*PayloadError)), errors.As(err, new(*aggregate.Error)):
		outcome = "refused"
	case err != nil:
		outcome = "failed"
	}
	events := 0
	if outcome == "accepted" {
		events = len(rec.EventIDs)
	}
	span.SetAttributes(attribute.String("command.outcome", outcome), attribute.String("command.id", rec.CommandID),
		attribute.String("stream.type", rec.StreamType), attribute.String("stream.id", rec.StreamID))
	if outcome == "failed" {
		span.SetStatus(codes.Error, err.Error())
	}
	b.observe(typ, rec.StreamType, outcome, events, time.Since(start))
	return rec, err
}

func (b *Bus) dispatch(ctx context.Context, req Request) (commandlog.Record, error) {
	def, ok := b.defs[req.Type]
	if !ok || (def.internal && !req.Internal) {
		return commandlog.Record{}, fmt.Errorf("%w %q", ErrUnknownType, req.Type)
	}
	principal := req.Principal
	if req.Internal {
		principal = nil
	} else {
		switch {
		case principal == nil:
			return commandlog.Record{}, ErrUnauthenticated
		case !principal.Allows(auth.CommandAccess(req.Type)):
			return commandlog.Record{}, fmt.Errorf("%w: a %s may not send %s", ErrForbidden, principal.Role, req.Type)
		case strings.HasPrefix(req.CommandID, ReservedPrefix):
			return commandlog.Record{}, fmt.Errorf("%w: command ids starting with %q belong to orderflow's sagas", ErrReservedKey, ReservedPrefix)
		}
		req.Actor = principal.Subject
		if b.admit != nil {
			if err := b.admit(ctx, req.Type); err != nil && !b.logged(ctx, principal.Subject, req.CommandID) {
				return commandlog.Record{}, err
			}
		}
	}
	p, err := def.decode(req)
	if err != nil {
		return commandlog.Record{}, err
	}
	req.Metadata = maps.Clone(req.Metadata)
	if req.Metadata == nil {
		req.Metadata = map[string]string{}
	}
	if req.CommandID == "" {
		req.CommandID = uuid.Must(uuid.NewV7()).String()
	} else if !ValidID(req.CommandID) {
		return commandlog.Record{}, &PayloadError{Msg: fmt.Sprintf("idempotency key %q must match %s", req.CommandID, idPattern)}
	} else if principal != nil {
		req.Metadata[MetaIdempotencyKey] = req.CommandID
		req.CommandID = ScopedID(principal.Subject, req.CommandID)
	}
	if req.OnBehalfOf != "" {
		req.Metadata[MetaOnBehalfOf] = req.OnBehalfOf
	}
	if def.prepare != nil {
		if err := def.prepare(p, req); err != nil {
			return commandlog.Record{}, err
		}
	}
	var customer string
	if def.customer != nil {
		customer = def.customer(p)
		if principal != nil && !principal.Owns(customer) {
			return commandlog.Record{}, fmt.Errorf("%w: a customer sends %s for itself only", ErrForbidden, req.Type)
		}
	}
	streamID := def.streamID(p)
	if !ValidID(streamID) {
		return commandlog.Record{}, &PayloadError{Msg: fmt.Sprintf("%s id %q must match %s", def.StreamType, streamID, idPattern)}
	}
	if err := b.seal(ctx, def, streamID, customer, p); err != nil {
		return commandlog.Record{}, err
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return commandlog.Record{}, err
	}
	if err := checkText(payload); err != nil {
		return commandlog.Record{}, &PayloadError{Msg: fmt.Sprintf("payload of %s: %v", req.Type, err)}
	}
	if req.CorrelationID == "" {
		req.CorrelationID = req.CommandID
	}
	if req.Actor == "" {
		req.Actor = "anonymous"
	}
	rec := commandlog.Record{
		CommandID: req.CommandID, Type: req.Type, Payload: payload, StreamType: def.StreamType, StreamID: streamID,
		CorrelationID: req.CorrelationID, CausationID: req.CausationID, Actor: req.Actor, Metadata: req.Metadata,
		EventIDs: []uuid.UUID{},
	}

	// No lookup of the command id first: the commit inserts it into the
	// log, and a key seen before makes that insert conflict, which answers
	// with the recorded outcome (loggedMeanwhile) and rolls back anything
	// decided again. One round trip fewer for every new command.
	if err := b.precheck(ctx, def, req, p); err != nil {
		// A retry of a command committed before answers as before, though
		// a rule it meets now did not hold then (one added since, as the
		// saga's holdings were) or what it was checked against moved on.
		if prior, lerr := b.log.Get(ctx, req.CommandID); lerr == nil {
			return b.replay(prior, rec)
		}
		return commandlog.Record{}, err
	}

	md := eventstore.Metadata{CorrelationID: rec.CorrelationID, CausationID: rec.CommandID, Actor: rec.Actor, OnBehalfOf: req.OnBehalfOf,
		TraceParent: tracing.Inject(ctx)}
	// One writer per stream in this process: concurrent commands on a hot
	// stream queue here instead of conflicting in the database (other
	// processes still can; the retry below handles them).
	if b.streams != nil {
		defer b.streams.lock(def.StreamType + "/" + streamID)()
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			b.conflicts(req.Type)
		}
		agg, ok := b.store.Registry().NewAggregate(def.StreamType, streamID)
		if !ok {
			return commandlog.Record{}, fmt.Errorf("stream type %s is not registered", def.StreamType)
		}
		if err := b.store.Load(ctx, agg); err != nil {
			return commandlog.Record{}, err
		}
		owner := customer
		if o, ok := agg.(interface{ CustomerID() string }); ok && agg.Version() > 0 {
			owner = o.CustomerID()
		}
		if principal != nil && !principal.Owns(owner) {
			// Another customer's stream reads as missing: existence does not leak.
			return commandlog.Record{}, aggregate.NotFound(def.StreamType+"_not_found", "%s %s does not exist", def.StreamType, streamID)
		}
		md.CustomerID = owner
		if req.ExpectedVersion != nil && *req.ExpectedVersion != agg.Version() {
			// A retry of a command that was committed answers as before,
			// though the stream has moved past its expected version.
			if prior, err := b.log.Get(ctx, req.CommandID); err == nil {
				return b.replay(prior, rec)
			}
			return commandlog.Record{}, &eventstore.ConflictError{StreamType: def.StreamType, StreamID: streamID, Expected: *req.ExpectedVersion, Current: agg.Version()}
		}
		var dErr *aggregate.Error
		if err := def.decide(agg, p); errors.As(err, &dErr) {
			return b.reject(ctx, rec, agg.Version(), dErr)
		} else if err != nil {
			return commandlog.Record{}, err
		}
		out, err := b.commit(ctx, rec, agg, md)
		if errors.Is(err, eventstore.ErrConflict) && req.ExpectedVersion == nil && attempt < b.retries {
			continue
		}
		return out, err
	}
}

// precheck runs a command's preconditions on other streams: its own check,
// and for a client's request, what its order's saga holds.
func (b *Bus) precheck(ctx context.Context, def Definition, req Request, p any) error {
	if def.held != nil && !req.Internal {
		if err := def.held(ctx, b.load, p); err != nil {
			return err
		}
	}
	if def.check != nil {
		return def.check(ctx, b.load, p)
	}
	return nil
}

// logged reports whether a client's idempotency key names a command
// already logged: its retry is answered as before even when Admit refuses
// new commands (it adds nothing).
func (b *Bus) logged(ctx context.Context, subject, key string) bool {
	if key == "" || !ValidID(key) {
		return false
	}
	_, err := b.log.Get(ctx, ScopedID(subject, key))
	return err == nil
}

// commit commits an accepted command through the group committer.
func (b *Bus) commit(ctx context.Context, rec commandlog.Record, agg aggregate.Root, md eventstore.Metadata) (commandlog.Record, error) {
	rec.Status = commandlog.StatusAccepted
	rec.StreamVersion = agg.Version()
	envs, err := b.store.Pending(agg, md)
	if err != nil {
		return commandlog.Record{}, err
	}
	for _, e := range envs {
		rec.EventIDs = append(rec.EventIDs, e.EventID)
	}
	out, err := b.submit(ctx, &unit{rec: rec, agg: agg, envs: envs})
	if err == nil && !out.Replayed {
		b.store.Remember(agg)
	}
	return out, err
}

// reject logs a refused command (no events) through the group committer.
func (b *Bus) reject(ctx context.Context, rec commandlog.Record, version int64, dErr *aggregate.Error) (commandlog.Record, error) {
	rec.Status = commandlog.StatusRejected
	rec.StreamVersion = version
	rec.ReasonKind, rec.ReasonCode, rec.Reason = kindName(dErr.Kind), dErr.Code, dErr.Message
	out, err := b.submit(ctx, &unit{rec: rec})
	if err == nil && !out.Replayed {
		err = &RejectedError{Record: out, Err: dErr}
	}
	return out, err
}

// submit stamps u's record and hands it to the committer; a command id
// logged meanwhile answers with the recorded outcome.
func (b *Bus) submit(ctx context.Context, u *unit) (commandlog.Record, error) {
	u.rec.RecordedAt = b.now().UTC().Truncate(time.Microsecond)
	err := b.committer.commit(u)
	if errors.Is(err, errLogged) {
		return b.loggedMeanwhile(ctx, u.rec)
	}
	if err != nil {
		return commandlog.Record{}, err
	}
	return u.rec, nil
}

// load reads another stream's aggregate, for a Definition's check.
func (b *Bus) load(ctx context.Context, streamType, id string) (aggregate.Root, error) {
	agg, ok := b.store.Registry().NewAggregate(streamType, id)
	if !ok {
		return nil, fmt.Errorf("stream type %s is not registered", streamType)
	}
	return agg, b.store.Load(ctx, agg)
}
