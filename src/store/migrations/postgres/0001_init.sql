-- sixpn schema, PostgreSQL dialect. Timestamps are unix seconds. Keys and addresses are TEXT.

-- One row: the generation, bumped by every transaction that changes peers, so the DNS
-- snapshot and the gateway can tell which state they reflect.
CREATE TABLE meta (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL              -- last committed generation
);
INSERT INTO meta (id, generation) VALUES (1, 0);

CREATE TABLE orgs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug       TEXT    NOT NULL UNIQUE,      -- DNS label, e.g. "personal"
    prefix     TEXT    NOT NULL UNIQUE,      -- the org's private /48, e.g. "fdaa:12:3456::/48"
    next_host  BIGINT NOT NULL DEFAULT 1,   -- number of the next peer address; never reused
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES orgs (id),
    name         TEXT    NOT NULL,           -- unique among the org's live tokens
    secret_hash  TEXT    NOT NULL UNIQUE,    -- SHA-256 (hex) of the secret; the secret is never stored
    group_name   TEXT,                       -- the group the token is confined to, if any
    expires_at   BIGINT,                    -- expiry, if any
    max_peers    BIGINT,                    -- cap on live peers, if any
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,                    -- last successful authentication (10 s resolution)
    deleted_at   BIGINT                     -- set when deleted; the row stays so its secret says "deleted"
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (org_id, name) WHERE deleted_at IS NULL;

CREATE TABLE peers (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     BIGINT NOT NULL REFERENCES orgs (id),
    token_id   BIGINT NOT NULL REFERENCES tokens (id),  -- the token that created the peer
    name       TEXT    NOT NULL,             -- DNS label, lowercase, unique in the org
    group_name TEXT    NOT NULL,             -- DNS label
    region     TEXT    NOT NULL,             -- gateway region code
    pubkey     TEXT    NOT NULL UNIQUE,      -- WireGuard public key, base64; unique among live peers
    address    TEXT    NOT NULL UNIQUE,      -- IPv6 address in the org's /48; kept across re-keys
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX peers_token ON peers (token_id);
