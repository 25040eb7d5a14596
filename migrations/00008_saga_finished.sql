-- +goose Up

-- When the launcher saw the saga close. The sagas' backlog, which the API's
-- admission control reads, is the starts not made yet plus the sagas started
-- within the last moments and not seen finished: cheap counts, shared by
-- every process. NULL on a started row: still running, or it ran past the
-- launcher's watch (it waits for the carrier or an operator, not for CPU).
ALTER TABLE saga_starts ADD COLUMN finished_at timestamptz;
CREATE INDEX saga_starts_running ON saga_starts (started_at) WHERE finished_at IS NULL AND started_at IS NOT NULL;
-- The pace of the starts (those of the last seconds).
CREATE INDEX saga_starts_started ON saga_starts (started_at);

-- +goose Down
DROP INDEX saga_starts_started;
DROP INDEX saga_starts_running;
ALTER TABLE saga_starts DROP COLUMN finished_at;
