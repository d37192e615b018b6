-- Idempotency fingerprints are keyed now (HMAC-SHA256 under a key derived from CHARTER_SECRET_KEY,
-- stored as 'hmac-sha256:<hex>'). The plain SHA-256 digests written before could confirm an offline
-- guess of the request they fingerprint (a body holding a password), so they are dropped. Their keys
-- still answer with their first result, without checking the request again.
UPDATE idempotency_keys SET fingerprint = 'unverified' WHERE fingerprint NOT LIKE 'hmac-sha256:%';
