package activities

// The repair run's inspection: what the event log says of an order, its
// shipment and the attempts an operator's retries added, read before a
// repair decides to complete or compensate.

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/activity"

	"github.com/orderflow/orderflow/domain/order"
	"github.com/orderflow/orderflow/domain/shipment"
)

// Inspection is what the event log says of an order and its shipment, for
// a saga that repairs a run ended without a business outcome.
type Inspection struct {
	OrderStatus    order.Status    `json:"order_status"`
	ShipmentStatus shipment.Status `json:"shipment_status,omitempty"`
	TrackingNumber string          `json:"tracking_number,omitempty"`
	// Attempts counts, per step of p.Steps, the attempts an operator's
	// retries added (the keys SagaKey(workflow, step.N) in the log): the
	// repair sends each step under its latest attempt's key.
	Attempts map[string]int `json:"attempts,omitempty"`
}

// MaxAttempts bounds the attempts of a step an inspection looks for.
const MaxAttempts = 20

// InspectOrder reads the order and its shipment from the event store.
func (a *Activities) InspectOrder(ctx context.Context, p Parcel) (Inspection, error) {
	o, s := order.New(p.OrderID), shipment.New(p.ShipmentID)
	if err := a.Store.Load(ctx, o); err != nil {
		return Inspection{}, err
	}
	if err := a.Store.Load(ctx, s); err != nil {
		return Inspection{}, err
	}
	st := s.State().(shipment.State)
	ins := Inspection{OrderStatus: o.Status(), ShipmentStatus: st.Status, TrackingNumber: st.TrackingNumber}
	wid := activity.GetInfo(ctx).WorkflowExecution.ID
	keys := map[string][2]any{}
	var ids []string
	for _, step := range p.Steps {
		for n := 2; n <= MaxAttempts; n++ {
			key := SagaKey(wid, fmt.Sprintf("%s.%d", step, n))
			keys[key] = [2]any{step, n}
			ids = append(ids, key)
		}
	}
	if len(ids) == 0 {
		return ins, nil
	}
	logged, err := a.Bus.Log().Logged(ctx, ids)
	if err != nil {
		return Inspection{}, err
	}
	for _, id := range logged {
		step, n := keys[id][0].(string), keys[id][1].(int)
		if ins.Attempts == nil {
			ins.Attempts = map[string]int{}
		}
		ins.Attempts[step] = max(ins.Attempts[step], n-1)
	}
	return ins, nil
}
