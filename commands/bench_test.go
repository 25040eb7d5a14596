package commands_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderflow/orderflow/commands"
)

// BenchmarkDispatch is one TopUpWallet, typed as the HTTP handlers and the
// saga send it, through the whole command path: load (from the aggregate
// cache and the tail), decide, and the transaction that appends, logs and
// writes the outbox. The serial runs report what each command sends to
// PostgreSQL (round trips, statements, lookups of a command id in the log):
// a new command, a retry of a logged one, and that retry while admission
// refuses new commands.
func BenchmarkDispatch(b *testing.B) {
	serial := func(b *testing.B, refuse bool, key string) {
		var refusing atomic.Bool // set once the wallet is open and the key logged
		bus, c := newCountedBus(b, func(context.Context, string) error {
			if refusing.Load() {
				return &commands.OverloadedError{Reason: "benchmark: refusing new commands"}
			}
			return nil
		})
		id := openWallet(b, bus, 0)
		r := commands.Request{Principal: ops, CommandID: key, Command: commands.TopUpWallet{WalletID: id, Amount: 1, Reason: "test funds"}}
		if key != "" {
			if _, err := bus.Dispatch(context.Background(), commands.Request{Principal: ops, CommandID: key, Command: r.Command}); err != nil {
				b.Fatal(err)
			}
		}
		refusing.Store(refuse)
		b.ResetTimer()
		c.reset()
		for i := 0; i < b.N; i++ {
			if _, err := bus.Dispatch(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
		got := c.read()
		b.ReportMetric(float64(got.roundTrips)/float64(b.N), "roundtrips/op")
		b.ReportMetric(float64(got.statements)/float64(b.N), "statements/op")
		b.ReportMetric(float64(got.lookups)/float64(b.N), "lookups/op")
	}
	b.Run("serial", func(b *testing.B) { serial(b, false, "") })
	b.Run("serial-retry", func(b *testing.B) { serial(b, false, "k-"+uuid.NewString()) })
	b.Run("serial-retry-refused", func(b *testing.B) { serial(b, true, "k-"+uuid.NewString()) })
	// 32 clients, each on its own wallet.
	b.Run("clients=32", func(b *testing.B) {
		bus, _ := newBus(b)
		b.SetParallelism(32 / runtime.GOMAXPROCS(0))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := openWallet(b, bus, 0)
			r := commands.Request{Principal: ops, Command: commands.TopUpWallet{WalletID: id, Amount: 1, Reason: "test funds"}}
			for pb.Next() {
				if _, err := bus.Dispatch(context.Background(), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
	})
}
