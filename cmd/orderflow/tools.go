package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/internal/verify"
	"github.com/orderflow/orderflow/outbox"
	"github.com/orderflow/orderflow/projections"
	"github.com/orderflow/orderflow/workflows"
	"github.com/orderflow/orderflow/workflows/sagas"
)

func (a *app) projectionsStatus(ctx context.Context) error {
	st, err := a.reader.Status(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECTION\tTOPIC\tPOSITION\tAPPLIED\tLAG EVENTS\tLAG SECONDS\tPOISONED")
	for _, s := range st {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%.1f\t%d\n", s.Name, s.Topic, s.Position, s.Applied, s.LagEvents, s.LagSeconds, s.Poisoned)
	}
	return w.Flush()
}

func projectionNames() string {
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

func (a *app) rebuild(ctx context.Context, name string) error {
	p, ok := projections.ByName(name)
	if !ok {
		return fmt.Errorf("no projection %q; there are %s", name, projectionNames())
	}
	fmt.Fprintf(os.Stderr, "Rebuilding %s from the log. Its live consumer pauses until this commits; queries keep\n"+
		"reading the old rows until then, and other consumers are held back while the transaction is open.\n", p.Name)
	var bar *progressbar.ProgressBar
	start := time.Now()
	n, err := projections.Rebuild(ctx, a.pool, a.store, a.bus.Log(), p, func(done, total int64) {
		if bar == nil {
			bar = progressbar.Default(total, p.Name)
		}
		_ = bar.Set64(done)
	})
	if err != nil {
		return err
	}
	if bar != nil {
		_ = bar.Finish()
	}
	fmt.Fprintf(os.Stderr, "%s rebuilt: %d applied in %s\n", p.Name, n, time.Since(start).Round(time.Millisecond))
	return nil
}

func (a *app) poisonList(ctx context.Context, unresolved bool) error {
	msgs, err := a.reader.Poison(ctx, unresolved, 0, math.MaxInt32) // the CLI lists them all
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OFFSET\tHANDLER\tTOPIC\tEVENT\tSTREAM\tPOSITION\tRESOLVED\tREASON")
	for _, m := range msgs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Offset, m.Handler, m.Topic, m.EventType, m.StreamID, m.Position, m.Resolved, m.Reason)
	}
	return w.Flush()
}

// replayable are the consumers besides the projections whose poison an
// operator replays (poison replay, POST /poison/{offset}/replay): the
// saga starter, as the worker runs it.
func (a *app) replayable() []delivery.Handler {
	return []delivery.Handler{sagas.Starter(a.cfg.ShippingDeadline)}
}

func (a *app) poisonReplay(ctx context.Context, arg string, all bool) error {
	var offsets []int64
	switch {
	case all:
		msgs, err := a.reader.Poison(ctx, true, 0, math.MaxInt32)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			offsets = append(offsets, m.Offset)
		}
	case arg != "":
		o, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return fmt.Errorf("offset %q is not a number", arg)
		}
		offsets = []int64{o}
	default:
		return errors.New("say which message: poison replay OFFSET, or -all")
	}
	for _, o := range offsets {
		if err := projections.ReplayPoison(ctx, a.pool, a.store.Registry(), o, a.replayable()...); err != nil {
			return err
		}
		fmt.Printf("replayed %d\n", o)
	}
	fmt.Printf("%d replayed\n", len(offsets))
	return nil
}

// tail prints a topic's messages, one JSON line each, as they commit.
func (a *app) tail(ctx context.Context, topic, from string) error {
	tx, offset, err := outbox.TailFrom(ctx, a.pool, topic, from)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for {
		msgs, err := outbox.ReadTopic(ctx, a.pool, topic, tx, offset, 500)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := enc.Encode(map[string]any{"topic": topic, "offset": m.Offset, "uuid": m.UUID, "metadata": m.Metadata, "payload": m.Payload}); err != nil {
				return err
			}
			tx, offset = m.TransactionID, m.Offset
		}
		if len(msgs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func (a *app) verify(ctx context.Context, settle time.Duration) error {
	chk := &verify.Checker{Pool: a.pool, Store: a.store, Reader: a.reader, Settle: settle}
	if a.sagas != nil {
		chk.Temporal = a.sagas.C
	}
	rep, err := chk.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Print(rep)
	if !rep.OK() {
		return errVerifyFailed
	}
	return nil
}

var errVerifyFailed = errors.New("invariants violated")

// repair starts a repair run for one order, or for every order whose saga
// ended without an outcome.
func (a *app) repair(ctx context.Context, orderID string) error {
	ids := []string{orderID}
	if orderID == "" {
		found, err := sagas.Unfinished(ctx, a.pool, a.sagas.C)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for _, st := range found {
			ids = append(ids, st.OrderID)
		}
		fmt.Printf("%d orders whose saga ended without an outcome\n", len(ids))
	}
	for _, id := range ids {
		if err := sagas.Repair(ctx, a.pool, a.sagas.C, id); err != nil {
			return err
		}
		fmt.Printf("order %s: repair run started (workflow %s)\n", id, workflows.WorkflowID(id))
	}
	return nil
}
