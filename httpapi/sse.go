package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commandlog"
	"github.com/orderflow/orderflow/commitorder"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/personal"
)

// horizon wakes live streams when the database's visibility horizon (the
// oldest running transaction, pg_snapshot_xmin) moves: only then can the
// commit-ordered logs show something new. One poller serves every client,
// and it only polls while someone listens.
type horizon struct {
	pool      *pgxpool.Pool
	interval  time.Duration
	listeners atomic.Int64
	once      sync.Once
	mu        sync.Mutex
	changed   chan struct{}
}

func newHorizon(pool *pgxpool.Pool, interval time.Duration) *horizon {
	return &horizon{pool: pool, interval: interval, changed: make(chan struct{})}
}

// next returns a channel closed at the next move of the horizon.
func (h *horizon) next() <-chan struct{} {
	h.once.Do(func() { go h.poll() })
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *horizon) poll() {
	var last string
	for range time.Tick(h.interval) {
		if h.listeners.Load() == 0 {
			continue
		}
		var xmin string
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := h.pool.QueryRow(ctx, commitorder.HorizonSQL).Scan(&xmin)
		cancel()
		if err != nil || xmin == last {
			continue
		}
		last = xmin
		h.mu.Lock()
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
}

// resumeFrom reads where a live stream starts: Last-Event-ID (a reconnect)
// wins over ?after=.
func resumeFrom(c echo.Context) int64 {
	raw := c.Request().Header.Get("Last-Event-ID")
	if raw == "" {
		raw = c.QueryParam("after")
	}
	v, _ := strconv.ParseInt(raw, 10, 64)
	return v
}

// live writes server-sent events: every page read returns, then waits for
// the horizon to move, with a heartbeat comment while idle. Each client has
// its own goroutine and cursor, and a write that blocks longer than the
// write timeout ends that client only (it resumes with Last-Event-ID).
func (s *Server) live(c echo.Context, read func(ctx context.Context) (frames []sseFrame, more bool, err error)) error {
	release := s.streams.take(principal(c).Subject)
	if release == nil {
		c.Response().Header().Set("Retry-After", "5")
		return problem(http.StatusTooManyRequests, "too_many_streams", fmt.Sprintf("at most %d live streams at once per client", s.limits.Streams))
	}
	defer release()
	ctx := c.Request().Context()
	res := c.Response()
	rc := http.NewResponseController(res.Writer)
	res.Header().Set(echo.HeaderContentType, "text/event-stream")
	res.Header().Set("Cache-Control", "no-cache")
	res.Header().Set("X-Accel-Buffering", "no")
	res.WriteHeader(http.StatusOK)
	s.horizon.listeners.Add(1)
	defer s.horizon.listeners.Add(-1)

	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.sseWriteTimeout))
		if _, err := res.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte(": connected\n\n")); err != nil {
		return nil
	}
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		wake := s.horizon.next()
		frames, more, err := read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("live stream read", "path", c.Request().URL.Path, "err", err)
			}
			return nil
		}
		for _, f := range frames {
			if err := write(f.bytes()); err != nil {
				return nil
			}
		}
		if more {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-heartbeat.C:
			if err := write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
		}
	}
}

// sealedJSON is v as JSON with the personal fields open may open.
func sealedJSON(ctx context.Context, open *personal.Opener, v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return open.OpenJSON(ctx, raw)
}

type sseFrame struct {
	id    int64
	event string
	data  []byte
}

func (f sseFrame) bytes() []byte {
	return fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", f.id, f.event, f.data)
}

const livePage = 500

func (s *Server) eventUpdates(c echo.Context) error {
	after, err := s.knownEvent(c, resumeFrom(c))
	if err != nil {
		return err
	}
	cursor, err := s.store.CursorAt(c.Request().Context(), after)
	if errors.Is(err, eventstore.ErrNotFound) {
		return problem(http.StatusNotFound, "unknown_position", fmt.Sprintf("no event at global position %d", after))
	} else if err != nil {
		return err
	}
	q := c.QueryParams()
	f := eventstore.Filter{StreamType: q.Get("stream_type"), StreamID: q.Get("stream_id")}
	if t := q.Get("type"); t != "" {
		f.EventTypes = []string{t}
	}
	if p := principal(c); p.Role != auth.Operator {
		f.CustomerID = p.CustomerID // a customer's own orders and wallets
	}
	return s.live(c, func(ctx context.Context) ([]sseFrame, bool, error) {
		open := s.opener(c) // per page: a key destroyed meanwhile is not kept
		envs, err := s.store.ReadAll(ctx, cursor, livePage, f)
		frames := make([]sseFrame, 0, len(envs))
		for _, e := range envs {
			data, err := sealedJSON(ctx, open, e)
			if err != nil {
				return nil, false, err
			}
			frames = append(frames, sseFrame{id: e.GlobalPosition, event: e.EventType, data: data})
			cursor = e.Cursor()
		}
		return frames, len(envs) == livePage, err
	})
}

func (s *Server) commandUpdates(c echo.Context) error {
	after, err := s.knownCommand(c, resumeFrom(c))
	if err != nil {
		return err
	}
	log := s.bus.Log()
	cursor, err := log.CursorAt(c.Request().Context(), after)
	if errors.Is(err, commandlog.ErrNotFound) {
		return problem(http.StatusNotFound, "unknown_sequence", fmt.Sprintf("no command with sequence number %d", after))
	} else if err != nil {
		return err
	}
	q := c.QueryParams()
	f := commandlog.Filter{Type: q.Get("type"), Status: q.Get("status"), StreamType: q.Get("stream_type"), StreamID: q.Get("stream_id")}
	ownCommands(c, &f)
	return s.live(c, func(ctx context.Context) ([]sseFrame, bool, error) {
		open := s.opener(c) // per page: a key destroyed meanwhile is not kept
		cmds, err := log.ReadAll(ctx, cursor, livePage, f)
		frames := make([]sseFrame, 0, len(cmds))
		for _, l := range cmds {
			data, err := sealedJSON(ctx, open, l)
			if err != nil {
				return nil, false, err
			}
			frames = append(frames, sseFrame{id: l.Seq, event: l.Type, data: data})
			cursor = l.Cursor()
		}
		return frames, len(cmds) == livePage, err
	})
}
