// Package asyncapi is the contract of orderflow's Watermill topics for event
// consumers: an AsyncAPI 3 document generated from the event registry, the
// command catalog and the Go types of their payloads (JSON Schemas reflected
// by invopop/jsonschema), never written by hand. It also holds what keeps
// the contract true: the check of a new document against the committed one
// (Compatible), the check of stored messages against their schemas
// (CheckTopics) and the page that renders the document.
package asyncapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/invopop/jsonschema"

	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows/sagas"
)

// Version is the AsyncAPI version of the document.
const Version = "3.1.0"

// CommittedPath is where the repository keeps the generated document,
// relative to the module root: the baseline of compatibility checks.
const CommittedPath = "docs/asyncapi.json"

// SealedPattern is what a sealed personal field looks like on every topic:
// "pii:1:<key id>:<base64url(nonce|ciphertext)>" (package personal).
const SealedPattern = `^pii:1:[0-9a-f-]{36}:[A-Za-z0-9_-]+$`

// Document is an AsyncAPI 3.0 document.
type Document struct {
	AsyncAPI           string               `json:"asyncapi"`
	Info               Info                 `json:"info"`
	DefaultContentType string               `json:"defaultContentType"`
	Servers            map[string]Server    `json:"servers"`
	Channels           map[string]Channel   `json:"channels"`
	Operations         map[string]Operation `json:"operations"`
	Components         Components           `json:"components"`
}

type Info struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description"`
}

type Server struct {
	Host        string              `json:"host"`
	Protocol    string              `json:"protocol"`
	Title       string              `json:"title"`
	Description string              `json:"description"`
	Variables   map[string]Variable `json:"variables,omitempty"`
	// WatermillSQL: how a consumer reads the topics with watermill-sql.
	WatermillSQL *SQLBinding `json:"x-watermill-sql,omitempty"`
}

type Variable struct {
	Default     string `json:"default"`
	Description string `json:"description"`
}

// SQLBinding is how a topic sits in PostgreSQL and how to subscribe to it.
type SQLBinding struct {
	Package          string   `json:"package"`
	SchemaAdapter    string   `json:"schemaAdapter"`
	OffsetsAdapter   string   `json:"offsetsAdapter"`
	InitializeSchema bool     `json:"initializeSchema"`
	MessagesTable    string   `json:"messagesTable,omitempty"`
	OffsetsTable     string   `json:"offsetsTable,omitempty"`
	ReservedGroups   []string `json:"reservedConsumerGroups,omitempty"`
}

// NATSBinding is the subject and stream the optional bridge forwards a topic to.
type NATSBinding struct {
	Subject       string `json:"subject"`
	Stream        string `json:"stream"`
	ConsumerGroup string `json:"bridgeConsumerGroup"`
	MsgIDHeader   string `json:"deduplicationHeader"`
	// Headers are those the bridge adds on NATS to the message's metadata
	// (which rides as headers, one per key, as described by the message).
	Headers map[string]string `json:"headers"`
	Limits  NATSLimits        `json:"streamLimits"`
}

// NATSLimits are the bridge's streams' limits: their defaults and the
// settings that change them.
type NATSLimits struct {
	MaxAge          string `json:"maxAge"`
	MaxBytes        int64  `json:"maxBytes"`
	DuplicateWindow string `json:"duplicateWindow"`
	ConfiguredBy    string `json:"configuredBy"`
}

// natsBinding is the NATS side of a bridged topic.
func natsBinding(topic string) *NATSBinding {
	return &NATSBinding{Subject: topic, Stream: topic, ConsumerGroup: bridge.ConsumerGroup, MsgIDHeader: bridge.HeaderMsgID,
		Headers: map[string]string{
			bridge.HeaderMsgID:         "the message UUID: JetStream drops a message with an id it has seen within the duplicate window",
			bridge.HeaderWatermillUUID: "the message UUID again, where watermill-nats's NATSMarshaler reads it (msg.UUID of a Watermill subscriber on NATS)",
		},
		Limits: NATSLimits{MaxAge: bridge.DefaultMaxAge.String(), MaxBytes: bridge.DefaultMaxBytes, DuplicateWindow: bridge.DefaultDuplicateWindow.String(),
			ConfiguredBy: "ORDERFLOW_NATS_MAX_AGE, ORDERFLOW_NATS_MAX_BYTES, ORDERFLOW_NATS_DUPLICATE_WINDOW (0 age or bytes: no limit); set on every stream the bridge creates or finds, when it connects"},
	}
}

// Delivery is a topic's delivery semantics.
type Delivery struct {
	Guarantee     string `json:"guarantee"`
	Order         string `json:"order"`
	DeduplicateBy string `json:"deduplicateBy"`
}

type Ref struct {
	Ref string `json:"$ref"`
}

type Channel struct {
	Address      string         `json:"address"`
	Title        string         `json:"title"`
	Description  string         `json:"description"`
	Servers      []Ref          `json:"servers"`
	Messages     map[string]Ref `json:"messages"`
	Delivery     Delivery       `json:"x-delivery"`
	WatermillSQL SQLBinding     `json:"x-watermill-sql"`
	NATS         *NATSBinding   `json:"x-nats-jetstream,omitempty"`
}

type Operation struct {
	Action   string `json:"action"`
	Channel  Ref    `json:"channel"`
	Title    string `json:"title"`
	Summary  string `json:"summary"`
	Messages []Ref  `json:"messages"`
}

type Components struct {
	Messages map[string]Message `json:"messages"`
}

// Message is one message type: an event by its wire name, a command by its
// type, or a poisoned message.
type Message struct {
	Name          string             `json:"name"`
	Title         string             `json:"title"`
	Summary       string             `json:"summary"`
	ContentType   string             `json:"contentType"`
	CorrelationID *CorrelationID     `json:"correlationId,omitempty"`
	Headers       *jsonschema.Schema `json:"headers"`
	Payload       *jsonschema.Schema `json:"payload"`
	// Topic is the channel (Watermill topic) the message is published to.
	Topic string `json:"x-topic"`
	// SchemaVersion is an event's current schema version (its
	// schema_version header); zero for commands and poisoned messages.
	SchemaVersion int `json:"x-schema-version,omitempty"`
	// StreamType is the stream type whose aggregates record the event.
	StreamType string `json:"x-stream-type,omitempty"`
}

type CorrelationID struct {
	Description string `json:"description"`
	Location    string `json:"location"`
}

// Generate builds the document from the registry, the command catalog and
// the Go types.
func Generate() (*Document, error) {
	reg := streams.Registry()
	doc := &Document{
		AsyncAPI:           Version,
		Info:               Info{Title: "orderflow topics", Version: "1", Description: infoDescription},
		DefaultContentType: "application/json",
		Servers:            servers(),
		Channels:           map[string]Channel{},
		Operations:         map[string]Operation{},
		Components:         Components{Messages: map[string]Message{}},
	}
	add := func(topic string, m Message) {
		m.Topic = topic
		doc.Components.Messages[m.Name] = m
	}
	for _, e := range reg.Events() {
		m, err := eventMessage(e)
		if err != nil {
			return nil, err
		}
		add(outbox.Topic(e.StreamType), m)
	}
	for _, d := range commands.Definitions() {
		m, err := commandMessage(d)
		if err != nil {
			return nil, err
		}
		add(outbox.CommandsTopic, m)
	}
	add(outbox.PoisonTopic, poisonMessage())

	for _, topic := range append(slices.Clone(outbox.Topics), outbox.PoisonTopic) {
		var names []string
		for name, m := range doc.Components.Messages {
			if m.Topic == topic {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("asyncapi: topic %s has no message", topic)
		}
		slices.Sort(names)
		ch := channel(topic, names)
		doc.Channels[topic] = ch
		op := Operation{Action: "send", Channel: Ref{"#/channels/" + topic}, Title: "orderflow publishes to " + topic,
			Summary: "Written in the transaction of the command (or the handling) that caused it: published if and only if committed."}
		for _, n := range names {
			op.Messages = append(op.Messages, Ref{"#/channels/" + topic + "/messages/" + n})
		}
		doc.Operations["publish_"+topic] = op
	}
	return doc, nil
}

// JSON returns the generated document, indented, as committed and served.
var JSON = sync.OnceValues(func() ([]byte, error) {
	doc, err := Generate()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
})

const infoDescription = `Every Watermill topic orderflow publishes to, with the JSON Schema of each
message's payload and its metadata (Watermill's message metadata: the headers here).

**Delivery.** At least once, in commit order per topic: a message is written in the
same PostgreSQL transaction as the events it carries, and a consumer group reads a
topic in the order the transactions committed (watermill-sql's transaction-id
scheme), never skipping a late commit. A consumer deduplicates by the message UUID:
for an event it is the event id; for a command, a UUID derived from the command id
(the command_id header has the id itself). There is no order across topics.

**Versions.** Each event carries its schema version (the schema_version header);
this document describes the current version. A field is never removed, retyped or
made required within a version: such a change is a new version, and orderflow
upcasts stored events of older versions. Fields may be added within a version:
ignore the fields you do not know.

**Personal data.** Fields marked x-personal (names, addresses) are sealed with their
customer's key ("pii:1:<key id>:<ciphertext>"): consumers cannot read them, and once
the customer is forgotten nobody can. The x-personal fields are exactly those.

**Subscribing.** With watermill-sql (see the x-watermill-sql binding): its
DefaultPostgreSQLSchema and DefaultPostgreSQLOffsetsAdapter, schema initialisation
off (the tables exist), and a consumer group of your own: a new name starts from the
beginning of the topic, and a name is permanent (renaming one replays everything).
With the optional NATS JetStream bridge, the same messages on subjects named after
the topics.`

func servers() map[string]Server {
	return map[string]Server{
		"postgres": {
			Host: "{host}", Protocol: "postgresql", Title: "orderflow's PostgreSQL (Watermill SQL topics)",
			Description: "The database orderflow writes its events to: each topic is a table, each consumer group a row in the topic's offsets table.",
			Variables:   map[string]Variable{"host": {Default: "127.0.0.1:5432", Description: "the database's host:port (DATABASE_URL)"}},
			WatermillSQL: &SQLBinding{
				Package:        reflect.TypeFor[wsql.DefaultPostgreSQLSchema]().PkgPath(),
				SchemaAdapter:  reflect.TypeFor[wsql.DefaultPostgreSQLSchema]().Name(),
				OffsetsAdapter: reflect.TypeFor[wsql.DefaultPostgreSQLOffsetsAdapter]().Name(),
			},
		},
		"nats": {
			Host: "{host}", Protocol: "nats", Title: "NATS JetStream (optional bridge)",
			Description: "With ORDERFLOW_NATS_URL, orderflow's projector forwards the topics (poison aside) to NATS JetStream: " +
				"subject and stream named after the topic, the metadata as headers, the message UUID as Nats-Msg-Id " +
				"(JetStream drops a redelivery within its duplicate window) and as _watermill_message_uuid. " +
				"Each message once, in commit order per topic. While NATS is away the messages wait in orderflow's outbox " +
				"and are forwarded once it is back; the streams' limits (age, size, duplicate window) are orderflow's settings " +
				"(see x-nats-jetstream.streamLimits on each channel).",
			Variables: map[string]Variable{"host": {Default: "127.0.0.1:4222", Description: "the NATS server (ORDERFLOW_NATS_URL)"}},
		},
	}
}

// reservedGroups are orderflow's own consumer groups by topic: a consumer
// picks another name.
func reservedGroups() map[string][]string {
	out := map[string][]string{}
	for _, p := range projections.All() {
		out[p.Topic()] = append(out[p.Topic()], p.Name)
	}
	out[sagas.Starter(0).Topic] = append(out[sagas.Starter(0).Topic], sagas.StarterGroup)
	for _, t := range outbox.Topics {
		out[t] = append(out[t], bridge.ConsumerGroup)
	}
	for _, groups := range out {
		slices.Sort(groups)
	}
	return out
}

var channelDescriptions = map[string]string{
	outbox.CommandsTopic: "Every logged command, accepted or rejected, with the events it caused (references to the events on the event topics).",
	outbox.PoisonTopic:   "Messages one of orderflow's own handlers gave up on after its retries: the original message, with the reason and where it came from.",
}

func channel(topic string, names []string) Channel {
	schema, offsets := wsql.DefaultPostgreSQLSchema{}, wsql.DefaultPostgreSQLOffsetsAdapter{}
	desc, ok := channelDescriptions[topic]
	if !ok {
		desc = "The events of the " + strings.TrimSuffix(topic, "_events") + " streams, each message one event."
	}
	ch := Channel{
		Address: topic, Title: topic, Description: desc,
		Servers:  []Ref{{"#/servers/postgres"}},
		Messages: map[string]Ref{},
		Delivery: Delivery{Guarantee: "at-least-once", Order: "commit order within the topic", DeduplicateBy: "message UUID"},
		WatermillSQL: SQLBinding{
			Package: reflect.TypeOf(schema).PkgPath(), SchemaAdapter: reflect.TypeOf(schema).Name(),
			OffsetsAdapter: reflect.TypeOf(offsets).Name(),
			MessagesTable:  strings.Trim(schema.MessagesTable(topic), `"`),
			OffsetsTable:   strings.Trim(offsets.MessagesOffsetsTable(topic), `"`),
			ReservedGroups: reservedGroups()[topic],
		},
	}
	if slices.Contains(outbox.Topics, topic) {
		ch.Servers = append(ch.Servers, Ref{"#/servers/nats"})
		ch.NATS = natsBinding(topic)
	}
	for _, n := range names {
		ch.Messages[n] = Ref{"#/components/messages/" + n}
	}
	return ch
}

func eventMessage(e eventstore.EventInfo) (Message, error) {
	payload, err := payloadSchema(reflect.New(e.Type).Interface(), nil)
	if err != nil {
		return Message{}, fmt.Errorf("asyncapi: event %s: %w", e.Name, err)
	}
	return Message{
		Name: e.Name, Title: e.Name, ContentType: "application/json",
		Summary:       fmt.Sprintf("Event %s (stream type %s), schema version %d.", e.Name, e.StreamType, e.Version),
		CorrelationID: &CorrelationID{Description: "the correlation id of the request that began the work", Location: "$message.header#/" + outbox.MetaCorrelationID},
		Headers:       eventHeaders(e),
		Payload:       payload,
		SchemaVersion: e.Version,
		StreamType:    e.StreamType,
	}, nil
}

func commandMessage(d commands.Definition) (Message, error) {
	p := d.NewPayload()
	payload, err := payloadSchema(p, d.PersonalFields(p))
	if err != nil {
		return Message{}, fmt.Errorf("asyncapi: command %s: %w", d.Name, err)
	}
	// The message's payload is a commandlog.Logged; its payload property
	// is the command's own.
	rec, err := reflectSchema(reflect.TypeFor[commandlog.Logged]())
	if err != nil {
		return Message{}, err
	}
	typ, _ := rec.Properties.Get("type")
	typ.Const = d.Name
	rec.Properties.Set("payload", payload)
	summary := fmt.Sprintf("Command %s (stream type %s), logged with its outcome and the events it caused.", d.Name, d.StreamType)
	if d.Internal() {
		summary += " Sent only by orderflow's own processes."
	}
	return Message{
		Name: d.Name, Title: d.Name, ContentType: "application/json", Summary: summary,
		CorrelationID: &CorrelationID{Description: "the correlation id of the request that began the work", Location: "$message.header#/" + outbox.MetaCorrelationID},
		Headers:       commandHeaders(d),
		Payload:       rec,
		StreamType:    d.StreamType,
	}, nil
}

func poisonMessage() Message {
	h := &jsonschema.Schema{Type: "object", Properties: jsonschema.NewProperties(),
		Description: "The original message's headers, and where and why it was poisoned."}
	for _, k := range []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey} {
		h.Properties.Set(k, &jsonschema.Schema{Type: "string", Description: headerDocs[k].desc})
		h.Required = append(h.Required, k)
	}
	return Message{
		Name: "poisoned", Title: "poisoned", ContentType: "application/json",
		Summary: "A message of another topic that a handler gave up on: its payload unchanged (the schema of its own message type), its headers plus the poisoning ones.",
		Headers: h,
		Payload: &jsonschema.Schema{Description: "the original message's payload, unchanged"},
	}
}

// reflector reflects Go types to self-contained JSON Schemas: no
// references, fields without omitempty required, and unknown fields
// allowed (a field added within a schema version is not a break).
func reflector() *jsonschema.Reflector {
	return &jsonschema.Reflector{
		DoNotReference:            true,
		AllowAdditionalProperties: true,
		Anonymous:                 true,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[uuid.UUID]() {
				return &jsonschema.Schema{Type: "string", Format: "uuid"}
			}
			return nil
		},
	}
}

func reflectSchema(t reflect.Type) (*jsonschema.Schema, error) {
	s := reflector().ReflectFromType(t)
	s.Version, s.ID = "", ""
	if s.Type == "" && s.Properties == nil {
		return nil, fmt.Errorf("type %s has no schema", t)
	}
	return s, nil
}

// payloadSchema is the schema of payload v (a pointer to a struct), with
// its personal fields marked: those personal returns (the fields of v the
// bus seals) and those of every struct type with a PersonalFields method.
func payloadSchema(v any, personal []*string) (*jsonschema.Schema, error) {
	s, err := reflectSchema(reflect.TypeOf(v).Elem())
	if err != nil {
		return nil, err
	}
	paths, err := personalPaths(reflect.ValueOf(v).Elem(), personal)
	if err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		if err := markPersonal(s, strings.Split(p, ".")); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// markPersonal marks the property at path as a sealed personal field.
func markPersonal(s *jsonschema.Schema, path []string) error {
	for i, name := range path {
		if s.Properties == nil {
			return fmt.Errorf("personal field %s: no property %s", strings.Join(path, "."), name)
		}
		next, ok := s.Properties.Get(name)
		if !ok {
			return fmt.Errorf("personal field %s: no property %s", strings.Join(path, "."), name)
		}
		s = next
		if i == len(path)-1 {
			if s.Type != "string" {
				return fmt.Errorf("personal field %s is not a string", strings.Join(path, "."))
			}
			s.Pattern = SealedPattern
			s.Description = "personal: sealed with the customer's key (pii:1:…); unreadable to consumers"
			if s.Extras == nil {
				s.Extras = map[string]any{}
			}
			s.Extras["x-personal"] = true
		}
	}
	return nil
}

type personalFielder interface{ PersonalFields() []*string }

// personalPaths finds the JSON paths of the personal fields of the struct
// v: the string fields whose pointers personal returns, or a
// PersonalFields method of v or of a struct nested in it.
func personalPaths(v reflect.Value, personal []*string) (map[string]bool, error) {
	strs := map[*string]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		if pf, ok := v.Addr().Interface().(personalFielder); ok {
			personal = append(personal, pf.PersonalFields()...)
		}
		for i := range v.NumField() {
			f, fv := v.Type().Field(i), v.Field(i)
			name := jsonName(f)
			if name == "" {
				continue
			}
			switch fv.Kind() {
			case reflect.String:
				strs[fv.Addr().Interface().(*string)] = prefix + name
			case reflect.Struct:
				walk(fv, prefix+name+".")
			}
		}
	}
	walk(v, "")
	out := map[string]bool{}
	for _, p := range personal {
		path, ok := strs[p]
		if !ok {
			return nil, fmt.Errorf("a personal field of %s is not one of its string fields", v.Type())
		}
		out[path] = true
	}
	return out, nil
}

func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}
