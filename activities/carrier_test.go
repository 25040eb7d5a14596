package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/orderflow/orderflow/activities"
	"github.com/orderflow/orderflow/auth"
	"github.com/orderflow/orderflow/commands"
	"github.com/orderflow/orderflow/domain/aggregate"
	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/eventstore"
	"github.com/orderflow/orderflow/eventstore/streams"
	"github.com/orderflow/orderflow/internal/testkit/pgtest"
	"github.com/orderflow/orderflow/personal"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

var addr = order.Address{Name: "Ada", Line1: "1 Main St", City: "Paris", PostalCode: "75001", Country: "FR"}

func TestARetriedDispatchGetsTheSameBookingAndTrackingNumber(t *testing.T) {
	pool := pgtest.Pool(t)
	c := activities.SimulatedCarrier{Pool: pool, Latency: 20 * time.Millisecond}
	ctx := context.Background()
	key, shp := "saga:k-"+uuid.NewString(), "shp-"+uuid.NewString()
	first, err := c.Dispatch(ctx, key, shp, addr)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Dispatch(ctx, key, shp, addr)
	if err != nil || again != first {
		t.Fatalf("retried dispatch: %q %v, first %q", again, err, first)
	}
	var bookings int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM carrier_sim_bookings WHERE shipment_id = $1`, shp).Scan(&bookings); err != nil || bookings != 1 {
		t.Fatalf("%d bookings for one key: %v", bookings, err)
	}
	if withdrawn, err := c.Withdraw(ctx, key); err != nil || withdrawn {
		t.Fatalf("withdrew a parcel the carrier has: %v %v", withdrawn, err)
	}
}

func TestAWithdrawnBookingIsNeverTaken(t *testing.T) {
	pool := pgtest.Pool(t)
	c := activities.SimulatedCarrier{Pool: pool, Latency: time.Hour}
	ctx := context.Background()
	key := "saga:k-" + uuid.NewString()
	waiting, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.Dispatch(waiting, key, "shp-1", addr); done <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM carrier_sim_bookings WHERE dispatch_key = $1`, key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dispatch never booked")
		}
	}
	if withdrawn, err := c.Withdraw(ctx, key); err != nil || !withdrawn {
		t.Fatalf("withdraw of a pending booking: %v %v", withdrawn, err)
	}
	stop()
	<-done
	if _, err := c.Dispatch(ctx, key, "shp-1", addr); !errors.Is(err, activities.ErrWithdrawn) {
		t.Fatalf("dispatch after withdrawal: %v", err)
	}
	// A key never booked is withdrawn too: a dispatch arriving late is refused.
	late := "saga:k-" + uuid.NewString()
	if withdrawn, err := c.Withdraw(ctx, late); err != nil || !withdrawn {
		t.Fatalf("withdraw of an unknown key: %v %v", withdrawn, err)
	}
	if _, err := c.Dispatch(ctx, late, "shp-2", addr); !errors.Is(err, activities.ErrWithdrawn) {
		t.Fatalf("late dispatch: %v", err)
	}
}

// The carrier activity run twice under one step (a retry after a lost
// response) books once, gets one tracking number and records one dispatch.
func TestDispatchWithCarrierRunTwiceRecordsOneDispatch(t *testing.T) {
	pool := pgtest.Pool(t)
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{SnapshotEvery: 50})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	acts := &activities.Activities{Bus: bus, Store: store, Carrier: activities.SimulatedCarrier{Pool: pool, Latency: 10 * time.Millisecond}}
	orderID := placed(t, bus, addr)
	parcel := activities.Parcel{ShipmentID: "shp-" + orderID, Address: addr,
		Step: activities.Step{OrderID: orderID, Step: "dispatch_shipment", Key: activities.SagaKey("order-fulfilment:"+orderID, "dispatch_shipment")}}
	env := (&testsuite.WorkflowTestSuite{}).NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	schedule := parcel
	schedule.Step.Step, schedule.Step.Key = "schedule_shipment", activities.SagaKey("order-fulfilment:"+orderID, "schedule_shipment")
	if _, err := env.ExecuteActivity(acts.ScheduleShipment, schedule); err != nil {
		t.Fatal(err)
	}
	var tracking [2]string
	for i := range tracking {
		v, err := env.ExecuteActivity(acts.DispatchWithCarrier, parcel)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Get(&tracking[i]); err != nil {
			t.Fatal(err)
		}
	}
	if tracking[0] == "" || tracking[0] != tracking[1] {
		t.Fatalf("tracking numbers %v", tracking)
	}
	var dispatched int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'shipment.dispatched'`,
		parcel.ShipmentID).Scan(&dispatched); err != nil || dispatched != 1 {
		t.Fatalf("%d dispatch events: %v", dispatched, err)
	}
	seen, err := env.ExecuteActivity(acts.InspectOrder, parcel)
	if err != nil {
		t.Fatal(err)
	}
	var ins activities.Inspection
	if err := seen.Get(&ins); err != nil || ins.ShipmentStatus != "dispatched" || ins.TrackingNumber != tracking[0] {
		t.Fatalf("inspection %+v %v", ins, err)
	}
}

// A parcel booked before the customer was forgotten is the carrier's: a
// later attempt of the carrier call, which can no longer open the address,
// asks the carrier by key and gets the booking's tracking number — never a
// refusal that would compensate a parcel the carrier has. Without a booking
// the carrier refuses (nothing to ship to), and the saga may compensate.
func TestACarrierCallAfterAForgetAnswersForTheBookingItMade(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	keys := personal.NewKeys(pool)
	customer := "c-" + uuid.NewString()
	sealed := addr
	if err := keys.Seal(ctx, customer, sealed.PersonalFields()...); err != nil {
		t.Fatal(err)
	}
	carrier := activities.SimulatedCarrier{Pool: pool, Latency: 10 * time.Millisecond}
	acts := &activities.Activities{Carrier: carrier, CustomerKeys: keys}
	env := (&testsuite.WorkflowTestSuite{}).NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	parcel := func(orderID string) activities.Parcel {
		return activities.Parcel{ShipmentID: "shp-" + orderID, Address: sealed, CustomerID: customer,
			Step: activities.Step{OrderID: orderID, Step: "dispatch_shipment", Key: activities.SagaKey("order-fulfilment:"+orderID, "dispatch_shipment")}}
	}
	booked := parcel("o-" + uuid.NewString())
	v, err := env.ExecuteActivity(acts.BookWithCarrier, booked)
	var first string
	if err != nil || v.Get(&first) != nil || first == "" {
		t.Fatalf("the first call: %q %v", first, err)
	}
	if _, err := keys.Forget(ctx, customer, "test"); err != nil {
		t.Fatal(err)
	}
	v, err = env.ExecuteActivity(acts.BookWithCarrier, booked)
	var again string
	if err != nil || v.Get(&again) != nil || again != first {
		t.Fatalf("the call after the forget: %q %v, want %q", again, err, first)
	}
	_, err = env.ExecuteActivity(acts.BookWithCarrier, parcel("o-"+uuid.NewString()))
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != activities.ErrTypeCarrierRefuse {
		t.Fatalf("a first call after the forget: %v, want the carrier's refusal", err)
	}
}

// placed places an order to address to (its customer's wallet opened
// first) and returns its id.
func placed(t *testing.T, bus *commands.Bus, to order.Address) string {
	t.Helper()
	ctx := context.Background()
	cust, wallet, orderID := "c-"+uuid.NewString(), "w-"+uuid.NewString(), "o-"+uuid.NewString()
	for _, cmd := range []commands.Command{
		commands.OpenWallet{WalletID: wallet, CustomerID: cust, Currency: "EUR"},
		commands.SetPrice{SKU: "s", UnitPrice: 100, Currency: "EUR"},
		commands.PlaceOrder{OrderID: orderID, CustomerID: cust, WalletID: wallet, Currency: "EUR",
			Lines: []commands.OrderLine{{SKU: "s", Quantity: 1, UnitPrice: 100}}, ShippingAddress: to},
	} {
		if _, err := bus.Dispatch(ctx, commands.Request{Internal: true, Command: cmd}); err != nil {
			t.Fatal(err)
		}
	}
	return orderID
}

// The carrier's refusal says why in a code and words that hold nothing of
// the customer: the postal code it refuses is in neither the error (the
// saga's reason) nor the booking.
func TestACarrierRefusalQuotesNothingOfTheCustomer(t *testing.T) {
	pool := pgtest.Pool(t)
	zip := "Z" + uuid.NewString()[:8]
	c := activities.SimulatedCarrier{Pool: pool, RejectPostalCode: zip}
	to := addr
	to.PostalCode = zip
	key := "saga:k-" + uuid.NewString()
	_, err := c.Dispatch(context.Background(), key, "shp-"+uuid.NewString(), to)
	if !errors.Is(err, activities.ErrCarrierRejected) || strings.Contains(err.Error(), zip) || !strings.Contains(err.Error(), "postal_code_not_served") {
		t.Fatalf("refusal: %v", err)
	}
	var reason string
	if err := pool.QueryRow(context.Background(), `SELECT reason FROM carrier_sim_bookings WHERE dispatch_key = $1`, key).Scan(&reason); err != nil || strings.Contains(reason, zip) {
		t.Fatalf("booking's reason %q %v", reason, err)
	}
}

// ScheduleShipment's address is personal, whoever sends it: cleartext is
// sealed with the order's customer's key before it is logged;
// the saga's, sealed already, is kept; another customer's sealed text is
// refused.
func TestAShipmentsAddressIsSealedWithItsOrdersCustomersKey(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	store := eventstore.New(pool, streams.Registry(), eventstore.Options{})
	bus := commands.NewBus(pool, store, commands.Definitions(), commands.Options{Retries: 5})
	street := "Rue " + uuid.NewString()[:8]
	to := addr
	to.Line1 = street
	orderID := placed(t, bus, to)
	ops := &auth.Principal{Subject: "ops-1", Role: auth.Operator}
	// An operator's is refused while the order's saga runs (saga_owns);
	// cleartext from orderflow's own processes is sealed all the same.
	var dErr *aggregate.Error
	if _, err := bus.Dispatch(ctx, commands.Request{Principal: ops, Actor: "ops-1", Command: commands.ScheduleShipment{ShipmentID: "shp-" + orderID, OrderID: orderID, Address: to}}); !errors.As(err, &dErr) || dErr.Code != "saga_owns" {
		t.Fatalf("an operator's shipment beside the saga: %v", err)
	}
	if _, err := bus.Dispatch(ctx, commands.Request{Internal: true, Command: commands.ScheduleShipment{ShipmentID: "shp-" + orderID, OrderID: orderID, Address: to}}); err != nil {
		t.Fatal(err)
	}
	if where, err := pgtest.Cleartext(ctx, pool, street); err != nil || where != "" {
		t.Fatalf("cleartext address in %s (%v)", where, err)
	}
	// The order's sealed address, as the saga passes it on, stays as it is.
	var sealed order.Address
	o := order.New(orderID)
	if err := store.Load(ctx, o); err != nil {
		t.Fatal(err)
	}
	var st struct {
		ShippingAddress order.Address `json:"shipping_address"`
	}
	raw, _ := json.Marshal(o.State())
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	sealed = st.ShippingAddress
	if !personal.IsSealed(sealed.Line1) {
		t.Fatalf("the order's address: %+v", sealed)
	}
	rec, err := bus.Dispatch(ctx, commands.Request{Internal: true, Command: commands.ScheduleShipment{ShipmentID: "shp2-" + orderID, OrderID: orderID, Address: sealed}})
	if err != nil || !strings.Contains(string(rec.Payload), sealed.Line1) {
		t.Fatalf("%s %v", rec.Payload, err)
	}
	// Another customer's order takes none of it.
	other := placed(t, bus, addr)
	_, err = bus.Dispatch(ctx, commands.Request{Internal: true, Command: commands.ScheduleShipment{ShipmentID: "shp-" + other, OrderID: other, Address: sealed}})
	var payload *commands.PayloadError
	if !errors.As(err, &payload) {
		t.Fatalf("another customer's sealed address: %v", err)
	}
	// A shipment of no order has no customer to seal for: refused.
	if _, err := bus.Dispatch(ctx, commands.Request{Principal: ops, Command: commands.ScheduleShipment{ShipmentID: "shp-x", OrderID: "nope-" + uuid.NewString(), Address: to}}); err == nil {
		t.Fatal("a shipment of no order was accepted")
	}
}

// A parcel to SlowPostalCode is booked for SlowLatency, any other for
// Latency: one run has parcels on both sides of the saga's fast timeout.
func TestTheSlowPostalCodeHasItsOwnLatency(t *testing.T) {
	pool := pgtest.Pool(t)
	c := activities.SimulatedCarrier{Pool: pool, Latency: 10 * time.Millisecond, SlowPostalCode: "75002", SlowLatency: time.Hour}
	ctx := context.Background()
	fast := "shp-" + uuid.NewString()
	if _, err := c.Dispatch(ctx, "saga:k-"+uuid.NewString(), fast, addr); err != nil {
		t.Fatal(err)
	}
	slow, to := "shp-"+uuid.NewString(), addr
	to.PostalCode = "75002"
	waiting, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if _, err := c.Dispatch(waiting, "saga:k-"+uuid.NewString(), slow, to); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a parcel to the slow postal code: %v", err)
	}
	var wait time.Duration
	if err := pool.QueryRow(ctx, `SELECT ready_at - now() FROM carrier_sim_bookings WHERE shipment_id = $1 AND state = 'pending'`, slow).Scan(&wait); err != nil || wait < 59*time.Minute {
		t.Fatalf("the slow parcel is ready in %s: %v", wait, err)
	}
}
