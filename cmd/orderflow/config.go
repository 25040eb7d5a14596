package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
)

// Config is read once, here, from flags with environment defaults; library
// packages never read the environment.
type Config struct {
	HTTPAddr       string // ORDERFLOW_HTTP_ADDR
	DatabaseURL    string // DATABASE_URL
	DataDir        string // ORDERFLOW_DATA_DIR: dev-mode state (embedded PostgreSQL)
	SnapshotEvery  int    // ORDERFLOW_SNAPSHOT_EVERY
	CommandRetries int    // ORDERFLOW_COMMAND_RETRIES
	MaxBodyBytes   int64  // ORDERFLOW_MAX_BODY_BYTES
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func parseConfig(fs *flag.FlagSet, args []string) (Config, error) {
	var c Config
	fs.StringVar(&c.HTTPAddr, "http-addr", envOr("ORDERFLOW_HTTP_ADDR", "127.0.0.1:8080"), "listen address of the API (ORDERFLOW_HTTP_ADDR)")
	fs.StringVar(&c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (DATABASE_URL); dev starts its own when empty")
	fs.StringVar(&c.DataDir, "data-dir", envOr("ORDERFLOW_DATA_DIR", ".orderflow"), "where dev keeps its state (ORDERFLOW_DATA_DIR)")
	fs.IntVar(&c.SnapshotEvery, "snapshot-every", envInt("ORDERFLOW_SNAPSHOT_EVERY", 100), "snapshot a stream every N events, 0 = never (ORDERFLOW_SNAPSHOT_EVERY)")
	fs.IntVar(&c.CommandRetries, "command-retries", envInt("ORDERFLOW_COMMAND_RETRIES", 5), "times a command is decided again after a version conflict (ORDERFLOW_COMMAND_RETRIES)")
	maxBody := fs.Int("max-body-bytes", envInt("ORDERFLOW_MAX_BODY_BYTES", 1<<20), "largest request body accepted (ORDERFLOW_MAX_BODY_BYTES)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.MaxBodyBytes = int64(*maxBody)
	switch {
	case c.SnapshotEvery < 0:
		return c, errors.New("snapshot-every must be >= 0")
	case c.CommandRetries < 0:
		return c, errors.New("command-retries must be >= 0")
	case c.MaxBodyBytes < 1024:
		return c, fmt.Errorf("max-body-bytes must be at least 1024, got %d", c.MaxBodyBytes)
	case c.HTTPAddr == "":
		return c, errors.New("http-addr is required")
	}
	return c, nil
}
