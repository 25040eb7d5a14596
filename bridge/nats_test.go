package bridge_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func natsURL() string {
	if u := os.Getenv("ORDERFLOW_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// unavailable skips a test whose service is missing — except in CI (CI
// set), where a test that silently tests nothing is a failure: .ci/run
// installs and starts what the tests need.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but "+format, args...)
	}
	t.Skipf(format, args...)
}

func TestBridgeForwardsTopicsToJetStreamOnce(t *testing.T) {
	nc, err := nats.Connect(natsURL(), nats.Timeout(2*time.Second))
	if err != nil {
		unavailable(t, "no NATS reachable at %s (set ORDERFLOW_TEST_NATS_URL): %v", natsURL(), err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		unavailable(t, "NATS at %s has no JetStream: %v", natsURL(), err)
	}

	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{})
	logger := watermill.NewSlogLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	handlers, pub, err := bridge.NATS(natsURL(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond}, handlers...)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = router.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	<-router.Running()

	w := "w-" + uuid.NewString()
	payload, _ := json.Marshal(commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
	rec, err := bus.Dispatch(ctx, commands.Request{Type: "OpenWallet", Payload: payload, Internal: true})
	if err != nil {
		t.Fatal(err)
	}
	eventID := rec.EventIDs[0].String()

	// The event arrives on the wallet_events stream with its id as Nats-Msg-Id
	// and the envelope's metadata as headers.
	find := func() (*nats.RawStreamMsg, bool) {
		info, err := js.StreamInfo("wallet_events")
		if err != nil {
			return nil, false
		}
		for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && info.State.LastSeq-seq < 200; seq-- {
			m, err := js.GetMsg("wallet_events", seq)
			if err == nil && m.Header.Get(nats.MsgIdHdr) == eventID {
				return m, true
			}
		}
		return nil, false
	}
	var got *nats.RawStreamMsg
	for deadline := time.Now().Add(30 * time.Second); got == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the event did not reach JetStream")
		}
		got, _ = find()
	}
	if got.Header.Get("event_type") != "wallet.opened" || got.Header.Get("stream_id") != w || got.Header.Get("correlation_id") != rec.CorrelationID {
		t.Fatalf("headers %v", got.Header)
	}

	// A redelivery (the same message published again) is dropped by JetStream.
	before, _ := js.StreamInfo("wallet_events")
	again, err := wnats.NewPublisher(wnats.PublisherConfig{URL: natsURL(), Marshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{AutoProvision: true, TrackMsgId: true}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Publish("wallet_events", message.NewMessage(eventID, got.Data)); err != nil {
		t.Fatal(err)
	}
	after, _ := js.StreamInfo("wallet_events")
	if after.State.Msgs != before.State.Msgs {
		t.Fatalf("a redelivered message was stored again: %d -> %d messages", before.State.Msgs, after.State.Msgs)
	}
}
