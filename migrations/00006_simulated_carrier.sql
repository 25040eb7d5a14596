-- +goose Up
-- The simulated carrier's bookings, one per dispatch key. A real carrier
-- keeps these on its side; the simulator keeps them here so that every
-- worker process, and a restarted one, answers alike: a retried dispatch
-- gets the same tracking number, and a withdrawal is honoured only while
-- the parcel has not been taken.
CREATE TABLE carrier_sim_bookings (
    dispatch_key    text PRIMARY KEY,
    shipment_id     text        NOT NULL,
    tracking_number text        NOT NULL,
    ready_at        timestamptz NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'taken', 'withdrawn', 'refused')),
    reason          text
);

-- +goose Down
DROP TABLE carrier_sim_bookings;
