-- Keyset paging of the admin lists (issue 20): a page of an org's peers is "the first N names
-- after the cursor", read through (org_id, name) (the UNIQUE constraint's index) or, with a
-- filter, through one of these, so it costs the page and not the org. The token filter and the
-- live peer count of a token read (token_id, name), which replaces the index on token_id alone.
CREATE INDEX peers_org_group ON peers (org_id, group_name, name);
CREATE INDEX peers_org_region ON peers (org_id, region, name);
CREATE INDEX peers_token_name ON peers (token_id, name);
DROP INDEX peers_token;
