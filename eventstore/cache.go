package eventstore

import (
	"container/list"
	"encoding/json"
	"sync"

	"github.com/orderflow/orderflow/domain/aggregate"
)

// cache keeps the state of recently used aggregates at the version they
// were last committed at, so that a load restores it and reads only the
// events after it (usually none: one query, no rows) instead of a snapshot
// and its tail. An entry that another process has moved past is caught up
// by that same tail read; a conflicting write is still refused by the
// (stream, version) constraint.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used
	items map[string]*list.Element
}

type cached struct {
	key     string
	version int64
	state   []byte
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

func cacheKey(agg aggregate.Root) string { return agg.StreamType() + "/" + agg.StreamID() }

// get restores agg from its entry; false when there is none.
func (c *cache) get(agg aggregate.Root) (bool, error) {
	c.mu.Lock()
	el, ok := c.items[cacheKey(agg)]
	var e cached
	if ok {
		c.order.MoveToFront(el)
		e = *el.Value.(*cached)
	}
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, agg.Restore(e.version, e.state)
}

// put remembers agg's state at its version (after a commit).
func (c *cache) put(agg aggregate.Root) {
	state, err := json.Marshal(agg.State())
	if err != nil {
		return // not cached: the next load reads the database
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := cacheKey(agg)
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cached)
		if agg.Version() > e.version {
			e.version, e.state = agg.Version(), state
		}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cached{key: key, version: agg.Version(), state: state})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cached).key)
	}
}
