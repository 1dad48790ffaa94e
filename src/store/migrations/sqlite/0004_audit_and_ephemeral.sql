-- The audit log (issue 10): one row per token or peer change, written in the same transaction
-- as the change itself, so the log never claims a change that did not commit nor misses one
-- that did. Rows are never updated; they go only with their org.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order changes committed in; the API's cursor
    org_id  INTEGER NOT NULL REFERENCES orgs (id),
    at      INTEGER NOT NULL,       -- when, unix seconds
    actor   TEXT NOT NULL,     -- who: "admin", the token's name, or "reaper" (idle ephemeral peers)
    source  TEXT,              -- the client's address; NULL when the server itself acted
    action  TEXT NOT NULL,     -- token_minted, token_deleted, peer_created, peer_rekeyed, peer_deleted, peer_reaped
    target  TEXT NOT NULL,     -- the token's or the peer's name
    detail  TEXT               -- e.g. the peer's address or new public key; free text
);
CREATE INDEX audit_log_org ON audit_log (org_id, id);

-- Ephemeral peers (issue 10): removed once idle. A token minted ephemeral makes all its peers so.
ALTER TABLE tokens ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;  -- 1: every peer it creates is ephemeral
ALTER TABLE peers ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;   -- 1: reaped after [peers] ephemeral_idle without a handshake
-- The last handshake a gateway saw, unix seconds; written coarsely (only when it moved by more
-- than 30 s) so every replica's reaper agrees without the gateway hammering the store.
ALTER TABLE peers ADD COLUMN last_handshake_at INTEGER;
CREATE INDEX peers_ephemeral ON peers (ephemeral, org_id) WHERE ephemeral = 1;
