// Package commands is the write path: one handler per command type that loads
// the aggregate and decides; a group committer then appends the events, logs
// the command (commandlog) and writes the outbox messages in one transaction.
//
// A command passes four steps (Bus.dispatch in bus.go): authorise.go (the
// policy every caller passes, and admission), prepare.go (the payload
// decoded, its ids scoped, its personal fields sealed: the record to log),
// decide.go (the aggregate loaded and asked; version conflicts decided
// again) and commit.go (groups of commands committed in one transaction;
// groupfailure.go: a group retried, or its outcome learned after a lost
// connection). idempotency.go holds idempotency: a command id seen before is
// answered from the log. definition.go, catalog.go and payments.go declare
// the commands; personal.go seals personal fields; locks.go keeps one
// writer per stream.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

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
	Committed func(topics ...string)
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
	store        *eventstore.Store
	log          *commandlog.Log
	customerKeys *personal.Keys
	defs         map[string]Definition
	retries      int
	now          func() time.Time
	observe      func(typ, streamType, outcome string, events int, took time.Duration)
	// conflicts counts re-decisions after a version conflict.
	conflicts func(typ string)
	streams   *StreamLocks
	committer *committer
	admit     func(ctx context.Context, commandType string) error
}

// NewBus returns a bus for the given definitions.
func NewBus(pool *pgxpool.Pool, store *eventstore.Store, defs []Definition, opts Options) *Bus {
	b := &Bus{store: store, log: commandlog.NewLog(pool), customerKeys: personal.NewKeys(pool), defs: map[string]Definition{}, retries: opts.Retries, now: opts.Clock,
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

// RouteOnly reports whether the command named typ is sent through its own
// route only (Definition.RouteOnly).
func (b *Bus) RouteOnly(typ string) bool { return b.defs[typ].routeOnly }

// NewPayload returns a new zero payload (a *P) of the command named typ, for
// a caller that fills it from JSON it decoded itself (POST /commands); false
// for a type the bus does not know. Dispatch refuses it as it refuses the
// type by name: an internal command from a client is unknown.
//
// A route-only command (RouteOnly) has no payload here: its own route
// sends it.
func (b *Bus) NewPayload(typ string) (Command, bool) {
	def, ok := b.defs[typ]
	if !ok || def.routeOnly {
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
	outcome := outcomeOf(rec, err)
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

// outcomeOf names a dispatched command's outcome for metrics and traces:
// accepted, replayed, rejected, conflict, overloaded, refused or failed.
func outcomeOf(rec commandlog.Record, err error) string {
	switch {
	case rec.Replayed:
		return "replayed"
	case errors.As(err, new(*RejectedError)):
		return "rejected"
	case errors.As(err, new(*eventstore.ConflictError)):
		return "conflict" // a stale If-Match, or out of retries
	case errors.As(err, new(*OverloadedError)):
		return "overloaded"
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrUnauthenticated), errors.Is(err, ErrUnknownType), errors.Is(err, ErrReservedKey),
		errors.Is(err, ErrKeyReused), errors.As(err, new(*PayloadError)), errors.As(err, new(*aggregate.Error)):
		return "refused"
	case err != nil:
		return "failed"
	}
	return "accepted"
}

// dispatch runs a command through its steps: authorise, prepare, then
// decide and commit. A command id the log holds already is answered with
// its recorded outcome wherever a step finds that it cannot go on as a new
// command (see fromLog); a new command is looked up before its commit only
// when admission refuses it (a retry is answered even then).
func (b *Bus) dispatch(ctx context.Context, req Request) (commandlog.Record, error) {
	c, err := b.authorise(ctx, req)
	if err == nil {
		err = b.prepare(ctx, c)
	}
	if err != nil {
		return commandlog.Record{}, err
	}
	if c.prior != nil {
		// Refused by admission, and found in the log: a retry, answered
		// as before without deciding anything again.
		return b.replay(*c.prior, c.rec)
	}
	rec, err := b.decideAndCommit(ctx, c)
	if retry := (*unlessLogged)(nil); errors.As(err, &retry) {
		return b.fromLog(ctx, c, retry.err)
	}
	return rec, err
}

// load reads another stream's aggregate, for a Definition's check.
func (b *Bus) load(ctx context.Context, streamType, id string) (aggregate.Root, error) {
	agg, ok := b.store.Registry().NewAggregate(streamType, id)
	if !ok {
		return nil, fmt.Errorf("stream type %s is not registered", streamType)
	}
	return agg, b.store.Load(ctx, agg)
}
