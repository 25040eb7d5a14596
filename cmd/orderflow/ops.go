package main

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/httpapi"
)

// checks are the readiness checks of this process's roles, added as each
// role starts (the projector's, Temporal's).
type checks struct {
	mu sync.Mutex
	m  map[string]func(context.Context) error
}

func (c *checks) add(name string, check func(context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]func(context.Context) error{}
	}
	c.m[name] = check
}

// starting adds checks that fail until their role replaces them with its
// own: the ops endpoint serves /readyz from the process's start, and a
// role that has not added its check yet (the API not yet listening, the
// Temporal client still dialling) must not read as ready.
func (c *checks) starting(names ...string) {
	for _, name := range names {
		c.add(name, func(context.Context) error { return errors.New(name + " is starting") })
	}
}

func (c *checks) all() map[string]func(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// temporalCheck is ready when the Temporal frontend answers.
func temporalCheck(tc client.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	}
}

// serveOps serves /metrics, /healthz and /readyz on the ops address, for
// every role (the projector and the worker have no other listener).
func (a *app) serveOps(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("GET /healthz", httpapi.Alive)
	mux.Handle("GET /readyz", httpapi.Ready(a.pool.Ping, a.ready.all))
	srv := &http.Server{Addr: a.cfg.OpsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	a.log.Info("ops listening", "metrics", "http://"+a.cfg.OpsAddr+"/metrics", "ready", "http://"+a.cfg.OpsAddr+"/readyz")
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
