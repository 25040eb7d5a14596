// Package aggregate holds what every event-sourced aggregate shares: the event
// interface, version and pending-change bookkeeping, and the domain error kinds
// that the HTTP edge maps to status codes. It does no I/O.
package aggregate

import (
	"errors"
	"fmt"
)

// Event is a fact recorded by an aggregate. EventType returns its stable wire
// name ("order.placed"), written by hand next to the struct and never derived
// from the Go type name, so renaming a type cannot orphan stored events.
type Event interface {
	EventType() string
}

// Root is what the event store and the command path need from an aggregate.
type Root interface {
	// StreamType names the stream family ("order", "wallet", ...).
	StreamType() string
	// StreamID is the aggregate's identity within its stream type.
	StreamID() string
	// Version is the number of events applied so far (0 for a new stream).
	Version() int64
	// Replay applies a stored event and advances the version.
	Replay(Event)
	// Changes returns the events recorded since loading, oldest first.
	Changes() []Event
	// State returns an exported, JSON-serialisable view of the state; it is
	// also the body of snapshots.
	State() any
	// Restore replaces the state with a snapshot body taken at version.
	Restore(version int64, state []byte) error
}

// Base keeps the version and the events recorded but not yet stored.
// Aggregates embed it and pass their own apply function.
type Base struct {
	version int64
	changes []Event
}

// Version is the number of events applied, stored or pending.
func (b *Base) Version() int64 { return b.version }

// Changes returns the events recorded since loading.
func (b *Base) Changes() []Event { return b.changes }

// Record applies a new event and keeps it as a pending change.
func (b *Base) Record(e Event, apply func(Event)) {
	apply(e)
	b.version++
	b.changes = append(b.changes, e)
}

// ReplayWith applies a stored event.
func (b *Base) ReplayWith(e Event, apply func(Event)) {
	apply(e)
	b.version++
}

// SetVersion is used when restoring from a snapshot.
func (b *Base) SetVersion(v int64) { b.version = v }

// Error kinds. Domain packages wrap them with a machine-readable code and a
// human message; the HTTP edge maps the kind to a status.
var (
	// ErrRule: the command breaks a business rule (insufficient funds, out of stock).
	ErrRule = errors.New("business rule violated")
	// ErrState: the command is not allowed in the aggregate's current state.
	ErrState = errors.New("illegal state")
	// ErrNotFound: the command targets an aggregate that does not exist.
	ErrNotFound = errors.New("not found")
)

// Error is a domain error with a stable code ("insufficient_funds").
type Error struct {
	Kind    error
	Code    string
	Message string
	// Details are facts the client needs to act on the refusal (the
	// current price of a price_changed), as JSON members of the answer.
	Details map[string]any
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Kind }

// Rule reports a business-rule violation.
func Rule(code, format string, args ...any) error {
	return &Error{Kind: ErrRule, Code: code, Message: fmt.Sprintf(format, args...)}
}

// State reports a command that the current state does not allow.
func State(code, format string, args ...any) error {
	return &Error{Kind: ErrState, Code: code, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports a command on an aggregate that does not exist.
func NotFound(code, format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}
