-- Key expiry (issue 23): access that ends on its own. A token may carry a key lifetime; a peer
-- created or re-keyed with it is served (DNS, gateways) only until `key_expires_at`, then stays
-- listed as expired until a re-key revives it or the reaper removes it after `[peers]
-- expired_grace`. Expiry takes effect in every server's memory at the deadline (no write).
ALTER TABLE tokens ADD COLUMN key_expiry BIGINT;       -- key lifetime, seconds; NULL: the org default ([peers] key_expiry)
ALTER TABLE peers ADD COLUMN key_expires_at BIGINT;    -- unix seconds; NULL: the key never expires
-- The reaper reads only the peers expired for longer than the grace: an index, not a scan.
CREATE INDEX peers_key_expires_at ON peers (key_expires_at) WHERE key_expires_at IS NOT NULL;
