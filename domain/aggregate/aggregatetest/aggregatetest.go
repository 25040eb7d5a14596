// Package aggregatetest runs given-events / when-command / then-events tables
// against an aggregate.
package aggregatetest

import (
	"errors"
	"reflect"
	"testing"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// Case is one row: replay Given, run When, expect Then or an error with code Err.
type Case[A aggregate.Root] struct {
	Name  string
	Given []aggregate.Event
	When  func(A) error
	Then  []aggregate.Event
	Err   string
}

// Run executes the table; newAgg returns a fresh aggregate for each row.
func Run[A aggregate.Root](t *testing.T, newAgg func() A, cases []Case[A]) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			a := newAgg()
			for _, e := range c.Given {
				a.Replay(e)
			}
			before := a.Version()
			err := c.When(a)
			if c.Err != "" {
				var de *aggregate.Error
				if !errors.As(err, &de) || de.Code != c.Err {
					t.Fatalf("want error %q, got %v", c.Err, err)
				}
				if len(a.Changes()) != 0 {
					t.Fatalf("a rejected command recorded events: %#v", a.Changes())
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got := a.Changes()
			if len(got) == 0 && len(c.Then) == 0 {
				return
			}
			if !reflect.DeepEqual(got, c.Then) {
				t.Fatalf("events:\n got  %#v\n want %#v", got, c.Then)
			}
			if a.Version() != before+int64(len(got)) {
				t.Fatalf("version %d after %d new events on version %d", a.Version(), len(got), before)
			}
		})
	}
}
