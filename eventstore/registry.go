package eventstore

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// Upcaster turns the JSON of one schema version into the next version's JSON.
type Upcaster func(json.RawMessage) (json.RawMessage, error)

type eventType struct {
	stream    string
	goType    reflect.Type
	version   int
	decode    func(json.RawMessage) (aggregate.Event, error)
	upcasters map[int]Upcaster // from version -> to version+1
}

type streamType struct {
	new             func(id string) aggregate.Root
	snapshotVersion int
}

// Registry maps stable wire names to event types and stream types to
// aggregate factories. It is an instance built once at wiring time; nothing
// registers itself globally.
type Registry struct {
	events  map[string]*eventType
	streams map[string]streamType
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{events: map[string]*eventType{}, streams: map[string]streamType{}}
}

// RegisterEvent registers event type E, recorded by the aggregates of
// stream type stream, under the wire name its EventType method returns, at
// the given current schema version.
func RegisterEvent[E aggregate.Event](r *Registry, stream string, version int) {
	var zero E
	name := zero.EventType()
	if _, dup := r.events[name]; dup {
		panic(fmt.Sprintf("eventstore: event %q registered twice", name))
	}
	if version < 1 {
		panic(fmt.Sprintf("eventstore: event %q needs a schema version >= 1", name))
	}
	r.events[name] = &eventType{
		stream:    stream,
		goType:    reflect.TypeFor[E](),
		version:   version,
		upcasters: map[int]Upcaster{},
		decode: func(data json.RawMessage) (aggregate.Event, error) {
			var e E
			if err := json.Unmarshal(data, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
	}
}

// RegisterUpcaster registers the step from schema version from to from+1 of
// an already registered event.
func (r *Registry) RegisterUpcaster(name string, from int, up Upcaster) {
	t, ok := r.events[name]
	if !ok {
		panic(fmt.Sprintf("eventstore: upcaster for unregistered event %q", name))
	}
	if from < 1 || from >= t.version {
		panic(fmt.Sprintf("eventstore: upcaster for %q from version %d, current is %d", name, from, t.version))
	}
	t.upcasters[from] = up
}

// RegisterStream registers the aggregate factory of a stream type and the
// schema version of its snapshots.
func (r *Registry) RegisterStream(name string, snapshotVersion int, newAggregate func(id string) aggregate.Root) {
	if _, dup := r.streams[name]; dup {
		panic(fmt.Sprintf("eventstore: stream type %q registered twice", name))
	}
	r.streams[name] = streamType{new: newAggregate, snapshotVersion: snapshotVersion}
}

// NewAggregate returns an empty aggregate of a registered stream type.
func (r *Registry) NewAggregate(stream, id string) (aggregate.Root, bool) {
	t, ok := r.streams[stream]
	if !ok {
		return nil, false
	}
	return t.new(id), true
}

// EventInfo describes one registered event type: what a published contract
// of the events is generated from.
type EventInfo struct {
	Name       string
	StreamType string
	Version    int
	// Type is the Go type the current version decodes into.
	Type reflect.Type
	// UpcastFrom lists the older versions an upcaster starts from.
	UpcastFrom []int
}

// Events returns every registered event type, by stream type and name.
func (r *Registry) Events() []EventInfo {
	out := make([]EventInfo, 0, len(r.events))
	for name, t := range r.events {
		info := EventInfo{Name: name, StreamType: t.stream, Version: t.version, Type: t.goType}
		for from := range t.upcasters {
			info.UpcastFrom = append(info.UpcastFrom, from)
		}
		slices.Sort(info.UpcastFrom)
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b EventInfo) int {
		return cmp.Or(cmp.Compare(a.StreamType, b.StreamType), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// StreamTypes returns the registered stream types, sorted.
func (r *Registry) StreamTypes() []string {
	out := make([]string, 0, len(r.streams))
	for name := range r.streams {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// SchemaVersion returns the current schema version of an event type.
func (r *Registry) SchemaVersion(name string) (int, bool) {
	t, ok := r.events[name]
	if !ok {
		return 0, false
	}
	return t.version, true
}

// Decode upcasts stored JSON of the given schema version to the current one
// and decodes it. It returns the current JSON and version too.
func (r *Registry) Decode(name string, version int, data json.RawMessage) (aggregate.Event, json.RawMessage, int, error) {
	t, ok := r.events[name]
	if !ok {
		return nil, nil, 0, fmt.Errorf("unknown event type %q", name)
	}
	if version > t.version {
		return nil, nil, 0, fmt.Errorf("event %q has schema version %d, newer than this binary's %d", name, version, t.version)
	}
	for v := version; v < t.version; v++ {
		up, ok := t.upcasters[v]
		if !ok {
			return nil, nil, 0, fmt.Errorf("no upcaster for %q from version %d", name, v)
		}
		var err error
		if data, err = up(data); err != nil {
			return nil, nil, 0, fmt.Errorf("upcast %q from version %d: %w", name, v, err)
		}
	}
	e, err := t.decode(data)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("decode %q: %w", name, err)
	}
	return e, data, t.version, nil
}
