-- +goose Up

-- The commands topic is read from the command log itself: watermill_commands
-- becomes a view over commands (and the events each command caused), in the
-- columns of watermill-sql's DefaultPostgreSQLSchema, so Watermill
-- subscribers, the batch consumers and the operator's tools read it as
-- before. Each command was written twice (its log row and a message carrying
-- the same record); now once. A message's "offset" is the command's seq,
-- which orders a transaction's commands as their messages' offsets did.

-- The message id stays what it was (a name-based UUID of the command id,
-- computed by the writer: PostgreSQL has no SHA-1 of its own).
ALTER TABLE commands ADD COLUMN message_uuid uuid;
UPDATE commands c SET message_uuid = w.uuid::uuid
FROM watermill_commands w WHERE w.metadata->>'command_id' = c.command_id;
-- A command without its message (none are expected) gets a stable id.
UPDATE commands SET message_uuid = md5('orderflow command ' || command_id)::uuid WHERE message_uuid IS NULL;
ALTER TABLE commands ALTER COLUMN message_uuid SET NOT NULL;

-- Each consumer group's position moves from its last message's offset to
-- that command's seq, in the same transaction (a position whose message is
-- gone starts that transaction over: at least once).
UPDATE watermill_offsets_commands o
SET offset_acked = coalesce((SELECT (w.metadata->>'seq')::bigint FROM watermill_commands w
                             WHERE w.transaction_id = o.last_processed_transaction_id AND w."offset" = o.offset_acked), 0);

DROP TABLE watermill_commands;

-- Timestamps in UTC with microseconds, as RFC 3339.
-- +goose StatementBegin
CREATE FUNCTION orderflow_rfc3339(t timestamptz) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;
-- +goose StatementEnd

-- The payload is commandlog.Logged, the metadata commandlog.Message's
-- (TestTheCommandsTopicIsTheLog compares them with what the Go code builds).
CREATE VIEW watermill_commands AS
SELECT c.seq AS "offset",
       c.message_uuid::text AS uuid,
       c.recorded_at::timestamp AS created_at,
       (jsonb_build_object(
            'command_id', c.command_id, 'seq', c.seq, 'type', c.command_type, 'payload', c.payload, 'status', c.status,
            'stream_type', c.stream_type, 'stream_id', c.stream_id, 'stream_version', c.stream_version,
            'event_ids', to_jsonb(c.event_ids), 'correlation_id', c.correlation_id, 'actor', c.actor,
            'recorded_at', orderflow_rfc3339(c.recorded_at), 'replayed', false,
            'events', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                 'event_id', e.event_id, 'event_type', e.event_type, 'stream_type', e.stream_type,
                                 'stream_id', e.stream_id, 'stream_version', e.stream_version,
                                 'global_position', e.global_position, 'recorded_at', orderflow_rfc3339(e.recorded_at))
                             ORDER BY u.n), '[]')
                       FROM unnest(c.event_ids) WITH ORDINALITY AS u(id, n) JOIN events e ON e.event_id = u.id))
        || CASE WHEN c.reason_code IS NULL THEN '{}' ELSE jsonb_build_object('reason_code', c.reason_code) END
        || CASE WHEN c.reason IS NULL THEN '{}' ELSE jsonb_build_object('reason', c.reason) END
        || CASE WHEN coalesce(c.global_position, 0) = 0 THEN '{}' ELSE jsonb_build_object('global_position', c.global_position) END
        || CASE WHEN c.causation_id = '' THEN '{}' ELSE jsonb_build_object('causation_id', c.causation_id) END
        || CASE WHEN c.metadata = '{}' THEN '{}' ELSE jsonb_build_object('metadata', c.metadata) END
       )::json AS payload,
       json_build_object(
            'command_id', c.command_id, 'command_type', c.command_type, 'status', c.status, 'seq', c.seq::text,
            'stream_type', c.stream_type, 'stream_id', c.stream_id, 'global_position', coalesce(c.global_position, 0)::text,
            'correlation_id', c.correlation_id, 'causation_id', c.causation_id, 'actor', c.actor,
            'recorded_at', orderflow_rfc3339(c.recorded_at)) AS metadata,
       c.transaction_id
FROM commands c;

-- The view would take a DELETE (or an UPDATE of transaction_id) through to
-- the command log: an outbox clean-up must not delete the log.
-- +goose StatementBegin
CREATE FUNCTION orderflow_commands_topic_is_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'watermill_commands is a view over the command log: it cannot be written to'
        USING ERRCODE = 'feature_not_supported';
END
$$;
-- +goose StatementEnd
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON watermill_commands
    FOR EACH ROW EXECUTE FUNCTION orderflow_commands_topic_is_read_only();

-- +goose Down
DROP VIEW watermill_commands;
DROP FUNCTION orderflow_commands_topic_is_read_only();
DROP FUNCTION orderflow_rfc3339(timestamptz);
CREATE TABLE watermill_commands (LIKE watermill_order_events INCLUDING ALL);
-- The log's commands are not copied back as messages: every group's
-- position moves to the end of the (empty) table.
UPDATE watermill_offsets_commands SET offset_acked = 0, last_processed_transaction_id = pg_current_xact_id();
ALTER TABLE commands DROP COLUMN message_uuid;
