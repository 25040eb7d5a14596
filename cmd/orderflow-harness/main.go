// Command orderflow-harness drives a running orderflow from outside, as its
// clients and operators would, and measures it. It is not part of the
// service: cmd/orderflow is.
//
//	orderflow-harness load      drive a running orderflow and report throughput and latency
//	orderflow-harness bench     the saga's throughput beside its Temporal-only bound, and its latency
//	orderflow-harness campaign  a seeded campaign of hostile customers, operators and faults, then verify
//
// Against `orderflow dev` they need no flag: they find its database, its
// Temporal and its signing key in the data directory (-data-dir).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/orderflow/orderflow/tracing"
)

const usage = `usage: orderflow-harness <command> [flags]

commands:
  load [-url U -concurrency N -rate R -duration D|-orders N ...]
                             drive a running orderflow over HTTP; writes a JSON result and an HTML report
  bench [-orders N -concurrency C -serial K]
                             sagas/s of the saga through HTTP beside its bound (the same steps as no-op
                             local activities on the same Temporal), and the serial saga's overhead
  campaign -seed N -duration D [-url U,U -faults K,K -fault-exec CMD -proxy-listen A ...]
                             from a seed, hostile customers and operators through every door while faults
                             are injected; then every saga is driven to an end and verify runs (exits 1 on a
                             violation); scripts/campaign.sh runs it against the production topology

Run 'orderflow-harness <command> -h' for its flags.
`

// run is what a subcommand runs, with the configuration read.
type run func(ctx context.Context, cfg config) error

// subcommands: each registers its own flags (beside config.go's settings)
// and returns what it runs.
var subcommands = map[string]func(fs *flag.FlagSet) run{
	"load": func(fs *flag.FlagSet) run {
		var f loadFlags
		f.register(fs)
		return func(ctx context.Context, cfg config) error { return runLoad(ctx, cfg, f) }
	},
	"bench": func(fs *flag.FlagSet) run {
		var f benchFlags
		f.register(fs)
		return func(ctx context.Context, cfg config) error { return runBench(ctx, cfg, f) }
	},
	"campaign": func(fs *flag.FlagSet) run {
		var f campaignFlags
		f.register(fs)
		return func(ctx context.Context, cfg config) error { return runCampaign(ctx, cfg, f) }
	},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	subcommand, ok := subcommands[name]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("orderflow-harness "+name, flag.ExitOnError)
	run := subcommand(fs)
	cfg, err := parseConfig(fs, name, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow-harness:", err)
		os.Exit(2)
	}
	stopTracing, err := tracing.Start(ctx, "orderflow-"+name)
	if err != nil {
		cfg.log.Error("tracing", "err", err)
		os.Exit(1)
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTracing(shutdownCtx)
	}()
	if err := run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		cfg.log.Error("orderflow-harness "+name+" failed", "err", err)
		os.Exit(1)
	}
}
