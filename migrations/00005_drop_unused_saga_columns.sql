-- +goose Up
-- The saga's state is Temporal's (GET /orders/{id} describes the workflow);
-- the orders read model never kept it.
ALTER TABLE read_orders DROP COLUMN saga_step, DROP COLUMN saga_status;

-- +goose Down
ALTER TABLE read_orders ADD COLUMN saga_step text, ADD COLUMN saga_status text;
