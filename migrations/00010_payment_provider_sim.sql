-- +goose Up

-- Payments: the topic of the payment stream type, in the schema of the
-- other topics (00002).
CREATE TABLE watermill_payment_events (LIKE watermill_order_events INCLUDING ALL);
CREATE TABLE watermill_offsets_payment_events (LIKE watermill_offsets_order_events INCLUDING ALL);

-- The payments read model (payments_projection).
CREATE TABLE read_payments (
    payment_id   text        PRIMARY KEY,
    customer_id  text        NOT NULL,
    wallet_id    text        NOT NULL,
    amount       bigint      NOT NULL,
    currency     text        NOT NULL,
    status       text        NOT NULL,
    provider     text,
    intent_id    text,
    reason       text,
    requested_at timestamptz NOT NULL,
    version      bigint      NOT NULL,
    position     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX read_payments_wallet ON read_payments (wallet_id, requested_at DESC, payment_id DESC);

-- The simulated payment provider's own ledger. A real provider (Stripe)
-- keeps these on its side; the simulator keeps them here so that every API
-- process, and a restarted one, answers alike: one intent per idempotency
-- key (orderflow's payment id), decided once, its webhook redelivered until
-- orderflow answers 2xx.
CREATE TABLE payment_sim_intents (
    intent_id       text        PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    payment_id      text        NOT NULL,
    wallet_id       text        NOT NULL,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    client_secret   text        NOT NULL,
    -- processing until decide_at; then outcome (decided at creation).
    status          text        NOT NULL CHECK (status IN ('processing', 'succeeded', 'canceled', 'requires_payment_method')),
    outcome         text        NOT NULL CHECK (outcome IN ('succeeded', 'requires_payment_method')),
    decline_code    text,
    decide_at       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_sim_intents_due ON payment_sim_intents (decide_at) WHERE status = 'processing';

-- Each webhook event, delivered until answered 2xx. A sender claims a row
-- (FOR UPDATE SKIP LOCKED) by moving next_attempt_at past its lease: a
-- sender that dies mid-delivery leaves it to be sent again.
CREATE TABLE payment_sim_events (
    event_id        text        PRIMARY KEY,
    intent_id       text        NOT NULL REFERENCES payment_sim_intents (intent_id),
    type            text        NOT NULL,
    body            text        NOT NULL,
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     int,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_sim_events_due ON payment_sim_events (next_attempt_at) WHERE delivered_at IS NULL;

-- +goose Down
DROP TABLE payment_sim_events, payment_sim_intents;
DROP TABLE read_payments;
DROP TABLE watermill_offsets_payment_events, watermill_payment_events;
