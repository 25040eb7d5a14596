package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/harness/campaign"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/projections"
)

// campaignFlags are the flags of `orderflow-harness campaign`.
type campaignFlags struct {
	url, key, issuer       string
	seed                   uint64
	duration, settle       time.Duration
	actors                 int
	faults, faultExec      string
	faultEvery             time.Duration
	proxyListen, proxyPeer string
	actions                string
}

func (f *campaignFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "http://127.0.0.1:8080", "the APIs to drive, separated by commas")
	fs.Uint64Var(&f.seed, "seed", 1, "the seed of every choice: action, door, delay, fault, resolution")
	fs.DurationVar(&f.duration, "duration", time.Minute, "how long customers act (the end phase and verify come after)")
	fs.IntVar(&f.actors, "actors", 6, "customers acting at once")
	fs.StringVar(&f.key, "key", "", "Ed25519 signing key (PEM) the APIs' tokens are verified against (default: dev's)")
	fs.StringVar(&f.issuer, "issuer", auth.DevIssuer, "the tokens' iss")
	fs.StringVar(&f.faults, "faults", "", "fault kinds to inject, separated by commas: cut-connection (needs -proxy-listen), and any kind -fault-exec knows")
	fs.DurationVar(&f.faultEvery, "fault-every", 15*time.Second, "mean pause between two faults")
	fs.StringVar(&f.faultExec, "fault-exec", "", "command (split at spaces) run with a fault kind as last argument: it injects the fault and returns once the service is back")
	fs.StringVar(&f.proxyListen, "proxy-listen", "", "TCP proxies to PostgreSQL whose connections cut-connection cuts, separated by commas: [process=]host:port, one per process (point each process's DATABASE_URL at its own)")
	fs.StringVar(&f.proxyPeer, "proxy-upstream", "", "PostgreSQL address behind the proxy (host:port)")
	fs.StringVar(&f.actions, "actions", "", "only these actions, separated by commas (default: the whole mix): "+strings.Join(campaign.Actions(), ", "))
	fs.DurationVar(&f.settle, "settle", 5*time.Minute, "longest wait for every saga to end, then for verify's consumers")
}

func runCampaign(ctx context.Context, cfg config, f campaignFlags) error {
	var proxies []*campaign.Proxy
	for _, spec := range strings.Split(f.proxyListen, ",") {
		if spec = strings.TrimSpace(spec); spec == "" {
			continue
		}
		name, addr, named := strings.Cut(spec, "=")
		if !named {
			name, addr = spec, spec
		}
		proxy, err := campaign.Listen(addr, f.proxyPeer)
		if err != nil {
			return err
		}
		defer proxy.Close()
		proxy.Name = name
		proxies = append(proxies, proxy)
		fmt.Fprintf(os.Stderr, "campaign: proxy for %s %s -> %s\n", name, proxy.Addr(), f.proxyPeer)
	}
	path := f.key
	if path == "" {
		path = auth.DevKeyPath(cfg.DataDir)
	}
	key, err := auth.SigningKey(path, false)
	if err != nil {
		return err
	}
	var kinds, exec []string
	for _, k := range strings.Split(f.faults, ",") {
		if k = strings.TrimSpace(k); k != "" {
			kinds = append(kinds, k)
			if k == "cut-connection" && len(proxies) == 0 {
				return errors.New("-faults cut-connection needs -proxy-listen")
			}
			if k != "cut-connection" && f.faultExec == "" {
				return fmt.Errorf("-faults %s needs -fault-exec", k)
			}
		}
	}
	exec = strings.Fields(f.faultExec)
	var only []string
	if f.actions != "" {
		only = strings.Split(f.actions, ",")
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	tc, err := dialTemporal(ctx, cfg)
	if err != nil {
		return err
	}
	defer tc.Close()
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: cfg.SnapshotEvery, CacheSize: cfg.AggregateCache})
	reader := projections.NewReader(pool)
	rep, err := campaign.Run(ctx, campaign.Config{
		APIs: strings.Split(f.url, ","), Seed: f.seed, Duration: f.duration, Actors: f.actors,
		Issue: func(p auth.Principal) (string, error) {
			return auth.Issue(key, f.issuer, cfg.JWTAudience, p, 24*time.Hour)
		},
		Temporal: tc, Pool: pool, RejectPostalCode: cfg.CarrierRejectZip, SlowPostalCode: cfg.CarrierSlowZip,
		Faults: kinds, FaultEvery: f.faultEvery, FaultExec: exec, Proxies: proxies, Settle: f.settle, Actions: only,
		Verify: func(ctx context.Context) (*verify.Report, error) {
			chk := &verify.Checker{Pool: pool, Store: store, Reader: reader, Temporal: tc, Settle: f.settle}
			return chk.Run(ctx)
		},
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s campaign: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		return err
	}
	fmt.Print(rep)
	if !rep.OK() {
		return errCampaignFailed
	}
	return nil
}

var errCampaignFailed = errors.New("the campaign found invariant violations, anomalies or unended sagas")
