// Package devtemporal runs a real Temporal server in-process for `orderflow
// dev` and the tests: go.temporal.io/server on PostgreSQL (two databases of
// its own on the dev server, dev's default: it measured twice as fast) or on
// SQLite (a file under the dev data directory, or in memory for tests), plus
// the Temporal Web UI (github.com/temporalio/ui-server). The server set-up
// follows go.temporal.io/server/temporaltest's internal lite server (MIT),
// which is not importable.
package devtemporal

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	"go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	schema "go.temporal.io/server/tools/common/schema"
	sqltool "go.temporal.io/server/tools/sql"

	"github.com/jackc/pgx/v5"
)

// Options configure the embedded server.
type Options struct {
	// PostgresURL, when set, keeps Temporal's state on that PostgreSQL
	// server, in the databases orderflow_temporal and
	// orderflow_temporal_visibility (created and migrated at start).
	PostgresURL string
	// Shards is the number of history shards of a new PostgreSQL cluster
	// (fixed once created): each applies its updates one at a time.
	Shards int
	// DBFile is the SQLite file when PostgresURL is empty; empty runs in
	// memory (tests).
	DBFile string
	// FrontendAddr is host:port of the gRPC frontend (127.0.0.1:7233 in dev;
	// empty picks a free port).
	FrontendAddr string
	// UIAddr is host:port of the Web UI; empty runs none.
	UIAddr    string
	Namespace string
	Logger    log.Logger
}

// Server is a running embedded Temporal.
type Server struct {
	srv      temporal.Server
	ui       *uiserver.Server
	Frontend string
}

// Start starts the server (and UI) and returns once the frontend listens.
func Start(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = log.NewNoopLogger()
	}
	host, frontPort, err := hostPort(opts.FrontendAddr)
	if err != nil {
		return nil, err
	}
	var store, visibility config.SQL
	shards := int32(1)
	if opts.PostgresURL != "" {
		if store, visibility, err = preparePostgres(opts.PostgresURL); err != nil {
			return nil, err
		}
		shards = int32(max(opts.Shards, 1))
	} else if store, err = prepareSQLite(opts.DBFile); err != nil {
		return nil, err
	} else {
		visibility = store
	}
	ns, err := sqlite.NewNamespaceConfig("active", opts.Namespace, false, nil)
	if err != nil {
		return nil, err
	}
	// Created in the database before the server starts, so that it is in
	// the server's namespace cache at once; creating an existing namespace
	// is a no-op. (The helper lives in the sqlite package but speaks to any
	// SQL plugin.)
	if err := sqlite.CreateNamespaces(&store, ns); err != nil {
		return nil, fmt.Errorf("temporal namespace: %w", err)
	}

	// Eight more ports, all distinct. With a fixed frontend port (dev) they
	// are the eight after it, so a restarted server has the same members as
	// before and does not wait for the dead ones of its last run to expire
	// (measured: sagas stalled about 45 s after every restart on random ports).
	ports, err := nextPorts(frontPort, 8)
	if opts.FrontendAddr == "" || err != nil {
		ports, err = freePorts(8)
	}
	if err != nil {
		return nil, err
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	svc := func(port int) config.Service {
		return config.Service{RPC: config.RPC{GRPCPort: port, MembershipPort: next(), BindOnIP: host}}
	}
	frontend := fmt.Sprintf("%s:%d", host, frontPort)
	cfg := &config.Config{
		Global: config.Global{
			Membership: config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: host},
			Metrics:    &metrics.Config{Prometheus: &metrics.PrometheusConfig{ListenAddress: fmt.Sprintf("%s:%d", host, next()), HandlerPath: "/metrics"}},
		},
		Persistence: config.Persistence{
			DefaultStore: "default", VisibilityStore: "visibility", NumHistoryShards: shards,
			DataStores: map[string]config.DataStore{"default": {SQL: &store}, "visibility": {SQL: &visibility}},
		},
		ClusterMetadata: &cluster.Config{
			FailoverVersionIncrement: 10, MasterClusterName: "active", CurrentClusterName: "active",
			ClusterInformation: map[string]cluster.ClusterInformation{"active": {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend}},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services: map[string]config.Service{
			"frontend": svc(frontPort), "history": svc(next()), "matching": svc(next()), "worker": svc(next()),
		},
		Archival:     config.Archival{History: config.HistoryArchival{State: "disabled"}, Visibility: config.VisibilityArchival{State: "disabled"}},
		PublicClient: config.PublicClient{HostPort: frontend},
		NamespaceDefaults: config.NamespaceDefaults{Archival: config.ArchivalNamespaceDefaults{
			History: config.HistoryArchivalNamespaceDefaults{State: "disabled"}, Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"}}},
	}
	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	if err != nil {
		return nil, err
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, opts.Logger)
	if err != nil {
		return nil, err
	}
	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(opts.Logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		// Search attributes added at runtime are visible at once.
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{
			dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): []dynamicconfig.ConstrainedValue{{Value: true}},
			// The worker shares the process (and the client) with the
			// starter: a started workflow's first task and an activity
			// scheduled by a completed workflow task go straight back to it.
			dynamicconfig.EnableEagerWorkflowStart.Key():     []dynamicconfig.ConstrainedValue{{Value: true}},
			dynamicconfig.EnableActivityEagerExecution.Key(): []dynamicconfig.ConstrainedValue{{Value: true}},
			// One partition per task queue: one server, a few pollers; more
			// partitions only forward tasks between them.
			dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  []dynamicconfig.ConstrainedValue{{Value: 1}},
			dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): []dynamicconfig.ConstrainedValue{{Value: 1}},
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Stop() // what did start, so that a caller may try again
		return nil, fmt.Errorf("start temporal server: %w", err)
	}
	s := &Server{srv: srv, Frontend: frontend}
	if opts.UIAddr != "" {
		uiHost, uiPort, err := hostPort(opts.UIAddr)
		if err != nil {
			_ = srv.Stop()
			return nil, err
		}
		s.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
			TemporalGRPCAddress: frontend, Host: uiHost, Port: uiPort, EnableUI: true,
			DefaultNamespace: opts.Namespace, DisableNewsFetch: true,
			CORS: uiconfig.CORS{CookieInsecure: true},
		}))
		go func() {
			if err := s.ui.Start(); err != nil {
				opts.Logger.Error("temporal ui stopped: " + err.Error())
			}
		}()
	}
	return s, nil
}

// Stop stops the UI and the server.
func (s *Server) Stop() error {
	if s.ui != nil {
		s.ui.Stop()
	}
	return s.srv.Stop()
}

// WaitReady waits until the frontend accepts connections.
func (s *Server) WaitReady(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", s.Frontend, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("temporal frontend %s: %w", s.Frontend, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func hostPort(addr string) (string, int, error) {
	if addr == "" {
		ports, err := freePorts(1)
		if err != nil {
			return "", 0, err
		}
		return "127.0.0.1", ports[0], nil
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	var port int
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	return h, port, nil
}

// nextPorts returns the n ports after port when all are free and below 32768.
func nextPorts(port, n int) ([]int, error) {
	var ports []int
	for p := port + 1; p <= port+n; p++ {
		if p >= 32768 {
			return nil, fmt.Errorf("port %d is not below 32768", p)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return nil, fmt.Errorf("port %d is not free", p)
		}
		defer l.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// freePorts finds n distinct free ports on 127.0.0.1, below 32768: Temporal
// on PostgreSQL keeps membership ports in a SMALLINT column, and the OS
// hands out ephemeral ports from 32768 up.
func freePorts(n int) ([]int, error) {
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("no free port below 32768")
		}
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		defer l.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

// prepareSQLite returns the store on a SQLite file (with its schema made
// when new), or in memory when file is empty.
func prepareSQLite(file string) (config.SQL, error) {
	cfg := config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	if file == "" {
		cfg.ConnectAttributes["mode"] = "memory"
		cfg.ConnectAttributes["cache"] = "shared"
		cfg.DatabaseName = fmt.Sprintf("orderflow-%d", rand.IntN(1e9))
		return cfg, nil // the plugin makes the schema in memory
	}
	// One writer connection and a write-ahead log: SQLite allows one
	// writer at a time, and WAL keeps readers off its back.
	cfg.DatabaseName = file
	cfg.ConnectAttributes["mode"] = "rwc"
	cfg.ConnectAttributes["_journal_mode"] = "wal"
	cfg.ConnectAttributes["_synchronous"] = "normal"
	cfg.MaxConns, cfg.MaxIdleConns = 1, 1
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return cfg, err
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if err := sqlite.SetupSchema(&cfg); err != nil {
			return cfg, fmt.Errorf("temporal schema: %w", err)
		}
	}
	return cfg, nil
}

// Databases of Temporal on PostgreSQL.
const (
	PostgresDB           = "orderflow_temporal"
	PostgresVisibilityDB = "orderflow_temporal_visibility"
)

// preparePostgres creates Temporal's two databases on the server of rawURL
// when missing and brings their schemas to this server version's, as
// temporal-sql-tool's setup-schema and update-schema do.
func preparePostgres(rawURL string) (store, visibility config.SQL, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return store, visibility, fmt.Errorf("temporal postgres url: %w", err)
	}
	base := config.SQL{
		PluginName: postgresql.PluginNamePGX, ConnectProtocol: "tcp", ConnectAddr: u.Host, User: u.User.Username(),
		// Enough for a few shards and the visibility writes on 2 cores;
		// more connections only queue on the same CPUs.
		MaxConns: 16, MaxIdleConns: 16, MaxConnLifetime: time.Hour,
	}
	base.Password, _ = u.User.Password()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		return store, visibility, fmt.Errorf("temporal postgres: %w", err)
	}
	defer admin.Close(ctx)
	for _, db := range []struct{ name, schema string }{
		{PostgresDB, "postgresql/v12/temporal"}, {PostgresVisibilityDB, "postgresql/v12/visibility"},
	} {
		var exists bool
		if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db.name).Scan(&exists); err != nil {
			return store, visibility, err
		}
		if !exists {
			if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db.name}.Sanitize()); err != nil {
				return store, visibility, fmt.Errorf("create database %s: %w", db.name, err)
			}
		}
		cfg := base
		cfg.DatabaseName = db.name
		if err := migrateSchema(&cfg, db.schema); err != nil {
			return store, visibility, fmt.Errorf("temporal schema %s: %w", db.name, err)
		}
		if db.name == PostgresDB {
			store = cfg
		} else {
			visibility = cfg
		}
	}
	return store, visibility, nil
}

func migrateSchema(cfg *config.SQL, schemaName string) error {
	conn, err := sqltool.NewConnection(cfg, log.NewNoopLogger())
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ReadSchemaVersion(); err != nil {
		// A new database: version tables at 0.0, then every versioned step.
		setup := &schema.SetupConfig{InitialVersion: "0.0"}
		if err := schema.NewSetupSchemaTask(conn, setup, log.NewNoopLogger()).Run(); err != nil {
			return err
		}
	}
	return schema.NewUpdateSchemaTask(conn, &schema.UpdateConfig{DBName: cfg.DatabaseName, SchemaName: schemaName}, log.NewNoopLogger()).Run()
}
