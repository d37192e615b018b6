-- Where each sign-in was asked from, shown in the list of sessions (copied to the tokens a refresh rotates in).
ALTER TABLE refresh_tokens ADD COLUMN client_address text NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN user_agent text NOT NULL DEFAULT '';

-- The security log of failed sign-ins (infrastructure/identity/security_log.py): never events, so an
-- anonymous caller cannot grow the event log; bounded by age and by rows (CHARTER_SECURITY_LOG_*).
CREATE TABLE signin_failures (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    account_key     text        NOT NULL,   -- a digest of the address tried (never the address in clear)
    user_id         text,                   -- the account, when the address names one
    client_address  text        NOT NULL,
    user_agent      text        NOT NULL,
    reason          text        NOT NULL
);
CREATE INDEX signin_failures_at ON signin_failures (at);
CREATE INDEX signin_failures_user ON signin_failures (user_id, at) WHERE user_id IS NOT NULL;
