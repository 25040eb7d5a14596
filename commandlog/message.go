package commandlog

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/outbox"
)

// EventRef names one event a command caused.
type EventRef struct {
	EventID        uuid.UUID `json:"event_id"`
	EventType      string    `json:"event_type"`
	StreamType     string    `json:"stream_type"`
	StreamID       string    `json:"stream_id"`
	StreamVersion  int64     `json:"stream_version"`
	GlobalPosition int64     `json:"global_position"`
	RecordedAt     time.Time `json:"recorded_at"`
}

// Logged is a command with the events it caused: the payload of a message on
// the commands topic, and what the command log's live stream sends.
type Logged struct {
	Record
	Events []EventRef `json:"events"`
}

// Metadata keys of a commands-topic message.
const (
	MetaCommandID   = "command_id"
	MetaCommandType = "command_type"
	MetaStatus      = "status"
	MetaSeq         = "seq"
)

// commandNamespace derives message UUIDs from command ids, which may be
// longer than Watermill's 36-character uuid column.
var commandNamespace = uuid.MustParse("6f1d0c52-8d55-4a3c-9f0e-2b7a4f7e9c11")

// MessageUUID is the commands-topic message id of a command: stable, so
// consumers deduplicate by it.
func MessageUUID(commandID string) string {
	return uuid.NewSHA1(commandNamespace, []byte(commandID)).String()
}

func refs(envs []eventstore.Envelope) []EventRef {
	out := make([]EventRef, 0, len(envs))
	for _, e := range envs {
		out = append(out, EventRef{EventID: e.EventID, EventType: e.EventType, StreamType: e.StreamType, StreamID: e.StreamID,
			StreamVersion: e.StreamVersion, GlobalPosition: e.GlobalPosition, RecordedAt: e.RecordedAt})
	}
	return out
}

// Message is the command's message on the commands topic.
func Message(rec Record, envs []eventstore.Envelope) (*message.Message, error) {
	payload, err := json.Marshal(Logged{Record: rec, Events: refs(envs)})
	if err != nil {
		return nil, err
	}
	m := message.NewMessage(MessageUUID(rec.CommandID), payload)
	m.Metadata = message.Metadata{
		MetaCommandID:             rec.CommandID,
		MetaCommandType:           rec.Type,
		MetaStatus:                rec.Status,
		MetaSeq:                   strconv.FormatInt(rec.Seq, 10),
		outbox.MetaStreamType:     rec.StreamType,
		outbox.MetaStreamID:       rec.StreamID,
		outbox.MetaGlobalPosition: strconv.FormatInt(rec.GlobalPosition, 10),
		outbox.MetaCorrelationID:  rec.CorrelationID,
		outbox.MetaCausationID:    rec.CausationID,
		outbox.MetaActor:          rec.Actor,
		outbox.MetaRecordedAt:     rec.RecordedAt.Format(time.RFC3339Nano),
	}
	return m, nil
}

// DecodeLogged reads a commands-topic message.
func DecodeLogged(m *message.Message) (Logged, error) {
	var l Logged
	if err := json.Unmarshal(m.Payload, &l); err != nil {
		return l, fmt.Errorf("command message %s: %w", m.UUID, err)
	}
	return l, nil
}
