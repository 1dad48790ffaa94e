-- API keys (issue 16): named admin credentials with a scope (one org, or "*" for every org), a
-- role and an optional expiry. Only the SHA-256 of the key is stored; the key is shown once.
-- A revoked key keeps its row (so it answers "revoked", not "unknown") and frees its name.
CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,          -- DNS label, unique among live keys
    secret_hash  TEXT    NOT NULL UNIQUE,   -- SHA-256 (hex) of the key; the key is never stored
    org          TEXT    NOT NULL,          -- the org's slug, or "*" for every org
    role         TEXT    NOT NULL,          -- owner, operator or viewer
    expires_at   BIGINT,                   -- expiry, unix seconds, if any
    created_at   BIGINT NOT NULL,
    created_by   TEXT    NOT NULL,          -- "bootstrap" or "key:<name>"
    last_used_at BIGINT,                   -- last successful authentication (10 s resolution)
    revoked_at   BIGINT                    -- set when revoked
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
