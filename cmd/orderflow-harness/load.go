package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/orderflow/orderflow/internal/harness/loadgen"
)

// loadFlags are the flags of `orderflow-harness load`.
type loadFlags struct {
	url, out, report, mix string
	token                 string
	concurrency, orders   int
	customers, products   int
	rate, duplicates      float64
	duration, drain       time.Duration
	hot                   bool
}

func (l *loadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.url, "url", "http://127.0.0.1:8080", "orderflow API to drive")
	fs.StringVar(&l.token, "token", os.Getenv("ORDERFLOW_TOKEN"), "an operator's bearer token (ORDERFLOW_TOKEN); default: one signed with dev's key in -data-dir")
	fs.IntVar(&l.concurrency, "concurrency", 8, "clients placing orders at once")
	fs.Float64Var(&l.rate, "rate", 0, "target orders per second (0: as fast as the clients go)")
	fs.DurationVar(&l.duration, "duration", 30*time.Second, "how long to place orders")
	fs.DurationVar(&l.drain, "drain", loadgen.DefaultDrain, "how long the orders in flight when -duration ends may still take")
	fs.IntVar(&l.orders, "orders", 0, "place this many orders instead of running for -duration")
	fs.IntVar(&l.customers, "customers", 20, "wallets to create")
	fs.IntVar(&l.products, "products", 10, "products to stock")
	fs.StringVar(&l.mix, "mix", "fulfilled=70,out_of_stock=8,insufficient_funds=8,carrier_rejected=7,cancelled_mid_saga=7", "weights of the kinds of order")
	fs.Float64Var(&l.duplicates, "duplicates", 0.05, "share of orders submitted twice with the same Idempotency-Key")
	fs.BoolVar(&l.hot, "hot", false, "every order on one wallet and one product (contention)")
	fs.StringVar(&l.out, "out", "load-result.json", "JSON result file")
	fs.StringVar(&l.report, "report", "load-report.html", "HTML report file")
}

func runLoad(ctx context.Context, cfg config, l loadFlags) error {
	token, err := operatorToken(cfg, l.token)
	if err != nil {
		return err
	}
	mix := map[string]float64{}
	for _, kv := range strings.Split(l.mix, ",") {
		k, v, ok := strings.Cut(kv, "=")
		w, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || w < 0 {
			return fmt.Errorf("-mix: %q is not kind=weight", kv)
		}
		mix[strings.TrimSpace(k)] = w
	}
	total := int64(l.orders)
	unit := "orders"
	if total == 0 {
		total, unit = int64(l.duration.Seconds()), "seconds"
	}
	// A live bar on a terminal; in a log (CI, scripts) it would only be noise.
	fi, _ := os.Stderr.Stat()
	bar := progressbar.NewOptions64(total, progressbar.OptionSetDescription("placing orders"), progressbar.OptionShowCount(),
		progressbar.OptionSetWriter(os.Stderr), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetVisibility(fi != nil && fi.Mode()&os.ModeCharDevice != 0))
	start := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{
		URL: strings.TrimRight(l.url, "/"), Token: token, Concurrency: l.concurrency, Rate: l.rate, Duration: l.duration, Drain: l.drain, Orders: l.orders,
		Customers: l.customers, Products: l.products, Mix: mix, Duplicates: l.duplicates, Hot: l.hot, RejectPostalCode: cfg.CarrierRejectZip,
		Progress: func(n int64) {
			if unit == "orders" {
				_ = bar.Set64(min(n, total))
			} else {
				_ = bar.Set64(min(int64(time.Since(start).Seconds()), total))
			}
		},
	})
	_ = bar.Finish()
	if err != nil {
		return err
	}
	fmt.Print(res.Text())
	for _, f := range []struct {
		path  string
		write func(io.Writer) error
	}{{l.out, res.WriteJSON}, {l.report, res.WriteHTML}} {
		if f.path == "" {
			continue
		}
		file, err := os.Create(f.path)
		if err != nil {
			return err
		}
		if err := f.write(file); err != nil {
			file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", f.path)
	}
	return nil
}
