package campaign

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The seed fixes each actor's choices.
func TestPickIsFixedBySeed(t *testing.T) {
	draw := func(seed uint64) []string {
		rnd := rand.New(rand.NewPCG(seed, 1))
		var out []string
		for range 50 {
			out = append(out, pick(rnd, nil))
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 7 drew %s then %s at step %d", a[i], b[i], i)
		}
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("seeds 7 and 8 drew the same 50 actions")
	}
	seen := map[string]bool{}
	rnd := rand.New(rand.NewPCG(1, 1))
	for range 5000 {
		seen[pick(rnd, nil)] = true
	}
	if len(seen) != len(actions) {
		t.Fatalf("5000 draws took %d of the %d actions", len(seen), len(actions))
	}
	for range 100 {
		if got := pick(rnd, []string{"top_up", "place"}); got != "top_up" && got != "place" {
			t.Fatalf("drew %s outside the narrowed mix", got)
		}
	}
}

// Cut closes the proxy's open connections and refuses new ones for a while.
func TestProxyCut(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	p, err := Listen("127.0.0.1:0", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("through the proxy: %q, %v", line, err)
	}
	if n := p.Cut(time.Hour); n != 1 {
		t.Fatalf("cut %d connections, want 1", n)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a cut connection still reads")
	}
	// While refused, a new connection is closed at once.
	again, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	_, _ = again.Write([]byte("ping\n"))
	_ = again.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(again).ReadString('\n'); err == nil {
		t.Fatal("a connection during the refusal was proxied")
	}
}

// An action counts as sent once a request of its was written to an API,
// and a keyless one's attempts carry its correlation id.
func TestTracingMarksSentAndCorrelates(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Correlation-ID")
	}))
	defer srv.Close()
	hc := &http.Client{Transport: tracing{http.DefaultTransport}}
	tr := &tracker{}
	ctx := context.WithValue(context.Background(), trackerKey{}, tr)

	// Nothing listens: nothing was sent.
	dead, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/", nil)
	if res, err := hc.Do(dead); err == nil {
		res.Body.Close()
	}
	if tr.sent.Load() {
		t.Fatal("a request to a closed port counted as sent")
	}
	tr.setCorrelation("campaign-k-1")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("{}"))
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !tr.sent.Load() || <-got != "campaign-k-1" {
		t.Fatal("a request written was not counted, or lost its correlation id")
	}
}
