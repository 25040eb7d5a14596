-- +goose Up

-- The outbox: one Watermill SQL topic per aggregate stream type, in the
-- schema of watermill-sql/v4's DefaultPostgreSQLSchema and
-- DefaultPostgreSQLOffsetsAdapter. Watermill's auto-initialisation is off
-- everywhere: a CREATE TABLE inside the command transaction would be wrong,
-- and tables are only created here.
CREATE TABLE watermill_order_events (
    "offset"       BIGSERIAL,
    "uuid"         VARCHAR(36) NOT NULL,
    "created_at"   TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "payload"      JSON        DEFAULT NULL,
    "metadata"     JSON        DEFAULT NULL,
    "transaction_id" xid8      NOT NULL,
    PRIMARY KEY ("transaction_id", "offset")
);
CREATE TABLE watermill_inventory_events (LIKE watermill_order_events INCLUDING ALL);
CREATE TABLE watermill_wallet_events (LIKE watermill_order_events INCLUDING ALL);
CREATE TABLE watermill_shipment_events (LIKE watermill_order_events INCLUDING ALL);

CREATE TABLE watermill_offsets_order_events (
    consumer_group                VARCHAR(255) NOT NULL,
    offset_acked                  BIGINT,
    last_processed_transaction_id xid8         NOT NULL,
    PRIMARY KEY (consumer_group)
);
CREATE TABLE watermill_offsets_inventory_events (LIKE watermill_offsets_order_events INCLUDING ALL);
CREATE TABLE watermill_offsets_wallet_events (LIKE watermill_offsets_order_events INCLUDING ALL);
CREATE TABLE watermill_offsets_shipment_events (LIKE watermill_offsets_order_events INCLUDING ALL);

-- +goose Down
DROP TABLE watermill_offsets_shipment_events, watermill_offsets_wallet_events,
    watermill_offsets_inventory_events, watermill_offsets_order_events;
DROP TABLE watermill_shipment_events, watermill_wallet_events,
    watermill_inventory_events, watermill_order_events;
