package workflows_test

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"

	"github.com/orderflow/orderflow/workflows"
)

// Histories recorded from real runs (cmd/orderflow's end-to-end tests with
// ORDERFLOW_RECORD_HISTORIES=1) must replay against the current code: a
// change that breaks determinism for running sagas fails here.
func TestRecordedHistoriesReplay(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded histories in testdata: %v", err)
	}
	r := worker.NewWorkflowReplayer()
	workflows.RegisterWorkflow(r)
	for _, f := range files {
		if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
