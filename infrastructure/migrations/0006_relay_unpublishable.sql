-- Events the relay could not publish to JetStream (larger than the NATS server's max_payload, or refused
-- by JetStream for good), and what became of each: held (outcome NULL) until an operator skips it
-- (`charter relay skip <event_id>`) or a retry goes through, or skipped by the relay itself when
-- CHARTER_RELAY_SKIP_UNPUBLISHABLE is set. The event itself stays in the log; only its fan-out is missing.
CREATE TABLE relay_unpublishable (
    event_id uuid PRIMARY KEY,
    position bigint NOT NULL,
    transaction_id xid8 NOT NULL,
    event_type text NOT NULL,
    size bigint NOT NULL,  -- bytes of the message the relay tried to publish (headers included)
    reason text NOT NULL,
    attempts integer NOT NULL DEFAULT 1,
    detected_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    outcome text CHECK (outcome IN ('skipped', 'published')),
    decided_at timestamptz,
    decided_by text
);
