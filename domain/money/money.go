// Package money holds amounts as int64 minor units with an ISO 4217 currency.
package money

import (
	"fmt"
	"math"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// Money is an amount in minor units (cents) of a currency. Never a float.
type Money struct {
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// New returns amount minor units of currency.
func New(amount int64, currency string) Money { return Money{Amount: amount, Currency: currency} }

func (m Money) String() string { return fmt.Sprintf("%d %s", m.Amount, m.Currency) }

// ValidCurrency reports whether c looks like an ISO 4217 code (three capitals).
func ValidCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for _, r := range c {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

// SameCurrency rejects arithmetic across currencies.
func SameCurrency(a, b Money) error {
	if a.Currency != b.Currency {
		return aggregate.Rule("currency_mismatch", "currency %s does not match %s", b.Currency, a.Currency)
	}
	return nil
}

// Add returns a+b, rejecting mismatched currencies and overflow.
func (m Money) Add(o Money) (Money, error) {
	if err := SameCurrency(m, o); err != nil {
		return Money{}, err
	}
	if (o.Amount > 0 && m.Amount > math.MaxInt64-o.Amount) || (o.Amount < 0 && m.Amount < math.MinInt64-o.Amount) {
		return Money{}, aggregate.Rule("amount_overflow", "amount overflows")
	}
	return Money{Amount: m.Amount + o.Amount, Currency: m.Currency}, nil
}

// Mul returns m*n, rejecting overflow.
func (m Money) Mul(n int64) (Money, error) {
	if n != 0 && (m.Amount > math.MaxInt64/n || m.Amount < math.MinInt64/n) {
		return Money{}, aggregate.Rule("amount_overflow", "amount overflows")
	}
	return Money{Amount: m.Amount * n, Currency: m.Currency}, nil
}
