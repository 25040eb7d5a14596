package streams

import (
	"slices"
	"strings"
	"testing"
)

// Every event belongs to a registered stream type and is named after it,
// and every schema version past the first can be reached by upcasters from
// each older one (what the compatibility check of the AsyncAPI document
// asks for when an event changes).
func TestTheRegistryIsComplete(t *testing.T) {
	r := Registry()
	streamTypes := r.StreamTypes()
	seen := map[string]bool{}
	for _, e := range r.Events() {
		if !slices.Contains(streamTypes, e.StreamType) {
			t.Errorf("event %s: stream type %q is not registered", e.Name, e.StreamType)
		}
		if !strings.HasPrefix(e.Name, e.StreamType+".") {
			t.Errorf("event %s of stream type %s: wire names start with their stream type", e.Name, e.StreamType)
		}
		for from := 1; from < e.Version; from++ {
			if !slices.Contains(e.UpcastFrom, from) {
				t.Errorf("event %s at schema version %d has no upcaster from version %d", e.Name, e.Version, from)
			}
		}
		seen[e.StreamType] = true
	}
	for _, s := range streamTypes {
		if !seen[s] {
			t.Errorf("stream type %s has no event", s)
		}
	}
}
