-- Refresh tokens (stored as sha256 digests), rotated on every use; a family is one sign-in.
CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY,
    family_id   text        NOT NULL,
    user_id     text        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Rate-limit counters shared by every replica (fixed windows; lost on a crash, which is fine).
CREATE UNLOGGED TABLE rate_limits (
    key           text        NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer     NOT NULL,
    PRIMARY KEY (key, window_start)
);
