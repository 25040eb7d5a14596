package asyncapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/orderflow/orderflow/workflows"
)

// The saga's recorded histories (workflows/testdata) start from an
// order.placed event's fields (lines, shipping address: the event's own Go
// types). Their inputs still decode, strictly, into today's input: a field
// of those types removed or renamed would silently read as zero in replay.
func TestRecordedHistoriesStillDecode(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "workflows", "testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded histories: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			Events []struct {
				Started *struct {
					Input struct {
						Payloads []struct {
							Data string `json:"data"`
						} `json:"payloads"`
					} `json:"input"`
				} `json:"workflowExecutionStartedEventAttributes"`
			} `json:"events"`
		}
		if err := json.Unmarshal(raw, &h); err != nil || len(h.Events) == 0 || h.Events[0].Started == nil || len(h.Events[0].Started.Input.Payloads) != 1 {
			t.Errorf("%s: no workflow input: %v", f, err)
			continue
		}
		data, err := base64.StdEncoding.DecodeString(h.Events[0].Started.Input.Payloads[0].Data)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		var in workflows.Input
		if err := dec.Decode(&in); err != nil {
			t.Errorf("%s: the saga's input no longer decodes: %v", filepath.Base(f), err)
		} else if in.OrderID == "" || len(in.Lines) == 0 || in.ShippingAddress.Country == "" {
			t.Errorf("%s: the saga's input decodes empty: %+v", filepath.Base(f), in)
		}
	}
}
