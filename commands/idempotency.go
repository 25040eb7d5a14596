package commands

// Idempotency: which ids are valid, clients' keys scoped per principal,
// the saga's reserved namespace, and a key sent again answered from the log.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/domain/aggregate"
)

// ReservedPrefix starts the command ids of orderflow's own processes (the
// saga's step keys): a client cannot use, and so cannot pre-claim, them.
const ReservedPrefix = "saga:"

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

// errLogged is the committer's answer for a command whose id the log
// holds already: the reservation that begins a group read it there, or the
// log's primary key refused the insert (a twin got there after the
// reservation: committed in another group or process, or written earlier in
// this command's own group, whose outcome is then the group's).
var errLogged = errors.New("command id already logged")

// unlessLogged is an outcome that holds only for a command id the log does
// not hold: a retry of a logged command is answered as it was then, though
// a precondition fails now, its If-Match is stale now, or (errLogged) a
// twin request committed it while this one was being decided.
type unlessLogged struct{ err error }

func (e *unlessLogged) Error() string { return e.err.Error() }
func (e *unlessLogged) Unwrap() error { return e.err }

// fromLog answers c, which cannot go on as a new command (cause), from the
// log: its recorded outcome, or cause when the log holds none (or does not
// answer). A new command is not looked up before its commit: the commit
// finds a twin itself (errLogged), so a command reads the log at most once,
// here or at admission.
func (b *Bus) fromLog(ctx context.Context, c *command, cause error) (commandlog.Record, error) {
	prior, err := b.logged(ctx, c.rec.CommandID)
	switch {
	case err == nil:
		return b.replay(prior, c.rec)
	case errors.Is(cause, errLogged):
		return commandlog.Record{}, err // logged, yet the log did not answer
	}
	return commandlog.Record{}, cause
}

// logged reads the log's record of a command id (commandlog.ErrNotFound:
// none). A record, once logged, never changes.
func (b *Bus) logged(ctx context.Context, id string) (commandlog.Record, error) {
	return b.log.Get(ctx, id)
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
