package projections_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
)

// BenchmarkProjectionCatchUp measures events applied per second by one
// projection catching up on a backlog of b.N events (default tuning).
func BenchmarkProjectionCatchUp(b *testing.B) {
	for _, name := range []string{"wallets_projection", "timeline_projection"} {
		b.Run(name, func(b *testing.B) {
			e := newEnv(b)
			p, _ := projections.ByName(name)
			ctx := context.Background()
			w := "w-" + uuid.NewString()
			e.do("OpenWallet", commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
			for range b.N {
				e.do("TopUpWallet", commands.TopUpWallet{WalletID: w, Amount: 1, Reason: "test funds"})
			}
			for _, t := range p.Tables {
				e.pool.Exec(ctx, "DELETE FROM "+t)
			}
			e.pool.Exec(ctx, fmt.Sprintf("DELETE FROM watermill_offsets_%s WHERE consumer_group = $1", p.Topic()), p.Name)
			endTx, endOffset, err := outbox.TopicEnd(ctx, e.pool, p.Topic())
			if err != nil {
				b.Fatal(err)
			}
			// The group starts over: every message of the topic (earlier
			// runs' too) is consumed again.
			var messages int64
			if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM watermill_"+p.Topic()).Scan(&messages); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			e.run(p.Handler(e.store.Registry()))
			// Caught up when the group's offset is the topic's last message
			// (a cheap poll: counting the backlog would compete with it).
			for {
				at, err := outbox.Consumer(ctx, e.pool, p.Topic(), p.Name, false)
				if err != nil {
					b.Fatal(err)
				}
				if at.TransactionID == endTx && at.Seq == endOffset {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			b.ReportMetric(float64(messages)/time.Since(start).Seconds(), "messages/s")
			b.StopTimer()
		})
	}
}

// BenchmarkCommitToVisible measures the lag from a command's commit to its
// effect in the wallets read model, under the sustained load of 32 clients
// (each sends its next command once it has seen its last one), about 1,000
// commands/s on 2 cores.
func BenchmarkCommitToVisible(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	e.run()
	const clients = 32
	wallets := make([]string, clients)
	for i := range wallets {
		wallets[i] = "w-" + uuid.NewString()
		e.do("OpenWallet", commands.OpenWallet{WalletID: wallets[i], CustomerID: "c", Currency: "EUR"})
	}
	var mu sync.Mutex
	var lags []time.Duration
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < b.N; i += clients {
				rec := e.do("TopUpWallet", commands.TopUpWallet{WalletID: wallets[c], Amount: 1, Reason: "test funds"})
				committed := time.Now()
				for {
					var v int64
					if err := e.pool.QueryRow(ctx, `SELECT version FROM read_wallets WHERE wallet_id = $1`, wallets[c]).Scan(&v); err == nil && v >= rec.StreamVersion {
						break
					}
					time.Sleep(time.Millisecond)
				}
				mu.Lock()
				lags = append(lags, time.Since(committed))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
	if len(lags) > 0 {
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkRebuild measures events applied per second by a rebuild of the
// wallets projection into its shadow table: b.N events of 1,000 wallets
// (appended and published 100 per transaction), first consumed live.
func BenchmarkRebuild(b *testing.B) {
	e := newEnv(b)
	p, _ := projections.ByName("wallets_projection")
	const wallets = 1000
	perWallet := max(1, b.N/wallets)
	// The events are written as they are, with no wallet deciding them: by
	// a store that takes no snapshots (a raw stream has no state).
	raw := eventstore.New(e.pool, e.store.Registry(), eventstore.Options{})
	for w := range wallets {
		id := fmt.Sprintf("w-%d-%s", w, uuid.NewString()[:8])
		evs := []aggregate.Event{wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}}
		for range perWallet - 1 {
			evs = append(evs, wallet.ToppedUp{Amount: 1})
		}
		err := pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
			_, err := eventstoretest.SaveAndPublish(e.ctx, tx, raw, eventstoretest.Stream(wallet.StreamType, id, 0, evs...),
				eventstore.Metadata{CorrelationID: id, Actor: "bench"})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	e.run(p.Handler(e.store.Registry()))
	e.settle()
	b.ResetTimer()
	start := time.Now()
	n, err := projections.Rebuild(e.ctx, e.pool, e.store, e.bus.Log(), p, nil)
	var all int64
	e.pool.QueryRow(e.ctx, `SELECT count(*) FROM events WHERE stream_type = 'wallet'`).Scan(&all)
	if err != nil || n != all {
		b.Fatalf("rebuilt %d events of %d: %v", n, all, err)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
}
