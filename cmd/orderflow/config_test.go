package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/auth"
)

// A value that does not parse stops start-up, naming the variable, instead
// of silently becoming the default.
func TestAnEnvironmentValueThatDoesNotParseIsRefused(t *testing.T) {
	for key, value := range map[string]string{
		"ORDERFLOW_SNAPSHOT_EVERY":       "abc",
		"ORDERFLOW_POLL_INTERVAL":        "50",
		"ORDERFLOW_CARRIER_FAILURE_RATE": "a lot",
	} {
		t.Run(key, func(t *testing.T) {
			t.Setenv(key, value)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			_, err := parseConfig(fs, "dev", nil)
			if err == nil || !strings.Contains(err.Error(), key+"=") {
				t.Fatalf("%s=%s: %v", key, value, err)
			}
		})
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	t.Setenv("ORDERFLOW_SNAPSHOT_EVERY", "7")
	if c, err := parseConfig(fs, "dev", nil); err != nil || c.SnapshotEvery != 7 {
		t.Fatalf("a good value: %+v %v", c.SnapshotEvery, err)
	}
}

// Each subcommand shows only its own flags; a value out of range stops
// start-up naming the setting.
func TestEachSubcommandHasItsOwnFlags(t *testing.T) {
	flags := func(cmd string) map[string]bool {
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		if _, err := parseConfig(fs, cmd, nil); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { seen[f.Name] = true })
		return seen
	}
	api, worker, migrate, dev := flags("api"), flags("worker"), flags("migrate"), flags("dev")
	for _, f := range []string{"http-addr", "jwt-public-key", "rate-customer", "statement-timeout", "temporal-address"} {
		if !api[f] || worker[f] && f != "temporal-address" {
			t.Errorf("-%s: api %v worker %v", f, api[f], worker[f])
		}
	}
	for _, f := range []string{"shipping-deadline", "carrier-latency", "poll-interval"} {
		if !worker[f] || api[f] {
			t.Errorf("-%s: worker %v api %v", f, worker[f], api[f])
		}
	}
	if len(migrate) > 3 || !migrate["database-url"] {
		t.Errorf("migrate shows %v", migrate)
	}
	if len(dev) < len(api) {
		t.Errorf("dev runs every role but shows %d flags", len(dev))
	}
	for key, value := range map[string]string{"ORDERFLOW_CARRIER_FAILURE_RATE": "2", "ORDERFLOW_MAX_STREAMS": "0", "ORDERFLOW_STATEMENT_TIMEOUT": "1ms"} {
		t.Setenv(key, value)
		if _, err := parseConfig(flag.NewFlagSet("dev", flag.ContinueOnError), "dev", nil); err == nil {
			t.Errorf("%s=%s was accepted", key, value)
		}
		t.Setenv(key, "")
	}
}

// ORDERFLOW_TRUSTED_PROXIES is parsed once: CIDRs and bare addresses, and
// anything else stops start-up; ORDERFLOW_JWT_MAX_TTL is bounded.
func TestTrustedProxiesAndTokenLifeAreValidated(t *testing.T) {
	t.Setenv("ORDERFLOW_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
	c, err := parseConfig(flag.NewFlagSet("api", flag.ContinueOnError), "api", nil)
	if err != nil || len(c.TrustedProxies) != 3 || c.TrustedProxies[1].String() != "192.0.2.7/32" || c.JWTMaxTTL != 24*time.Hour {
		t.Fatalf("%v %v %v", c.TrustedProxies, c.JWTMaxTTL, err)
	}
	for key, value := range map[string]string{"ORDERFLOW_TRUSTED_PROXIES": "10.0.0.0/33", "ORDERFLOW_JWT_MAX_TTL": "1s"} {
		t.Setenv(key, value)
		if _, err := parseConfig(flag.NewFlagSet("api", flag.ContinueOnError), "api", nil); err == nil {
			t.Errorf("%s=%s was accepted", key, value)
		}
		t.Setenv(key, "")
	}
}

// `orderflow token` mints a token that the API's verifier (dev's key, the
// default maximum life) accepts, and refuses to mint one that lives longer.
func TestTheTokenCommandMintsTokensThatPass(t *testing.T) {
	c, err := parseConfig(flag.NewFlagSet("token", flag.ContinueOnError), "token", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = t.TempDir()
	key, err := auth.DevKey(c.DataDir, true)
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	err = runToken(c, tokenFlags{role: "customer", customer: "c1", issuer: auth.DevIssuer, ttl: 24 * time.Hour})
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	p, err := auth.DevVerifier(key).Verify(lines[len(lines)-1])
	if err != nil || p.CustomerID != "c1" {
		t.Fatalf("%+v %v", p, err)
	}
	if err := runToken(c, tokenFlags{role: "operator", issuer: auth.DevIssuer, ttl: 25 * time.Hour}); err == nil {
		t.Fatal("minted a token past the maximum life")
	}
}

// dev checks every port it will listen on before it starts anything, and
// names the busy one with the setting that moves it (a busy Web UI port
// used to exit the process and leave the embedded PostgreSQL running).
func TestDevRefusesABusyPortBeforeStartingAnything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", TemporalUIAddr: busy.Addr().String(), TemporalDevAddr: "127.0.0.1:0",
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err = runDev(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) || !strings.Contains(err.Error(), "-temporal-ui-addr") {
		t.Fatalf("dev with the Web UI's port taken: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("dev started something before it found the busy port: %v", entries)
	}
}

// The NATS bridge's settings: the documented defaults, read from the
// environment, and values JetStream would refuse stop start-up.
func TestNATSBridgeConfigDefaultsAndValidation(t *testing.T) {
	parse := func(t *testing.T, env map[string]string) (Config, error) {
		for k, v := range env {
			t.Setenv(k, v)
		}
		fs := flag.NewFlagSet("projector", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return parseConfig(fs, "projector", nil)
	}
	c, err := parse(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSReconnectWait != 2*time.Second || c.NATSLimits.MaxAge != 7*24*time.Hour || c.NATSLimits.MaxBytes != 1<<30 || c.NATSLimits.DuplicateWindow != time.Hour {
		t.Fatalf("defaults: %s %+v", c.NATSReconnectWait, c.NATSLimits)
	}
	t.Run("environment", func(t *testing.T) {
		c, err := parse(t, map[string]string{"ORDERFLOW_NATS_MAX_AGE": "24h", "ORDERFLOW_NATS_MAX_BYTES": "0", "ORDERFLOW_NATS_DUPLICATE_WINDOW": "10m", "ORDERFLOW_NATS_RECONNECT_WAIT": "500ms"})
		if err != nil || c.NATSLimits.MaxAge != 24*time.Hour || c.NATSLimits.MaxBytes != 0 || c.NATSLimits.DuplicateWindow != 10*time.Minute || c.NATSReconnectWait != 500*time.Millisecond {
			t.Fatalf("from the environment: %+v %s %v", c.NATSLimits, c.NATSReconnectWait, err)
		}
	})
	for i, bad := range []map[string]string{
		{"ORDERFLOW_NATS_MAX_AGE": "1h", "ORDERFLOW_NATS_DUPLICATE_WINDOW": "2h"},
		{"ORDERFLOW_NATS_DUPLICATE_WINDOW": "0s"},
		{"ORDERFLOW_NATS_MAX_BYTES": "-5"},
		{"ORDERFLOW_NATS_RECONNECT_WAIT": "0s"},
	} {
		t.Run(fmt.Sprint("refused", i), func(t *testing.T) {
			if _, err := parse(t, bad); err == nil || !strings.Contains(err.Error(), "nats-") {
				t.Errorf("%v: %v", bad, err)
			}
		})
	}
	// Only the roles that run the bridge have its flags.
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseConfig(fs, "api", nil); err != nil {
		t.Fatal(err)
	}
	if fs.Lookup("nats-max-age") != nil {
		t.Error("api has -nats-max-age")
	}
}
