-- Bounded by default (issue 23): live peer counters kept by the database itself, so the caps
-- (`[orgs] max_peers`, a token's `max_peers`) are checked in O(1) whatever the number of peers.
-- A trigger keeps them in the same transaction as every insert and delete of a peer (create,
-- delete, token delete, reaper, org delete), whichever code path makes it.
ALTER TABLE orgs ADD COLUMN peer_count BIGINT NOT NULL DEFAULT 0;    -- live peers of the org
ALTER TABLE tokens ADD COLUMN peer_count BIGINT NOT NULL DEFAULT 0;  -- live peers the token created
UPDATE orgs SET peer_count = c.n FROM (SELECT org_id, COUNT(*) AS n FROM peers GROUP BY org_id) c
    WHERE c.org_id = orgs.id;
UPDATE tokens SET peer_count = c.n FROM (SELECT token_id, COUNT(*) AS n FROM peers GROUP BY token_id) c
    WHERE c.token_id = tokens.id;
CREATE FUNCTION sixpn_peers_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' THEN
        UPDATE orgs SET peer_count = peer_count - 1 WHERE id = OLD.org_id;
        UPDATE tokens SET peer_count = peer_count - 1 WHERE id = OLD.token_id;
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
        UPDATE orgs SET peer_count = peer_count + 1 WHERE id = NEW.org_id;
        UPDATE tokens SET peer_count = peer_count + 1 WHERE id = NEW.token_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER peers_count AFTER INSERT OR DELETE OR UPDATE OF org_id, token_id ON peers
    FOR EACH ROW EXECUTE FUNCTION sixpn_peers_count();
-- `[audit] retention`: the reaper deletes entries older than it, oldest first, in small batches.
CREATE INDEX audit_log_at ON audit_log (at);
