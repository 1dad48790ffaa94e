-- The client address a peer was last created or re-keyed from (issue 23): a re-key from another
-- address is audited with both (`source_changed=OLD->NEW` in the peer_rekeyed row's detail).
-- NULL for a peer last written before this migration, or by the server itself.
ALTER TABLE peers ADD COLUMN last_source TEXT;
