// Package bridge forwards orderflow's Watermill topics to an outside broker:
// NATS JetStream, through watermill-nats. Each topic is read by its own
// consumer group ("nats_bridge") and published with the message UUID as
// JetStream's Nats-Msg-Id, so a redelivery inside the stream's duplicate
// window is dropped by the broker.
package bridge

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/outbox"
)

// ConsumerGroup is the bridge's consumer group on every topic: permanent.
const ConsumerGroup = "nats_bridge"

// NATS connects to url and returns one delivery handler per topic of outbox.Topics and the
// publisher to close on shutdown. On NATS, the subject and the JetStream
// stream are both named after the topic (created when missing).
func NATS(url string, logger watermill.LoggerAdapter) ([]delivery.Handler, message.Publisher, error) {
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{
		URL:         url,
		NatsOptions: []nats.Option{nats.Name("orderflow-bridge"), nats.Timeout(5 * time.Second)},
		Marshaler:   &wnats.NATSMarshaler{},
		JetStream:   wnats.JetStreamConfig{AutoProvision: true, TrackMsgId: true},
	}, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	var hs []delivery.Handler
	for _, topic := range outbox.Topics {
		hs = append(hs, delivery.Handler{
			Name: "nats_bridge_" + topic, ConsumerGroup: ConsumerGroup, Topic: topic,
			Handle: func(_ context.Context, msg *message.Message) error {
				out := message.NewMessage(msg.UUID, msg.Payload)
				for k, v := range msg.Metadata {
					out.Metadata.Set(k, v)
				}
				if err := pub.Publish(topic, out); err != nil {
					// NATS being down is not the message's fault: keep
					// redelivering it instead of poisoning it.
					return delivery.Transient(err)
				}
				return nil
			},
		})
	}
	return hs, pub, nil
}
