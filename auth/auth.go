// Package auth is who may do what: the principal a bearer token names, the
// verification of those tokens (JWT, alg pinned, issuer, audience and expiry
// checked), dev's own signing key, and the one policy of roles over routes
// and command types.
package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Role is what a principal may do; the policy (policy.go) lists each
// role's routes and command types.
type Role string

const (
	// Customer acts on its own orders and wallets only.
	Customer Role = "customer"
	// Operator runs the service: stock, sagas, poison, projections, logs.
	Operator Role = "operator"
)

// Principal is the authenticated caller.
type Principal struct {
	// Subject is the token's sub: the actor recorded on commands and events.
	Subject string
	Role    Role
	// CustomerID is the customer a customer token acts for.
	CustomerID string
}

// Owns reports whether p may see and act on what belongs to customerID:
// operators on everything, customers on their own.
func (p Principal) Owns(customerID string) bool {
	return p.Role == Operator || (p.Role == Customer && customerID != "" && p.CustomerID == customerID)
}

// Claims are orderflow's token claims: the registered ones plus the role
// and, for customers, the customer id.
type Claims struct {
	jwt.RegisteredClaims
	Role       Role   `json:"role"`
	CustomerID string `json:"customer_id,omitempty"`
}

// InvalidTokenError says precisely why a token was refused (401).
type InvalidTokenError struct{ Reason string }

func (e *InvalidTokenError) Error() string { return e.Reason }

// VerifierConfig says which tokens to accept. Exactly one of PublicKey and
// JWKSURL is set.
type VerifierConfig struct {
	Issuer   string
	Audience string
	// Algorithm is the only signing algorithm accepted (e.g. EdDSA, RS256):
	// a token naming another, "none" included, is refused.
	Algorithm string
	PublicKey crypto.PublicKey
	// JWKSURL is an identity provider's key set, refreshed in the background.
	JWKSURL string
	// MaxTTL is the longest life a token may have (exp - iat);
	// DefaultMaxTTL when zero.
	MaxTTL time.Duration
}

// DefaultMaxTTL is the longest token life accepted unless configured.
const DefaultMaxTTL = 24 * time.Hour

// Leeway is the clock skew tolerated on exp, nbf and iat.
const Leeway = 30 * time.Second

// asymmetric are the algorithms a verifier may pin: a signature only the
// key's owner can make. HMAC would make every verifier a signer (and a
// JWKS can publish an HMAC key); "none" signs nothing.
var asymmetric = []string{"EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Verifier checks bearer tokens.
type Verifier struct {
	keys   jwt.Keyfunc
	parser *jwt.Parser
	maxTTL time.Duration
	// verified keeps the principals of tokens verified in the last minute
	// (never past a token's expiry): a signature check (EdDSA, RSA) cost
	// more CPU than the rest of a command's HTTP handling. The minute
	// bounds how long a key removed from the JWKS still passes.
	verified *expirable.LRU[string, verified]
}

type verified struct {
	p       Principal
	expires time.Time
}

// Verified tokens are kept at most this long, this many.
const (
	verifiedTTL  = time.Minute
	verifiedSize = 10000
)

// NewVerifier returns a verifier for cfg; with a JWKS URL it fetches the
// key set until ctx ends.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" || cfg.Algorithm == "" {
		return nil, errors.New("auth: issuer, audience and algorithm are required")
	}
	if !slices.Contains(asymmetric, cfg.Algorithm) {
		return nil, fmt.Errorf("auth: algorithm %q is refused: pin one of %s (never HMAC or none)", cfg.Algorithm, strings.Join(asymmetric, ", "))
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	v := &Verifier{maxTTL: cfg.MaxTTL, verified: expirable.NewLRU[string, verified](verifiedSize, nil, verifiedTTL), parser: jwt.NewParser(
		jwt.WithValidMethods([]string{cfg.Algorithm}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), // an iat in the future (past the leeway) is refused
		jwt.WithLeeway(Leeway),
	)}
	switch {
	case cfg.PublicKey != nil && cfg.JWKSURL != "":
		return nil, errors.New("auth: set a public key or a JWKS URL, not both")
	case cfg.PublicKey != nil:
		key := cfg.PublicKey
		v.keys = func(*jwt.Token) (any, error) { return key, nil }
	case cfg.JWKSURL != "":
		k, err := keyfunc.NewDefaultCtx(ctx, []string{cfg.JWKSURL})
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: %w", cfg.JWKSURL, err)
		}
		v.keys = k.Keyfunc
	default:
		return nil, errors.New("auth: no key to verify tokens with")
	}
	return v, nil
}

// Verify returns the principal of a valid token, or an *InvalidTokenError.
func (v *Verifier) Verify(token string) (Principal, error) {
	if hit, ok := v.verified.Get(token); ok && time.Now().Before(hit.expires) {
		return hit.p, nil
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, v.keys)
	if err != nil {
		return Principal{}, &InvalidTokenError{Reason: reason(err)}
	}
	switch {
	case c.IssuedAt == nil:
		return Principal{}, &InvalidTokenError{Reason: "the token lacks a required claim (iat)"}
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > v.maxTTL:
		return Principal{}, &InvalidTokenError{Reason: fmt.Sprintf("the token lives longer than %s (exp - iat)", v.maxTTL)}
	case c.Subject == "":
		return Principal{}, &InvalidTokenError{Reason: "the token has no subject (sub)"}
	case c.Role == Customer && c.CustomerID == "":
		return Principal{}, &InvalidTokenError{Reason: "a customer token must name its customer (customer_id)"}
	case c.Role != Customer && c.Role != Operator:
		return Principal{}, &InvalidTokenError{Reason: fmt.Sprintf("the token's role %q is neither customer nor operator", c.Role)}
	}
	p := Principal{Subject: c.Subject, Role: c.Role}
	if c.Role == Customer {
		p.CustomerID = c.CustomerID
	}
	v.verified.Add(token, verified{p: p, expires: c.ExpiresAt.Time})
	return p, nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is not a well-formed JWT"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is not meant for this service (audience)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token's issuer is not trusted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks a required claim (exp)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature or algorithm is not accepted"
	}
	return "the token is not valid"
}

// Dev's signing key: Ed25519, kept in the data directory.
const (
	DevIssuer    = "orderflow-dev"
	DevAudience  = "orderflow"
	DevAlgorithm = "EdDSA"
	devKeyFile   = "jwt-signing-key.pem"
)

// DevKey returns the signing key kept in dir, creating it (mode 0600) when
// create is set and there is none.
func DevKey(dir string, create bool) (ed25519.PrivateKey, error) {
	return SigningKey(DevKeyPath(dir), create)
}

// DevKeyPath is where dev keeps its signing key in its data directory.
func DevKeyPath(dir string) string { return filepath.Join(dir, devKeyFile) }

// SigningKey reads an Ed25519 private key (PEM, PKCS #8) from path,
// creating one there when create is set and there is none.
func SigningKey(path string, create bool) (ed25519.PrivateKey, error) {
	dir := filepath.Dir(path)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil { // the key file itself is 0600
			return nil, err
		}
		return key, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w (start `orderflow dev` once to create dev's)", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("dev signing key %s: not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev signing key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("dev signing key %s: not Ed25519", path)
	}
	return key, nil
}

// Issue signs a token for p with an Ed25519 key (dev's, or compose's
// secret), valid for ttl.
func Issue(key ed25519.PrivateKey, issuer, audience string, p Principal, ttl time.Duration) (string, error) {
	now := time.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer, Subject: p.Subject, Audience: jwt.ClaimStrings{audience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Role: p.Role, CustomerID: p.CustomerID,
	}
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(key)
}

// DevVerifier accepts the tokens Issue signs with key.
func DevVerifier(key ed25519.PrivateKey) *Verifier {
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DevIssuer, Audience: DevAudience, Algorithm: DevAlgorithm, PublicKey: key.Public()})
	if err != nil {
		panic(err) // the config above is complete
	}
	return v
}

// ParsePublicKey reads a PEM public key (PKIX: RSA, ECDSA or Ed25519).
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("the public key is not PEM")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

// DevOperatorToken is an operator's token signed with dev's key in dir,
// for audience, living at most maxTTL (a day when 0): what the harness and
// the end-to-end tests send against `orderflow dev` when given none.
func DevOperatorToken(dir, audience string, maxTTL time.Duration) (string, error) {
	key, err := DevKey(dir, false)
	if err != nil {
		return "", fmt.Errorf("no -token given and no dev key: %w", err)
	}
	ttl := 24 * time.Hour
	if maxTTL > 0 {
		ttl = min(ttl, maxTTL)
	}
	return Issue(key, DevIssuer, audience, Principal{Subject: "ops-load", Role: Operator}, ttl)
}
