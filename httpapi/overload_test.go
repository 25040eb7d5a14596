package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// A process serving as many requests as it may answers the next one 503
// with Retry-After once its wait is over, instead of queueing it; health
// checks and live streams take no slot; a slot freed serves again.
func TestInFlightAnswersBusyInsteadOfQueueing(t *testing.T) {
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.Use(InFlight{Max: 2, Wait: 10 * time.Millisecond}.middleware())
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	e.POST("/orders", func(c echo.Context) error {
		entered <- struct{}{}
		<-release
		return c.NoContent(http.StatusCreated)
	})
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/events/updates", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	srv := httptest.NewServer(e)
	defer srv.Close()

	done := make(chan int, 2)
	for range 2 {
		go func() {
			res, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
			if err != nil {
				done <- 0
				return
			}
			res.Body.Close()
			done <- res.StatusCode
		}()
	}
	<-entered
	<-entered
	res, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), `"code":"busy"`) ||
		res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("third request while two are served: %d Retry-After=%q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	// A read-your-writes header on a command takes a slot all the same
	// (only reads wait in a slot of their own).
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders?min_position=1", strings.NewReader("{}"))
	req.Header.Set("X-Min-Position", "1")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a POST with a min_position while the slots are taken: %v %v", res, err)
	}
	for _, path := range []string{"/healthz", "/events/updates"} {
		if res, err := http.Get(srv.URL + path); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s while the slots are taken: %v %v", path, res, err)
		}
	}
	close(release)
	for range 2 {
		if st := <-done; st != http.StatusCreated {
			t.Fatalf("a request holding a slot: %d", st)
		}
	}
	res, err = http.Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("after the slots were freed: %v %v", res, err)
	}
}
