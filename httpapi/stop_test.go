package httpapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/httpapi/apitest"
)

// A request the stop cuts (its context cancelled once the grace is over,
// as orderflow's API does on SIGTERM) before its command committed is
// answered 503 request_cut with Retry-After — retry, nothing was
// committed — and logged as a warning, not 500 internal with an ERROR
// line (a clean stop logs none).
func TestARequestCutByTheStopIsNotAFault(t *testing.T) {
	var logs bytes.Buffer
	cfg := httpapi.Config{}
	_, key := newServer(t, &cfg)
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	e, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Issue(key, auth.DevIssuer, auth.DevAudience, operator, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cut := context.WithCancel(context.Background())
	cut()
	req := httptest.NewRequest(http.MethodPost, "/wallets", strings.NewReader(`{"wallet_id":"w-cut","customer_id":"c-cut","currency":"EUR"}`)).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	rec := apitest.New(t).Serve(e, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), `"code":"request_cut"`) {
		t.Fatalf("a command cut by the stop: %d Retry-After=%q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a request cut by the stop logged an error:\n%s", logs.String())
	}
	// Nothing was committed: the wallet does not exist.
	srv := httptest.NewServer(e)
	defer srv.Close()
	c := client{t: t, url: srv.URL, key: key, http: apitest.Client(t)}.as(operator)
	c.want(c.do("GET", "/wallets/w-cut", ""), http.StatusNotFound)
}
