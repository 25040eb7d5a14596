package asyncapi

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/orderflow/orderflow/commands"
)

// The OpenAPI document (what a client sends) and the AsyncAPI document
// (what the commands topic carries) describe the same command payloads:
// every field a client may send is on the topic with the same type, every
// field a client must send is always there, and a field only the topic has
// (filled by orderflow: the operator) is optional. The command log record
// around them agrees too.
func TestOpenAPIAndAsyncAPIAgreeOnCommands(t *testing.T) {
	oas, err := openapi3.NewLoader().LoadFromFile(filepath.Join("..", "httpapi", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := messagesOf(raw)
	if err != nil {
		t.Fatal(err)
	}
	var public []string
	for _, d := range commands.Definitions() {
		m, ok := msgs[d.Name]
		if !ok {
			t.Errorf("command %s is not in the AsyncAPI document", d.Name)
			continue
		}
		payload := object(object(object(m["payload"])["properties"])["payload"])
		if d.Internal() {
			continue
		}
		if !d.RouteOnly() { // its route's schema stands elsewhere
			public = append(public, d.Name)
		}
		ref, ok := oas.Components.Schemas[d.Name]
		if !ok {
			t.Errorf("command %s has no schema in openapi.yaml", d.Name)
			continue
		}
		for _, diff := range agree(ref.Value, payload, d.Name, true) {
			t.Error(diff)
		}
	}

	enum := oas.Paths.Find("/commands").Post.RequestBody.Value.Content["application/json"].Schema.Value.Properties["type"].Value.Enum
	var types []string
	for _, e := range enum {
		types = append(types, fmt.Sprint(e))
	}
	slices.Sort(types)
	slices.Sort(public)
	if !slices.Equal(types, public) {
		t.Errorf("POST /commands accepts %v; the commands clients may send are %v", types, public)
	}

	// The command log record: GET /commands/{id} and the topic's payload.
	record := object(msgs["PlaceOrder"]["payload"])
	for _, diff := range agree(oas.Components.Schemas["Command"].Value, record, "the command log record", false) {
		if !strings.Contains(diff, "field events") && !strings.Contains(diff, "field payload") { // full events over HTTP, references on the topic; the payload differs by type
			t.Error(diff)
		}
	}
}

// agree compares an OpenAPI schema with an AsyncAPI one at path; checkRequired
// also compares the required fields.
func agree(o *openapi3.Schema, a map[string]any, path string, checkRequired bool) []string {
	var out []string
	if o == nil || a == nil {
		return []string{path + ": missing in one document"}
	}
	otype := ""
	if o.Type != nil && len(*o.Type) == 1 {
		otype = (*o.Type)[0]
	}
	if atype, _ := a["type"].(string); otype != "" && atype != otype {
		return []string{fmt.Sprintf("%s: %s in openapi.yaml, %s in the AsyncAPI document", path, otype, atype)}
	}
	props := object(a["properties"])
	required := strs(a["required"])
	for name, p := range o.Properties {
		ap, ok := props[name]
		if !ok {
			out = append(out, fmt.Sprintf("%s: field %s is in openapi.yaml, not in the AsyncAPI document", path, name))
			continue
		}
		out = append(out, agree(p.Value, object(ap), path+" field "+name, checkRequired)...)
	}
	if checkRequired {
		for _, name := range o.Required {
			if !slices.Contains(required, name) {
				out = append(out, fmt.Sprintf("%s: field %s is required of clients but optional on the topic", path, name))
			}
		}
		for name := range props {
			if _, ok := o.Properties[name]; !ok && slices.Contains(required, name) {
				out = append(out, fmt.Sprintf("%s: field %s is always on the topic but clients cannot send it", path, name))
			}
		}
	}
	if o.Items != nil {
		out = append(out, agree(o.Items.Value, object(a["items"]), path+"[]", checkRequired)...)
	}
	return out
}
