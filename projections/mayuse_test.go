package projections

import (
	"encoding/json"
	"testing"

	"github.com/orderflow/orderflow/commandlog"
)

// TestMayConcernOrder: every payload orderID finds an order in passes the
// timeline's filter; a top-up does not.
func TestMayConcernOrder(t *testing.T) {
	for _, raw := range []string{
		`{"command_id":"c","stream_type":"order","stream_id":"o1","payload":{}}`,
		`{"command_id":"c","stream_type":"wallet","payload":{"order_id":"o1"}}`,
		`{"command_id":"c","stream_type":"wallet","payload":{"ORDER_ID":"o1"}}`,
		`{"command_id":"c","stream_type":"wallet","payload":{"Order_Id":"o1"}}`,
		`{"command_id":"c","stream_type":"wallet","payload":{"\u006frder_id":"o1"}}`,
		`{"command_id":"c","stream_type":"\u006frder","stream_id":"o1","payload":{}}`,
		`{"command_id":"c","stream_type":"wallet","payload":{},"metadata":{"order_id":"o1"}}`,
	} {
		var c commandlog.Logged
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			t.Fatal(err)
		}
		if orderID(c) == "" {
			t.Fatalf("%s: no order id", raw)
		}
		if !mayConcernOrder([]byte(raw)) {
			t.Errorf("%s: filtered out, but its order is %s", raw, orderID(c))
		}
	}
	topUp := `{"command_id":"c","type":"TopUpWallet","stream_type":"wallet","payload":{"wallet_id":"w","amount":1,"reason":"test funds"},"events":[{"event_type":"wallet.topped_up"}]}`
	if mayConcernOrder([]byte(topUp)) {
		t.Errorf("a top-up passes the filter")
	}
	for _, s := range []string{"order", "xxORDER", "a OrDeR b"} {
		if !containsFold([]byte(s), "order") {
			t.Errorf("containsFold(%q) = false", s)
		}
	}
	for _, s := range []string{"", "orde", "ordex", "o r d e r", "oorde"} {
		if containsFold([]byte(s), "order") {
			t.Errorf("containsFold(%q) = true", s)
		}
	}
}
