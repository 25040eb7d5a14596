package campaign

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy between one process and PostgreSQL whose connections
// the campaign cuts: every open connection is closed at once (mid-query,
// mid-COMMIT, whatever it was doing), and new ones are refused for a while.
type Proxy struct {
	// Name is the process whose pool goes through the proxy.
	Name     string
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	conns   map[net.Conn]bool
	refused time.Time // new connections are closed until then
}

// Listen starts a proxy on addr to upstream.
func Listen(addr, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	go p.serve()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.Cut(0)
	return err
}

// Cut closes every open connection and refuses new ones for d; it returns
// how many connections it cut.
func (p *Proxy) Cut(d time.Duration) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = time.Now().Add(d)
	n := 0
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
		n++
	}
	return n / 2 // each proxied connection is two sockets
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		go p.pipe(in)
	}
}

func (p *Proxy) pipe(in net.Conn) {
	p.mu.Lock()
	refused := time.Now().Before(p.refused)
	p.mu.Unlock()
	if refused {
		_ = in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	p.mu.Lock()
	p.conns[in], p.conns[out] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	_ = in.Close()
	_ = out.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}
