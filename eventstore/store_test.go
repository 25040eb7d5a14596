package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/money"
	"github.com/orderflow/orderflow/domain/wallet"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/eventstoretest"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// Renamed is a test event at schema version 2; version 1 called the field "title".
type Renamed struct {
	Name string `json:"name"`
}

func (Renamed) EventType() string { return "test.renamed" }

func registry() *eventstore.Registry {
	r := eventstore.NewRegistry()
	r.RegisterStream(wallet.StreamType, wallet.SnapshotVersion, func(id string) aggregate.Root { return wallet.New(id) })
	eventstore.RegisterEvent[wallet.Opened](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.ToppedUp](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.Renamed](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[wallet.HoldAuthorised](r, wallet.StreamType, 1)
	eventstore.RegisterEvent[Renamed](r, "test", 2)
	r.RegisterUpcaster("test.renamed", 1, func(in json.RawMessage) (json.RawMessage, error) {
		var v1 struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(in, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(Renamed{Name: v1.Title})
	})
	return r
}

func newStore(t testing.TB, snapshotEvery int) (*eventstore.Store, *pgxpool.Pool) {
	pool := pgtest.Pool(t)
	return eventstore.New(pool, registry(), eventstore.Options{SnapshotEvery: snapshotEvery}), pool
}

var md = eventstore.Metadata{CorrelationID: "corr-1", CausationID: "cmd-1", Actor: "tester"}

// appendOne writes one event to a wallet stream at version expected in a
// transaction of its own, through the store's write path (Pending and
// QueueSaves, as a command's commit).
func appendOne(ctx context.Context, s *eventstore.Store, pool *pgxpool.Pool, id string, expected int64, e aggregate.Event) ([]eventstore.Envelope, error) {
	var envs []eventstore.Envelope
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		envs, err = eventstoretest.Save(ctx, tx, s, eventstoretest.Stream(wallet.StreamType, id, expected, e), md)
		return err
	})
	return envs, err
}

// save writes agg's pending changes (and its snapshot when due) in a
// transaction of its own.
func save(t testing.TB, s *eventstore.Store, pool *pgxpool.Pool, agg aggregate.Root) {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := eventstoretest.Save(ctx, tx, s, agg, md); return err }); err != nil {
		t.Fatal(err)
	}
}

// Events written to a stream read back as written: ids, versions, global
// positions, recorded time, metadata, decoded events.
func TestWrittenEventsReadBackWithTheirMetadata(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	id := "w-" + uuid.NewString()
	events := []aggregate.Event{
		wallet.Opened{WalletID: id, CustomerID: "c1", Currency: "EUR"},
		wallet.ToppedUp{Amount: 100, Currency: "EUR"},
	}
	var written []eventstore.Envelope
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) (err error) {
		written, err = eventstoretest.Save(ctx, tx, s, eventstoretest.Stream(wallet.StreamType, id, 0, events...), md)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	read, err := s.ReadStream(ctx, wallet.StreamType, id, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 2 {
		t.Fatalf("read %d events", len(read))
	}
	for i, e := range read {
		w := written[i]
		if e.EventID != w.EventID || e.StreamVersion != int64(i+1) || e.GlobalPosition != w.GlobalPosition || e.GlobalPosition == 0 ||
			!e.RecordedAt.Equal(w.RecordedAt) || e.CorrelationID != "corr-1" || e.CausationID != "cmd-1" || e.Actor != "tester" ||
			e.SchemaVersion != 1 || e.EventType != events[i].EventType() || !reflect.DeepEqual(e.Event, events[i]) {
			t.Fatalf("event %d: read %+v, wrote %+v", i, e, w)
		}
	}
	if read[0].GlobalPosition >= read[1].GlobalPosition {
		t.Fatal("positions out of order within one write")
	}
	got, err := s.Event(ctx, read[1].EventID)
	if err != nil || got.GlobalPosition != read[1].GlobalPosition {
		t.Fatalf("event by id: %+v %v", got, err)
	}
	if _, err := s.Event(ctx, uuid.New()); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("unknown event: %v", err)
	}
}

// A write at a version the stream has moved past fails with the stream's
// current version, and writes nothing.
func TestStaleExpectedVersionConflicts(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	id := "w-" + uuid.NewString()
	if _, err := appendOne(ctx, s, pool, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, err := appendOne(ctx, s, pool, id, 1, wallet.ToppedUp{Amount: 1, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	for _, expected := range []int64{0, 1} {
		_, err := appendOne(ctx, s, pool, id, expected, wallet.ToppedUp{Amount: 1, Currency: "EUR"})
		var ce *eventstore.ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, eventstore.ErrConflict) || ce.Current != 2 || ce.Expected != expected {
			t.Fatalf("expected %d: want conflict at current 2, got %v", expected, err)
		}
	}
	if v, err := s.StreamVersion(ctx, wallet.StreamType, id); err != nil || v != 2 {
		t.Fatalf("version %d after rejected writes: %v", v, err)
	}
}

// Many writers race on one stream: each version is won by exactly one writer,
// and nothing is lost or written twice.
func TestConcurrentWritersOneStream(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	id := "w-" + uuid.NewString()

	// All writers expect the empty stream: exactly one wins.
	const writers = 32
	var wins, conflicts int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := appendOne(ctx, s, pool, id, 0, wallet.Opened{WalletID: id, CustomerID: "c", Currency: "EUR"})
			mu.Lock()
			defer mu.Unlock()
			var ce *eventstore.ConflictError
			switch {
			case err == nil:
				wins++
			case errors.As(err, &ce) && ce.Current == 1:
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != writers-1 {
		t.Fatalf("wins %d conflicts %d", wins, conflicts)
	}

	// Now every writer writes 10 top-ups, retrying on conflicts.
	const each = 10
	amounts := make(chan int64, writers*each)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; n < each; n++ {
				amount := int64(w*1000 + n)
				for {
					v, err := s.StreamVersion(ctx, wallet.StreamType, id)
					if err != nil {
						t.Error(err)
						return
					}
					_, err = appendOne(ctx, s, pool, id, v, wallet.ToppedUp{Amount: amount, Currency: "EUR"})
					if errors.Is(err, eventstore.ErrConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					amounts <- amount
					break
				}
			}
		}(i)
	}
	wg.Wait()
	close(amounts)
	read, err := s.ReadStream(ctx, wallet.StreamType, id, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 1+writers*each {
		t.Fatalf("stream has %d events, want %d", len(read), 1+writers*each)
	}
	seen := map[int64]bool{}
	for i, e := range read {
		if e.StreamVersion != int64(i+1) {
			t.Fatalf("version %d at index %d", e.StreamVersion, i)
		}
		if tu, ok := e.Event.(wallet.ToppedUp); ok {
			if seen[tu.Amount] {
				t.Fatalf("amount %d written twice", tu.Amount)
			}
			seen[tu.Amount] = true
		}
	}
	for a := range amounts {
		if !seen[a] {
			t.Fatalf("acknowledged write of %d is missing", a)
		}
	}
}

// A transaction that took a lower position but commits later must not be
// skipped by a reader of the global log that follows positions.
func TestReadAllNeverSkipsLateCommit(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	start := tail(t, s)

	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	a := "w-" + uuid.NewString()
	slowEnvs, err := eventstoretest.Save(ctx, slow, s, eventstoretest.Stream(wallet.StreamType, a, 0, wallet.Opened{WalletID: a, CustomerID: "c", Currency: "EUR"}), md)
	if err != nil {
		t.Fatal(err)
	}
	b := "w-" + uuid.NewString()
	fastEnvs, err := appendOne(ctx, s, pool, b, 0, wallet.Opened{WalletID: b, CustomerID: "c", Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	if slowEnvs[0].GlobalPosition >= fastEnvs[0].GlobalPosition {
		t.Fatal("test setup: the slow transaction should hold the lower position")
	}

	// Only this test's two streams count: transaction ids are cluster-wide, so
	// other test packages sharing the server can hold back (never reorder) what
	// the global log shows, and earlier tests' events may surface late.
	ours := func(c commitorder.Cursor) []eventstore.Envelope {
		t.Helper()
		var out []eventstore.Envelope
		for {
			envs, err := s.ReadAll(ctx, c, 1000, eventstore.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(envs) == 0 {
				return out
			}
			for _, e := range envs {
				if e.StreamID == a || e.StreamID == b {
					out = append(out, e)
				}
			}
			c = envs[len(envs)-1].Cursor()
		}
	}

	// The fast one has committed, but the slow one is still open: a reader
	// must not move past the slow one's position yet.
	if got := ours(start); len(got) != 0 {
		t.Fatalf("read %d events past an open transaction", len(got))
	}

	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Both become visible once every older transaction on the server has
	// finished; wait for that, bounded.
	var got []eventstore.Envelope
	for deadline := time.Now().Add(30 * time.Second); ; {
		if got = ours(start); len(got) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 2 || got[0].EventID != slowEnvs[0].EventID || got[1].EventID != fastEnvs[0].EventID {
		t.Fatalf("after commit read %v", ids(got))
	}
	// Resuming from the first event's cursor, by position, yields the second only.
	c, err := s.CursorAt(ctx, got[0].GlobalPosition)
	if err != nil {
		t.Fatal(err)
	}
	if rest := ours(c); len(rest) != 1 || rest[0].EventID != fastEnvs[0].EventID {
		t.Fatalf("resume read %v", ids(rest))
	}
	// Filters narrow the log.
	only, err := s.ReadAll(ctx, start, 1000, eventstore.Filter{StreamType: wallet.StreamType, StreamID: b})
	if err != nil || len(only) != 1 || only[0].StreamID != b {
		t.Fatalf("filtered read %v", ids(only))
	}
}

func tail(t *testing.T, s *eventstore.Store) commitorder.Cursor {
	t.Helper()
	c := commitorder.Cursor{}
	for {
		envs, err := s.ReadAll(context.Background(), c, 1000, eventstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) == 0 {
			return c
		}
		c = envs[len(envs)-1].Cursor()
	}
}

func ids(envs []eventstore.Envelope) []string {
	var out []string
	for _, e := range envs {
		out = append(out, fmt.Sprintf("%s/%s@%d", e.StreamType, e.StreamID, e.GlobalPosition))
	}
	return out
}

func TestSnapshotPlusTailEqualsFullReplay(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 10)
	id := "w-" + uuid.NewString()
	w := wallet.New(id)
	if err := w.Open("c1", "main", "EUR"); err != nil {
		t.Fatal(err)
	}
	save(t, s, pool, w)
	for i := 0; i < 24; i++ {
		w := wallet.New(id)
		if err := s.Load(ctx, w); err != nil {
			t.Fatal(err)
		}
		if err := w.TopUp(money.New(int64(i+1), "EUR"), wallet.Credit{Operator: "ops-test", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := w.Authorise(fmt.Sprintf("o%d", i), money.New(1, "EUR")); err != nil {
				t.Fatal(err)
			}
		}
		save(t, s, pool, w)
	}
	var snapVersion int64
	if err := pool.QueryRow(ctx, `SELECT stream_version FROM snapshots WHERE stream_type = 'wallet' AND stream_id = $1`, id).Scan(&snapVersion); err != nil {
		t.Fatal("no snapshot taken:", err)
	}
	fromSnapshot, replayed := wallet.New(id), wallet.New(id)
	if err := s.Load(ctx, fromSnapshot); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadUntil(ctx, replayed, eventstore.Until{}); err != nil {
		t.Fatal(err)
	}
	if snapVersion < 20 || snapVersion >= fromSnapshot.Version() {
		t.Fatalf("snapshot at %d, stream at %d: the tail is not exercised", snapVersion, fromSnapshot.Version())
	}
	if fromSnapshot.Version() != replayed.Version() || !reflect.DeepEqual(fromSnapshot.State(), replayed.State()) {
		t.Fatalf("snapshot+tail %d %+v\nfull replay %d %+v", fromSnapshot.Version(), fromSnapshot.State(), replayed.Version(), replayed.State())
	}

	// A point-in-time load stops where asked.
	atFive := wallet.New(id)
	if err := s.LoadUntil(ctx, atFive, eventstore.Until{Version: 5}); err != nil {
		t.Fatal(err)
	}
	if atFive.Version() != 5 {
		t.Fatalf("at version 5 loaded %d", atFive.Version())
	}

	// A snapshot of another schema version is ignored.
	if _, err := pool.Exec(ctx, `UPDATE snapshots SET schema_version = 99, state = '{"balance": -1}' WHERE stream_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	stale := wallet.New(id)
	if err := s.Load(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stale.State(), replayed.State()) {
		t.Fatal("a snapshot of another schema version was used")
	}
}

func TestUpcastsOldSchemaVersions(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	id := "w-" + uuid.NewString()
	// An event stored by an older release, at schema version 1.
	if _, err := pool.Exec(ctx, `INSERT INTO events (event_id, stream_type, stream_id, stream_version, event_type, schema_version,
		data, correlation_id, causation_id, actor, recorded_at) VALUES ($1, 'wallet', $2, 1, 'test.renamed', 1, '{"title":"old"}', '', '', '', now())`,
		uuid.New(), id); err != nil {
		t.Fatal(err)
	}
	envs, err := s.ReadStream(ctx, wallet.StreamType, id, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].SchemaVersion != 2 || envs[0].Event != (Renamed{Name: "old"}) {
		t.Fatalf("upcast read %+v", envs)
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT data::text FROM events WHERE stream_id = $1`, id).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != `{"title": "old"}` {
		t.Fatalf("stored event was edited: %s", stored)
	}
	// A schema newer than this binary knows is an error, not a silent misread.
	if _, err := pool.Exec(ctx, `UPDATE events SET schema_version = 3 WHERE stream_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadStream(ctx, wallet.StreamType, id, 0, 10); err == nil {
		t.Fatal("read an event of an unknown future schema")
	}
}

// The global log sorts transaction ids as numbers: 99 before 100 (a text
// sort would put "100" first and make cursor paging skip events).
func TestReadAllOrdersTransactionIDsNumerically(t *testing.T) {
	ctx := context.Background()
	s, pool := newStore(t, 0)
	a, b := "w-"+uuid.NewString(), "w-"+uuid.NewString()
	for _, row := range []struct {
		id   string
		txid string
	}{{a, "100"}, {b, "99"}} {
		_, err := pool.Exec(ctx, `INSERT INTO events (transaction_id, event_id, stream_type, stream_id, stream_version, event_type,
			schema_version, data, correlation_id, causation_id, actor, recorded_at)
			VALUES ($1::text::xid8, $2, 'wallet', $3, 1, 'wallet.opened', 1, $4, 'c', 'c', 'test', now())`,
			row.txid, uuid.New(), row.id, fmt.Sprintf(`{"wallet_id":%q,"customer_id":"c","currency":"EUR"}`, row.id))
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for c := (commitorder.Cursor{}); ; {
		page, err := s.ReadAll(ctx, c, 1, eventstore.Filter{StreamType: wallet.StreamType})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 || len(got) == 2 {
			break
		}
		got = append(got, page[0].StreamID)
		c = page[0].Cursor()
	}
	if len(got) != 2 || got[0] != b || got[1] != a {
		t.Fatalf("read %v, want [%s %s]", got, b, a)
	}
}

// A cached aggregate loads as the database has it: from its remembered
// state plus whatever another process appended since (the cache is caught
// up by the tail read, never trusted blindly).
func TestACachedAggregateCatchesUpWithOtherWriters(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	cached := eventstore.New(pool, registry(), eventstore.Options{CacheSize: 10})
	other := eventstore.New(pool, registry(), eventstore.Options{}) // another process
	id := "w-" + uuid.NewString()
	saveAndRemember := func(s *eventstore.Store, w *wallet.Wallet) {
		t.Helper()
		save(t, s, pool, w)
		s.Remember(w)
	}
	w := wallet.New(id)
	if err := w.Open("c1", "main", "EUR"); err != nil {
		t.Fatal(err)
	}
	saveAndRemember(cached, w)
	for i, s := range []*eventstore.Store{cached, other, other, cached, other} {
		w := wallet.New(id)
		if err := s.Load(ctx, w); err != nil {
			t.Fatal(err)
		}
		if err := w.TopUp(money.New(int64(i+1), "EUR"), wallet.Credit{Operator: "ops-test", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		saveAndRemember(s, w)
	}
	fromCache, replayed := wallet.New(id), wallet.New(id)
	if err := cached.Load(ctx, fromCache); err != nil {
		t.Fatal(err)
	}
	if err := other.LoadUntil(ctx, replayed, eventstore.Until{}); err != nil {
		t.Fatal(err)
	}
	if fromCache.Version() != 6 || fromCache.Version() != replayed.Version() || !reflect.DeepEqual(fromCache.State(), replayed.State()) {
		t.Fatalf("cache+tail %d %+v\nfull replay %d %+v", fromCache.Version(), fromCache.State(), replayed.Version(), replayed.State())
	}
}
