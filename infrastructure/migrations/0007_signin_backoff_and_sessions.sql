-- Failed sign-ins per account (a digest of the address) and per client address, shared by every
-- replica (see infrastructure/signin.py). Lost on a crash, like the rate-limit counters.
CREATE UNLOGGED TABLE login_failures (
    key           text        PRIMARY KEY,
    failures      integer     NOT NULL,
    last_failure  timestamptz NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_failure);

-- Every replica reads the sign-ins revoked lately (their access tokens die with them) once a second.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
