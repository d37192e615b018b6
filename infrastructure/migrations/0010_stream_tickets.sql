-- Stream tickets (infrastructure/identity/stream_tickets.py): a browser's EventSource cannot send an
-- Authorization header, so it opens the event stream with a single-use ticket issued to a signed-in
-- caller for one set of filters. Kept here, not in one process's memory, so any replica redeems it.
-- Only a SHA-256 digest of the ticket is stored; a redemption deletes the row (DELETE ... RETURNING).
-- Unlogged: a ticket lives 30 s, and one lost in a crash is asked for again.
CREATE UNLOGGED TABLE stream_tickets (
    digest      bytea       PRIMARY KEY,
    subject     text        NOT NULL,
    claims      jsonb       NOT NULL,   -- the caller's access-token claims (never the token itself)
    filters     jsonb       NOT NULL,   -- the stream filters the ticket is bound to
    expires_at  timestamptz NOT NULL
);
CREATE INDEX stream_tickets_expiry ON stream_tickets (expires_at);
