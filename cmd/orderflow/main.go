// Command orderflow runs the order-fulfilment service.
//
//	orderflow dev                      everything on embedded defaults (starts its own PostgreSQL)
//	orderflow api                      the REST API against DATABASE_URL
//	orderflow projector                the Watermill router: projections (and the NATS bridge when configured)
//	orderflow worker                   the fulfilment saga's Temporal worker and starter
//	orderflow migrate                  apply database migrations to DATABASE_URL
//	orderflow projections status       position, lag and poison count of every projection
//	orderflow projections rebuild NAME rebuild one read model from the event log
//	orderflow poison list|replay       list poison messages, or replay them (OFFSET or -all)
//	orderflow events tail              print messages of a topic as they arrive
//	orderflow load                     drive a running orderflow and report throughput and latency
//	orderflow bench                    the saga's throughput beside its Temporal-only bound, and its latency
//	orderflow verify                   check the invariants after a load or a fault
//	orderflow campaign                 a seeded campaign of hostile customers, operators and faults, then verify
//	orderflow sagas repair             finish the orders whose saga was terminated
//	orderflow token                    print a bearer token that dev accepts
//	orderflow temporal-server          Temporal's server as a process of its own (scripts/cluster.sh)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof" // served on -pprof-addr only
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/orderflow/orderflow/tracing"
)

const usage = `usage: orderflow <command> [flags] [args]

commands:
  dev                        run everything on embedded defaults: its own PostgreSQL (unless DATABASE_URL
                             is set) and Temporal server with Web UI (unless TEMPORAL_ADDRESS is set)
  api                        serve the REST API (needs DATABASE_URL)
  projector                  run the projections (and the NATS bridge when -nats-url is set)
  worker                     run the fulfilment saga: Temporal worker and saga starter (needs TEMPORAL_ADDRESS)
  migrate                    apply database migrations (needs DATABASE_URL)
  projections status         each projection's position, lag and unresolved poison messages
  projections rebuild NAME   rebuild a read model from the event log while the service runs
  poison list [-unresolved]  messages a consumer (a projection, the saga starter) gave up on
  poison replay OFFSET|-all  run poison messages through the handler that poisoned them again
  load [-url U -concurrency N -rate R -duration D|-orders N ...]
                             drive a running orderflow over HTTP; writes a JSON result and an HTML report
  bench [-orders N -concurrency C -serial K]
                             sagas/s of the saga through HTTP beside its bound (the same steps as no-op
                             local activities on the same Temporal), and the serial saga's overhead
  verify [-settle D]         check every invariant (needs DATABASE_URL, and TEMPORAL_ADDRESS for sagas);
                             exits 1 with a report when one fails
  campaign -seed N -duration D [-url U,U -faults K,K -fault-exec CMD -proxy-listen A ...]
                             from a seed, hostile customers and operators through every door while faults
                             are injected; then every saga is driven to an end and verify runs (exits 1 on a
                             violation); scripts/campaign.sh runs it against the production topology
  events tail [-topic T] [-from beginning|end|OFFSET]
                             print a topic's messages as they arrive
  sagas repair [-order ID]   start a repair run for every order (or one) whose saga ended without an
                             outcome (terminated in the Temporal UI): it completes the order if the carrier
                             has the parcel, and compensates it if not (needs TEMPORAL_ADDRESS)
  token -role customer -customer ID | -role operator
                             print a bearer token signed with dev's key (or -key FILE); the token is
                             alone on the last line: TOKEN=$(orderflow token -role operator)
  asyncapi [-o FILE]         print the AsyncAPI document of the Watermill topics (or write it, refusing a
                             change that breaks consumers of the FILE it replaces)
  temporal-server            Temporal's server (the one dev embeds) as a process of its own, on DATABASE_URL's
                             PostgreSQL (its own databases there) or -temporal-persistence sqlite

Run 'orderflow <command> -h' for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	name, args := os.Args[1], os.Args[2:]
	if name == "asyncapi" { // needs no configuration
		if err := runAsyncAPI(args); err != nil {
			fmt.Fprintln(os.Stderr, "orderflow:", err)
			os.Exit(1)
		}
		return
	}
	if (name == "projections" || name == "poison" || name == "events" || name == "sagas") && len(args) > 0 {
		name, args = name+" "+args[0], args[1:]
	}
	fs := flag.NewFlagSet("orderflow "+name, flag.ExitOnError)
	var run func() error
	tool := toolFlags{}
	tool.register(fs, name)
	var lf loadFlags
	if name == "load" {
		lf.register(fs)
	}
	var bf benchFlags
	if name == "bench" {
		bf.register(fs)
	}
	var cf campaignFlags
	if name == "campaign" {
		cf.register(fs)
	}
	var tf tokenFlags
	if name == "token" {
		tf.register(fs)
	}
	cfg, err := parseConfig(fs, name, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderflow:", err)
		os.Exit(2)
	}
	log := cfg.log
	if !slices.Contains(serveRoles, name) {
		cfg.OpsAddr = "" // the tools serve no metrics
	}
	if cfg.DatabaseURL == "" && name != "dev" {
		// Against dev, the tools need no flag: dev's database and Temporal.
		if cfg.DatabaseURL = devDatabaseURL(cfg.DataDir); cfg.DatabaseURL != "" && cfg.TemporalAddress == "" {
			cfg.TemporalAddress = cfg.TemporalDevAddr
		}
	}
	stopTracing, err := tracing.Start(ctx, "orderflow-"+strings.ReplaceAll(name, " ", "-"))
	if err != nil {
		log.Error("tracing", "err", err)
		os.Exit(1)
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = stopTracing(shutdownCtx)
	}()
	if cfg.PprofAddr != "" {
		go func() { log.Error("pprof", "err", http.ListenAndServe(cfg.PprofAddr, nil)) }()
	}
	switch name {
	case "dev":
		run = func() error { return runDev(ctx, cfg, log) }
	case "api":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error { return a.withTemporal(ctx, false, func() error { return a.serveAPI(ctx) }) })
		}
	case "worker":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error {
				return a.withTemporal(ctx, true, func() error { return a.runWorker(ctx, a.sagas.C) })
			})
		}
	case "projector":
		run = func() error { return withPool(ctx, cfg, func(a *app) error { return a.runProjector(ctx) }) }
	case "migrate":
		run = func() error { return runMigrate(ctx, cfg, log) }
	case "projections status":
		run = func() error { return withPool(ctx, cfg, func(a *app) error { return a.projectionsStatus(ctx) }) }
	case "projections rebuild":
		run = func() error { return withPool(ctx, cfg, func(a *app) error { return a.rebuild(ctx, cfg.arg(0)) }) }
	case "poison list":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error { return a.poisonList(ctx, tool.unresolved) })
		}
	case "poison replay":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error { return a.poisonReplay(ctx, cfg.arg(0), tool.all) })
		}
	case "load":
		run = func() error { return runLoad(ctx, cfg, lf) }
	case "bench":
		run = func() error { return runBench(ctx, cfg, bf) }
	case "token":
		run = func() error { return runToken(cfg, tf) }
	case "campaign":
		run = func() error { return runCampaign(ctx, cfg, cf) }
	case "temporal-server":
		run = func() error { return runTemporalServer(ctx, cfg) }
	case "verify":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error {
				return a.withTemporal(ctx, false, func() error { return a.verify(ctx, tool.settle) })
			})
		}
	case "events tail":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error { return a.tail(ctx, tool.topic, tool.from) })
		}
	case "sagas repair":
		run = func() error {
			return withPool(ctx, cfg, func(a *app) error {
				return a.withTemporal(ctx, true, func() error { return a.repair(ctx, tool.order) })
			})
		}
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("orderflow "+name+" failed", "err", err)
		os.Exit(1)
	}
}

// toolFlags are the flags of the operator subcommands.
type toolFlags struct {
	unresolved, all bool
	topic, from     string
	settle          time.Duration
	order           string
}

func (t *toolFlags) register(fs *flag.FlagSet, name string) {
	switch name {
	case "poison list":
		fs.BoolVar(&t.unresolved, "unresolved", false, "only messages not yet replayed")
	case "poison replay":
		fs.BoolVar(&t.all, "all", false, "replay every unresolved message, in order")
	case "verify":
		fs.DurationVar(&t.settle, "settle", time.Minute, "how long to wait for consumers and sagas to finish before checking")
	case "events tail":
		fs.StringVar(&t.topic, "topic", "order_events", "topic to follow: order_events, inventory_events, wallet_events, shipment_events, commands, poison")
		fs.StringVar(&t.from, "from", "end", "where to start: beginning, end, or a message offset")
	case "sagas repair":
		fs.StringVar(&t.order, "order", "", "repair this order only (default: every order whose saga ended without an outcome)")
	}
}
