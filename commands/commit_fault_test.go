package commands_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

// Where cutProxy cuts the connection of the next group commit.
const (
	cutNone = iota
	// cutAtCommit: COMMIT ran on the server; its answer never arrives.
	cutAtCommit
	// cutBeforeWrites: the group's transaction began; its writes (and
	// COMMIT) never reach the server.
	cutBeforeWrites
	// cutUnnoticed: as cutBeforeWrites, but the server's side of the
	// connection stays open (a network partition): the server keeps the
	// transaction open, never learning that its client is gone.
	cutUnnoticed
)

// PostgreSQL's CommandComplete messages for COMMIT and BEGIN.
var (
	commitComplete = []byte("C\x00\x00\x00\x0bCOMMIT\x00")
	beginComplete  = []byte("C\x00\x00\x00\x0aBEGIN\x00")
)

// cutProxy is a TCP proxy between the bus and PostgreSQL that cuts one
// connection at a chosen moment of the wire protocol, as a network fault
// or a crash of a proxy would.
type cutProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	cuts   atomic.Int32
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	var once sync.Once
	cut := func() {
		once.Do(func() {
			client.Close()
			server.Close()
		})
	}
	var dropNext atomic.Int32 // cutBeforeWrites, cutUnnoticed: drop the client's next bytes
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if mode := dropNext.Load(); n > 0 && mode != cutNone {
				p.cuts.Add(1)
				if mode == cutUnnoticed {
					client.Close()
					return
				}
				cut()
				return
			}
			if n > 0 {
				if _, err := server.Write(buf[:n]); err != nil {
					cut()
					return
				}
			}
			if err != nil {
				cut()
				return
			}
		}
	}()
	defer cut()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		chunk := buf[:n]
		if bytes.Contains(chunk, commitComplete) && p.mode.CompareAndSwap(cutAtCommit, cutNone) {
			p.cuts.Add(1)
			return
		}
		if bytes.Contains(chunk, beginComplete) {
			for _, mode := range []int32{cutBeforeWrites, cutUnnoticed} {
				if p.mode.CompareAndSwap(mode, cutNone) {
					dropNext.Store(mode)
				}
			}
		}
		if n > 0 {
			if _, err := client.Write(chunk); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// newBusThrough is a bus whose connections pass through proxy.
func newBusThrough(t *testing.T) (*commands.Bus, *pgxpool.Pool, *cutProxy) {
	direct := pgtest.Pool(t)
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", uint16(proxy.ln.Addr().(*net.TCPAddr).Port)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50, CacheSize: 1000})
	return commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 50}), direct, proxy
}

// topUps counts the top-ups applied to wallet id.
func topUps(t *testing.T, pool *pgxpool.Pool, id string) int {
	return count(t, pool, `SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'wallet.topped_up'`, id)
}

// A keyless top-up whose connection is cut after COMMIT ran is answered
// as committed (the bus asks PostgreSQL), so a client that retries on
// every failure applies it exactly once.
func TestKeylessCommandCutAtCommitAppliesOnce(t *testing.T) {
	b, pool, proxy := newBusThrough(t)
	id := openWallet(t, b, 0)
	proxy.mode.Store(cutAtCommit)
	var rec commandsRecord
	for attempt := 1; ; attempt++ {
		r, err := b.Dispatch(context.Background(), req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"}))
		if err == nil {
			rec = commandsRecord{r.CommandID, r.Seq}
			break
		}
		if attempt == 3 {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		t.Logf("attempt %d failed, the client retries without a key: %v", attempt, err)
	}
	if proxy.cuts.Load() != 1 {
		t.Fatalf("%d connections cut, want 1 (at COMMIT)", proxy.cuts.Load())
	}
	if n := topUps(t, pool, id); n != 1 {
		t.Fatalf("%d top-ups applied, want exactly 1", n)
	}
	logged, err := b.Log().Get(context.Background(), rec.id)
	if err != nil || logged.Seq != rec.seq {
		t.Fatalf("the answer (seq %d) is not the record as committed: %+v, %v", rec.seq, logged, err)
	}
}

type commandsRecord struct {
	id  string
	seq int64
}

// A group whose connection is lost before its writes reach the server is
// rolled back; the bus learns so and commits the group again.
func TestGroupAbortedByLostConnectionIsRetried(t *testing.T) {
	b, pool, proxy := newBusThrough(t)
	id := openWallet(t, b, 0)
	proxy.mode.Store(cutBeforeWrites)
	mustDispatch(t, b, req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"}))
	if proxy.cuts.Load() != 1 {
		t.Fatalf("%d connections cut, want 1 (before the writes)", proxy.cuts.Load())
	}
	if n := topUps(t, pool, id); n != 1 {
		t.Fatalf("%d top-ups applied, want 1", n)
	}
}

// A group whose server never learns that its client is gone holds its
// transaction open: the bus ends that server process, reads the outcome
// (rolled back) and commits the group again.
func TestGroupLeftOpenByAPartitionIsEndedAndRetried(t *testing.T) {
	b, pool, proxy := newBusThrough(t)
	id := openWallet(t, b, 0)
	proxy.mode.Store(cutUnnoticed)
	mustDispatch(t, b, req("", "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"}))
	if proxy.cuts.Load() != 1 {
		t.Fatalf("%d connections cut, want 1", proxy.cuts.Load())
	}
	if n := topUps(t, pool, id); n != 1 {
		t.Fatalf("%d top-ups applied, want 1", n)
	}
}

// A deadlock that picks the group as its victim is no command's fault: the
// group is written again, and the command succeeds.
func TestDeadlockedGroupIsRetried(t *testing.T) {
	b, pool := newBus(t)
	ctx := context.Background()
	id := openWallet(t, b, 0) // at version 1: the top-up writes version 2
	key := "deadlock-" + id
	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	// The other transaction holds the command's id, so the group waits on
	// it; it never gives up first.
	if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '10s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `INSERT INTO commands (command_id, command_type, payload, status, stream_type, stream_id, stream_version,
		correlation_id, causation_id, actor, recorded_at, message_uuid) VALUES ($1, 'TopUpWallet', '{}', 'accepted', 'wallet', $2, 2, 't', 't', 't', now(), gen_random_uuid())`,
		commands.ScopedID(ops.Subject, key), id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Dispatch(ctx, req(key, "TopUpWallet", commands.TopUpWallet{WalletID: id, Amount: 100, Reason: "test funds"}))
		done <- err
	}()
	for count(t, pool, `SELECT count(*) FROM pg_locks WHERE NOT granted`) == 0 {
		time.Sleep(time.Millisecond) // the group waits on the other transaction
	}
	// Now the other transaction waits on the group's event: a deadlock,
	// which PostgreSQL breaks by rolling the group back (had the group
	// committed, this insert would fail as a duplicate).
	if _, err := other.Exec(ctx, `INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version, data,
		correlation_id, causation_id, actor, recorded_at) VALUES (gen_random_uuid(), 'wallet', $1, 2, 'x', 1, '{}', 't', 't', 't', now())`, id); err != nil {
		t.Fatalf("the group was not the deadlock's victim: %v", err)
	}
	if err := other.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a deadlocked group answered %v; want it retried", err)
	}
	if n := topUps(t, pool, id); n != 1 {
		t.Fatalf("%d top-ups applied, want 1", n)
	}
}
