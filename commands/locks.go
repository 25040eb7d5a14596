package commands

// One writer per stream in a process: commands on a hot stream queue
// here instead of conflicting in the database.

import "sync"

// StreamLocks serialise the commands of each stream in a process.
type StreamLocks struct {
	mu sync.Mutex
	m  map[string]*streamLock
}

// NewStreamLocks returns locks to share between the buses of a process.
func NewStreamLocks() *StreamLocks { return &StreamLocks{m: map[string]*streamLock{}} }

type streamLock struct {
	sync.Mutex
	users int
}

// lock waits for the stream's turn and returns its release; an entry lives
// only while someone holds or waits for it.
func (l *StreamLocks) lock(key string) func() {
	l.mu.Lock()
	s := l.m[key]
	if s == nil {
		s = &streamLock{}
		l.m[key] = s
	}
	s.users++
	l.mu.Unlock()
	s.Lock()
	return func() {
		s.Unlock()
		l.mu.Lock()
		if s.users--; s.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}
