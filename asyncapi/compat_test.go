package asyncapi

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The generated document keeps every promise of the committed one: no
// message type, field or header removed, retyped or made required in a
// message that keeps its schema version.
func TestGeneratedDocumentIsCompatibleWithTheCommittedOne(t *testing.T) {
	baseline, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	breaks, err := Compatible(baseline, gen)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range breaks {
		t.Error(b)
	}
}

// doc is a document of one event, wallet.renamed, with the given payload
// schema and schema version.
func doc(t *testing.T, version int, payload string) []byte {
	t.Helper()
	var p any
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(map[string]any{"components": map[string]any{"messages": map[string]any{
		"wallet.renamed": map[string]any{"x-topic": "wallet_events", "x-schema-version": version, "payload": p,
			"headers": map[string]any{"type": "object", "properties": map[string]any{"event_id": map[string]any{"type": "string"}}, "required": []string{"event_id"}}},
		"RenameWallet": map[string]any{"x-topic": "commands", "payload": map[string]any{"type": "object",
			"properties": map[string]any{"wallet_id": map[string]any{"type": "string"}}, "required": []string{"wallet_id"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const base = `{"type":"object","required":["name","amount"],"properties":{
	"name":{"type":"string","x-personal":true},
	"amount":{"type":"integer"},
	"note":{"type":"string"},
	"lines":{"type":"array","items":{"type":"object","required":["sku"],"properties":{"sku":{"type":"string"},"gift":{"type":"boolean"}}}}}}`

func TestCompatibleNamesTheEventAndTheField(t *testing.T) {
	cases := []struct {
		name, payload string
		version       int
		want          string // "" = compatible
	}{
		{"unchanged", base, 1, ""},
		{"an optional field added", strings.Replace(base, `"note":`, `"extra":{"type":"string"},"note":`, 1), 1, ""},
		{"an optional nested field added", strings.Replace(base, `"gift":`, `"wrap":{"type":"boolean"},"gift":`, 1), 1, ""},
		{"a required field made optional", strings.Replace(base, `"required":["name","amount"]`, `"required":["name"]`, 1), 1, ""},
		{"a field removed", strings.Replace(base, `"note":{"type":"string"},`, ``, 1), 1,
			"event wallet.renamed (schema version 1): field note was removed; the way forward is schema version 2 of wallet.renamed with an upcaster from 1"},
		{"a field retyped", strings.Replace(base, `"amount":{"type":"integer"}`, `"amount":{"type":"string"}`, 1), 1,
			"field amount changed type from integer to string"},
		{"an optional field made required", strings.Replace(base, `"required":["name","amount"]`, `"required":["name","amount","note"]`, 1), 1,
			"field note became required (it was optional)"},
		{"a required field added", strings.Replace(base, `"required":["name","amount"]`, `"required":["name","amount","extra"]`, 1), 1,
			"field extra was added as required"},
		{"a nested field removed", strings.Replace(base, `,"gift":{"type":"boolean"}`, ``, 1), 1,
			"field lines.[].gift was removed"},
		{"a nested field retyped", strings.Replace(base, `"sku":{"type":"string"}`, `"sku":{"type":"integer"}`, 1), 1,
			"field lines.[].sku changed type from string to integer"},
		{"a personal field no longer sealed", strings.Replace(base, `,"x-personal":true`, ``, 1), 1,
			"field name is no longer personal"},
		{"a field removed in a new version", strings.Replace(base, `"note":{"type":"string"},`, ``, 1), 2, ""},
		{"a version went down", base, 0, "schema version went down from 1 to 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			breaks, err := Compatible(doc(t, 1, base), doc(t, c.version, c.payload))
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if len(breaks) > 0 {
					t.Fatalf("compatible change refused: %v", breaks)
				}
				return
			}
			if len(breaks) != 1 || !strings.Contains(breaks[0].String(), c.want) {
				t.Fatalf("got %v, want one break with %q", breaks, c.want)
			}
		})
	}
}

func TestCompatibleRefusesRemovedMessagesAndHeaders(t *testing.T) {
	old := doc(t, 1, base)
	var d map[string]any
	_ = json.Unmarshal(old, &d)
	msgs := d["components"].(map[string]any)["messages"].(map[string]any)
	msgs["wallet.renamed"].(map[string]any)["headers"] = map[string]any{"type": "object", "properties": map[string]any{}}
	msgs["RenameWallet"].(map[string]any)["payload"] = map[string]any{"type": "object", "properties": map[string]any{"wallet_id": map[string]any{"type": "integer"}}}
	changed, _ := json.Marshal(d)
	breaks, err := Compatible(old, changed)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range breaks {
		got = append(got, b.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"command RenameWallet: field wallet_id changed type from string to integer; commands have no schema versions",
		"event wallet.renamed (schema version 1): field header event_id was removed",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	delete(msgs, "wallet.renamed")
	removed, _ := json.Marshal(d)
	breaks, _ = Compatible(old, removed)
	if got := fmt.Sprint(breaks); !strings.Contains(got, "event wallet.renamed (schema version 1): was removed") {
		t.Fatalf("a removed event passed: %v", got)
	}
}
