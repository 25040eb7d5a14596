package asyncapi

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "write the generated document to docs/asyncapi.json")

// committed is the path of the committed document from this package.
var committed = filepath.Join("..", CommittedPath)

// The committed document is the generated one: a change to an event, a
// command or a metadata key that is not regenerated fails here.
func TestCommittedDocumentIsCurrent(t *testing.T) {
	gen, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(committed, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(old, gen) {
		t.Fatalf("%s is stale: regenerate it with `go generate ./asyncapi` (or `orderflow asyncapi -o %s`)", CommittedPath, CommittedPath)
	}
}
