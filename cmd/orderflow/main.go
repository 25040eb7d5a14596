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
//	orderflow verify                   check the invariants after a load or a fault
//	orderflow sagas repair             finish the orders whose saga was terminated
//	orderflow token                    print a bearer token that dev accepts
//	orderflow temporal-server          Temporal's server as a process of its own (scripts/cluster.sh)
//
// The harness that drives it (load, bench, campaign) is another binary,
// cmd/orderflow-harness. How a process is assembled is in wiring.go.
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

	"github.com/orderflow/orderflow/internal/devruntime/devpg"
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
  verify [-settle D]         check every invariant (needs DATABASE_URL, and TEMPORAL_ADDRESS for sagas);
                             exits 1 with a report when one fails
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

Run 'orderflow <command> -h' for its flags. The load generator, the bench and the campaign
are cmd/orderflow-harness's.
`

// run is what a subcommand runs, with the configuration read.
type run func(ctx context.Context, cfg Config) error

// subcommands: each registers its own flags (beside config.go's settings)
// and returns what it runs. Two-word names are typed as two words.
var subcommands = map[string]func(fs *flag.FlagSet) run{
	// The service's roles (wiring.go).
	"dev":             role(runDev),
	"api":             role(runAPI),
	"projector":       role(runProjector),
	"worker":          role(runWorker),
	"migrate":         role(runMigrate),
	"temporal-server": role(runTemporalServer),

	// The operator's tools (tools.go), each on an app of its own.
	"projections status":  role(tool(noTemporal, func(ctx context.Context, a *app) error { return a.projectionsStatus(ctx) })),
	"projections rebuild": role(tool(noTemporal, func(ctx context.Context, a *app) error { return a.rebuild(ctx, a.cfg.arg(0)) })),
	"poison list": func(fs *flag.FlagSet) run {
		unresolved := fs.Bool("unresolved", false, "only messages not yet replayed")
		return tool(noTemporal, func(ctx context.Context, a *app) error { return a.poisonList(ctx, *unresolved) })
	},
	"poison replay": func(fs *flag.FlagSet) run {
		all := fs.Bool("all", false, "replay every unresolved message, in order")
		return tool(noTemporal, func(ctx context.Context, a *app) error { return a.poisonReplay(ctx, a.cfg.arg(0), *all) })
	},
	"events tail": func(fs *flag.FlagSet) run {
		topic := fs.String("topic", "order_events", "topic to follow: order_events, inventory_events, wallet_events, shipment_events, commands, poison")
		from := fs.String("from", "end", "where to start: beginning, end, or a message offset")
		return tool(noTemporal, func(ctx context.Context, a *app) error { return a.tail(ctx, *topic, *from) })
	},
	"verify": func(fs *flag.FlagSet) run {
		settle := fs.Duration("settle", time.Minute, "how long to wait for consumers and sagas to finish before checking")
		return tool(temporalIfSet, func(ctx context.Context, a *app) error { return a.verify(ctx, *settle) })
	},
	"sagas repair": func(fs *flag.FlagSet) run {
		order := fs.String("order", "", "repair this order only (default: every order whose saga ended without an outcome)")
		return tool(temporalRequired, func(ctx context.Context, a *app) error { return a.repair(ctx, *order) })
	},
	"token": func(fs *flag.FlagSet) run {
		var t tokenFlags
		t.register(fs)
		return func(_ context.Context, cfg Config) error { return runToken(cfg, t) }
	},
	// asyncapi reads no configuration: see main.
}

// role is a subcommand with no flags of its own (beside the settings).
func role(r run) func(*flag.FlagSet) run { return func(*flag.FlagSet) run { return r } }

// tool is an operator's subcommand: f on an app, with a Temporal client
// as temporal says.
func tool(temporal temporalUse, f func(context.Context, *app) error) run {
	return func(ctx context.Context, cfg Config) error {
		a, err := newApp(ctx, cfg)
		if err != nil {
			return err
		}
		defer a.close()
		if err := a.connectTemporal(ctx, temporal); err != nil {
			return err
		}
		return f(ctx, a)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "asyncapi" { // needs no configuration
		if err := runAsyncAPI(args); err != nil {
			fmt.Fprintln(os.Stderr, "orderflow:", err)
			os.Exit(1)
		}
		return
	}
	if _, ok := subcommands[name]; !ok && len(args) > 0 {
		name, args = name+" "+args[0], args[1:]
	}
	subcommand, ok := subcommands[name]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("orderflow "+name, flag.ExitOnError)
	run := subcommand(fs)
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
		if cfg.DatabaseURL = devpg.ReadURL(cfg.DataDir); cfg.DatabaseURL != "" && cfg.TemporalAddress == "" {
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
	if err := run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("orderflow "+name+" failed", "err", err)
		os.Exit(1)
	}
}
