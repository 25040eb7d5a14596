// Package personal is crypto-shredding: personal fields (names, shipping
// addresses) are sealed with their customer's own AES-256-GCM key before
// they reach events, the command log, the outbox, the read models or the
// saga's history, and forgetting a customer destroys the key, so every copy
// of those fields, wherever it went, becomes unreadable at once.
//
// A sealed value is a string "pii:1:<key id>:<base64url(nonce|ciphertext)>",
// bound to its customer (the customer id is the additional data). The nonce
// is derived from the key and the plaintext, so sealing the same text again
// gives the same string: a retried command compares equal to its logged
// payload. That reveals only that two values of one customer are equal.
package personal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Erased is what a sealed field reads as once its key is destroyed.
const Erased = "[erased]"

const prefix = "pii:1:"

// ErrErased: the value's key was destroyed (the customer was forgotten).
var ErrErased = errors.New("personal data erased")

// IsSealed reports whether s is a sealed value.
func IsSealed(s string) bool { return strings.HasPrefix(s, prefix) }

// Keys keeps the customers' keys in customer_keys.
type Keys struct{ pool *pgxpool.Pool }

// NewKeys returns the key store on pool.
func NewKeys(pool *pgxpool.Pool) *Keys { return &Keys{pool: pool} }

type key struct {
	id       uuid.UUID
	customer string
	aead     cipher.AEAD
	nonceKey []byte
}

func newKey(id uuid.UUID, customer string, raw []byte) (key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("orderflow nonce key"))
	return key{id: id, customer: customer, aead: aead, nonceKey: m.Sum(nil)}, nil
}

// keyFor returns customerID's key, creating it on first use.
func (k *Keys) keyFor(ctx context.Context, customerID string) (key, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return key{}, err
	}
	var id uuid.UUID
	var stored []byte
	// One round trip: insert a new key unless the customer has one, and
	// return whichever is stored. A concurrent first insert makes ours do
	// nothing while our snapshot cannot see theirs: then read again.
	for attempt := 0; ; attempt++ {
		err := k.pool.QueryRow(ctx, `
			WITH ins AS (
			    INSERT INTO customer_keys (key_id, customer_id, key) VALUES ($1, $2, $3)
			    ON CONFLICT (customer_id) DO NOTHING RETURNING key_id, key)
			SELECT key_id, key FROM ins
			UNION ALL SELECT key_id, key FROM customer_keys WHERE customer_id = $2
			LIMIT 1`, uuid.Must(uuid.NewV7()), customerID, raw).Scan(&id, &stored)
		if errors.Is(err, pgx.ErrNoRows) && attempt < 3 {
			continue
		}
		if err != nil {
			return key{}, fmt.Errorf("key of customer %s: %w", customerID, err)
		}
		break
	}
	return newKey(id, customerID, stored)
}

// ErrNotTheirs: a value arrived sealed, but not under its customer's key.
var ErrNotTheirs = errors.New("a sealed value of another customer")

// Seal replaces each non-empty field with its sealed form under
// customerID's key. A field sealed already (the saga passes on its order's
// sealed address) stays as it is when it is under this customer's key or
// under a key destroyed since (it reads as erased); under another
// customer's key it is refused with ErrNotTheirs.
func (k *Keys) Seal(ctx context.Context, customerID string, fields ...*string) error {
	key, err := k.keyFor(ctx, customerID)
	if err != nil {
		return err
	}
	for _, f := range fields {
		if *f == "" {
			continue
		}
		if IsSealed(*f) {
			if err := k.sealedFor(ctx, key, *f); err != nil {
				return err
			}
			continue
		}
		m := hmac.New(sha256.New, key.nonceKey)
		m.Write([]byte(*f))
		nonce := m.Sum(nil)[:key.aead.NonceSize()]
		ct := key.aead.Seal(nonce, nonce, []byte(*f), []byte(customerID))
		*f = prefix + key.id.String() + ":" + base64.RawURLEncoding.EncodeToString(ct)
	}
	return nil
}

// sealedFor checks that a sealed value s may stand for key's customer.
func (k *Keys) sealedFor(ctx context.Context, key key, s string) error {
	idPart, _, _ := strings.Cut(strings.TrimPrefix(s, prefix), ":")
	id, err := uuid.Parse(idPart)
	if err != nil {
		return fmt.Errorf("%w: not a sealed value", ErrNotTheirs)
	}
	if id == key.id {
		return nil
	}
	var exists bool
	if err := k.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM customer_keys WHERE key_id = $1)`, id).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return ErrNotTheirs
	}
	return nil
}

// Opener opens sealed values, loading each key once: those of one
// customer, or of any customer when it was made with For("") (operators).
type Opener struct {
	k        *Keys
	customer string
	keys     map[uuid.UUID]*key // nil entry: destroyed
}

// For returns an opener of customerID's values; "" opens every customer's.
func (k *Keys) For(customerID string) *Opener {
	return &Opener{k: k, customer: customerID, keys: map[uuid.UUID]*key{}}
}

// Open returns the plaintext of s, s itself when it is not sealed, and
// ErrErased when its key is gone or it is not this customer's.
func (o *Opener) Open(ctx context.Context, s string) (string, error) {
	if !IsSealed(s) {
		return s, nil
	}
	idPart, b64, ok := strings.Cut(strings.TrimPrefix(s, prefix), ":")
	id, err := uuid.Parse(idPart)
	ct, err2 := base64.RawURLEncoding.DecodeString(b64)
	if !ok || err != nil || err2 != nil {
		return "", ErrErased
	}
	key, seen := o.keys[id]
	if !seen {
		var raw []byte
		var owner string
		err := o.k.pool.QueryRow(ctx, `SELECT customer_id, key FROM customer_keys WHERE key_id = $1`, id).Scan(&owner, &raw)
		switch {
		case errors.Is(err, pgx.ErrNoRows), err == nil && o.customer != "" && owner != o.customer:
		case err != nil:
			return "", err
		default:
			k, err := newKey(id, owner, raw)
			if err != nil {
				return "", err
			}
			key = &k
		}
		o.keys[id] = key
	}
	if key == nil {
		return "", ErrErased
	}
	n := key.aead.NonceSize()
	if len(ct) < n {
		return "", ErrErased
	}
	pt, err := key.aead.Open(nil, ct[:n], ct[n:], []byte(key.customer))
	if err != nil {
		return "", ErrErased
	}
	return string(pt), nil
}

// OpenJSON returns doc with every sealed string of this customer opened,
// and those whose key is gone replaced by Erased.
func (o *Opener) OpenJSON(ctx context.Context, doc []byte) ([]byte, error) {
	return mapSealed(doc, func(s string) (string, error) {
		s, err := o.Open(ctx, s)
		if errors.Is(err, ErrErased) {
			return Erased, nil
		}
		return s, err
	})
}

// Withheld is what a sealed field reads as in an answer that could not
// open it (its key could not be read).
const Withheld = "[withheld]"

// WithholdJSON returns doc with every sealed string replaced by Withheld:
// an answer that must be given though the keys cannot be read (after a
// commit), without ciphertext or a second trip to the database.
func WithholdJSON(doc []byte) ([]byte, error) {
	return mapSealed(doc, func(string) (string, error) { return Withheld, nil })
}

// mapSealed returns doc with every sealed string s replaced by f(s).
func mapSealed(doc []byte, f func(string) (string, error)) ([]byte, error) {
	if !bytes.Contains(doc, []byte(prefix)) {
		return doc, nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	var walk func(v any) (any, error)
	walk = func(v any) (any, error) {
		switch v := v.(type) {
		case string:
			if !IsSealed(v) {
				return v, nil
			}
			return f(v)
		case []any:
			for i := range v {
				x, err := walk(v[i])
				if err != nil {
					return nil, err
				}
				v[i] = x
			}
		case map[string]any:
			for key, x := range v {
				y, err := walk(x)
				if err != nil {
					return nil, err
				}
				v[key] = y
			}
		}
		return v, nil
	}
	out, err := walk(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// Forget destroys customerID's key and records that the customer was
// forgotten (by whom, when). It reports whether there was a key.
func (k *Keys) Forget(ctx context.Context, customerID, by string) (bool, error) {
	var destroyed bool
	err := pgx.BeginFunc(ctx, k.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM customer_keys WHERE customer_id = $1`, customerID)
		if err != nil {
			return err
		}
		destroyed = tag.RowsAffected() > 0
		_, err = tx.Exec(ctx, `INSERT INTO forgotten_customers (customer_id, forgotten_by) VALUES ($1, $2)
			ON CONFLICT (customer_id) DO UPDATE SET forgotten_at = now(), forgotten_by = $2`, customerID, by)
		return err
	})
	if err != nil {
		return false, err
	}
	// The deleted row's bytes stay in the table's pages until vacuumed.
	if _, err := k.pool.Exec(ctx, `VACUUM customer_keys`); err != nil {
		return destroyed, fmt.Errorf("vacuum customer_keys: %w", err)
	}
	return destroyed, nil
}
