-- +goose Up

-- The saga starter's inbox. The Watermill handler on order_events only
-- records the start here, inside its subscriber transaction; the worker
-- starts the workflows outside any transaction. Calling Temporal from the
-- subscriber transaction would keep that transaction open for as long as
-- Temporal takes, and an open transaction holds back every watermill-sql
-- subscriber (they only read transactions older than the oldest running one).
CREATE TABLE saga_starts (
    order_id    text        PRIMARY KEY,
    input       jsonb       NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX saga_starts_pending ON saga_starts (enqueued_at) WHERE started_at IS NULL;

-- +goose Down
DROP TABLE saga_starts;
