-- The database's identity: a random value set once, the first time a server opens it. A server
-- keeps its last-known-good DNS state on disk tagged with it, and never serves a state that came
-- from another database.
ALTER TABLE meta ADD COLUMN identity TEXT;   -- 32 hex digits; NULL until the first open fills it

-- Gateway public keys of regions whose key is generated rather than configured (the default
-- region `local`): the first server to start stores its key here and every other replica hands
-- out that one, so a node gets the same key whichever replica answers. Never a private key.
CREATE TABLE region_keys (
    region     TEXT    PRIMARY KEY,          -- region code
    public_key TEXT    NOT NULL,             -- WireGuard public key, base64
    created_at INTEGER NOT NULL              -- when it was stored, unix seconds
);
