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
			_, err := parseConfig(fs, nil)
			if err == nil || !strings.Contains(err.Error(), key+"=") {
				t.Fatalf("%s=%s: %v", key, value, err)
			}
		})
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	t.Setenv("ORDERFLOW_SNAPSHOT_EVERY", "7")
	if c, err := parseConfig(fs, nil); err != nil || c.SnapshotEvery != 7 {
		t.Fatalf("a good value: %+v %v", c.SnapshotEvery, err)
	}
}
