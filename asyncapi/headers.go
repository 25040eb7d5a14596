package asyncapi

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/invopop/jsonschema"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// headerDoc documents one metadata key; every key a message carries must
// have one (Generate fails otherwise).
type headerDoc struct {
	desc, format, pattern string
	enum                  []string
}

const digits = `^[0-9]+$`

var headerDocs = map[string]headerDoc{
	outbox.MetaEventID:        {desc: "the event id; also the message UUID", format: "uuid"},
	outbox.MetaEventType:      {desc: "the event's wire name"},
	outbox.MetaSchemaVersion:  {desc: "the schema version of the payload", pattern: digits},
	outbox.MetaStreamType:     {desc: "the stream type (order, inventory, wallet, shipment)"},
	outbox.MetaStreamID:       {desc: "the stream's id (the order id, the SKU, the wallet id, the shipment id)"},
	outbox.MetaStreamVersion:  {desc: "the event's version within its stream (1 for the first); for a command, the stream's version after it", pattern: digits},
	outbox.MetaGlobalPosition: {desc: "the event's position in orderflow's global event log (for a command, its last event's; 0 when it caused none)", pattern: digits},
	outbox.MetaRecordedAt:     {desc: "when it was recorded (RFC 3339)", format: "date-time"},
	outbox.MetaCorrelationID:  {desc: "the id of the request that began the work (the first command's id unless the client set one)"},
	outbox.MetaCausationID:    {desc: "what caused it: for an event, its command's id; for a command, the event or saga step that sent it (may be empty)"},
	outbox.MetaActor:          {desc: "who sent the command (a token's subject, or orderflow's saga)"},
	outbox.MetaOnBehalfOf:     {desc: "whom an operator or the saga acted for, when not itself"},
	outbox.MetaCustomerID:     {desc: "the customer who owns the stream, when it has one"},
	outbox.MetaTraceParent:    {desc: "the W3C trace context of the command that wrote it: continue its trace"},

	commandlog.MetaCommandID:   {desc: "the command's id (the message UUID is derived from it)"},
	commandlog.MetaCommandType: {desc: "the command's type"},
	commandlog.MetaStatus:      {desc: "the command's outcome", enum: []string{commandlog.StatusAccepted, commandlog.StatusRejected}},
	commandlog.MetaSeq:         {desc: "the command's position in the command log", pattern: digits},

	middleware.ReasonForPoisonedKey:  {desc: "why the handler gave up (its last error)"},
	middleware.PoisonedTopicKey:      {desc: "the topic the message came from"},
	middleware.PoisonedHandlerKey:    {desc: "the handler that gave up"},
	middleware.PoisonedSubscriberKey: {desc: "the subscriber that read it"},
}

// headers is the schema of metadata: every key full has, required those
// that minimal has too (the keys a message always carries).
func headers(full, minimal message.Metadata, consts map[string]string) *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "object", Properties: jsonschema.NewProperties(),
		Description: "Watermill metadata: every value is a string."}
	for _, k := range slices.Sorted(maps.Keys(full)) {
		d, ok := headerDocs[k]
		if !ok {
			panic(fmt.Sprintf("asyncapi: metadata key %q is not documented", k))
		}
		p := &jsonschema.Schema{Type: "string", Description: d.desc, Format: d.format, Pattern: d.pattern}
		for _, e := range d.enum {
			p.Enum = append(p.Enum, e)
		}
		if c, ok := consts[k]; ok {
			p.Const, p.Pattern = c, ""
		}
		s.Properties.Set(k, p)
		if _, always := minimal[k]; always {
			s.Required = append(s.Required, k)
		}
	}
	return s
}

// eventHeaders derives the metadata of an event's message from the outbox's
// own message: one with every optional field set, one with none.
func eventHeaders(e eventstore.EventInfo) *jsonschema.Schema {
	full := eventstore.Envelope{EventID: uuid.New(), RecordedAt: time.Now(), OnBehalfOf: "x", CustomerID: "x", TraceParent: "x"}
	return headers(outbox.Message(full).Metadata, outbox.Message(eventstore.Envelope{}).Metadata, map[string]string{
		outbox.MetaEventType: e.Name, outbox.MetaStreamType: e.StreamType, outbox.MetaSchemaVersion: strconv.Itoa(e.Version),
	})
}

// commandHeaders derives the metadata of a command's message from the
// command log's own message.
func commandHeaders(d commands.Definition) *jsonschema.Schema {
	m, err := commandlog.Message(commandlog.Record{}, nil)
	if err != nil {
		panic(err)
	}
	return headers(m.Metadata, m.Metadata, map[string]string{commandlog.MetaCommandType: d.Name, outbox.MetaStreamType: d.StreamType})
}
