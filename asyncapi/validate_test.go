package asyncapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

const sealed = "pii:1:0190a8f2-7c1e-7a3b-9c2d-4e5f6a7b8c9d:AbC-_09xyz"

func validator(t *testing.T) *Validator {
	t.Helper()
	doc, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// storedEvent is the outbox's own message of an event with payload.
func storedEvent(eventType, streamType, payload string) (string, map[string]string, []byte) {
	m := outbox.Message(eventstore.Envelope{EventID: uuid.New(), EventType: eventType, StreamType: streamType, StreamID: "s1",
		StreamVersion: 1, GlobalPosition: 7, SchemaVersion: 1, RecordedAt: time.Now(), CorrelationID: "c", CausationID: "k", Actor: "a",
		CustomerID: "c1", Data: json.RawMessage(payload)})
	return m.UUID, m.Metadata, m.Payload
}

const placed = `{"order_id":"o1","customer_id":"c1","wallet_id":"w1","currency":"EUR","lines":[{"sku":"s","quantity":1,"unit_price":5}],"total":5,
	"shipping_address":{"name":"` + sealed + `","line1":"` + sealed + `","city":"` + sealed + `","postal_code":"` + sealed + `","country":"FR"}}`

func TestValidatorChecksEachMessageAgainstItsSchemas(t *testing.T) {
	v := validator(t)
	cases := []struct {
		name, payload string
		edit          func(md map[string]string) (uuid string)
		want          string // "" = valid
	}{
		{"a placed order", placed, nil, ""},
		{"an undocumented field", strings.Replace(placed, `"total":5`, `"total":5,"discount":1`, 1), nil, `order.placed payload at "/": additional properties 'discount' not allowed`},
		{"a retyped field", strings.Replace(placed, `"total":5`, `"total":"5"`, 1), nil, `order.placed payload at "/total"`},
		{"a missing required field", strings.Replace(placed, `"total":5,`, ``, 1), nil, `missing property 'total'`},
		{"a personal field in clear", strings.Replace(placed, `"city":"`+sealed, `"city":"Paris`, 1), nil, `order.placed payload at "/shipping_address/city"`},
		{"a sealed value outside a personal field", strings.Replace(placed, `"country":"FR"`, `"country":"`+sealed+`"`, 1), nil,
			"payload field shipping_address.country holds a sealed value but is not marked x-personal"},
		{"an undocumented metadata key", placed, func(md map[string]string) string { md["tenant"] = "t"; return "" }, `order.placed headers at "/": additional properties 'tenant' not allowed`},
		{"a schema version not the document's", placed, func(md map[string]string) string { md[outbox.MetaSchemaVersion] = "2"; return "" }, `headers at "/schema_version"`},
		{"a message UUID that is not the event id", placed, func(md map[string]string) string { return uuid.NewString() }, "is not its event id"},
		{"an event type the document lacks", placed, func(md map[string]string) string { md[outbox.MetaEventType] = "order.teleported"; return "" },
			`of type "order.teleported" is not in the document`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, md, payload := storedEvent("order.placed", "order", c.payload)
			if c.edit != nil {
				if other := c.edit(md); other != "" {
					id = other
				}
			}
			fails := v.Check("order_events", id, md, payload)
			if c.want == "" {
				if len(fails) > 0 {
					t.Fatalf("a valid message fails: %v", fails)
				}
				return
			}
			if !strings.Contains(strings.Join(fails, "\n"), c.want) {
				t.Fatalf("got %v, want %q", fails, c.want)
			}
		})
	}
	id, md, payload := storedEvent("order.placed", "order", placed)
	if fails := v.Check("wallet_events", id, md, payload); len(fails) == 0 || !strings.Contains(fails[0], "which the document puts on order_events") {
		t.Fatalf("an event on another topic: %v", fails)
	}
}

func TestValidatorChecksCommandsAndPoisonedMessages(t *testing.T) {
	v := validator(t)
	rec := commandlog.Record{CommandID: "k1", Seq: 3, Type: "OpenWallet", Status: commandlog.StatusAccepted, StreamType: "wallet", StreamID: "w1",
		StreamVersion: 1, GlobalPosition: 9, EventIDs: []uuid.UUID{uuid.New()}, CorrelationID: "k1", Actor: "ops", RecordedAt: time.Now(),
		Payload: json.RawMessage(`{"wallet_id":"w1","customer_id":"c1","currency":"EUR","name":"` + sealed + `"}`)}
	m, err := commandlog.Message(rec, []eventstore.Envelope{{EventID: rec.EventIDs[0], EventType: "wallet.opened", StreamType: "wallet", StreamID: "w1", StreamVersion: 1, GlobalPosition: 9, RecordedAt: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	if fails := v.Check("commands", m.UUID, m.Metadata, m.Payload); len(fails) > 0 {
		t.Fatalf("a valid command fails: %v", fails)
	}
	if fails := v.Check("commands", uuid.NewString(), m.Metadata, m.Payload); len(fails) == 0 {
		t.Fatal("a command message with another UUID passed")
	}
	clear := rec
	clear.Payload = json.RawMessage(`{"wallet_id":"w1","customer_id":"c1","currency":"EUR","name":"Ada"}`)
	cm, _ := commandlog.Message(clear, nil)
	if fails := v.Check("commands", cm.UUID, cm.Metadata, cm.Payload); !strings.Contains(strings.Join(fails, "\n"), `OpenWallet payload at "/payload/name"`) {
		t.Fatalf("a command with a personal field in clear: %v", fails)
	}

	id, md, payload := storedEvent("order.placed", "order", placed)
	md[middleware.ReasonForPoisonedKey], md[middleware.PoisonedTopicKey] = "boom", "order_events"
	md[middleware.PoisonedHandlerKey], md[middleware.PoisonedSubscriberKey] = "orders_projection", "sub"
	if fails := v.Check("poison", id, md, payload); len(fails) > 0 {
		t.Fatalf("a valid poisoned message fails: %v", fails)
	}
	if fails := v.Check("poison", id, md, []byte(strings.Replace(placed, `"total":5`, `"total":"x"`, 1))); len(fails) == 0 {
		t.Fatal("a poisoned message is not checked against its original's schema")
	}
	delete(md, middleware.PoisonedTopicKey)
	if fails := v.Check("poison", id, md, payload); len(fails) == 0 {
		t.Fatal("a poisoned message without its topic passed")
	}
}
