-- Offline attenuation (issue 16): the public Ed25519 root key of each WireGuard token and API key,
-- hex, derived from the secret (src/wireguard/derived.rs). The server verifies derived credentials
-- with it; it cannot sign one, so a database dump cannot forge them. NULL for a credential minted
-- before this migration until the server next sees its secret.
ALTER TABLE tokens ADD COLUMN derive_key TEXT;
ALTER TABLE api_keys ADD COLUMN derive_key TEXT;
