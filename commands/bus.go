// Package commands is the write path: one handler per command type that loads
// the aggregate and decides; a group committer then appends the events, logs
// the command (commandlog) and writes the outbox messages in one transaction.
package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	// customer names the customer a command that creates a stream acts
	// for (the stream has no owner yet); others take the stream's own.
	customer func(p any) string
	// check is a precondition on other streams (PlaceOrder's wallet).
	check func(ctx context.Context, load Loader, p any) error
	// personal lists the payload's personal fields, sealed with their
	// customer's key before anything is logged (crypto-shredding).
	personal func(p any) []*string
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

// ReservedPrefix starts the command ids of orderflow's own processes (the
// saga's step keys): a client cannot use, and so cannot pre-claim, them.
const ReservedPrefix = "saga:"

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

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidID reports whether s can be a stream or command id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// keyNamespace scopes clients' idempotency keys.
var keyNamespace = uuid.MustParse("0b6d3c52-6a7e-4f1e-9f0a-3c1d2e4b5a69")

// ScopedID is the command id of a client's idempotency key: keys are
// scoped to the principal that sent them, so no client can claim, collide
// with, or read another's. The key itself is logged as metadata.
func ScopedID(subject, key string) string {
	return uuid.NewSHA1(keyNamespace, []byte(subject+"\x00"+key)).String()
}

// MetaIdempotencyKey and MetaOnBehalfOf are command-log metadata.
const (
	MetaIdempotencyKey = "idempotency_key"
	MetaOnBehalfOf     = "on_behalf_of"
)

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
	if def.check != nil {
		if err := def.check(ctx, b.load, p); err != nil {
			return commandlog.Record{}, err
		}
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

var errLogged = errors.New("command id already logged")

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

// seal seals the payload's personal fields with their customer's key: the
// customer the command names, or the owner of the stream it targets.
func (b *Bus) seal(ctx context.Context, def Definition, streamID, customer string, p any) error {
	if def.personal == nil {
		return nil
	}
	if def.customer != nil && customer == "" {
		return &PayloadError{Msg: fmt.Sprintf("payload of %s: customer_id is required", def.Name)}
	}
	if customer == "" {
		agg, err := b.load(ctx, def.StreamType, streamID)
		if err != nil {
			return err
		}
		if o, ok := agg.(interface{ CustomerID() string }); ok {
			customer = o.CustomerID()
		}
		if customer == "" {
			// Refused before logging: the log never holds unsealed text.
			return aggregate.NotFound(def.StreamType+"_not_found", "%s %s does not exist", def.StreamType, streamID)
		}
	}
	fields := def.personal(p)
	for _, f := range fields {
		*f = strings.TrimSpace(*f)
		if strings.ContainsRune(*f, 0) {
			return &PayloadError{Msg: fmt.Sprintf("payload of %s: a string contains a NUL character (\\u0000)", def.Name)}
		}
		if n := utf8.RuneCountInString(*f); n > MaxPersonalLength {
			return &PayloadError{Msg: fmt.Sprintf("a personal field of %s has %d characters, more than %d", def.Name, n, MaxPersonalLength)}
		}
	}
	return b.keys.Seal(ctx, customer, fields...)
}

// MaxPersonalLength bounds each personal field, checked on the cleartext:
// the domain only ever sees the sealed text.
const MaxPersonalLength = 200

// load reads another stream's aggregate, for a Definition's check.
func (b *Bus) load(ctx context.Context, streamType, id string) (aggregate.Root, error) {
	agg, ok := b.store.Registry().NewAggregate(streamType, id)
	if !ok {
		return nil, fmt.Errorf("stream type %s is not registered", streamType)
	}
	return agg, b.store.Load(ctx, agg)
}

// loggedMeanwhile answers a command whose id a concurrent request logged first.
func (b *Bus) loggedMeanwhile(ctx context.Context, rec commandlog.Record) (commandlog.Record, error) {
	prior, err := b.log.Get(ctx, rec.CommandID)
	if err != nil {
		return commandlog.Record{}, err
	}
	return b.replay(prior, rec)
}

// replay returns the recorded outcome of a command id seen before.
func (b *Bus) replay(prior, req commandlog.Record) (commandlog.Record, error) {
	if prior.Type != req.Type || !jsonEqual(prior.Payload, req.Payload) {
		return commandlog.Record{}, fmt.Errorf("%w: command %s was %s with another payload", ErrKeyReused, prior.CommandID, prior.Type)
	}
	prior.Replayed = true
	if prior.Status == commandlog.StatusRejected {
		return prior, &RejectedError{Record: prior, Err: &aggregate.Error{Kind: kindOf(prior.ReasonKind), Code: prior.ReasonCode, Message: prior.Reason}}
	}
	return prior, nil
}

// checkText refuses a payload with a NUL character in any string:
// PostgreSQL's jsonb and text cannot store it, so it would fail every retry
// of the command (and stall a saga step that carries the text). Invalid
// UTF-8 cannot reach here: encoding/json replaces it when decoding.
func checkText(payload []byte) error {
	if !bytes.Contains(payload, []byte(`\u0000`)) {
		return nil
	}
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return err
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.ContainsRune(v, 0)
		case []any:
			return slices.ContainsFunc(v, walk)
		case map[string]any:
			for k, x := range v {
				if strings.ContainsRune(k, 0) || walk(x) {
					return true
				}
			}
		}
		return false
	}
	if walk(v) {
		return errors.New("a string contains a NUL character (\\u0000)")
	}
	return nil
}

// jsonEqual compares JSON documents regardless of key order and spacing
// (the log stores payloads as jsonb); numbers compare exactly.
func jsonEqual(a, b json.RawMessage) bool {
	canon := func(raw json.RawMessage) ([]byte, bool) {
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return nil, false
		}
		out, err := json.Marshal(v)
		return out, err == nil
	}
	x, ok1 := canon(a)
	y, ok2 := canon(b)
	return ok1 && ok2 && bytes.Equal(x, y)
}

func kindName(k error) string {
	switch k {
	case aggregate.ErrState:
		return "state"
	case aggregate.ErrNotFound:
		return "not_found"
	}
	return "rule"
}

func kindOf(name string) error {
	switch name {
	case "state":
		return aggregate.ErrState
	case "not_found":
		return aggregate.ErrNotFound
	}
	return aggregate.ErrRule
}

// StreamLocks serialise the commands of each stream in a process.
type StreamLocks struct {
	mu sync.Mutex
	m  map[string]*streamLock
}

// NewStreamLocks returns locks to share between the buses of a process.
func NewStreamLocks() *StreamLocks { return &StreamLocks{m: map[string]*streamLock{}} }

type streamLock struct {
	sync.Mutex
	users int
}

// lock waits for the stream's turn and returns its release; an entry lives
// only while someone holds or waits for it.
func (l *StreamLocks) lock(key string) func() {
	l.mu.Lock()
	s := l.m[key]
	if s == nil {
		s = &streamLock{}
		l.m[key] = s
	}
	s.users++
	l.mu.Unlock()
	s.Lock()
	return func() {
		s.Unlock()
		l.mu.Lock()
		if s.users--; s.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}
