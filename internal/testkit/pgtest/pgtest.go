// Package pgtest gives each test package its own migrated database: on the
// server named by DATABASE_URL when set, otherwise on a throwaway server
// started with devpg.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/internal/devruntime/devpg"
	"github.com/orderflow/orderflow/migrations"
)

var dbURL string

// Run creates the package's database, runs the tests and drops it. Call it
// from TestMain: os.Exit(pgtest.Run(m)).
func Run(m interface{ Run() int }) int {
	ctx := context.Background()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		dir, err := os.MkdirTemp("", "orderflow-pgtest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			return 1
		}
		_ = os.Chmod(dir, 0o755)
		defer os.RemoveAll(dir)
		srv, err := devpg.Start(ctx, devpg.Options{Dir: filepath.Join(dir, "pg"), Database: "postgres"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: no DATABASE_URL and no embedded PostgreSQL:", err)
			return 1
		}
		defer srv.Stop()
		base = srv.URL
	}
	name := "orderflow_test_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: connect:", err)
		return 1
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: create database:", err)
		return 1
	}
	defer admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
	u, err := url.Parse(base)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: DATABASE_URL:", err)
		return 1
	}
	u.Path = "/" + name
	dbURL = u.String()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	if _, err := migrations.Up(ctx, pool); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		pool.Close()
		return 1
	}
	pool.Close()
	return m.Run()
}

// URL is the package database's connection string.
func URL(tb testing.TB) string {
	tb.Helper()
	if dbURL == "" {
		tb.Fatal("pgtest: call pgtest.Run from TestMain")
	}
	return dbURL
}

// RunURL is the package database's connection string while Run runs the
// tests (for what TestMain checks after them); empty otherwise.
func RunURL() string { return dbURL }

// Pool returns a pool on the package database, closed when the test ends.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(URL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = 40
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Cleartext searches every table of the database, each row as text (what a
// dump holds), for any of texts, and returns the first table holding one.
func Cleartext(ctx context.Context, pool *pgxpool.Pool, texts ...string) (string, error) {
	rows, _ := pool.Query(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, table := range tables {
		for _, text := range texts {
			var found bool
			if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` t WHERE strpos(t::text, $1) > 0)`, text).Scan(&found); err != nil {
				return "", fmt.Errorf("%s: %w", table, err)
			}
			if found {
				return table + " (" + text + ")", nil
			}
		}
	}
	return "", nil
}
