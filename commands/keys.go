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

var errLogged = errors.New("command id already logged")

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
