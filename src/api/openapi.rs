//! The OpenAPI 3.0 document of both APIs, served at `GET /api/openapi.json`.
//!
//! Written by hand with `serde_json::json!`: the API is small, and a test walks the router's
//! routes and every `$ref` to keep this document honest.

use serde_json::{Value, json};

/// A JSON response with a schema reference.
fn response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// A JSON response holding an array of `schema`.
fn array_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": {
            "type": "array",
            "items": { "$ref": format!("#/components/schemas/{schema}") }
        } } }
    })
}

/// The error responses an operation can give, by status.
fn errors(statuses: &[&str]) -> serde_json::Map<String, Value> {
    statuses
        .iter()
        .map(|status| {
            let description = match *status {
                "400" => "Malformed JSON or unreadable body",
                "401" => "Missing, malformed, unknown, expired or deleted token",
                "403" => "Group outside the token's group, or a peer another token of the org created",
                "404" => "No such resource",
                "409" => "Conflict: name (this token's peer: re-key it with PUT; another token's: pick another name) or public key already in use",
                "408" => "The request body did not arrive in time",
                "413" => "Request body over the size limit",
                "415" => "Content-Type is not application/json",
                "422" => "A field is missing or invalid (the message names it)",
                "429" => "The token's cap on live peers is reached, or a rate limit (with Retry-After)",
                "503" => "Database unavailable, no region configured, or too many connections",
                _ => "Error",
            };
            ((*status).to_owned(), response(description, "Error"))
        })
        .collect()
}

/// An operation: summary, security, optional JSON request body, responses.
fn operation(
    id: &str,
    summary: &str,
    tag: &str,
    security: &Value,
    request: Option<&str>,
    ok: (&str, Value),
    error_statuses: &[&str],
) -> Value {
    // Every authenticated operation can meet the rate limits (429) and a database outage (503).
    let mut statuses = error_statuses.to_vec();
    for always in ["429", "503"] {
        if !statuses.contains(&always) {
            statuses.push(always);
        }
    }
    let mut responses = errors(&statuses);
    responses.insert(ok.0.to_owned(), ok.1);
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    });
    if let Some(schema) = request {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
        });
    }
    op
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "$ref": "#/components/schemas/Label" }
    })
}

/// The whole document.
pub fn document() -> Value {
    let peer_security = json!([{ "bearerToken": [] }, { "flyV1Token": [] }]);
    let admin_security = json!([{ "adminToken": [] }]);
    let none = json!([]);
    let name = path_param("name", "The peer's name (a DNS label, case-insensitive)");
    let org = path_param("org", "The org's slug");
    let token_name = path_param("name", "The token's name");

    let ts = json!({ "type": "string", "format": "date-time", "example": "2026-11-25T16:00:00Z" });
    let ts_null = json!({ "type": "string", "format": "date-time", "nullable": true });

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "sixpn",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Private IPv6 networks over WireGuard. The peer API (/api/v3) is \
                wire-compatible with flyctl `wireguard token start|update`; the admin API (/api/v1) \
                manages orgs, WireGuard tokens and peers. Every error answers \
                {\"error\": \"<what to fix>\"}, including those of the HTTP layer (400 for an \
                unparsable request, 414, 431, 503 over the connection cap). A WireGuard token \
                reaches only the peers it created: a name another token of the same org created \
                answers 409 on create and 403 on read, re-key and delete, saying so; a name in \
                another org is 404, like no peer. Names and groups are DNS labels, \
                ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$, case-insensitive. Rate limits (429 with \
                Retry-After): per WireGuard token, and per source address for failed \
                authentications."
        },
        "tags": [
            { "name": "peer", "description": "Peer API, authenticated by a WireGuard token" },
            { "name": "admin", "description": "Admin API, authenticated by the admin token" },
            { "name": "meta", "description": "Health and this document" }
        ],
        "paths": {
            "/api/v3/wire_guard_peers": {
                "post": operation("createPeer",
                    "Create a named peer for the token (flyctl `wireguard token start`)", "peer",
                    &peer_security, Some("PeerCreate"),
                    ("200", response("The peer and how to reach the gateway", "PeerResponse")),
                    &["400", "401", "403", "408", "409", "413", "415", "422", "429", "503"]),
            },
            "/api/v3/wire_guard_peers/{name}": {
                "parameters": [name],
                "get": operation("getPeer", "One of the token's peers", "peer", &peer_security,
                    None, ("200", response("The peer", "PeerResponse")),
                    &["401", "403", "404", "422"]),
                "put": operation("rekeyPeer",
                    "Re-key one of the token's peers; its address stays (flyctl `wireguard token update`)",
                    "peer", &peer_security, Some("PeerRekey"),
                    ("200", response("The re-keyed peer", "PeerResponse")),
                    &["400", "401", "403", "404", "408", "409", "413", "415", "422"]),
                "delete": operation("deletePeer", "Delete one of the token's peers", "peer",
                    &peer_security, None, ("200", response("Deleted", "Deleted")),
                    &["401", "403", "404", "422"]),
            },
            "/api/v1/orgs": {
                "get": operation("listOrgs", "Every org", "admin", &admin_security, None,
                    ("200", array_response("The orgs", "Org")), &["401"]),
                "post": operation("createOrg", "Create an org with a fresh /48", "admin",
                    &admin_security, Some("OrgCreate"), ("201", response("The new org", "Org")),
                    &["400", "401", "408", "409", "413", "415", "422"]),
            },
            "/api/v1/orgs/{org}/wireguard_tokens": {
                "parameters": [org.clone()],
                "get": operation("listTokens", "The org's live tokens (never their secrets)",
                    "admin", &admin_security, None,
                    ("200", array_response("The tokens", "Token")), &["401", "404", "422"]),
                "post": operation("mintToken", "Mint a WireGuard token; the secret is shown once",
                    "admin", &admin_security, Some("TokenCreate"),
                    ("201", response("The token with its secret", "MintedToken")),
                    &["400", "401", "404", "408", "409", "413", "415", "422"]),
            },
            "/api/v1/orgs/{org}/wireguard_tokens/{name}": {
                "parameters": [org.clone(), token_name],
                "delete": operation("deleteToken",
                    "Delete a token and, in the same transaction, every peer it created", "admin",
                    &admin_security, None,
                    ("200", response("Deleted", "TokenDeleted")), &["401", "404", "422"]),
            },
            "/api/v1/orgs/{org}/peers": {
                "parameters": [org.clone()],
                "get": operation("listOrgPeers", "The org's peers", "admin", &admin_security, None,
                    ("200", array_response("The peers", "Peer")), &["401", "404", "422"]),
            },
            "/api/v1/orgs/{org}/peers/{name}": {
                "parameters": [org, path_param("name", "The peer's name")],
                "get": operation("showOrgPeer", "One peer with its gateway status", "admin",
                    &admin_security, None,
                    ("200", response("The peer", "PeerWithStatus")), &["401", "404", "422"]),
                "delete": operation("deleteOrgPeer", "Delete one peer", "admin", &admin_security,
                    None, ("200", response("Deleted", "Deleted")), &["401", "404", "422"]),
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi", "summary": "This document", "tags": ["meta"],
                    "security": none,
                    "responses": { "200": { "description": "OpenAPI 3.0 document",
                        "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process serves HTTP (never touches the database); \
                        the generation DNS has published",
                    "tags": ["meta"], "security": none,
                    "responses": {
                        "200": response("Alive", "Health")
                    }
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the database answers within 1 s and the DNS snapshot \
                        has published every committed change",
                    "tags": ["meta"], "security": none,
                    "responses": {
                        "200": response("Ready", "Ready"),
                        "503": response("Not ready; the error says why", "Error")
                    }
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http", "scheme": "bearer",
                    "description": "A WireGuard token (sixpn_wg_...): `Authorization: Bearer <token>`; \
                        `Bearer FlyV1 <token>` is accepted too"
                },
                "flyV1Token": {
                    "type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "A WireGuard token in flyctl's form: `Authorization: FlyV1 <token>`"
                },
                "adminToken": {
                    "type": "http", "scheme": "bearer",
                    "description": "The admin token (SIXPN_ADMIN_TOKEN, or the admin-token file in the data directory)"
                }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string", "minLength": 1,
                        "description": "What was wrong and how to fix it" } }
                },
                "Label": {
                    "type": "string", "minLength": 1, "maxLength": 63,
                    "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
                    "description": "A DNS label: ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ matched \
                        case-insensitively (input in any case, stored and answered lowercase)"
                },
                "OptionalLabel": {
                    "type": "string", "nullable": true, "maxLength": 63,
                    "pattern": "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)?$",
                    "description": "A DNS label as in Label; empty, null or absent means \"not given\""
                },
                "PublicKey": {
                    "type": "string", "minLength": 44, "maxLength": 44,
                    "pattern": "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
                    "description": "A Curve25519 public key: 32 bytes, standard base64 with padding"
                },
                "PeerCreate": {
                    "type": "object", "required": ["name", "pubkey"],
                    "properties": {
                        "name": { "$ref": "#/components/schemas/Label" },
                        "group": { "allOf": [{ "$ref": "#/components/schemas/OptionalLabel" }],
                            "nullable": true,
                            "description": "A DNS label; empty, null or absent: the token's group, else `default`" },
                        "pubkey": { "$ref": "#/components/schemas/PublicKey" },
                        "region": { "type": "string", "nullable": true,
                            "description": "A configured region; empty, null or absent: the default region" }
                    },
                    "example": { "name": "node-1", "group": "k8s",
                        "pubkey": "qo8Xh4XIqcCm8rFm8yRZ8fdzsm07kB6aZbXdUwoJqEg=", "region": "" }
                },
                "PeerRekey": {
                    "type": "object", "required": ["pubkey"],
                    "properties": {
                        "pubkey": { "$ref": "#/components/schemas/PublicKey" },
                        "name": { "type": "string", "nullable": true, "description": "Ignored when empty or null; must match the URL otherwise" },
                        "group": { "type": "string", "nullable": true, "description": "Ignored when empty or null; must match the peer otherwise" },
                        "region": { "type": "string", "nullable": true, "description": "Ignored when empty or null; must match the peer otherwise" }
                    }
                },
                "PeerResponse": {
                    "type": "object",
                    "required": ["us", "them", "key", "name", "group", "region", "org", "pubkey",
                        "endpoint", "dns", "allowed_ips", "created_at", "updated_at"],
                    "properties": {
                        "us": { "type": "string", "format": "ipv6", "description": "The peer's address" },
                        "them": { "type": "string", "description": "The gateway endpoint's host" },
                        "key": { "$ref": "#/components/schemas/PublicKey" },
                        "name": { "type": "string" },
                        "group": { "type": "string" },
                        "region": { "type": "string" },
                        "org": { "type": "string" },
                        "pubkey": { "$ref": "#/components/schemas/PublicKey" },
                        "endpoint": { "type": "string", "description": "host:port ([v6]:port)" },
                        "dns": { "type": "string", "format": "ipv6", "description": "The org's resolver" },
                        "allowed_ips": { "type": "string", "description": "The org's /48" },
                        "created_at": ts,
                        "updated_at": ts
                    }
                },
                "Deleted": {
                    "type": "object", "required": ["deleted"],
                    "properties": { "deleted": { "type": "string" } }
                },
                "TokenDeleted": {
                    "type": "object", "required": ["deleted", "deleted_peers"],
                    "properties": {
                        "deleted": { "type": "string" },
                        "deleted_peers": { "type": "integer", "minimum": 0 }
                    }
                },
                "OrgCreate": {
                    "type": "object", "required": ["slug"],
                    "properties": { "slug": { "$ref": "#/components/schemas/Label" } }
                },
                "Org": {
                    "type": "object", "required": ["slug", "prefix", "dns", "created_at"],
                    "properties": {
                        "slug": { "type": "string" },
                        "prefix": { "type": "string", "example": "fdaa:1:2::/48" },
                        "dns": { "type": "string", "format": "ipv6" },
                        "created_at": ts
                    }
                },
                "TokenCreate": {
                    "type": "object", "required": ["name"],
                    "properties": {
                        "name": { "$ref": "#/components/schemas/Label" },
                        "group": { "allOf": [{ "$ref": "#/components/schemas/OptionalLabel" }],
                            "nullable": true,
                            "description": "Confine the token to this group (empty, null or absent: no confinement)" },
                        "expires_in": {
                            "description": "Lifetime, at most 100 years (36525d); leave it out for \
                                a token that never expires. Not nullable: null is refused.",
                            "oneOf": [
                                { "type": "string", "example": "30d", "minLength": 1,
                                  "description": "A duration: 30d, 12h, 3600s, or digits (seconds)" },
                                { "type": "integer", "minimum": 1, "maximum": 3_155_760_000_u64,
                                  "description": "Seconds" }
                            ]
                        },
                        "max_peers": { "type": "integer", "minimum": 1, "maximum": 4_294_967_295_u64,
                            "nullable": true,
                            "description": "Cap on the token's live peers (null or absent: no cap)" }
                    }
                },
                "Token": {
                    "type": "object",
                    "required": ["org", "name", "group", "expires_at", "max_peers", "created_at",
                        "last_used_at", "live_peers"],
                    "properties": {
                        "org": { "type": "string" },
                        "name": { "type": "string" },
                        "group": { "type": "string", "nullable": true },
                        "expires_at": ts_null,
                        "max_peers": { "type": "integer", "nullable": true },
                        "created_at": ts,
                        "last_used_at": ts_null,
                        "live_peers": { "type": "integer", "minimum": 0 }
                    }
                },
                "MintedToken": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Token" },
                        { "type": "object", "required": ["token"],
                          "properties": { "token": { "type": "string",
                              "description": "The secret (sixpn_wg_...), shown only here" } } }
                    ]
                },
                "Peer": {
                    "type": "object",
                    "required": ["org", "name", "group", "region", "pubkey", "address", "token",
                        "created_at", "updated_at"],
                    "properties": {
                        "org": { "type": "string" },
                        "name": { "type": "string" },
                        "group": { "type": "string" },
                        "region": { "type": "string" },
                        "pubkey": { "$ref": "#/components/schemas/PublicKey" },
                        "address": { "type": "string", "format": "ipv6" },
                        "token": { "type": "string", "description": "The token that created it" },
                        "created_at": ts,
                        "updated_at": ts
                    }
                },
                "PeerStatus": {
                    "type": "object", "nullable": true,
                    "required": ["last_handshake", "rx_bytes", "tx_bytes", "endpoint"],
                    "properties": {
                        "last_handshake": ts_null,
                        "rx_bytes": { "type": "integer", "minimum": 0 },
                        "tx_bytes": { "type": "integer", "minimum": 0 },
                        "endpoint": { "type": "string", "nullable": true }
                    }
                },
                "PeerWithStatus": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Peer" },
                        { "type": "object", "required": ["status"],
                          "properties": { "status": { "$ref": "#/components/schemas/PeerStatus" } } }
                    ]
                },
                "Health": {
                    "type": "object", "required": ["status", "generation"],
                    "properties": {
                        "status": { "type": "string", "enum": ["ok"] },
                        "generation": { "type": "integer", "minimum": 0 }
                    }
                },
                "Ready": {
                    "type": "object", "required": ["status", "generation"],
                    "properties": {
                        "status": { "type": "string", "enum": ["ready"] },
                        "generation": { "type": "integer", "minimum": 0 }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10);
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {r}"
            );
        }
    }

    #[test]
    fn every_operation_has_responses_and_known_security() {
        let doc = document();
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                assert!(op["operationId"].is_string(), "{method} {path}");
                assert!(!op["responses"].as_object().unwrap().is_empty());
                for requirement in op["security"].as_array().unwrap() {
                    for scheme in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(scheme), "{scheme} in {method} {path}");
                    }
                }
            }
        }
    }
}
