package projections_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
)

// TestMeasureLagWithAPoisonedHotStream measures (logs, asserts nothing)
// how long other streams' top-ups take to reach the wallets read model and
// another consumer group of the same topic while one hot wallet's events
// are all poisoned: its version 2 fails in the projection, every later one
// is a gap. The delivery settings are the service's defaults. Run it with
//
//	ORDERFLOW_MEASURE=1 go test ./projections/ -run TestMeasureLag -v -count=1
func TestMeasureLagWithAPoisonedHotStream(t *testing.T) {
	if os.Getenv("ORDERFLOW_MEASURE") == "" {
		t.Skip("a measurement: set ORDERFLOW_MEASURE=1")
	}
	e := newEnv(t)
	wake := outbox.NewSignal()
	store := eventstore.New(e.pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50})
	e.bus = commands.NewBus(e.pool, store, commands.Definitions(), commands.Options{Retries: 20, Committed: wake.Raise})
	hot := "w-hot-" + uuid.NewString()
	var handlers []delivery.Handler
	for _, p := range projections.All() {
		if p.Name == "wallets_projection" {
			apply := p.OnEvents
			p.OnEvents = func(ctx context.Context, tx pgx.Tx, es []eventstore.Envelope) error {
				if slices.ContainsFunc(es, func(e eventstore.Envelope) bool { return e.StreamID == hot && e.StreamVersion == 2 }) {
					return errors.New("simulated bug")
				}
				return apply(ctx, tx, es)
			}
		}
		handlers = append(handlers, p.Handler(e.store.Registry()))
	}
	var mu sync.Mutex
	received := map[string]time.Time{} // wallet event id -> when the other group got it
	handlers = append(handlers, delivery.Handler{Name: "lag-" + uuid.NewString(), ConsumerGroup: "lag-" + uuid.NewString(), Topic: "wallet_events",
		Handle: func(_ context.Context, m *message.Message) error {
			mu.Lock()
			received[m.UUID] = time.Now()
			mu.Unlock()
			return nil
		}})
	router, err := delivery.NewRouter(e.pool, delivery.RouterConfig{MaxRetries: 3, Wake: wake, Logger: quiet}, handlers...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-router.Running()

	others := make([]string, 20)
	for i := range others {
		others[i] = "w-" + uuid.NewString()
		e.do("OpenWallet", commands.OpenWallet{WalletID: others[i], CustomerID: "c", Currency: "EUR"})
	}
	e.do("OpenWallet", commands.OpenWallet{WalletID: hot, CustomerID: "c", Currency: "EUR"})
	// The hot stream: a top-up every few milliseconds, each poisoned.
	hotCtx, stopHot := context.WithCancel(e.ctx)
	hotDone := make(chan int)
	go func() {
		n := 0
		for hotCtx.Err() == nil {
			e.do("TopUpWallet", commands.TopUpWallet{WalletID: hot, Amount: 1, Reason: "test funds"})
			n++
			time.Sleep(5 * time.Millisecond)
		}
		hotDone <- n
	}()
	var readModel, group []time.Duration
	for i := range 200 {
		w := others[i%len(others)]
		rec := e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"})
		committed := time.Now()
		for {
			got, err := e.reader.Wallet(e.ctx, w)
			if err == nil && got.Version >= rec.StreamVersion {
				break
			}
			time.Sleep(time.Millisecond)
		}
		readModel = append(readModel, time.Since(committed))
		for {
			mu.Lock()
			at, ok := received[rec.EventIDs[0].String()]
			mu.Unlock()
			if ok {
				group = append(group, at.Sub(committed))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	stopHot()
	hots := <-hotDone
	poisoned, err := e.reader.Poison(e.ctx, true, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	stats := func(d []time.Duration) (p50, p99, maxd time.Duration) {
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100], d[len(d)-1]
	}
	p50, p99, mx := stats(readModel)
	t.Logf("wallets read model, other streams: p50 %v p99 %v max %v (%d top-ups)", p50, p99, mx, len(readModel))
	p50, p99, mx = stats(group)
	t.Logf("another consumer group of wallet_events: p50 %v p99 %v max %v", p50, p99, mx)
	t.Logf("hot stream: %d top-ups, %d messages poisoned", hots, len(poisoned))
}
