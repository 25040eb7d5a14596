-- +goose Up

-- Who an actor acted for (an operator for a customer, the saga for whoever
-- placed the order), and the customer owning the stream: a customer's live
-- stream shows its own events only.
ALTER TABLE events ADD COLUMN on_behalf_of text NOT NULL DEFAULT '',
                   ADD COLUMN customer_id  text NOT NULL DEFAULT '';
CREATE INDEX events_customer ON events (customer_id, transaction_id, global_position) WHERE customer_id <> '';
-- A customer's own commands (GET /commands, /commands/updates).
CREATE INDEX commands_actor ON commands (actor, seq);

-- The W3C trace context of the command that wrote the event, and of the
-- projector's handling that queued a saga start: one trace from the HTTP
-- request through the saga (NULL when tracing is off).
ALTER TABLE events ADD COLUMN traceparent text;
ALTER TABLE saga_starts ADD COLUMN traceparent text;

-- Crypto-shredding: one AES-256 key per customer. Personal fields are
-- sealed with it before they reach events, the command log, the outbox or
-- anything downstream; forgetting a customer deletes the row, and every
-- copy of those fields becomes unreadable at once. key_id is stored beside
-- each ciphertext; a customer who returns after being forgotten gets a new key.
CREATE TABLE customer_keys (
    key_id      uuid        PRIMARY KEY,
    customer_id text        NOT NULL UNIQUE,
    key         bytea       NOT NULL CHECK (length(key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Customers whose personal data was forgotten (no personal data here: the
-- id and when).
CREATE TABLE forgotten_customers (
    customer_id  text        PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    forgotten_by text        NOT NULL
);

ALTER TABLE read_wallets ADD COLUMN suspended        boolean NOT NULL DEFAULT false,
                         ADD COLUMN suspended_reason text;

-- +goose Down
ALTER TABLE read_wallets DROP COLUMN suspended_reason, DROP COLUMN suspended;
DROP TABLE forgotten_customers, customer_keys;
DROP INDEX commands_actor, events_customer;
ALTER TABLE saga_starts DROP COLUMN traceparent;
ALTER TABLE events DROP COLUMN traceparent;
ALTER TABLE events DROP COLUMN customer_id, DROP COLUMN on_behalf_of;
