//! The admin API under `/api/v1`: orgs, WireGuard tokens and peers, behind the admin token.
//!
//! Token secrets appear in exactly one answer, the one that mints them; every list shows
//! metadata only.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::auth::{AdminAuth, Source};
use super::body::{ApiPath, JsonObject};
use super::error::ApiError;
use super::peers::parse_path_name;
use super::{Shared, rfc3339};
use crate::model::{GroupName, Org, OrgSlug, Peer, PeerStatus, TokenInfo, TokenName, now_unix};
use crate::store::NewToken;

/// An org as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct OrgJson {
    /// The org's slug.
    pub slug: String,
    /// The org's /48.
    pub prefix: String,
    /// The org's resolver address (`::3`).
    pub dns: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

impl From<&Org> for OrgJson {
    fn from(org: &Org) -> Self {
        OrgJson {
            slug: org.slug.to_string(),
            prefix: org.prefix.to_string(),
            dns: org.dns_addr().to_string(),
            created_at: rfc3339(org.created_at),
        }
    }
}

/// A WireGuard token as the admin API shows it: never the secret.
#[derive(Debug, Serialize)]
pub struct TokenJson {
    /// The token's org.
    pub org: String,
    /// The token's name.
    pub name: String,
    /// The group it is confined to.
    pub group: Option<String>,
    /// Expiry, RFC 3339.
    pub expires_at: Option<String>,
    /// Cap on live peers.
    pub max_peers: Option<u32>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last use, RFC 3339.
    pub last_used_at: Option<String>,
    /// Live peers it created.
    pub live_peers: u64,
    /// Every peer it creates is ephemeral.
    pub ephemeral: bool,
}

impl From<&TokenInfo> for TokenJson {
    fn from(t: &TokenInfo) -> Self {
        TokenJson {
            org: t.org.to_string(),
            name: t.name.to_string(),
            group: t.group.as_ref().map(ToString::to_string),
            expires_at: t.expires_at.map(rfc3339),
            max_peers: t.max_peers,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            live_peers: t.live_peers,
            ephemeral: t.ephemeral,
        }
    }
}

/// The answer to a mint: the secret, shown this once, beside the token's metadata. `Debug`
/// hides the secret.
#[derive(Serialize)]
pub struct MintedToken {
    /// The secret.
    pub token: String,
    /// Everything else.
    #[serde(flatten)]
    pub info: TokenJson,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// A peer as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct PeerJson {
    /// The peer's org.
    pub org: String,
    /// The peer's name.
    pub name: String,
    /// The peer's group.
    pub group: String,
    /// The peer's region.
    pub region: String,
    /// The peer's public key.
    pub pubkey: String,
    /// The peer's address.
    pub address: String,
    /// The token that created it.
    pub token: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last re-key, RFC 3339.
    pub updated_at: String,
    /// Removed once idle (`[peers] ephemeral_idle`).
    pub ephemeral: bool,
    /// When a gateway last saw it alive (a handshake or traffic, 30 s coarse), RFC 3339;
    /// `null`: never.
    pub last_seen_at: Option<String>,
}

impl PeerJson {
    fn with_liveness(mut self, liveness: Option<&(Option<i64>, bool)>) -> Self {
        if let Some((at, ephemeral)) = liveness {
            self.ephemeral = *ephemeral;
            self.last_seen_at = at.map(rfc3339);
        }
        self
    }
}

impl From<&Peer> for PeerJson {
    fn from(p: &Peer) -> Self {
        PeerJson {
            org: p.org.to_string(),
            name: p.name.to_string(),
            group: p.group.to_string(),
            region: p.region.to_string(),
            pubkey: p.pubkey.to_base64(),
            address: p.address.to_string(),
            token: p.token.to_string(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            ephemeral: false,
            last_seen_at: None,
        }
    }
}

/// One peer with its live status on the gateway.
#[derive(Debug, Serialize)]
pub struct PeerWithStatus {
    /// The peer.
    #[serde(flatten)]
    pub peer: PeerJson,
    /// What the gateway interface reports; `null` without a gateway or before it has the peer.
    pub status: Option<StatusJson>,
}

/// A peer's status on the gateway interface.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    /// Last handshake, RFC 3339.
    pub last_handshake: Option<String>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// The peer's outer endpoint.
    pub endpoint: Option<String>,
}

impl From<PeerStatus> for StatusJson {
    fn from(s: PeerStatus) -> Self {
        StatusJson {
            last_handshake: s.last_handshake.map(rfc3339),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            endpoint: s.endpoint,
        }
    }
}

fn parse_org(slug: &str) -> Result<OrgSlug, ApiError> {
    slug.parse().map_err(|_| ApiError::no_such_org(slug))
}

fn parse_token_name(name: &str) -> Result<TokenName, ApiError> {
    name.parse()
        .map_err(|err| ApiError::not_a_label("name", name, err))
}

/// `POST /api/v1/orgs`: creates an org with a fresh /48.
pub async fn create_org(
    _: AdminAuth,
    State(state): State<Shared>,
    body: JsonObject,
) -> Result<(StatusCode, Json<OrgJson>), ApiError> {
    let text = body.required_string("slug")?;
    let slug: OrgSlug = text
        .parse()
        .map_err(|err| ApiError::not_a_label("slug", text, err))?;
    let org = super::metrics::timed("create_org", state.store.create_org(&slug)).await?;
    tracing::info!(org = %org.slug, prefix = %org.prefix, "org created");
    // A new org is a new DNS view; the store has published the generation that adds it.
    let generation = *state.store.changes().borrow();
    state.wait_published(generation).await;
    Ok((StatusCode::CREATED, Json(OrgJson::from(&org))))
}

/// `GET /api/v1/orgs`: every org.
pub async fn list_orgs(
    _: AdminAuth,
    State(state): State<Shared>,
) -> Result<Json<Vec<OrgJson>>, ApiError> {
    let orgs = super::metrics::timed("list_orgs", state.store.list_orgs()).await?;
    Ok(Json(orgs.iter().map(OrgJson::from).collect()))
}

/// The longest `expires_in` accepted: 100 years (36,525 days). Longer is surely a typo (issue
/// 11: `--expires 10000y`), and "never" is said by leaving the field out.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(36_525 * 86_400);

/// Reads `expires_in`: a humantime duration (`"30d"`, `"12h"`, `"3600s"`), a string of digits
/// (seconds), or an integer number of seconds; it must be positive and at most
/// [`MAX_EXPIRES_IN`]. `null` is refused: the OpenAPI document says string or integer, and no
/// expiry is said by leaving the field out.
fn parse_expires_in(value: &Value) -> Result<Duration, ApiError> {
    let invalid = |reason: String| ApiError::InvalidField {
        field: "expires_in",
        reason,
    };
    let duration = match value {
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            invalid(format!("must be a positive whole number of seconds, got {n}"))
        })?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid(format!("is too large: {s}")))?,
        Value::String(s) => humantime::parse_duration(s.trim()).map_err(|err| {
            invalid(format!(
                "is not a duration ({err}): got {s:?}; use e.g. \"30d\", \"12h\" or a number of seconds"
            ))
        })?,
        Value::Null => {
            return Err(invalid(
                "must be a duration such as \"30d\" or a number of seconds, not null; leave \
                 it out for a token that never expires"
                    .to_owned(),
            ));
        }
        _ => {
            return Err(invalid(
                "must be a duration such as \"30d\" or a number of seconds".to_owned(),
            ));
        }
    };
    if duration.is_zero() {
        return Err(invalid("must be longer than zero".to_owned()));
    }
    if duration > MAX_EXPIRES_IN {
        return Err(invalid(format!(
            "is too long: at most 100 years ({}d); leave it out for a token that never expires",
            MAX_EXPIRES_IN.as_secs() / 86_400
        )));
    }
    Ok(duration)
}

/// `POST /api/v1/orgs/{org}/wireguard_tokens`: mints a token; the only answer holding its secret.
pub async fn mint_token(
    _: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    body: JsonObject,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    let org = parse_org(&org)?;
    let name = parse_token_name(body.required_string("name")?)?;
    let group = match body.string("group")? {
        Some(text) => Some(
            text.parse::<GroupName>()
                .map_err(|err| ApiError::not_a_label("group", text, err))?,
        ),
        None => None,
    };
    let expires_at = match body.0.get("expires_in") {
        Some(value) => {
            let secs = i64::try_from(parse_expires_in(value)?.as_secs())
                .ok()
                .and_then(|secs| now_unix().checked_add(secs))
                .ok_or_else(|| ApiError::InvalidField {
                    field: "expires_in",
                    reason: "is too far in the future".to_owned(),
                })?;
            Some(secs)
        }
        None => None,
    };
    let max_peers = body.u32("max_peers")?;
    if max_peers == Some(0) {
        return Err(ApiError::InvalidField {
            field: "max_peers",
            reason: "must be at least 1 (leave it out for no cap)".to_owned(),
        });
    }
    let ephemeral = body.bool("ephemeral")?.unwrap_or(false);
    let new = NewToken {
        name,
        group,
        expires_at,
        max_peers,
    };
    let (info, secret) = super::metrics::timed(
        "mint_token",
        state
            .store
            .with_source(source)
            .mint_token_opts(&org, new, ephemeral),
    )
    .await?;
    tracing::info!(org = %info.org, token = %info.name, "token minted");
    // Its node then gets through a flood of guesses from its address (issue 11).
    state.limiters.known_tokens.insert(secret.expose());
    Ok((
        StatusCode::CREATED,
        Json(MintedToken {
            token: secret.expose().to_owned(),
            info: TokenJson::from(&info),
        }),
    ))
}

/// `GET /api/v1/orgs/{org}/wireguard_tokens`: the org's live tokens, without secrets.
pub async fn list_tokens(
    _: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
) -> Result<Json<Vec<TokenJson>>, ApiError> {
    let org = parse_org(&org)?;
    let tokens = super::metrics::timed("list_tokens", state.store.list_tokens(&org)).await?;
    Ok(Json(tokens.iter().map(TokenJson::from).collect()))
}

/// `DELETE /api/v1/orgs/{org}/wireguard_tokens/{name}`: deletes a token and every peer it made.
pub async fn delete_token(
    _: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let org = parse_org(&org)?;
    let name = parse_token_name(&name)?;
    let (n_deleted, generation) = super::metrics::timed(
        "delete_token",
        state.store.with_source(source).delete_token(&org, &name),
    )
    .await?;
    tracing::info!(%org, token = %name, deleted_peers = n_deleted, %generation, "token deleted");
    state.wait_published(generation).await;
    Ok(Json(serde_json::json!({
        "deleted": name.as_str(),
        "deleted_peers": n_deleted,
    })))
}

/// `GET /api/v1/orgs/{org}/peers`: the org's peers.
pub async fn list_peers(
    _: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
) -> Result<Json<Vec<PeerJson>>, ApiError> {
    let org = parse_org(&org)?;
    let peers = super::metrics::timed("list_peers", state.store.list_peers(&org)).await?;
    let liveness = super::metrics::timed("org_liveness", state.store.org_liveness(&org)).await?;
    Ok(Json(
        peers
            .iter()
            .map(|p| PeerJson::from(p).with_liveness(liveness.get(p.name.as_str())))
            .collect(),
    ))
}

/// `GET /api/v1/orgs/{org}/peers/{name}`: one peer, with its gateway status when a gateway runs.
pub async fn show_peer(
    _: AdminAuth,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<PeerWithStatus>, ApiError> {
    let org = parse_org(&org)?;
    let name = parse_path_name(&name)?;
    let peer = super::metrics::timed("get_peer", state.store.get_peer(&org, &name)).await?;
    let status = match &state.gateway {
        Some(gateway) => gateway
            .peer_status(&peer.pubkey)
            .await
            .map(StatusJson::from),
        None => None,
    };
    let liveness =
        super::metrics::timed("peer_liveness", state.store.peer_liveness(&org, &name)).await?;
    Ok(Json(PeerWithStatus {
        peer: PeerJson::from(&peer).with_liveness(Some(&liveness)),
        status,
    }))
}

/// `DELETE /api/v1/orgs/{org}/peers/{name}`: deletes one peer.
pub async fn delete_peer(
    _: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let org = parse_org(&org)?;
    let name = parse_path_name(&name)?;
    let generation = super::metrics::timed(
        "delete_peer",
        state.store.with_source(source).delete_peer(&org, &name),
    )
    .await?;
    tracing::info!(%org, peer = %name, %generation, "peer deleted by admin");
    state.wait_published(generation).await;
    Ok(Json(serde_json::json!({ "deleted": name.as_str() })))
}

/// The most audit entries one page may hold, and how many a page holds by default.
pub const AUDIT_MAX_LIMIT: u32 = 1000;
/// See [`AUDIT_MAX_LIMIT`].
pub const AUDIT_DEFAULT_LIMIT: u32 = 100;

/// One audit log entry as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct AuditJson {
    /// Position in the log (the cursor).
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    /// Who: `admin`, the token's name, or `reaper`.
    pub actor: String,
    /// The client's address; `null` when the server itself acted.
    pub source: Option<String>,
    /// What: `token_minted`, `token_deleted`, `peer_created`, `peer_rekeyed`, `peer_deleted`,
    /// `peer_reaped`.
    pub action: String,
    /// The token's or peer's name.
    pub target: String,
    /// More about the change.
    pub detail: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize)]
pub struct AuditPageJson {
    /// The org.
    pub org: String,
    /// Entries, newest first.
    pub entries: Vec<AuditJson>,
    /// Pass as `?before=` for the next (older) page; `null` on the last one.
    pub next: Option<i64>,
}

/// Reads `limit` and `before` from a query string (`limit=50&before=1234`).
fn audit_query(query: Option<&str>) -> Result<(u32, Option<i64>), ApiError> {
    let mut limit = AUDIT_DEFAULT_LIMIT;
    let mut before = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "limit",
                        reason: format!(
                            "must be a whole number from 1 to {AUDIT_MAX_LIMIT}, got {value:?}"
                        ),
                    })?;
            }
            "before" => {
                before = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ApiError::InvalidField {
                            field: "before",
                            reason: format!(
                                "must be the `next` value of a previous page, got {value:?}"
                            ),
                        })?,
                );
            }
            _ => {}
        }
    }
    Ok((limit, before))
}

/// `GET /api/v1/orgs/{org}/audit`: the org's token and peer changes, newest first.
pub async fn audit(
    _: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<Json<AuditPageJson>, ApiError> {
    let org = parse_org(&org)?;
    let (limit, before) = audit_query(uri.query())?;
    let page =
        super::metrics::timed("audit_log", state.store.audit_log(&org, before, limit)).await?;
    Ok(Json(AuditPageJson {
        org: org.to_string(),
        entries: page
            .entries
            .into_iter()
            .map(|e| AuditJson {
                id: e.id,
                at: rfc3339(e.at),
                actor: e.actor,
                source: e.source,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
        next: page.next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue11_debug_of_a_minted_token_hides_the_secret() {
        let minted = MintedToken {
            token: "sixpn_wg_supersecret".to_owned(),
            info: TokenJson {
                org: "personal".into(),
                name: "k8s".into(),
                group: None,
                expires_at: None,
                max_peers: None,
                created_at: rfc3339(0),
                last_used_at: None,
                live_peers: 0,
                ephemeral: false,
            },
        };
        let debug = format!("{minted:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(debug.contains("k8s"));
    }

    #[test]
    fn audit_query_forms() {
        assert_eq!(audit_query(None).unwrap(), (AUDIT_DEFAULT_LIMIT, None));
        assert_eq!(audit_query(Some("limit=5&before=9")).unwrap(), (5, Some(9)));
        assert_eq!(audit_query(Some("limit=1000")).unwrap(), (1000, None));
        assert!(audit_query(Some("limit=1001")).is_err());
        assert!(audit_query(Some("limit=0")).is_err());
        assert!(audit_query(Some("before=x")).is_err());
    }

    #[test]
    fn expires_in_forms() {
        let ok = |v: Value| parse_expires_in(&v).map(|d| d.as_secs()).ok();
        assert_eq!(ok(serde_json::json!("30d")), Some(30 * 86400));
        assert_eq!(ok(serde_json::json!("12h")), Some(12 * 3600));
        assert_eq!(ok(serde_json::json!("3600s")), Some(3600));
        assert_eq!(ok(serde_json::json!("3600")), Some(3600));
        assert_eq!(ok(serde_json::json!(90)), Some(90));
        assert_eq!(ok(serde_json::json!(0)), None);
        assert_eq!(ok(serde_json::json!(-5)), None);
        assert_eq!(ok(serde_json::json!(1.5)), None);
        assert_eq!(ok(serde_json::json!("soon")), None);
        assert_eq!(ok(serde_json::json!(true)), None);
        // issue 11: null, and absurd lengths, are refused with a reason.
        assert_eq!(ok(Value::Null), None);
        assert_eq!(ok(serde_json::json!("100y")), Some(36_525 * 86_400));
        assert_eq!(ok(serde_json::json!("101y")), None);
        assert_eq!(ok(serde_json::json!("10000y")), None);
        assert_eq!(ok(serde_json::json!(u64::MAX)), None);
        assert_eq!(ok(serde_json::json!("36525d")), Some(36_525 * 86_400));
        let err = parse_expires_in(&serde_json::json!("10000y")).unwrap_err();
        assert!(err.to_string().contains("100 years"), "{err}");
        let err = parse_expires_in(&Value::Null).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
    }
}
