// Package pgpool opens the pgx pools of orderflow's processes (the
// service's roles and tools, and the harness) from DATABASE_URL.
package pgpool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open opens a pool of size conns on url (pool_max_conns in the URL wins),
// with a statement timeout when timeout is set, and pings it.
func Open(ctx context.Context, url string, conns int32, timeout time.Duration) (*pgxpool.Pool, error) {
	if url == "" {
		return nil, errors.New("DATABASE_URL is not set")
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	// pgxpool's default (4 on 2 cores) is too few for one process that runs
	// a subscriber transaction per consumer group and the saga's activities.
	if !strings.Contains(url, "pool_max_conns") {
		pcfg.MaxConns = conns
	}
	if timeout > 0 {
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}
