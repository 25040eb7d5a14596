package eventstore_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
)

// BenchmarkAppend: one op is one transaction appending `batch` events
// through the store's write path (Pending, QueueSaves); each writer appends
// to its own stream, so this measures throughput, not conflicts.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 32} {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("writers=%d/batch=%d", writers, batch), func(b *testing.B) {
				ctx := context.Background()
				s, pool := newStore(b, 0)
				events := make([]aggregate.Event, batch)
				for i := range events {
					events[i] = wallet.ToppedUp{Amount: 1, Currency: "EUR"}
				}
				b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					id := "bench-" + uuid.NewString()
					var version int64
					for pb.Next() {
						err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
							_, err := eventstoretest.Save(ctx, tx, s, eventstoretest.Stream(wallet.StreamType, id, version, events...), md)
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
						version += int64(batch)
					}
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkLoad10k loads a 10,000-event wallet by full replay, and from a
// snapshot taken by one more top-up (the snapshot at 10,001).
func BenchmarkLoad10k(b *testing.B) {
	ctx := context.Background()
	s, pool := newStore(b, 0)
	id := "load-" + uuid.NewString()
	w := wallet.New(id)
	if err := w.Open("c", "", "EUR"); err != nil {
		b.Fatal(err)
	}
	events := make([]aggregate.Event, 0, 10000)
	events = append(events, w.Changes()...)
	for len(events) < 10000 {
		events = append(events, wallet.ToppedUp{Amount: 1, Currency: "EUR"})
	}
	for i := 0; i < len(events); i += 1000 {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := eventstoretest.Save(ctx, tx, s, eventstoretest.Stream(wallet.StreamType, id, int64(i), events[i:i+1000]...), md)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	load := func(version int64) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				w := wallet.New(id)
				if err := s.Load(ctx, w); err != nil || w.Version() != version {
					b.Fatal(err, w.Version())
				}
			}
		}
	}
	b.Run("full-replay", load(10000))
	// A store that snapshots every version takes one with the next write.
	snapshots := eventstore.New(pool, registry(), eventstore.Options{SnapshotEvery: 1})
	full := wallet.New(id)
	if err := snapshots.Load(ctx, full); err != nil {
		b.Fatal(err)
	}
	if err := full.TopUp(money.New(1, "EUR"), wallet.Credit{Operator: "ops-bench", Reason: "bench"}); err != nil {
		b.Fatal(err)
	}
	save(b, snapshots, pool, full)
	b.Run("snapshot", load(10001))
}
