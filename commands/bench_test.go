package commands_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/orderflow/orderflow/commands"
)

// BenchmarkDispatch is one TopUpWallet, typed as the HTTP handlers and the
// saga send it, through the whole command path: load (from the aggregate
// cache and the tail), decide, and the transaction that appends, logs and
// writes the outbox.
func BenchmarkDispatch(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		bus, _ := newBus(b)
		id := openWallet(b, bus, 0)
		r := commands.Request{Principal: ops, Command: commands.TopUpWallet{WalletID: id, Amount: 1, Reason: "test funds"}}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := bus.Dispatch(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
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
