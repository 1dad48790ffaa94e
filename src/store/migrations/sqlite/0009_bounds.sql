-- Bounded by default (issue 23): live peer counters kept by the database itself, so the caps
-- (`[orgs] max_peers`, a token's `max_peers`) are checked in O(1) whatever the number of peers.
-- Triggers keep them in the same transaction as every insert and delete of a peer (create,
-- delete, token delete, reaper, org delete), whichever code path makes it.
ALTER TABLE orgs ADD COLUMN peer_count INTEGER NOT NULL DEFAULT 0;    -- live peers of the org
ALTER TABLE tokens ADD COLUMN peer_count INTEGER NOT NULL DEFAULT 0;  -- live peers the token created
UPDATE orgs SET peer_count = (SELECT COUNT(*) FROM peers WHERE peers.org_id = orgs.id);
UPDATE tokens SET peer_count = (SELECT COUNT(*) FROM peers WHERE peers.token_id = tokens.id);
CREATE TRIGGER peers_count_insert AFTER INSERT ON peers
BEGIN
    UPDATE orgs SET peer_count = peer_count + 1 WHERE id = NEW.org_id;
    UPDATE tokens SET peer_count = peer_count + 1 WHERE id = NEW.token_id;
END;
CREATE TRIGGER peers_count_delete AFTER DELETE ON peers
BEGIN
    UPDATE orgs SET peer_count = peer_count - 1 WHERE id = OLD.org_id;
    UPDATE tokens SET peer_count = peer_count - 1 WHERE id = OLD.token_id;
END;
CREATE TRIGGER peers_count_move AFTER UPDATE OF org_id, token_id ON peers
BEGIN
    UPDATE orgs SET peer_count = peer_count - 1 WHERE id = OLD.org_id;
    UPDATE tokens SET peer_count = peer_count - 1 WHERE id = OLD.token_id;
    UPDATE orgs SET peer_count = peer_count + 1 WHERE id = NEW.org_id;
    UPDATE tokens SET peer_count = peer_count + 1 WHERE id = NEW.token_id;
END;
-- `[audit] retention`: the reaper deletes entries older than it, oldest first, in small batches.
CREATE INDEX audit_log_at ON audit_log (at);
