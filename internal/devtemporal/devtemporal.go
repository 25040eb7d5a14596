// Package devtemporal runs a real Temporal server in-process for `orderflow
// dev` and the tests: go.temporal.io/server on SQLite (a file under the dev
// data directory, so a restart keeps history; or in memory for tests), plus
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
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
)

// Options configure the embedded server.
type Options struct {
	// DBFile is the SQLite file; empty runs in memory (tests).
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
	sqlCfg := config.SQL{PluginName: sqliteplugin.PluginName, ConnectAttributes: map[string]string{}}
	if opts.DBFile == "" {
		sqlCfg.ConnectAttributes["mode"] = "memory"
		sqlCfg.ConnectAttributes["cache"] = "shared"
		sqlCfg.DatabaseName = fmt.Sprintf("orderflow-%d", rand.IntN(1e9))
	} else {
		// One writer connection and a write-ahead log: SQLite allows one
		// writer at a time, and WAL keeps readers off its back.
		sqlCfg.DatabaseName = opts.DBFile
		sqlCfg.ConnectAttributes["mode"] = "rwc"
		sqlCfg.ConnectAttributes["_journal_mode"] = "wal"
		sqlCfg.ConnectAttributes["_synchronous"] = "normal"
		sqlCfg.MaxConns, sqlCfg.MaxIdleConns = 1, 1
		if err := os.MkdirAll(filepath.Dir(opts.DBFile), 0o755); err != nil {
			return nil, err
		}
	}
	// A new database file needs the schema; in memory the plugin makes it.
	if opts.DBFile != "" {
		if _, err := os.Stat(opts.DBFile); errors.Is(err, os.ErrNotExist) {
			if err := sqlite.SetupSchema(&sqlCfg); err != nil {
				return nil, fmt.Errorf("temporal schema: %w", err)
			}
		}
	}
	ns, err := sqlite.NewNamespaceConfig("active", opts.Namespace, false, nil)
	if err != nil {
		return nil, err
	}
	// Creating an existing namespace is a no-op.
	if err := sqlite.CreateNamespaces(&sqlCfg, ns); err != nil {
		return nil, fmt.Errorf("temporal namespace: %w", err)
	}

	// Eight more ports, all distinct: each is held open until all are chosen.
	ports, err := freePorts(8)
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
			DefaultStore: sqliteplugin.PluginName, VisibilityStore: sqliteplugin.PluginName, NumHistoryShards: 1,
			DataStores: map[string]config.DataStore{sqliteplugin.PluginName: {SQL: &sqlCfg}},
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
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
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

// freePorts finds n distinct free ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
