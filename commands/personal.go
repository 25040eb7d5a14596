package commands

// Personal data and text: personal fields sealed with their customer's
// key before anything is logged, and text PostgreSQL cannot store refused.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/personal"
)

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
		typ, id := def.StreamType, streamID
		if def.owner != nil {
			typ, id = def.owner(p)
		}
		if !ValidID(id) {
			return &PayloadError{Msg: fmt.Sprintf("%s id %q must match %s", typ, id, idPattern)}
		}
		agg, err := b.load(ctx, typ, id)
		if err != nil {
			return err
		}
		if o, ok := agg.(interface{ CustomerID() string }); ok {
			customer = o.CustomerID()
		}
		if customer == "" {
			// Refused before logging: the log never holds unsealed text.
			return aggregate.NotFound(typ+"_not_found", "%s %s does not exist", typ, id)
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
	if err := b.customerKeys.Seal(ctx, customer, fields...); errors.Is(err, personal.ErrNotTheirs) {
		return &PayloadError{Msg: fmt.Sprintf("payload of %s: a personal field is sealed for another customer", def.Name)}
	} else if err != nil {
		return err
	}
	return nil
}

// MaxPersonalLength bounds each personal field, checked on the cleartext:
// the domain only ever sees the sealed text.
const MaxPersonalLength = 200

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
