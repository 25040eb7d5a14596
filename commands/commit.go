package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/internal/dbfailure"
	"github.com/orderflow/orderflow/outbox"
)

// GroupCommit sets how concurrent commands share transactions.
type GroupCommit struct {
	// MaxCommands bounds a group; 1 commits each command alone.
	MaxCommands int
	// MaxWait is how long a committer holding a command waits for more
	// before it commits. 0: it takes what is queued at that moment, so a
	// lone command never waits, and under load the commands that arrive
	// during one commit form the next group.
	MaxWait time.Duration
	// Committers is how many groups commit at once.
	Committers int
	// Observe, when set, is told the size of every committed group
	// (telemetry.Metrics.Group).
	Observe func(commands int)
}

// Defaults of GroupCommit (the service's settings start from them too).
const (
	DefaultGroupMax   = 64
	DefaultCommitters = 2
)

// committer commits decided commands in groups: one transaction, one
// round trip of writes, one COMMIT (and so one WAL flush) for every
// command that is ready at the same time. Each command in a group stays
// all-or-nothing: its events, log row and outbox messages are written
// together, and a command that fails alone (a version conflict, a key
// logged meanwhile) is taken out and the others are committed without it.
type committer struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	cfg   GroupCommit
	queue chan *unit
	// committed is called after every commit with the topics it wrote to
	// (outbox.Signal.Raise).
	committed func(topics ...string)
}

// unit is one command of a group: its record and, when accepted, its
// aggregate and events.
type unit struct {
	rec  commandlog.Record
	agg  aggregate.Root // nil: a rejection, logged without events
	envs []eventstore.Envelope
	err  error
	done chan struct{}
}

// topics are the topics a group's commit wrote to: the commands topic (its
// log rows are that topic's messages), its events' on theirs.
func topics(group []*unit) []string {
	out := []string{outbox.CommandsTopic}
	for _, u := range group {
		for _, e := range u.envs {
			if t := outbox.Topic(e.StreamType); !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// newCommitter starts cfg.Committers committers on pool; committed may be nil.
func newCommitter(pool *pgxpool.Pool, store *eventstore.Store, cfg GroupCommit, committed func(topics ...string)) *committer {
	if cfg.MaxCommands <= 0 {
		cfg.MaxCommands = DefaultGroupMax
	}
	if cfg.Committers <= 0 {
		cfg.Committers = DefaultCommitters
	}
	if committed == nil {
		committed = func(...string) {}
	}
	if cfg.Observe == nil {
		cfg.Observe = func(int) {}
	}
	c := &committer{pool: pool, store: store, cfg: cfg, queue: make(chan *unit, 4*cfg.MaxCommands), committed: committed}
	for range cfg.Committers {
		go c.run()
	}
	return c
}

// commit hands u to a committer and waits for its outcome: a 2xx is only
// ever answered once the group's COMMIT has returned.
func (c *committer) commit(u *unit) error {
	u.done = make(chan struct{})
	c.queue <- u
	<-u.done
	return u.err
}

func (c *committer) run() {
	for u := range c.queue {
		group := []*unit{u}
		var wait <-chan time.Time
		var timer *time.Timer
		if c.cfg.MaxWait > 0 {
			timer = time.NewTimer(c.cfg.MaxWait)
			wait = timer.C
		}
	gather:
		for len(group) < c.cfg.MaxCommands {
			if wait == nil {
				select {
				case u := <-c.queue:
					group = append(group, u)
				default:
					break gather
				}
				continue
			}
			select {
			case u := <-c.queue:
				group = append(group, u)
			case <-wait:
				break gather
			}
		}
		if timer != nil {
			timer.Stop()
		}
		c.commitGroup(group)
	}
}

// commitGroup commits group, taking out the commands that fail alone
// until the rest commits (or fails as a whole). Every command is answered
// after that, so a command answered "logged meanwhile" finds the record
// of its twin in the same group once that group has committed (if the
// twin fails too, the log holds nothing and fromLog answers not found).
func (c *committer) commitGroup(group []*unit) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var answered []*unit
	oneByOne := len(group) == 1
	retries := 0
	for len(group) > 0 {
		alone, err := c.try(ctx, group, oneByOne)
		if errors.Is(err, errOneByOne) {
			oneByOne = true
			continue
		}
		var again *retryGroup
		if errors.As(err, &again) {
			if retries < maxGroupRetries && ctx.Err() == nil {
				retries++
				sleepCtx(ctx, groupBackoff(retries))
				continue
			}
			err = again.err // still failing: answered as the database's failure (503, retry: nothing was committed)
		}
		if len(alone) == 0 {
			var unknown *errUnknownOutcome
			for _, u := range group {
				u.err = err
				if errors.As(err, &unknown) {
					u.err = &UnknownOutcomeError{CommandID: u.rec.CommandID, Err: unknown.err}
				}
			}
			if err == nil {
				c.cfg.Observe(len(group))
				c.committed(topics(group)...)
			}
			answered = append(answered, group...)
			break
		}
		for i := len(group) - 1; i >= 0; i-- {
			if e, ok := alone[i]; ok {
				group[i].err = e
				answered = append(answered, group[i])
				group = slices.Delete(group, i, i+1)
			}
		}
	}
	for _, u := range answered {
		close(u.done)
	}
}

// reserveSQL begins a group: its transaction id (and server process), a
// global position per event and a log seq per command (ascending: the
// order of the group), and which of its command ids are logged already.
const reserveSQL = `
WITH s AS (SELECT pg_get_serial_sequence('events', 'global_position') AS events,
                  pg_get_serial_sequence('commands', 'seq') AS commands)
SELECT pg_current_xact_id()::text, pg_backend_pid(),
       ARRAY(SELECT nextval(s.events) FROM generate_series(1, $1::int)),
       ARRAY(SELECT nextval(s.commands) FROM generate_series(1, $2::int)),
       ARRAY(SELECT command_id FROM commands WHERE command_id = ANY($3::text[]))
FROM s`

// failedAlone is a write of one command of a group that failed.
type failedAlone struct {
	unit int
	err  error
}

func (e *failedAlone) Error() string { return e.err.Error() }
func (e *failedAlone) Unwrap() error { return e.err }

// errOneByOne: a write of the group as a set failed; written command by
// command, the group finds which command failed.
var errOneByOne = errors.New("write the group command by command")

// queueWrites queues on w the writes of units: their events (and
// snapshots), log rows and outbox messages. The log rows are the commands
// topic's messages too (its table is a view over the log).
func (c *committer) queueWrites(ctx context.Context, w *pgx.Batch, units []*unit) error {
	var saves []eventstore.Placed
	var recs []*commandlog.Record
	var envs []eventstore.Envelope
	for _, u := range units {
		if u.agg != nil {
			saves = append(saves, eventstore.Placed{Agg: u.agg, Envs: u.envs})
		}
		recs = append(recs, &u.rec)
		envs = append(envs, u.envs...)
	}
	if err := c.store.QueueSaves(ctx, w, saves); err != nil {
		return err
	}
	if err := commandlog.QueueInsert(w, recs); err != nil {
		return err
	}
	// One insert per topic; a topic keeps the group's order.
	slices.SortStableFunc(envs, func(a, b eventstore.Envelope) int { return strings.Compare(a.StreamType, b.StreamType) })
	return outbox.Queue(w, envs)
}

// queueOneByOne queues the writes of group command by command on w; a
// failing write names its command (*failedAlone). A command whose writes
// cannot even be queued is returned.
func (c *committer) queueOneByOne(ctx context.Context, w *pgx.Batch, group []*unit) map[int]error {
	for i := range group {
		from := w.Len()
		if err := c.queueWrites(ctx, w, group[i:i+1]); err != nil {
			return map[int]error{i: err}
		}
		for _, q := range w.QueuedQueries[from:] {
			fn := q.Fn
			q.Fn = func(br pgx.BatchResults) error {
				var err error
				if fn != nil {
					err = fn(br)
				} else {
					_, err = br.Exec()
				}
				if err != nil {
					return &failedAlone{unit: i, err: err}
				}
				return nil
			}
		}
	}
	return nil
}

// try runs group in one transaction: BEGIN with the reservations, then
// every write in one pipelined batch with COMMIT — two round trips
// whatever the group's size. The writes go as a set, or with oneByOne
// command by command. It returns the commands that failed alone (by
// index; nothing was committed) or the group's outcome.
func (c *committer) try(ctx context.Context, group []*unit, oneByOne bool) (map[int]error, error) {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release() // a connection left in a transaction is closed, not reused
	// The transaction is driven by statements in the batches (BEGIN with
	// the reservations, COMMIT after the writes), so that it costs no round
	// trip of its own; whatever does not reach COMMIT is rolled back here.
	pg := conn.Conn().PgConn()
	defer func() {
		if pg.TxStatus() != 'I' && !pg.IsClosed() {
			_, _ = pg.Exec(context.Background(), "ROLLBACK").ReadAll()
		}
	}()
	r, err := c.begin(ctx, conn, group)
	if err != nil {
		return nil, err
	}
	if seen := r.seen(group); len(seen) > 0 {
		return seen, nil
	}
	r.assign(group)
	return c.write(ctx, conn, group, r, oneByOne)
}

// reservation is what begin reserved for a group: its transaction (and
// server process), a global position per event and a log seq per command,
// and which of its command ids are logged already.
type reservation struct {
	xid             uint64
	pid             uint32
	positions, seqs []int64
	loggedIDs       []string
}

// begin sends BEGIN with the group's reservations (reserveSQL).
func (c *committer) begin(ctx context.Context, conn *pgxpool.Conn, group []*unit) (*reservation, error) {
	events, ids := 0, make([]string, len(group))
	for i, u := range group {
		events += len(u.envs)
		ids[i] = u.rec.CommandID
	}
	var r reservation
	var txid string
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(reserveSQL, events, len(group), ids).QueryRow(func(row pgx.Row) error {
		return row.Scan(&txid, &r.pid, &r.positions, &r.seqs, &r.loggedIDs)
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		// No write was sent: whatever failed, nothing can have committed.
		return nil, &retryGroup{fmt.Errorf("begin group commit: %w", err)}
	}
	var err error
	r.xid, err = commitorder.ParseXID(txid)
	return &r, err
}

// seen returns the commands of group whose ids the log holds already.
func (r *reservation) seen(group []*unit) map[int]error {
	seen := map[int]error{}
	for i, u := range group {
		if slices.Contains(r.loggedIDs, u.rec.CommandID) {
			seen[i] = errLogged
		}
	}
	return seen
}

// assign gives the group's events their global positions and its
// commands their log seqs, in the group's order, all under its transaction.
func (r *reservation) assign(group []*unit) {
	positions := r.positions
	for i, u := range group {
		for j := range u.envs {
			u.envs[j].GlobalPosition, u.envs[j].TransactionID = positions[0], r.xid
			positions = positions[1:]
		}
		u.rec.Seq, u.rec.TransactionID = r.seqs[i], r.xid
		if n := len(u.envs); n > 0 {
			u.rec.GlobalPosition = u.envs[n-1].GlobalPosition
		}
	}
}

// write sends the group's writes and COMMIT in one batch. The writes go as
// one set, a statement per table and topic; when that fails, try writes
// them again command by command (oneByOne), to find the one that failed
// alone.
func (c *committer) write(ctx context.Context, conn *pgxpool.Conn, group []*unit, r *reservation, oneByOne bool) (map[int]error, error) {
	w := &pgx.Batch{}
	if !oneByOne {
		if err := c.queueWrites(ctx, w, group); err != nil {
			return nil, err
		}
	} else if alone := c.queueOneByOne(ctx, w, group); alone != nil {
		return alone, nil
	}
	// COMMIT goes with the writes: when one fails, PostgreSQL skips the
	// rest of the batch, COMMIT included, and try's deferred ROLLBACK ends
	// the transaction. None of the writes can fail without an error (no
	// check on a row count), so a COMMIT that runs commits them all.
	w.Queue("COMMIT")
	if err := conn.SendBatch(ctx, w).Close(); err != nil {
		return c.writeFailed(err, group, r, oneByOne)
	}
	if pg := conn.Conn().PgConn(); pg.TxStatus() != 'I' {
		return nil, fmt.Errorf("group commit: the transaction is still open after COMMIT (status %c)", pg.TxStatus())
	}
	return nil, nil
}

// writeFailed sorts out a failed batch of writes: a lost connection (the
// server alone knows whether COMMIT ran), a failure of the whole group
// (retried), a write of the set (written again one by one), or the one
// command that failed alone — a twin's id committed after the
// reservation is errLogged.
func (c *committer) writeFailed(err error, group []*unit, r *reservation, oneByOne bool) (map[int]error, error) {
	var f *failedAlone
	var pgErr *pgconn.PgError
	switch {
	case dbfailure.SessionEnded(err) && !errors.Is(err, eventstore.ErrConflict):
		// No answer from the server, or its session ended (terminated,
		// shut down): the connection was lost, perhaps after COMMIT
		// ran. Only the server knows.
		return nil, c.resolve(r.xid, r.pid, group[0].rec.CommandID, err)
	case groupWide(err):
		return nil, &retryGroup{err}
	case !oneByOne:
		return nil, errOneByOne
	case !errors.As(err, &f):
		return nil, err
	case errors.As(f.err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "commands_pkey":
		return map[int]error{f.unit: errLogged}, nil // a twin got there first: in another group or process, or earlier in this group
	}
	return map[int]error{f.unit: f.err}, nil
}
