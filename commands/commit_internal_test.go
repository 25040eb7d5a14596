package commands

import (
	"slices"
	"testing"

	"github.com/orderflow/orderflow/eventstore"
)

// A group's commit names the topics it wrote to, so that only their
// consumers wake: every command's (the commands topic) and its events'.
func TestACommitNamesTheTopicsItWrote(t *testing.T) {
	group := []*unit{
		{envs: []eventstore.Envelope{{StreamType: "wallet"}, {StreamType: "wallet"}}},
		{}, // a refusal: logged, no events
		{envs: []eventstore.Envelope{{StreamType: "order"}}},
	}
	if got, want := topics(group), []string{"commands", "wallet_events", "order_events"}; !slices.Equal(got, want) {
		t.Fatalf("topics %v, want %v", got, want)
	}
	if got := topics([]*unit{{}}); !slices.Equal(got, []string{"commands"}) {
		t.Fatalf("a refusal's topics %v", got)
	}
}
