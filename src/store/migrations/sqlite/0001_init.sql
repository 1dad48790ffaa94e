-- sixpn schema, SQLite dialect. Timestamps are unix seconds. Keys and addresses are TEXT.

-- One row: the generation, bumped by every transaction that changes peers, so the DNS
-- snapshot and the gateway can tell which state they reflect.
CREATE TABLE meta (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL              -- last committed generation
);
INSERT INTO meta (id, generation) VALUES (1, 0);

CREATE TABLE orgs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    slug       TEXT    NOT NULL UNIQUE,      -- DNS label, e.g. "personal"
    prefix     TEXT    NOT NULL UNIQUE,      -- the org's private /48, e.g. "fdaa:12:3456::/48"
    next_host  INTEGER NOT NULL DEFAULT 1,   -- number of the next peer address; never reused
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES orgs (id),
    name         TEXT    NOT NULL,           -- unique among the org's live tokens
    secret_hash  TEXT    NOT NULL UNIQUE,    -- SHA-256 (hex) of the secret; the secret is never stored
    group_name   TEXT,                       -- the group the token is confined to, if any
    expires_at   INTEGER,                    -- expiry, if any
    max_peers    INTEGER,                    -- cap on live peers, if any
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,                    -- last successful authentication (10 s resolution)
    deleted_at   INTEGER                     -- set when deleted; the row stays so its secret says "deleted"
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (org_id, name) WHERE deleted_at IS NULL;

CREATE TABLE peers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     INTEGER NOT NULL REFERENCES orgs (id),
    token_id   INTEGER NOT NULL REFERENCES tokens (id),  -- the token that created the peer
    name       TEXT    NOT NULL,             -- DNS label, lowercase, unique in the org
    group_name TEXT    NOT NULL,             -- DNS label
    region     TEXT    NOT NULL,             -- gateway region code
    pubkey     TEXT    NOT NULL UNIQUE,      -- WireGuard public key, base64; unique among live peers
    address    TEXT    NOT NULL UNIQUE,      -- IPv6 address in the org's /48; kept across re-keys
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX peers_token ON peers (token_id);
