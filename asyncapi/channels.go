package asyncapi

// The document's servers, channels and messages: the PostgreSQL topics and
// their NATS bridge, one channel per topic with its delivery semantics and
// reserved consumer groups, and a message per event type, command type and
// poisoned message.

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/invopop/jsonschema"

	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows/sagas"
)

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
	outbox.CommandsTopic: "Every logged command, accepted or rejected, with the events it caused (references to the events on the event topics). Its table is a view over the command log: read it as any topic; nothing publishes to it.",
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
