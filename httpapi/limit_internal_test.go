package httpapi

import (
	"fmt"
	"testing"
)

// The rate limiter's memory is bounded however many addresses ask.
func TestTheRateLimiterKeepsABoundedNumberOfBuckets(t *testing.T) {
	s := newRateStore(1, 1)
	for i := range rateKeys + 5000 {
		s.Allow(fmt.Sprintf("addr:%d", i))
	}
	if n := s.buckets.Len(); n > rateKeys {
		t.Fatalf("%d buckets, at most %d", n, rateKeys)
	}
	if a, b := addrKey("2001:db8::1"), addrKey("2001:db8::ffff:1"); a != b {
		t.Fatalf("one /64, two keys: %s %s", a, b)
	}
}
