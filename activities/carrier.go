package activities

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/orderflow/domain/order"
)

// Carrier is where a real carrier's API plugs in. Both calls carry the
// saga's dispatch key, so that the carrier can tell a retry from a new
// parcel.
//
// A refusal's reason is a code and text that hold nothing of the customer:
// never the address or any part of it (a postal code, a name). The reason
// becomes the saga's, and reaches events, the command log, read models,
// Temporal's history and the process log, where forgetting the customer
// (destroying its key) cannot erase it. An adapter maps a real carrier's
// answer to such a reason; it never copies the carrier's text.
type Carrier interface {
	Name() string
	// Dispatch books the parcel and returns its tracking number once the
	// carrier has taken it; called again with the same key it answers for
	// that booking (the same tracking number), whatever the address.
	// ErrCarrierRejected is a refusal, and ErrWithdrawn answers a booking
	// withdrawn before.
	Dispatch(ctx context.Context, key, shipmentID string, to order.Address) (tracking string, err error)
	// Withdraw asks the carrier not to take the parcel. It reports false
	// when the carrier has it already (the parcel is on its way); a key
	// never booked is withdrawn, so a dispatch arriving later is refused.
	Withdraw(ctx context.Context, key string) (withdrawn bool, err error)
}

// The simulated carrier's refusals: codes and text with nothing of the
// customer.
const (
	ReasonPostalCodeNotServed = "postal_code_not_served: the carrier does not deliver to this postal code"
	ReasonParcelRefused       = "parcel_refused: the carrier refused the parcel"
)

var (
	// ErrCarrierRejected is the carrier refusing a parcel: a business failure.
	ErrCarrierRejected = errors.New("carrier rejected the shipment")
	// ErrWithdrawn is a dispatch of a booking that was withdrawn.
	ErrWithdrawn = errors.New("the booking was withdrawn")
)

// SimulatedCarrier stands in for a carrier: it takes a parcel Latency after
// its booking (SlowLatency for a parcel to SlowPostalCode, when set),
// refuses a share FailureRate of parcels at random, and every parcel to
// postal code RejectPostalCode, so that failures can be provoked on
// purpose. Its bookings are rows of carrier_sim_bookings, shared by every
// worker process.
type SimulatedCarrier struct {
	Pool             *pgxpool.Pool
	Latency          time.Duration
	FailureRate      float64
	RejectPostalCode string
	// SlowPostalCode and SlowLatency give one postal code a latency of its
	// own: a run can have parcels on both sides of the saga's
	// CarrierFastTimeout (the fast first call takes one, the other goes to
	// the regular activity).
	SlowPostalCode string
	SlowLatency    time.Duration
}

// Name is the carrier's name on shipments.
func (c SimulatedCarrier) Name() string { return "simulated-carrier" }

// Dispatch books the parcel (once per key) and waits until it is taken.
func (c SimulatedCarrier) Dispatch(ctx context.Context, key, shipmentID string, to order.Address) (string, error) {
	state, reason := "pending", ""
	switch {
	case to.PostalCode == "":
		// Asked by key alone (the address could not be opened again): a
		// booking made before stands, none is made without an address.
		state, reason = "refused", "no shipping address"
	case c.RejectPostalCode != "" && strings.EqualFold(to.PostalCode, c.RejectPostalCode):
		state, reason = "refused", ReasonPostalCodeNotServed
	case c.FailureRate > 0 && rand.Float64() < c.FailureRate:
		state, reason = "refused", ReasonParcelRefused
	}
	tracking := "SIM-" + strings.ToUpper(shipmentID[max(0, len(shipmentID)-12):])
	latency := c.Latency
	if c.SlowPostalCode != "" && strings.EqualFold(to.PostalCode, c.SlowPostalCode) {
		latency = c.SlowLatency
	}
	if _, err := c.Pool.Exec(ctx, `INSERT INTO carrier_sim_bookings (dispatch_key, shipment_id, tracking_number, ready_at, state, reason)
		VALUES ($1, $2, $3, now() + $4::interval, $5, $6) ON CONFLICT (dispatch_key) DO NOTHING`,
		key, shipmentID, tracking, latency.String(), state, reason); err != nil {
		return "", err
	}
	for {
		// The carrier takes the parcel when its time has come, unless the
		// booking was withdrawn first: one statement decides, so a
		// withdrawal and a take never both succeed.
		var wait float64
		err := c.Pool.QueryRow(ctx, `UPDATE carrier_sim_bookings SET state = CASE WHEN state = 'pending' AND ready_at <= now() THEN 'taken' ELSE state END
			WHERE dispatch_key = $1 RETURNING state, coalesce(reason, ''), tracking_number, extract(epoch FROM greatest(ready_at - now(), '0'))::float8`, key).
			Scan(&state, &reason, &tracking, &wait)
		if err != nil {
			return "", err
		}
		switch state {
		case "taken":
			return tracking, nil
		case "refused":
			return "", fmt.Errorf("%w: %s", ErrCarrierRejected, reason)
		case "withdrawn":
			return "", ErrWithdrawn
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Duration(wait*float64(time.Second)) + time.Millisecond):
		}
	}
}

// Withdraw cancels a booking the carrier has not taken yet.
func (c SimulatedCarrier) Withdraw(ctx context.Context, key string) (bool, error) {
	var state string
	err := c.Pool.QueryRow(ctx, `UPDATE carrier_sim_bookings
		SET state = CASE WHEN state = 'pending' AND ready_at <= now() THEN 'taken' WHEN state = 'pending' THEN 'withdrawn' ELSE state END
		WHERE dispatch_key = $1 RETURNING state`, key).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = c.Pool.Exec(ctx, `INSERT INTO carrier_sim_bookings (dispatch_key, shipment_id, tracking_number, ready_at, state)
			VALUES ($1, '', '', now(), 'withdrawn') ON CONFLICT (dispatch_key) DO NOTHING`, key)
		if err != nil {
			return false, err
		}
		return c.Withdraw(ctx, key) // a dispatch may have booked it meanwhile
	}
	if err != nil {
		return false, err
	}
	return state != "taken", nil
}
