-- Keys the servers share, made once per database on first use (never in the event log, never published).
-- `email-reservation`: the HMAC key of e-mail reservation streams (`email:<hmac of the address>`).
CREATE TABLE IF NOT EXISTS server_keys (
    name       text PRIMARY KEY,
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
