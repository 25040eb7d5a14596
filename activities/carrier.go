package activities

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/orderflow/orderflow/domain/order"
)

// Carrier is where a real carrier's API plugs in: it takes a parcel and
// returns a tracking number, or refuses it.
type Carrier interface {
	Name() string
	Dispatch(ctx context.Context, shipmentID string, to order.Address) (tracking string, err error)
}

// ErrCarrierRejected is the carrier refusing a parcel: a business failure.
var ErrCarrierRejected = errors.New("carrier rejected the shipment")

// SimulatedCarrier stands in for a carrier: it waits Latency, then refuses a
// share FailureRate of parcels at random, and every parcel to postal code
// RejectPostalCode, so that failures can be provoked on purpose.
type SimulatedCarrier struct {
	Latency          time.Duration
	FailureRate      float64
	RejectPostalCode string
}

// Name is the carrier's name on shipments.
func (c SimulatedCarrier) Name() string { return "simulated-carrier" }

// Dispatch books the parcel.
func (c SimulatedCarrier) Dispatch(ctx context.Context, shipmentID string, to order.Address) (string, error) {
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(c.Latency):
	}
	if c.RejectPostalCode != "" && strings.EqualFold(to.PostalCode, c.RejectPostalCode) {
		return "", fmt.Errorf("%w: no delivery to postal code %s", ErrCarrierRejected, to.PostalCode)
	}
	if c.FailureRate > 0 && rand.Float64() < c.FailureRate {
		return "", fmt.Errorf("%w: parcel refused", ErrCarrierRejected)
	}
	return "SIM-" + strings.ToUpper(shipmentID[max(0, len(shipmentID)-12):]), nil
}
