-- Health-aware groups (issue 10): every server reads the peers seen alive within the health
-- window every few seconds; this index makes that read cost the live peers, not the table.
CREATE INDEX peers_last_handshake ON peers (last_handshake_at);
