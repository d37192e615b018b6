-- The event log: append-only, ordered per stream by version and globally by (transaction_id, position).
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_type     text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    site_id         text,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    hash            bytea       NOT NULL,
    PRIMARY KEY (stream_id, stream_version)
);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_global_order ON events (transaction_id, position);
CREATE INDEX events_site ON events (site_id, position) WHERE site_id IS NOT NULL;

CREATE FUNCTION charter_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'charter: % on % is refused; the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION charter_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION charter_reject_change();

-- Idempotency-Key of a command: the first result is returned to every retry.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    fingerprint  text        NOT NULL,
    stream_id    text        NOT NULL,
    version      integer     NOT NULL,
    position     bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Where each reader of the global order (projection, relay) stands.
CREATE TABLE checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    version         integer     NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Plugin archives, content-addressed, so every replica can fetch what one replica received.
CREATE TABLE plugin_archives (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        integer     NOT NULL,
    content     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
