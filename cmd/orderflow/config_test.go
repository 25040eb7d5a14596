package main

import (
	"flag"
	"io"
	"strings"
	"testing"
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
