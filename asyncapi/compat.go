package asyncapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Break is a change of the contract that breaks consumers: a message type
// removed, or a field (or header) removed, retyped or made required while
// the message keeps its schema version.
type Break struct {
	Message string // wire name of the event, type of the command
	Field   string // "shipping_address.name", "header event_id"; empty for the message itself
	Change  string
	// Kind is "event" (with schema versions and upcasters), "command" or
	// "message" (poisoned).
	Kind    string
	Version int
}

func (b Break) String() string {
	what, way := b.Kind+" "+b.Message, "keep the field as it is"
	if b.Kind == "command" {
		way = "commands have no schema versions: keep the field as it is, or add a new command type"
	}
	if b.Kind == "event" {
		what = fmt.Sprintf("event %s (schema version %d)", b.Message, b.Version)
		way = fmt.Sprintf("the way forward is schema version %d of %s with an upcaster from %d (eventstore.Registry.RegisterUpcaster), registered in eventstore/streams",
			b.Version+1, b.Message, b.Version)
	}
	if b.Field == "" {
		return fmt.Sprintf("%s: %s", what, b.Change)
	}
	return fmt.Sprintf("%s: field %s %s; %s", what, b.Field, b.Change, way)
}

// Compatible compares a newly generated document with the committed one
// (the baseline) and returns what breaks consumers. Adding message types,
// optional fields and headers is compatible; so is anything in a message
// whose schema version went up (its upcaster turns old events into the new
// version).
func Compatible(baseline, generated []byte) ([]Break, error) {
	oldMsgs, err := messagesOf(baseline)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	newMsgs, err := messagesOf(generated)
	if err != nil {
		return nil, fmt.Errorf("generated: %w", err)
	}
	var out []Break
	for _, name := range slices.Sorted(maps.Keys(oldMsgs)) {
		o := oldMsgs[name]
		version, _ := o["x-schema-version"].(float64)
		b := Break{Message: name, Kind: "message", Version: int(version)}
		switch {
		case version > 0:
			b.Kind = "event"
		case o["x-topic"] == "commands":
			b.Kind = "command"
		}
		n, ok := newMsgs[name]
		if !ok {
			b.Change = "was removed: messages of it are stored and consumers decode them; keep it"
			out = append(out, b)
			continue
		}
		if o["x-topic"] != n["x-topic"] {
			b.Change = fmt.Sprintf("moved from topic %v to %v", o["x-topic"], n["x-topic"])
			out = append(out, b)
			continue
		}
		nv, _ := n["x-schema-version"].(float64)
		switch {
		case nv < version:
			b.Change = fmt.Sprintf("schema version went down from %d to %d", int(version), int(nv))
			out = append(out, b)
			continue
		case nv > version:
			continue // a new version: its upcaster covers the change
		}
		add := func(field, change string) {
			c := b
			c.Field, c.Change = field, change
			out = append(out, c)
		}
		compareSchemas(object(o["payload"]), object(n["payload"]), "", add)
		compareSchemas(object(o["headers"]), object(n["headers"]), "header ", add)
	}
	return out, nil
}

func messagesOf(doc []byte) (map[string]map[string]any, error) {
	var d struct {
		Components struct {
			Messages map[string]map[string]any `json:"messages"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	if len(d.Components.Messages) == 0 {
		return nil, fmt.Errorf("no messages in components.messages")
	}
	return d.Components.Messages, nil
}

func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func strs(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, s := range l {
			if s, ok := s.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// compareSchemas reports what of schema o the schema n no longer accepts,
// or reads differently, for one message: at path (a field's dotted path).
func compareSchemas(o, n map[string]any, path string, add func(field, change string)) {
	if o == nil {
		return
	}
	field := strings.TrimSuffix(path, ".")
	if n == nil {
		add(field, "lost its schema")
		return
	}
	if ot, nt := fmt.Sprint(o["type"]), fmt.Sprint(n["type"]); o["type"] != nil && ot != nt {
		add(field, fmt.Sprintf("changed type from %s to %s", ot, nt))
		return
	}
	if o["const"] != nil && fmt.Sprint(o["const"]) != fmt.Sprint(n["const"]) {
		add(field, fmt.Sprintf("changed its value from %v to %v", o["const"], n["const"]))
	}
	if op, np := o["x-personal"] == true, n["x-personal"] == true; op != np {
		if np {
			add(field, "became personal (sealed): earlier messages carry it in clear")
		} else {
			add(field, "is no longer personal (sealed)")
		}
	}
	if o["format"] != nil && o["format"] != n["format"] {
		add(field, fmt.Sprintf("changed format from %v to %v", o["format"], n["format"]))
	}
	oprops, nprops := object(o["properties"]), object(n["properties"])
	oreq, nreq := strs(o["required"]), strs(n["required"])
	for _, name := range slices.Sorted(maps.Keys(oprops)) {
		np, ok := nprops[name]
		if !ok {
			add(path+name, "was removed")
			continue
		}
		if !slices.Contains(oreq, name) && slices.Contains(nreq, name) {
			add(path+name, "became required (it was optional)")
		}
		compareSchemas(object(oprops[name]), object(np), path+name+".", add)
	}
	for _, name := range nreq {
		if _, existed := oprops[name]; !existed {
			add(path+name, "was added as required: messages written before lack it (add it optional: omitempty)")
		}
	}
	if o["items"] != nil {
		compareSchemas(object(o["items"]), object(n["items"]), path+"[].", add)
	}
}
