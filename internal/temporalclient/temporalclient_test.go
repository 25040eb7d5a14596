package temporalclient_test

import (
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/orderflow/orderflow/internal/temporalclient"
)

// auto compresses nothing to a loopback frontend (dev's embedded one) and
// gzips to any other, as the SDK does by default.
func TestGrpcCompression(t *testing.T) {
	for _, c := range []struct {
		mode, addr string
		gzip       bool
	}{
		{"auto", "127.0.0.1:7233", false},
		{"auto", "[::1]:7233", false},
		{"auto", "localhost:7233", false},
		{"", "127.0.0.1:7233", false},
		{"auto", "temporal:7233", true},
		{"auto", "10.0.0.5:7233", true},
		{"gzip", "127.0.0.1:7233", true},
		{"none", "temporal:7233", false},
	} {
		got, err := temporalclient.GrpcCompression(c.mode, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, gzip := got.(*client.GrpcCompressionGzip); gzip != c.gzip {
			t.Errorf("%q to %s: gzip %v, want %v", c.mode, c.addr, gzip, c.gzip)
		}
	}
	if _, err := temporalclient.GrpcCompression("brotli", "temporal:7233"); err == nil {
		t.Error("an unknown mode was taken")
	}
}
