package sagas_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/orderflow/orderflow/workflows/sagas"
)

// A repair run uses the keys of the run it repairs: those recorded before
// VersionGuarded (regular-activities-*, version 0; local-activities-*,
// version 1) used the old keys, every later one the saga's reserved keys.
// Read from the recorded histories themselves.
func TestARepairReadsTheKeysOfTheRunItRepairsFromItsHistory(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded histories: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var h historypb.History
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &h); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		want := strings.HasPrefix(name, "regular-activities-") || strings.HasPrefix(name, "local-activities-")
		if got := sagas.LegacyKeys(h.Events); got != want {
			t.Errorf("%s: legacy keys %v, want %v", name, got, want)
		}
	}
}
