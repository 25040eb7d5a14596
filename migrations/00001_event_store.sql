-- +goose Up

-- The event store. global_position comes from an identity sequence, and
-- sequence values commit out of order; readers of the global log therefore
-- order by (transaction_id, global_position) and only read transactions older
-- than the oldest one still running (see eventstore.ReadAll).
CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  int         NOT NULL CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    actor           text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, stream_version)
);
CREATE INDEX events_commit_order ON events (transaction_id, global_position);
CREATE INDEX events_type ON events (event_type, global_position);

-- The latest snapshot of each stream; older ones are replaced.
CREATE TABLE snapshots (
    stream_type    text        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    schema_version int         NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);

-- The command log: every command with its outcome and the events it caused.
-- command_id is the idempotency key.
CREATE TABLE commands (
    command_id      text        PRIMARY KEY,
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    command_type    text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason_kind     text,
    reason_code     text,
    reason          text,
    stream_type     text        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    global_position bigint,
    event_ids       uuid[]      NOT NULL DEFAULT '{}',
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    actor           text        NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX commands_commit_order ON commands (transaction_id, seq);
CREATE INDEX commands_type_status ON commands (command_type, status, seq);
CREATE INDEX commands_stream ON commands (stream_type, stream_id, seq);

-- +goose Down
DROP TABLE commands;
DROP TABLE snapshots;
DROP TABLE events;
