package commitorder

import "testing"

func TestXIDsRoundTripAndGarbageIsAnError(t *testing.T) {
	for _, v := range []uint64{0, 1, 1 << 40, ^uint64(0)} {
		if got, err := ParseXID(FormatXID(v)); err != nil || got != v {
			t.Fatalf("%d: got %d, %v", v, got, err)
		}
	}
	for _, s := range []string{"", "-1", "12a", "18446744073709551616"} {
		if _, err := ParseXID(s); err == nil {
			t.Fatalf("%q parsed", s)
		}
	}
}

func TestCursorConditionsNumberTheirParameters(t *testing.T) {
	c := Cursor{TransactionID: 7, Seq: 9}
	if got := After("seq", 3); got != `(transaction_id, seq) > ($3::text::xid8, $4)` {
		t.Fatal(got)
	}
	if got := UpTo(`"offset"`, 1); got != `(transaction_id, "offset") <= ($1::text::xid8, $2)` {
		t.Fatal(got)
	}
	if a := c.Args(); a[0] != "7" || a[1] != int64(9) {
		t.Fatalf("%v", a)
	}
}
