// Package asyncapi is the contract of orderflow's Watermill topics for event
// consumers: an AsyncAPI 3 document generated from the event registry, the
// command catalog and the Go types of their payloads (JSON Schemas reflected
// by invopop/jsonschema), never written by hand. It also holds what keeps
// the contract true: the check of a new document against the committed one
// (Compatible), the check of stored messages against their schemas
// (CheckTopics) and the page that renders the document.
//
// asyncapi.go holds the document's types and Generate; channels.go its
// servers, channels and messages; schema.go the payloads' JSON Schemas;
// headers.go the metadata's; compat.go the compatibility check; validate.go
// the check of stored messages; page.go the page.
package asyncapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/invopop/jsonschema"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/outbox"
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
