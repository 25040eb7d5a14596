package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// The api role's /readyz says ready only once the API listens: the ops
// endpoint serves from the process's start, and a balancer that believed
// it sent requests to a port not yet open.
func TestTheAPIIsReadyOnlyOnceItListens(t *testing.T) {
	dir := t.TempDir()
	key, err := auth.DevKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "public.pem")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	httpAddr, opsAddr := free(), free()
	for k, v := range map[string]string{"DATABASE_URL": pgtest.URL(t), "ORDERFLOW_HTTP_ADDR": httpAddr, "ORDERFLOW_OPS_ADDR": opsAddr,
		"ORDERFLOW_PAYMENT_WEBHOOK_SECRET": "whsec_ready_test", "ORDERFLOW_JWT_PUBLIC_KEY": pub, "ORDERFLOW_JWT_ISSUER": "ready-test",
		"TEMPORAL_ADDRESS": ""} {
		t.Setenv(k, v)
	}
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg, err := parseConfig(fs, "api", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAPI(ctx, cfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("api role: %v", err)
		}
	}()
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		res, err := client.Get("http://" + opsAddr + "/readyz")
		if err != nil {
			continue // the ops endpoint is not up yet
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			if !strings.Contains(string(body), "api") {
				t.Fatalf("not ready without naming the API: %d %s", res.StatusCode, body)
			}
			continue
		}
		conn, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatalf("/readyz said ready, and the API does not listen: %v", err)
		}
		conn.Close()
		return
	}
}
