package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/bridge"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/delivery"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/httpapi"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/outbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

func natsURL() string {
	if u := os.Getenv("ORDERFLOW_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// unavailable skips a test whose service is missing — except in CI (CI
// set), where a test that silently tests nothing is a failure: .ci/run
// installs and starts what the tests need.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but "+format, args...)
	}
	t.Skipf(format, args...)
}

// quiet is a logger for tests that do not read the log.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// run runs the bridge's handlers on a router until the test ends.
func run(t *testing.T, pool *pgxpool.Pool, cfg bridge.Config) *bridge.Bridge {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 1,
		RetryInterval: 10 * time.Millisecond, Logger: cfg.Logger}, b.Handlers()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = router.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-router.Running()
	return b
}

func TestBridgeForwardsTopicsToJetStreamOnce(t *testing.T) {
	nc, err := nats.Connect(natsURL(), nats.Timeout(2*time.Second))
	if err != nil {
		unavailable(t, "no NATS reachable at %s (set ORDERFLOW_TEST_NATS_URL): %v", natsURL(), err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		unavailable(t, "NATS at %s has no JetStream: %v", natsURL(), err)
	}

	ctx := context.Background()
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{})
	limits := bridge.StreamLimits{MaxAge: 72 * time.Hour, MaxBytes: 512 << 20, DuplicateWindow: 30 * time.Minute}
	run(t, pool, bridge.Config{URL: natsURL(), Limits: limits})

	w := "w-" + uuid.NewString()
	payload, _ := json.Marshal(commands.OpenWallet{WalletID: w, CustomerID: "c", Currency: "EUR"})
	rec, err := bus.Dispatch(ctx, commands.Request{Type: "OpenWallet", Payload: payload, Internal: true})
	if err != nil {
		t.Fatal(err)
	}
	eventID := rec.EventIDs[0].String()

	// The event arrives on the wallet_events stream with its id as Nats-Msg-Id
	// and the envelope's metadata as headers.
	find := func() (*nats.RawStreamMsg, bool) {
		info, err := js.StreamInfo("wallet_events")
		if err != nil {
			return nil, false
		}
		for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && info.State.LastSeq-seq < 200; seq-- {
			m, err := js.GetMsg("wallet_events", seq)
			if err == nil && m.Header.Get(nats.MsgIdHdr) == eventID {
				return m, true
			}
		}
		return nil, false
	}
	var got *nats.RawStreamMsg
	for deadline := time.Now().Add(30 * time.Second); got == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the event did not reach JetStream")
		}
		got, _ = find()
	}
	if got.Header.Get("event_type") != "wallet.opened" || got.Header.Get("stream_id") != w || got.Header.Get("correlation_id") != rec.CorrelationID ||
		got.Header.Get(bridge.HeaderWatermillUUID) != eventID {
		t.Fatalf("headers %v", got.Header)
	}
	// The configured limits are the stream's.
	info, err := js.StreamInfo("wallet_events")
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxAge != limits.MaxAge || c.MaxBytes != limits.MaxBytes || c.Duplicates != limits.DuplicateWindow {
		t.Fatalf("stream limits: max age %s, max bytes %d, duplicate window %s", c.MaxAge, c.MaxBytes, c.Duplicates)
	}

	// A redelivery (the same message published again) is dropped by JetStream.
	before, _ := js.StreamInfo("wallet_events")
	again := nats.NewMsg("wallet_events")
	again.Data = got.Data
	again.Header.Set(nats.MsgIdHdr, eventID)
	if _, err := js.PublishMsg(again); err != nil {
		t.Fatal(err)
	}
	after, _ := js.StreamInfo("wallet_events")
	if after.State.Msgs != before.State.Msgs {
		t.Fatalf("a redelivered message was stored again: %d -> %d messages", before.State.Msgs, after.State.Msgs)
	}
}

// server is a private nats-server with JetStream on a port of its own,
// which a test stops, pauses and starts again (its store survives).
type server struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func newServer(t *testing.T) *server {
	t.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		if _, statErr := os.Stat("/usr/sbin/nats-server"); statErr != nil {
			unavailable(t, "no nats-server installed: %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &server{t: t, port: port, dir: t.TempDir()}
	t.Cleanup(func() {
		if s.cmd != nil {
			_ = s.cmd.Process.Signal(syscall.SIGCONT)
			s.stop()
		}
	})
	return s
}

func (s *server) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *server) start() {
	s.t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	s.cmd = exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		nc, err := nats.Connect(s.url(), nats.Timeout(time.Second))
		if err == nil {
			js, _ := nc.JetStream()
			_, err = js.AccountInfo()
			nc.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nats-server on %d did not start: %v", s.port, err)
		}
	}
}

// stop shuts the server down (cleanly: what it acknowledged is on disk).
func (s *server) stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// published are the messages of one test run, in commit order.
type published struct {
	t     *testing.T
	pool  *pgxpool.Pool
	runID string
	ids   []string
}

func newRun(t *testing.T, pool *pgxpool.Pool) *published {
	return &published{t: t, pool: pool, runID: uuid.NewString()}
}

// commit writes n messages of the run to wallet_events, one transaction
// each, as the command bus does.
func (p *published) commit(n int) {
	p.t.Helper()
	for range n {
		m := message.NewMessage(uuid.NewString(), []byte(`{}`))
		m.Metadata.Set("test_run", p.runID)
		m.Metadata.Set(outbox.MetaEventType, "wallet.opened")
		if err := pgx.BeginFunc(context.Background(), p.pool, func(tx pgx.Tx) error {
			return outbox.PublishTo(context.Background(), tx, "wallet_events", m)
		}); err != nil {
			p.t.Fatal(err)
		}
		p.ids = append(p.ids, m.UUID)
	}
}

// poisoned counts the run's messages on the poison topic.
func (p *published) poisoned() int {
	p.t.Helper()
	var n int
	if err := p.pool.QueryRow(context.Background(), `SELECT count(*) FROM watermill_poison WHERE metadata->>'test_run' = $1`, p.runID).Scan(&n); err != nil {
		p.t.Fatal(err)
	}
	return n
}

// forwarded lists the run's message UUIDs on the server's wallet_events
// stream, in stream order.
func (p *published) forwarded(url string) []string {
	p.t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return nil
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	info, err := js.StreamInfo("wallet_events")
	if err != nil {
		return nil
	}
	var out []string
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := js.GetMsg("wallet_events", seq)
		if err != nil {
			p.t.Fatalf("message %d: %v", seq, err)
		}
		if m.Header.Get("test_run") == p.runID {
			out = append(out, m.Header.Get(nats.MsgIdHdr))
		}
	}
	return out
}

// waitForwarded waits until every message of the run is on the stream,
// then checks each is there once, in commit order.
func (p *published) waitForwarded(url string, within time.Duration) {
	p.t.Helper()
	var got []string
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		if got = p.forwarded(url); len(got) >= len(p.ids) {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%d of %d messages forwarded within %s", len(got), len(p.ids), within)
		}
	}
	time.Sleep(200 * time.Millisecond) // anything forwarded twice shows now
	if got = p.forwarded(url); !slices.Equal(got, p.ids) {
		p.t.Fatalf("forwarded %d messages, not each of the %d once in commit order:\n got %v\nwant %v", len(got), len(p.ids), got, p.ids)
	}
}

// logBuffer is a log the test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) lines(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// A reconnect wait that spends nats.go's default budget (60 attempts) in
// well under a second.
const quickReconnect = 10 * time.Millisecond

// NATS away for far longer than nats.go's default reconnect budget: the
// bridge reconnects once NATS is back and forwards every message once, in
// commit order; nothing is poisoned; the log says once that NATS is away
// and once that it is back; readiness reports it while it lasts.
func TestBridgeOutlivesANATSOutageLongerThanTheReconnectBudget(t *testing.T) {
	srv := newServer(t)
	srv.start()
	pool := pgtest.Pool(t)
	logs := &logBuffer{}
	b := run(t, pool, bridge.Config{URL: srv.url(), ReconnectWait: quickReconnect, ReconnectJitter: -1, PublishTimeout: time.Second,
		BatchSize: 10, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	p := newRun(t, pool)
	p.commit(25)
	p.waitForwarded(srv.url(), 30*time.Second)

	srv.stop()
	// The default budget (60 attempts 10 ms apart) is spent within a second.
	time.Sleep(500 * time.Millisecond)
	p.commit(25) // while NATS is away
	time.Sleep(3 * time.Second)
	if s := b.Status(); s.Connected || s.AwaySince.IsZero() {
		t.Fatalf("status while NATS is away: %+v", s)
	}
	if err := b.Check(context.Background()); err == nil {
		t.Fatal("the readiness check passes while NATS is away")
	}
	if n := p.poisoned(); n != 0 {
		t.Fatalf("%d messages poisoned while NATS was away", n)
	}

	srv.start()
	p.commit(10) // after it is back
	p.waitForwarded(srv.url(), 30*time.Second)
	if n := p.poisoned(); n != 0 {
		t.Fatalf("%d messages poisoned", n)
	}
	if err := b.Check(context.Background()); err != nil {
		t.Fatalf("readiness once NATS is back: %v", err)
	}
	if s := b.Status(); s.Reconnects < 1 || s.Forwarded < 60 {
		t.Fatalf("status: %+v", s)
	}
	away, backAgain := logs.lines("NATS is away"), logs.lines("NATS is back")
	noisy := logs.lines("level=WARN") + logs.lines("level=ERROR")
	if away != 1 || backAgain != 1 || noisy > 2 {
		t.Fatalf("the log: %d lines say NATS is away, %d that it is back, %d warnings and errors:\n%s", away, backAgain, noisy, logs.buf.String())
	}
}

// NATS unreachable when the bridge starts: it starts anyway (so does the
// process around it), and forwards everything once NATS appears.
func TestBridgeStartsWithoutNATSAndForwardsOnceItAppears(t *testing.T) {
	srv := newServer(t) // not started yet
	pool := pgtest.Pool(t)
	b := run(t, pool, bridge.Config{URL: srv.url(), ReconnectWait: quickReconnect, ReconnectJitter: -1, BatchSize: 10})
	p := newRun(t, pool)
	p.commit(20)
	time.Sleep(2 * time.Second) // longer than the default budget of attempts
	if b.Status().Connected {
		t.Fatal("connected to nothing")
	}
	// /readyz as cmd/orderflow composes it: the bridge degraded, the
	// process ready.
	ready := httpapi.Ready(func(context.Context) error { return nil }, func() map[string]func(context.Context) error {
		return map[string]func(context.Context) error{"nats_bridge": func(ctx context.Context) error {
			if err := b.Check(ctx); err != nil {
				return fmt.Errorf("%w: %w", httpapi.ErrDegraded, err)
			}
			return nil
		}}
	})
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		ready(rec, httptest.NewRequest("GET", "/readyz", nil))
		var body struct{ Checks map[string]string }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body.Checks["nats_bridge"]
	}
	if code, check := readyz(); code != 200 || check != "degraded" {
		t.Fatalf("/readyz while NATS is away: %d, nats_bridge %q", code, check)
	}
	if n := p.poisoned(); n != 0 {
		t.Fatalf("%d messages poisoned while NATS was away", n)
	}
	srv.start()
	p.commit(5)
	p.waitForwarded(srv.url(), 30*time.Second)
	if n := p.poisoned(); n != 0 {
		t.Fatalf("%d messages poisoned", n)
	}
	if code, check := readyz(); code != 200 || check != "ok" {
		t.Fatalf("/readyz once NATS is there: %d, nats_bridge %q", code, check)
	}
}

// NATS that accepts the connection but answers nothing (the server
// paused): every publish times out, for several times the router's
// retries, and still nothing is poisoned; once it answers, every message
// is forwarded once, in commit order.
func TestAPublishThatTimesOutIsRetriedNeverPoisoned(t *testing.T) {
	srv := newServer(t)
	srv.start()
	pool := pgtest.Pool(t)
	logs := &logBuffer{}
	run(t, pool, bridge.Config{URL: srv.url(), ReconnectWait: quickReconnect, ReconnectJitter: -1, PublishTimeout: 200 * time.Millisecond, BatchSize: 10,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	p := newRun(t, pool)
	p.commit(5)
	p.waitForwarded(srv.url(), 30*time.Second)

	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.commit(10)
	time.Sleep(3 * time.Second) // many timed-out publishes
	if n := p.poisoned(); n != 0 {
		_ = srv.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("%d messages poisoned after publishes timed out", n)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	p.commit(5)
	p.waitForwarded(srv.url(), 30*time.Second)
	if n := p.poisoned(); n != 0 {
		t.Fatalf("%d messages poisoned", n)
	}
	// Not even tried: a poison write that fails (its transaction gone) is
	// an attempt all the same.
	if n, noisy := logs.lines("poison"), logs.lines("level=WARN")+logs.lines("level=ERROR"); n != 0 || noisy > 3 {
		t.Fatalf("the log: %d lines mention the poison topic, %d warnings and errors:\n%s", n, noisy, logs.buf.String())
	}
}

// A handler on delivery's router whose outside system stays away past the
// message's ack deadline (as the bridge's publishes once did, on the
// router): the retry middleware then returns the context's error, without
// the handler's transient mark. The message is read again; it is never
// sent to the poison topic, not even in an attempt that fails because its
// transaction is gone.
func TestARouterHandlerFailingTransientlyPastItsDeadlineIsNeverPoisoned(t *testing.T) {
	pool := pgtest.Pool(t)
	logs := &logBuffer{}
	p := newRun(t, pool)
	p.commit(1)
	var calls atomic.Int32
	router, err := delivery.NewRouter(pool, delivery.RouterConfig{PollInterval: 10 * time.Millisecond, MaxRetries: 5, RetryInterval: 100 * time.Millisecond,
		AckDeadline: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		delivery.Handler{Name: "away", ConsumerGroup: "away_" + strings.ReplaceAll(p.runID[:8], "-", ""), Topic: "wallet_events",
			Handle: func(_ context.Context, m *message.Message) error {
				if m.Metadata.Get("test_run") != p.runID {
					return nil
				}
				calls.Add(1)
				return delivery.Transient(errors.New("broker away"))
			}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = router.Run(ctx); close(done) }()
	time.Sleep(3 * time.Second) // several ack deadlines
	cancel()
	<-done
	if calls.Load() < 6 {
		t.Fatalf("handled %d times: the retries did not outlast the deadline", calls.Load())
	}
	if n := logs.lines("poison"); n != 0 || p.poisoned() != 0 {
		t.Fatalf("%d log lines about the poison topic:\n%s", n, logs.buf.String())
	}
}
