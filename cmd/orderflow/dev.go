// What dev embeds and checks before it starts: its PostgreSQL and its
// Temporal server, the ports it listens on, the secrets it keeps in its
// data directory. runDev (wiring.go) puts them together.

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	serverlog "go.temporal.io/server/common/log"

	"github.com/orderflow/orderflow/internal/devruntime/devpg"
	"github.com/orderflow/orderflow/internal/devruntime/devtemporal"
)

// startDevPostgres starts dev's PostgreSQL in the data directory, with a
// password kept there, points cfg at it and records its URL for the tools.
func startDevPostgres(ctx context.Context, cfg *Config) (stop func(), err error) {
	log := cfg.log
	log.Info("starting embedded PostgreSQL", "dir", filepath.Join(cfg.DataDir, "postgres"))
	password, err := secretFile(filepath.Join(cfg.DataDir, "postgres-password"))
	if err != nil {
		return nil, err
	}
	srv, err := devpg.Start(ctx, devpg.Options{Dir: cfg.DataDir, Password: password})
	if err != nil {
		return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
	}
	stop = func() {
		t0 := time.Now()
		if err := srv.Stop(); err != nil {
			log.Error("stop embedded PostgreSQL", "err", err)
			return
		}
		log.Info("embedded PostgreSQL stopped", "took", time.Since(t0).Round(time.Millisecond))
	}
	cfg.DatabaseURL = srv.URL
	// The tools (verify, projections, poison, sagas) and the harness read it from here.
	if err := devpg.WriteURL(cfg.DataDir, srv.URL); err != nil {
		stop()
		return nil, err
	}
	log.Info("embedded PostgreSQL is up", "url", redacted(srv.URL), "full_url_in", filepath.Join(cfg.DataDir, devpg.URLFile))
	return stop, nil
}

// startDevTemporal runs the embedded Temporal server and Web UI for dev, on
// dev's PostgreSQL (or a SQLite file under the data directory), so a restart
// keeps history.
func startDevTemporal(ctx context.Context, cfg *Config) (stop func(), err error) {
	// The server logs membership and polling noise at error level while it
	// starts and stops; dev keeps only fatal ones unless told otherwise.
	level := cfg.TemporalLogLevel
	opts := devtemporal.Options{
		FrontendAddr: cfg.TemporalDevAddr, UIAddr: cfg.TemporalUIAddr, Namespace: cfg.TemporalNamespace,
		Logger: serverlog.NewZapLogger(serverlog.BuildZapLogger(serverlog.Config{Level: level})),
	}
	where := ""
	switch cfg.TemporalPersistence {
	case "postgres":
		opts.PostgresURL, opts.Shards = cfg.DatabaseURL, cfg.TemporalShards
		where = "postgres: " + devtemporal.PostgresDB
	case "sqlite":
		opts.DBFile = filepath.Join(cfg.DataDir, "temporal", "temporal.db")
		where = "sqlite: " + opts.DBFile
	}
	srv, err := devtemporal.Start(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded Temporal: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.WaitReady(readyCtx); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	cfg.TemporalAddress = srv.Frontend
	cfg.log.Info("embedded Temporal is up", "frontend", srv.Frontend, "persistence", where, "ui", "http://"+cfg.TemporalUIAddr)
	return func() {
		t0 := time.Now()
		if err := srv.Stop(); err != nil {
			cfg.log.Error("stop embedded Temporal", "err", err)
			return
		}
		cfg.log.Info("embedded Temporal stopped", "took", time.Since(t0).Round(time.Millisecond))
	}, nil
}

// secretFile returns the secret kept at path, generating it (mode 0600)
// the first time.
func secretFile(path string) (string, error) {
	if raw, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(raw)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	// The directory stays traversable: as root, dev's PostgreSQL runs as
	// nobody inside it; the secret itself is 0600.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return secret, os.WriteFile(path, []byte(secret), 0o600)
}

// redacted is a database URL without its password, for logs.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// listenPort is an address dev listens on and the setting that moves it.
type listenPort struct{ addr, setting string }

// devPorts are the addresses dev listens on: the API, the ops endpoints
// and, when it embeds Temporal, its frontend and Web UI. (-pprof-addr is
// bound before dev starts, by main.)
func devPorts(cfg Config) []listenPort {
	ports := []listenPort{{cfg.HTTPAddr, "-http-addr (ORDERFLOW_HTTP_ADDR)"}, {cfg.OpsAddr, "-ops-addr (ORDERFLOW_OPS_ADDR)"}}
	if cfg.TemporalAddress == "" {
		// The frontend's: the other services take the ports after it, or
		// free ones when those are taken.
		ports = append(ports, listenPort{cfg.TemporalDevAddr, "-temporal-dev-addr (ORDERFLOW_TEMPORAL_DEV_ADDR)"},
			listenPort{cfg.TemporalUIAddr, "-temporal-ui-addr (ORDERFLOW_TEMPORAL_UI_ADDR)"})
	}
	return ports
}

// portsFree reports the first address that cannot be listened on, with the
// setting that moves it.
func portsFree(ports []listenPort) error {
	for _, p := range ports {
		if p.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("%s is not free (%v): stop what listens there, or move it with %s", p.addr, err, p.setting)
		}
		l.Close()
	}
	return nil
}
