-- The rule each event's hash was computed by (infrastructure/audit/chain.py). Chain version 1 hashed the
-- event id, stream id, stream version, event type and payload; version 2 hashes the whole event (stream
-- type, schema version, site, recorded time, metadata too). Rows cannot be rehashed (the table is
-- append-only), so every row keeps the version it was written with: rows written before this migration
-- (and rows from a replica still running the older code during a rolling upgrade, which names no version)
-- are version 1 and keep verifying by the version-1 rule. A stream may move from version 1 to 2, never
-- back (the verifier reports a step back as a finding).
ALTER TABLE events ADD COLUMN chain_version smallint NOT NULL DEFAULT 1 CHECK (chain_version IN (1, 2));
