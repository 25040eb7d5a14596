package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/orderflow/orderflow/auth"
)

// tokenFlags are the flags of `orderflow token`.
type tokenFlags struct {
	role, customer, subject, key, issuer string
	ttl                                  time.Duration
}

func (t *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.role, "role", "", "customer or operator (required)")
	fs.StringVar(&t.customer, "customer", "", "the customer a customer token acts for")
	fs.StringVar(&t.subject, "subject", "", "the token's subject, recorded as the actor (default: the customer id, or ops-<user>)")
	fs.StringVar(&t.key, "key", "", "Ed25519 signing key, PEM (default: dev's, in the data directory)")
	fs.StringVar(&t.issuer, "issuer", auth.DevIssuer, "the token's iss")
	fs.DurationVar(&t.ttl, "ttl", 24*time.Hour, "how long the token is valid")
}

// runToken prints a token that dev (or a deployment verifying with the
// same key) accepts: the token alone on the last line.
func runToken(cfg Config, t tokenFlags) error {
	p := auth.Principal{Role: auth.Role(t.role), CustomerID: t.customer, Subject: t.subject}
	switch p.Role {
	case auth.Customer:
		if p.CustomerID == "" {
			return errors.New("a customer token needs -customer <id>")
		}
		if p.Subject == "" {
			p.Subject = p.CustomerID
		}
	case auth.Operator:
		if p.CustomerID != "" {
			return errors.New("-customer is for customer tokens")
		}
		if p.Subject == "" {
			p.Subject = "ops-" + os.Getenv("USER")
			if p.Subject == "ops-" {
				p.Subject = "ops"
			}
		}
	default:
		return errors.New("-role must be customer or operator")
	}
	if t.ttl <= 0 || t.ttl > cfg.JWTMaxTTL {
		return fmt.Errorf("-ttl must be positive and at most %s (ORDERFLOW_JWT_MAX_TTL)", cfg.JWTMaxTTL)
	}
	path := t.key
	if path == "" {
		path = auth.DevKeyPath(cfg.DataDir)
	}
	key, err := auth.SigningKey(path, false)
	if err != nil {
		return err
	}
	tok, err := auth.Issue(key, t.issuer, cfg.JWTAudience, p, t.ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s token for %s, valid %s; send it as: Authorization: Bearer <token>\n", p.Role, p.Subject, t.ttl)
	fmt.Println(tok)
	return nil
}

// operatorToken is the given token, or an operator's signed with dev's
// key: what the end-to-end tests send (the harness's load and bench have
// the same rule, in cmd/orderflow-harness).
func operatorToken(cfg Config, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	return auth.DevOperatorToken(cfg.DataDir, cfg.JWTAudience, cfg.JWTMaxTTL)
}
