//! The admin API under `/api/v1`: orgs, WireGuard tokens and peers, behind an API key or the
//! bootstrap admin token. Each handler checks the caller's role and scope first
//! ([`AdminAuth::org`], [`AdminAuth::global`]); the roles each operation needs are declared in
//! its OpenAPI operation (`x-sixpn-roles`, `x-sixpn-scope`, see `openapi.rs`).
//!
//! Token secrets appear in exactly one answer, the one that mints them; every list shows
//! metadata only.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::auth::{AdminAuth, Source};
use super::body::{ApiPath, JsonObject};
use super::error::ApiError;
use super::paging::{ListQuery, Paged, list_query};
use super::peers::parse_path_name;
use super::types::{
    AuditJson, AuditPageJson, DeletedJson, EXPIRES_UNITS, Label, MintedToken, OrgCreate,
    OrgDeletedJson, OrgJson, PeerJson, PeerWithStatus, StatusJson, TokenCreate, TokenDeletedJson,
    TokenJson,
};
use super::{Shared, rfc3339};
use crate::model::{GroupName, Org, Peer, PeerStatus, TokenInfo, TokenName, now_unix};
use crate::store::{KeyScope, Live, NewToken, OrgsWithin, PeerFilter, Role};

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
            key_expiry: t.key_expiry,
            expired: t.expired(now_unix()),
        }
    }
}

impl PeerJson {
    /// The peer with what the gateway last saw of it.
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
            key_expires_at: p.key_expires_at.map(rfc3339),
            expired: p.key_expired(now_unix()),
        }
    }
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

fn parse_token_name(name: &str) -> Result<TokenName, ApiError> {
    name.parse()
        .map_err(|err| ApiError::not_a_label("name", name, err))
}

/// `POST /api/v1/orgs`: creates an org with a fresh /48.
#[utoipa::path(post, path = "/api/v1/orgs", operation_id = "createOrg", tag = "admin",
    summary = "Create an org with a fresh /48",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner"])), ("x-sixpn-scope" = json!("all"))),
    request_body = OrgCreate,
    responses(
        (status = 201, description = "The new org", body = OrgJson,
            links(
                ("listTokens" = (operation_id = "listTokens",
                    parameters(("org" = "$response.body#/slug")))),
                ("mintToken" = (operation_id = "mintToken",
                    parameters(("org" = "$response.body#/slug")))),
                ("listOrgPeers" = (operation_id = "listOrgPeers",
                    parameters(("org" = "$response.body#/slug")))),
                ("listAudit" = (operation_id = "listAudit",
                    parameters(("org" = "$response.body#/slug")))),
                ("deleteOrg" = (operation_id = "deleteOrg",
                    parameters(("org" = "$response.body#/slug")))),
            )),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::AdminGuarded,
        super::openapi::JsonBody,
    ))]
pub async fn create_org(
    auth: AdminAuth,
    State(state): State<Shared>,
    body: JsonObject,
) -> Result<(StatusCode, Json<OrgJson>), ApiError> {
    auth.global(Role::Owner)?;
    let text = body.required_string("slug")?;
    let request = OrgCreate {
        slug: text
            .parse()
            .map_err(|err| ApiError::not_a_label("slug", text, err))?,
    };
    let org = super::metrics::timed("create_org", state.store.create_org(&request.slug)).await?;
    tracing::info!(org = %org.slug, prefix = %org.prefix, "org created");
    // A new org is a new DNS view; the store has published the generation that adds it.
    let generation = *state.store.changes().borrow();
    state.wait_published(generation).await;
    Ok((StatusCode::CREATED, Json(OrgJson::from(&org))))
}

/// `GET /api/v1/orgs`: a page of the orgs, by slug.
#[utoipa::path(get, path = "/api/v1/orgs", operation_id = "listOrgs", tag = "admin",
    summary = "The orgs by slug, a page at a time",
    description = "A page of the orgs the caller's scope reaches, by slug. Paged like every \
        admin list: `limit` (default 1000, at most 10000) and `after`, the `X-Next-Cursor` of \
        the previous page; the last page has no `X-Next-Cursor`.",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator", "viewer"])), ("x-sixpn-scope" = json!("any"))),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "Orgs per page (default 1000)"),
        ("after" = Option<Label>, Query,
            description = "The `X-Next-Cursor` of the previous page: only orgs after it")),
    responses(
        (status = 200, description = "A page of the orgs", body = Vec<OrgJson>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's `after`; absent on the last page"),
                ("Link" = String, description = "The next page's URL, `<...>; rel=\"next\"`; absent on the last page"))),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn list_orgs(
    auth: AdminAuth,
    State(state): State<Shared>,
    uri: axum::http::Uri,
) -> Result<Paged<OrgJson>, ApiError> {
    let query = list_query(uri.query(), &[])?;
    // A key of one org sees that org only.
    let within = match &auth.scope {
        KeyScope::All => OrgsWithin::All,
        KeyScope::Org(org) => OrgsWithin::Only(org),
    };
    let page = super::metrics::timed(
        "list_orgs",
        state
            .store
            .list_orgs_page(within, query.after.as_deref(), query.limit),
    )
    .await?;
    let items = page.items.iter().map(OrgJson::from).collect();
    Ok(Paged::new(&uri, items, page.next))
}

/// Reads `cascade` from a query string: `true`/`1` or `false`/`0` (default).
fn cascade_query(query: Option<&str>) -> Result<bool, ApiError> {
    let mut cascade = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "cascade" {
            cascade = match value {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::InvalidField {
                        field: "cascade",
                        reason: format!("must be true or false, got {value:?}"),
                    });
                }
            };
        }
    }
    Ok(cascade)
}

/// `DELETE /api/v1/orgs/{org}`: deletes an org; with `cascade=true` its tokens and peers too.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", operation_id = "deleteOrg", tag = "admin",
    summary = "Delete an org (409 while it has peers or tokens, unless cascade=true); its /48 and slug are free again",
    description = "Without `cascade`, an org that still has peers or live tokens is refused \
        (409, naming how many). With `cascade=true` its tokens and peers are deleted in the same \
        transaction: their DNS names vanish and gateways drop them. The org's audit log goes \
        with it; the delete is logged as `org_deleted` in the default org's log. API keys \
        scoped to the org are revoked. The default org cannot be deleted (409).",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner"])), ("x-sixpn-scope" = json!("all"))),
    params(("org" = Label, Path, description = "The org's slug"),
        ("cascade" = Option<bool>, Query,
            description = "Delete the org's tokens and peers with it (default false)")),
    responses(
        (status = 200, description = "Deleted", body = OrgDeletedJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn delete_org(
    auth: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<Json<OrgDeletedJson>, ApiError> {
    auth.global(Role::Owner)?;
    let org = org
        .parse::<crate::model::OrgSlug>()
        .map_err(|_| ApiError::no_such_org(&org))?;
    let cascade = cascade_query(uri.query())?;
    let deleted = super::metrics::timed(
        "delete_org",
        auth.store(&state.store, source).delete_org(&org, cascade),
    )
    .await?;
    tracing::info!(%org, prefix = %deleted.prefix, deleted_peers = deleted.peers,
        deleted_tokens = deleted.tokens, revoked_api_keys = deleted.api_keys,
        generation = %deleted.generation, "org deleted");
    // DNS and the gateway reload without the org; the answer waits for that.
    state.wait_published(deleted.generation).await;
    Ok(Json(OrgDeletedJson {
        deleted: org.to_string(),
        prefix: deleted.prefix.to_string(),
        deleted_peers: deleted.peers,
        deleted_tokens: deleted.tokens,
        revoked_api_keys: deleted.api_keys,
    }))
}

/// The longest `expires_in` accepted: 100 years (36,525 days). Longer is surely a typo (issue
/// 11: `--expires 10000y`), and "never" is said by leaving the field out.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(36_525 * 86_400);

/// Reads `expires_in`: a whole number of seconds (JSON integer or string), or a string of digits
/// with one unit of [`EXPIRES_UNITS`] (`"30d"`, `"12h"`, `"3600s"`); longer than zero and at most
/// [`MAX_EXPIRES_IN`]. Exactly the strings [`super::types::expires_in_pattern`] matches, which
/// the OpenAPI document states. `null` is refused: no expiry is said by leaving the field out.
pub(super) fn parse_expires_in(value: &Value) -> Result<Duration, ApiError> {
    parse_lifetime("expires_in", "a token that never expires", value)
}

/// Reads a token's `key_expiry` (issue 23) as [`parse_expires_in`] reads `expires_in`.
pub(super) fn parse_key_expiry(value: &Value) -> Result<Duration, ApiError> {
    parse_lifetime(
        "key_expiry",
        "keys that follow the org default ([peers] key_expiry)",
        value,
    )
}

/// Reads a lifetime `field` as [`parse_expires_in`] describes; `never` says what leaving the
/// field out means.
fn parse_lifetime(
    field: &'static str,
    never: &'static str,
    value: &Value,
) -> Result<Duration, ApiError> {
    let invalid = |reason: String| ApiError::InvalidField { field, reason };
    let too_long = || {
        invalid(format!(
            "is too long: at most 100 years ({}d); leave it out for {never}",
            MAX_EXPIRES_IN.as_secs() / 86_400
        ))
    };
    let secs = match value {
        Value::Number(n) => super::body::whole_number(n).ok_or_else(|| {
            invalid(format!(
                "must be a positive whole number of seconds, got {n}"
            ))
        })?,
        Value::String(s) => {
            let (digits, unit) = match EXPIRES_UNITS[1..]
                .iter()
                .find(|(unit, _)| s.ends_with(unit))
            {
                Some((unit, secs)) => (&s[..s.len() - unit.len()], *secs),
                None => (s.as_str(), 1),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "is not a duration: got {s:?}; use a whole number with one unit (s, m, h, \
                     d, w, y), e.g. \"30d\" or \"12h\", or a number of seconds"
                )));
            }
            digits
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(unit))
                .ok_or_else(too_long)?
        }
        Value::Null => {
            return Err(invalid(format!(
                "must be a duration such as \"30d\" or a number of seconds, not null; leave \
                 it out for {never}"
            )));
        }
        _ => {
            return Err(invalid(
                "must be a duration such as \"30d\" or a number of seconds".to_owned(),
            ));
        }
    };
    if secs == 0 {
        return Err(invalid("must be longer than zero".to_owned()));
    }
    if secs > MAX_EXPIRES_IN.as_secs() {
        return Err(too_long());
    }
    Ok(Duration::from_secs(secs))
}

/// Reads a mint request.
fn read_mint(body: &JsonObject) -> Result<TokenCreate, ApiError> {
    let name = parse_token_name(body.required_string("name")?)?;
    let group = match body.string("group")? {
        Some(text) => Some(
            text.parse::<GroupName>()
                .map_err(|err| ApiError::not_a_label("group", text, err))?,
        ),
        None => None,
    };
    let expires_in = match body.0.get("expires_in") {
        Some(value) => Some(parse_expires_in(value)?.as_secs()),
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
    let key_expiry = match body.0.get("key_expiry") {
        Some(value) => Some(parse_key_expiry(value)?.as_secs()),
        None => None,
    };
    Ok(TokenCreate {
        name,
        group,
        expires_in,
        max_peers,
        ephemeral,
        key_expiry,
    })
}

/// `POST /api/v1/orgs/{org}/wireguard_tokens`: mints a token; the only answer holding its secret.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/wireguard_tokens", operation_id = "mintToken", tag = "admin",
    summary = "Mint a WireGuard token; the secret is shown once",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug")),
    request_body = TokenCreate,
    responses(
        (status = 201, description = "The token with its secret", body = MintedToken,
            links(
                ("showToken" = (operation_id = "showToken",
                    parameters(("org" = "$response.body#/org"), ("name" = "$response.body#/name")))),
                ("deleteToken" = (operation_id = "deleteToken",
                    parameters(("org" = "$response.body#/org"), ("name" = "$response.body#/name")))),
            )),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::AdminGuarded,
        super::openapi::JsonBody,
    ))]
pub async fn mint_token(
    auth: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    body: JsonObject,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    let org = auth.org(&org, Role::Operator)?;
    let request = read_mint(&body)?;
    let expires_at = match request.expires_in {
        Some(secs) => Some(
            i64::try_from(secs)
                .ok()
                .and_then(|secs| now_unix().checked_add(secs))
                .ok_or_else(|| ApiError::InvalidField {
                    field: "expires_in",
                    reason: "is too far in the future".to_owned(),
                })?,
        ),
        None => None,
    };
    let ephemeral = request.ephemeral;
    let new = NewToken {
        name: request.name,
        group: request.group,
        expires_at,
        max_peers: request.max_peers,
        key_expiry: request.key_expiry,
    };
    let (info, secret) = super::metrics::timed(
        "mint_token",
        auth.store(&state.store, source)
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

/// `GET /api/v1/orgs/{org}/wireguard_tokens`: a page of the org's live tokens, without secrets.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/wireguard_tokens", operation_id = "listTokens", tag = "admin",
    summary = "The org's live tokens by name, a page at a time (never their secrets)",
    description = "Paged like every admin list: `limit` (default 1000, at most 10000) and \
        `after`, the `X-Next-Cursor` of the previous page; the last page has no `X-Next-Cursor`.",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator", "viewer"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "Tokens per page (default 1000)"),
        ("after" = Option<Label>, Query,
            description = "The `X-Next-Cursor` of the previous page: only tokens after it")),
    responses(
        (status = 200, description = "A page of the tokens", body = Vec<TokenJson>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's `after`; absent on the last page"),
                ("Link" = String, description = "The next page's URL, `<...>; rel=\"next\"`; absent on the last page"))),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn list_tokens(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<Paged<TokenJson>, ApiError> {
    let org = auth.org(&org, Role::Viewer)?;
    let query = list_query(uri.query(), &[])?;
    let page = super::metrics::timed(
        "list_tokens",
        state
            .store
            .list_tokens_page(&org, query.after.as_deref(), query.limit),
    )
    .await?;
    let items = page.items.iter().map(TokenJson::from).collect();
    Ok(Paged::new(&uri, items, page.next))
}

/// `GET /api/v1/orgs/{org}/wireguard_tokens/{name}`: one live token, without its secret.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/wireguard_tokens/{name}", operation_id = "showToken", tag = "admin",
    summary = "One live token with its live peer count (never its secret)",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator", "viewer"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"), ("name" = Label, Path, description = "The token's name")),
    responses(
        (status = 200, description = "The token", body = TokenJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn show_token(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<TokenJson>, ApiError> {
    let org = auth.org(&org, Role::Viewer)?;
    let name = parse_token_name(&name)?;
    let token = super::metrics::timed("get_token", state.store.get_token(&org, &name)).await?;
    Ok(Json(TokenJson::from(&token)))
}

/// `DELETE /api/v1/orgs/{org}/wireguard_tokens/{name}`: deletes a token and every peer it made.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/wireguard_tokens/{name}", operation_id = "deleteToken", tag = "admin",
    summary = "Delete a token and, in the same transaction, every peer it created",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"), ("name" = Label, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Deleted", body = TokenDeletedJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn delete_token(
    auth: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<TokenDeletedJson>, ApiError> {
    let org = auth.org(&org, Role::Operator)?;
    let name = parse_token_name(&name)?;
    let (n_deleted, generation) = super::metrics::timed(
        "delete_token",
        auth.store(&state.store, source).delete_token(&org, &name),
    )
    .await?;
    tracing::info!(%org, token = %name, deleted_peers = n_deleted, %generation, "token deleted");
    state.wait_published(generation).await;
    Ok(Json(TokenDeletedJson {
        deleted: name.to_string(),
        deleted_peers: n_deleted,
    }))
}

/// The filters `GET /api/v1/orgs/{org}/peers` takes besides the page.
const PEER_FILTERS: [&str; 4] = ["group", "region", "token", "live"];

/// Reads a filter that is a name (a DNS label, any case), if given.
fn label_filter<T>(query: &ListQuery, field: &'static str) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr<Err = crate::model::LabelError>,
{
    query
        .filter(field)
        .map(|text| {
            text.parse()
                .map_err(|err| ApiError::not_a_label(field, text, err))
        })
        .transpose()
}

/// Reads the peer list's filters; `live` is against `window` back from now.
fn peer_filter(query: &ListQuery, window: Duration) -> Result<PeerFilter, ApiError> {
    let live = match query.filter("live") {
        Some(text) => {
            let cutoff =
                now_unix().saturating_sub(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
            Some(if super::paging::parse_bool("live", text)? {
                Live::Since(cutoff)
            } else {
                Live::Before(cutoff)
            })
        }
        None => None,
    };
    Ok(PeerFilter {
        group: label_filter(query, "group")?,
        region: label_filter(query, "region")?,
        token: label_filter(query, "token")?,
        live,
    })
}

/// `GET /api/v1/orgs/{org}/peers`: a page of the org's peers, by name, optionally filtered.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/peers", operation_id = "listOrgPeers", tag = "admin",
    summary = "The org's peers by name, a page at a time, optionally filtered",
    description = "Paged like every admin list: `limit` (default 1000, at most 10000) and \
        `after`, the `X-Next-Cursor` of the previous page; the last page has no `X-Next-Cursor`. \
        Filters combine: `group`, `region`, `token` (the live token that created the peer) and \
        `live` (`true`: a gateway saw the peer within `[groups] health_window`, 180 s by \
        default; `false`: it did not). A page costs the page, however many peers the org has.",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator", "viewer"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "Peers per page (default 1000)"),
        ("after" = Option<Label>, Query,
            description = "The `X-Next-Cursor` of the previous page: only peers after it"),
        ("group" = Option<Label>, Query, description = "Only peers of this group"),
        ("region" = Option<Label>, Query, description = "Only peers of this region"),
        ("token" = Option<Label>, Query, description = "Only peers the live token of this name created"),
        ("live" = Option<bool>, Query,
            description = "true: only peers a gateway saw within `[groups] health_window`; false: only the others")),
    responses(
        (status = 200, description = "A page of the peers", body = Vec<PeerJson>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's `after`; absent on the last page"),
                ("Link" = String, description = "The next page's URL, `<...>; rel=\"next\"`; absent on the last page"))),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn list_peers(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<Paged<PeerJson>, ApiError> {
    let org = auth.org(&org, Role::Viewer)?;
    let query = list_query(uri.query(), &PEER_FILTERS)?;
    let filter = peer_filter(&query, state.live_window)?;
    let page = super::metrics::timed(
        "list_peers",
        state
            .store
            .list_peers_page(&org, &filter, query.after.as_deref(), query.limit),
    )
    .await?;
    let items = page
        .items
        .iter()
        .map(|p| PeerJson::from(&p.peer).with_liveness(Some(&(p.last_seen_at, p.ephemeral))))
        .collect();
    Ok(Paged::new(&uri, items, page.next))
}

/// `GET /api/v1/orgs/{org}/peers/{name}`: one peer, with its gateway status when a gateway runs.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/peers/{name}", operation_id = "showOrgPeer", tag = "admin",
    summary = "One peer with its gateway status",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator", "viewer"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"), ("name" = Label, Path, description = "The peer's name")),
    responses(
        (status = 200, description = "The peer", body = PeerWithStatus),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn show_peer(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<PeerWithStatus>, ApiError> {
    let org = auth.org(&org, Role::Viewer)?;
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
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/peers/{name}", operation_id = "deleteOrgPeer", tag = "admin",
    summary = "Delete one peer",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"), ("name" = Label, Path, description = "The peer's name")),
    responses(
        (status = 200, description = "Deleted", body = DeletedJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn delete_peer(
    auth: AdminAuth,
    Source(source): Source,
    State(state): State<Shared>,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> Result<Json<DeletedJson>, ApiError> {
    let org = auth.org(&org, Role::Operator)?;
    let name = parse_path_name(&name)?;
    let generation = super::metrics::timed(
        "delete_peer",
        auth.store(&state.store, source).delete_peer(&org, &name),
    )
    .await?;
    tracing::info!(%org, peer = %name, %generation, "peer deleted by admin");
    state.wait_published(generation).await;
    Ok(Json(DeletedJson {
        deleted: name.to_string(),
    }))
}

/// The most audit entries one page may hold, and how many a page holds by default.
pub const AUDIT_MAX_LIMIT: u32 = 1000;
/// See [`AUDIT_MAX_LIMIT`].
pub const AUDIT_DEFAULT_LIMIT: u32 = 100;

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
#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit", operation_id = "listAudit", tag = "admin",
    summary = "The org's audit log: every token and peer change, newest first",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner", "operator"])), ("x-sixpn-scope" = json!("org"))),
    params(("org" = Label, Path, description = "The org's slug"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Entries per page (default 100)"),
        ("before" = Option<i64>, Query, minimum = 1,
            description = "The `next` value of the previous page: only older entries")),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPageJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn audit(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath(org): ApiPath<String>,
    uri: axum::http::Uri,
) -> Result<Json<AuditPageJson>, ApiError> {
    let org = auth.org(&org, Role::Operator)?;
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
                key_expiry: None,
                expired: false,
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

    /// issue 11: the document's `expires_in` pattern matches exactly the strings the parser
    /// takes, around every unit's bounds and on junk.
    #[test]
    fn expires_in_pattern_is_the_parser() {
        let pattern = regex::Regex::new(&crate::api::types::expires_in_pattern(
            MAX_EXPIRES_IN.as_secs(),
        ))
        .unwrap();
        let mut candidates: Vec<String> = [
            "",
            " 30d",
            "30d ",
            "30D",
            "1h30m",
            "d",
            "-1",
            "+1",
            "1.5h",
            "0x10",
            "30 d",
            "1M",
            "False",
            "null",
            "\u{0}",
            "36525d",
            "36526d",
            "5217w",
            "5218w",
            "100y",
            "101y",
            "0000000000000000000000001s",
            "99999999999999999999999y",
            "18446744073709551616",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (unit, secs) in EXPIRES_UNITS {
            let max = MAX_EXPIRES_IN.as_secs() / secs;
            for n in (0..=1200)
                .chain(max.saturating_sub(1100)..=max + 1100)
                .chain([max * 10, u64::MAX])
            {
                candidates.push(format!("{n}{unit}"));
                candidates.push(format!("0{n}{unit}"));
            }
        }
        for text in candidates {
            assert_eq!(
                pattern.is_match(&text),
                parse_expires_in(&Value::String(text.clone())).is_ok(),
                "{text:?}"
            );
        }
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
        assert_eq!(ok(serde_json::json!(778.0)), Some(778));
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
