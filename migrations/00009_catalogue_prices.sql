-- +goose Up

-- A product's price, from inventory.price_set: NULL until an operator
-- prices the SKU (not for sale).
ALTER TABLE read_inventory
    ADD COLUMN unit_price    bigint,
    ADD COLUMN currency      text,
    ADD COLUMN price_version bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE read_inventory DROP COLUMN unit_price, DROP COLUMN currency, DROP COLUMN price_version;
