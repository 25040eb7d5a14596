-- +goose Up

-- Two more Watermill topics: "commands" carries every logged command (accepted
-- or rejected, with the events it caused), written in the command's own
-- transaction like the event topics; "poison" holds messages a projection
-- could not handle after its retries.
CREATE TABLE watermill_commands (LIKE watermill_order_events INCLUDING ALL);
CREATE TABLE watermill_offsets_commands (LIKE watermill_offsets_order_events INCLUDING ALL);
CREATE TABLE watermill_poison (LIKE watermill_order_events INCLUDING ALL);
CREATE TABLE watermill_offsets_poison (LIKE watermill_offsets_order_events INCLUDING ALL);

-- A poison message is resolved once it was replayed successfully (or dropped
-- by an operator); the poison topic itself is append-only.
CREATE TABLE poison_resolutions (
    poison_offset bigint      PRIMARY KEY,
    outcome       text        NOT NULL CHECK (outcome IN ('replayed', 'skipped')),
    resolved_at   timestamptz NOT NULL DEFAULT now()
);

-- Each projection's progress, written in the same transaction as its read
-- model and its consumer offsets.
CREATE TABLE projection_checkpoints (
    projection     text        PRIMARY KEY,
    position       bigint      NOT NULL DEFAULT 0,
    applied        bigint      NOT NULL DEFAULT 0,
    last_event_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Read models. "version" is the last stream version applied to the row: a
-- redelivered event (version <= it) changes nothing, and a gap is an error.
CREATE TABLE read_orders (
    order_id         text        PRIMARY KEY,
    customer_id      text        NOT NULL,
    wallet_id        text        NOT NULL,
    status           text        NOT NULL,
    currency         text        NOT NULL,
    lines            jsonb       NOT NULL,
    total            bigint      NOT NULL,
    shipping_address jsonb       NOT NULL,
    reason           text,
    saga_step        text,
    saga_status      text,
    version          bigint      NOT NULL,
    position         bigint      NOT NULL,
    placed_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX read_orders_customer ON read_orders (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX read_orders_status ON read_orders (status, placed_at DESC, order_id DESC);
CREATE INDEX read_orders_placed ON read_orders (placed_at DESC, order_id DESC);

-- Every command and event that concerns one order, keyed so that a
-- redelivered command message adds nothing.
CREATE TABLE read_order_timeline (
    order_id        text        NOT NULL,
    entry_id        text        NOT NULL,
    command_seq     bigint      NOT NULL,
    entry_index     int         NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('command', 'event')),
    type            text        NOT NULL,
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint,
    global_position bigint,
    status          text,
    reason          text,
    causation_id    text,
    correlation_id  text        NOT NULL,
    actor           text        NOT NULL,
    saga_step       text,
    at              timestamptz NOT NULL,
    PRIMARY KEY (order_id, entry_id)
);
CREATE INDEX read_order_timeline_order ON read_order_timeline (order_id, command_seq, entry_index);

CREATE TABLE read_inventory (
    sku        text        PRIMARY KEY,
    on_hand    bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    available  bigint      GENERATED ALWAYS AS (on_hand - reserved) STORED,
    version    bigint      NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE read_wallets (
    wallet_id   text        PRIMARY KEY,
    customer_id text        NOT NULL,
    name        text        NOT NULL DEFAULT '',
    currency    text        NOT NULL,
    balance     bigint      NOT NULL,
    held        bigint      NOT NULL,
    available   bigint      GENERATED ALWAYS AS (balance - held) STORED,
    version     bigint      NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL
);
-- +goose Down
DROP TABLE read_wallets, read_inventory, read_order_timeline, read_orders;
DROP TABLE projection_checkpoints, poison_resolutions;
DROP TABLE watermill_offsets_poison, watermill_poison, watermill_offsets_commands, watermill_commands;
