package asyncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/outbox"
)

// Validator checks messages against a document's schemas, strictly: a
// payload field or a metadata key the document does not describe fails too
// (the published schemas let consumers ignore unknown fields; orderflow
// itself must describe every field it writes). A sealed value
// ("pii:1:…") outside an x-personal field fails, as does an x-personal
// field that is not sealed.
type Validator struct {
	msgs map[string]compiled
}

type compiled struct {
	topic            string
	headers, payload *jsonschema.Schema
	schema           map[string]any // the payload schema, to find x-personal fields
}

// NewValidator compiles every message's headers and payload schemas of doc.
func NewValidator(doc []byte) (*Validator, error) {
	msgs, err := messagesOf(doc)
	if err != nil {
		return nil, err
	}
	v := &Validator{msgs: map[string]compiled{}}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, name := range slices.Sorted(maps.Keys(msgs)) {
		m := msgs[name]
		topic, _ := m["x-topic"].(string)
		cm := compiled{topic: topic, schema: object(m["payload"])}
		strict := topic != outbox.PoisonTopic // a poisoned message also carries its original's headers
		for _, part := range []string{"headers", "payload"} {
			url := "mem:///" + name + "/" + part + ".json"
			s, err := roundTrip(m[part], strict)
			if err != nil {
				return nil, err
			}
			if err := c.AddResource(url, s); err != nil {
				return nil, err
			}
			sch, err := c.Compile(url)
			if err != nil {
				return nil, fmt.Errorf("schema of %s %s: %w", name, part, err)
			}
			if part == "headers" {
				cm.headers = sch
			} else {
				cm.payload = sch
			}
		}
		v.msgs[name] = cm
	}
	return v, nil
}

// roundTrip copies a schema as the validator's library reads JSON; strict
// closes every object that lists its properties.
func roundTrip(schema any, strict bool) (any, error) {
	raw, err := json.Marshal(schema)
	if err != nil {
		return nil, err
	}
	s, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if strict {
		closeObjects(s)
	}
	return s, nil
}

func closeObjects(v any) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	if props, ok := m["properties"].(map[string]any); ok {
		if _, set := m["additionalProperties"]; !set {
			m["additionalProperties"] = false
		}
		for _, p := range props {
			closeObjects(p)
		}
	}
	closeObjects(m["items"])
}

// Check validates one stored message of topic and returns what is wrong
// with it (nothing when it matches its schemas).
func (v *Validator) Check(topic, uuid string, metadata map[string]string, payload []byte) []string {
	name, fails := v.messageType(topic, uuid, metadata)
	if name == "" {
		return fails
	}
	m := v.msgs[name]
	if topic == outbox.PoisonTopic {
		if metadata[middleware.PoisonedTopicKey] == outbox.PoisonTopic {
			return append(fails, "a poisoned message from the poison topic itself")
		}
		// The original message as it was, besides the poisoning headers.
		orig := maps.Clone(metadata)
		for _, k := range []string{middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey} {
			delete(orig, k)
		}
		fails = append(fails, v.validate(name, m.headers, metadataDoc(metadata), "headers")...)
		return append(fails, v.Check(metadata[middleware.PoisonedTopicKey], uuid, orig, payload)...)
	}
	fails = append(fails, v.validate(name, m.headers, metadataDoc(metadata), "headers")...)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return append(fails, fmt.Sprintf("%s: payload is not JSON: %v", name, err))
	}
	fails = append(fails, v.validate(name, m.payload, doc, "payload")...)
	var generic any
	_ = json.Unmarshal(payload, &generic)
	for _, path := range sealedOutsidePersonal(m.schema, generic, "") {
		fails = append(fails, fmt.Sprintf("%s: payload field %s holds a sealed value but is not marked x-personal", name, path))
	}
	return fails
}

// messageType names the message type of a stored message by its topic and
// metadata, and checks that its UUID is the one consumers deduplicate by.
func (v *Validator) messageType(topic, uuid string, md map[string]string) (string, []string) {
	var name string
	switch topic {
	case outbox.CommandsTopic:
		name = md[commandlog.MetaCommandType]
		if want := commandlog.MessageUUID(md[commandlog.MetaCommandID]); uuid != want {
			return "", []string{fmt.Sprintf("command %s: message UUID %s is not the one derived from its command id (%s)", md[commandlog.MetaCommandID], uuid, want)}
		}
	case outbox.PoisonTopic:
		name = "poisoned"
	default:
		name = md[outbox.MetaEventType]
		if uuid != md[outbox.MetaEventID] {
			return "", []string{fmt.Sprintf("event %s: message UUID %s is not its event id", md[outbox.MetaEventID], uuid)}
		}
	}
	m, ok := v.msgs[name]
	if !ok {
		return "", []string{fmt.Sprintf("topic %s: message %s of type %q is not in the document", topic, uuid, name)}
	}
	if m.topic != topic {
		return "", []string{fmt.Sprintf("topic %s: message %s is a %s, which the document puts on %s", topic, uuid, name, m.topic)}
	}
	return name, nil
}

func metadataDoc(md map[string]string) any {
	out := map[string]any{}
	for k, v := range md {
		out[k] = v
	}
	return out
}

func (v *Validator) validate(name string, s *jsonschema.Schema, doc any, part string) []string {
	err := s.Validate(doc)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []string{fmt.Sprintf("%s %s: %v", name, part, err)}
	}
	var out []string
	for _, u := range ve.BasicOutput().Errors {
		if u.Error == nil || u.InstanceLocation == "" && len(ve.Causes) > 0 && u.KeywordLocation == "" {
			continue
		}
		msg, _ := json.Marshal(u.Error)
		loc := u.InstanceLocation
		if loc == "" {
			loc = "/"
		}
		out = append(out, fmt.Sprintf("%s %s at %q: %s", name, part, loc, strings.Trim(string(msg), `"`)))
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("%s %s: %v", name, part, err))
	}
	return out
}

// sealedOutsidePersonal returns the paths of sealed values in fields that
// schema does not mark x-personal.
func sealedOutsidePersonal(schema map[string]any, v any, path string) []string {
	var out []string
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, "pii:1:") && schema["x-personal"] != true {
			out = append(out, strings.TrimPrefix(path, "."))
		}
	case map[string]any:
		props := object(schema["properties"])
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, sealedOutsidePersonal(object(props[k]), v[k], path+"."+k)...)
		}
	case []any:
		for i, e := range v {
			out = append(out, sealedOutsidePersonal(object(schema["items"]), e, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

// CheckTopics reads every message of every topic table, in commit order,
// and validates it against the generated document. It returns one line per
// failure, naming the topic and offset.
func CheckTopics(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	doc, err := JSON()
	if err != nil {
		return nil, err
	}
	v, err := NewValidator(doc)
	if err != nil {
		return nil, err
	}
	var fails []string
	for _, topic := range append(slices.Clone(outbox.Topics), outbox.PoisonTopic) {
		var tx uint64
		var offset int64
		for {
			msgs, err := outbox.ReadTopic(ctx, pool, topic, tx, offset, 1000)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", topic, err)
			}
			for _, m := range msgs {
				for _, f := range v.Check(topic, m.UUID, m.Metadata, m.Payload) {
					fails = append(fails, fmt.Sprintf("%s offset %d: %s", topic, m.Offset, f))
				}
			}
			if len(msgs) < 1000 {
				break
			}
			tx, offset = msgs[len(msgs)-1].TransactionID, msgs[len(msgs)-1].Offset
		}
	}
	return fails, nil
}
