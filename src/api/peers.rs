//! The peer API, `/api/v3/wire_guard_peers`: what a node calls with its WireGuard token,
//! wire-compatible with flyctl's `wireguard token start|update`.
//!
//! A token only ever reaches peers it created itself. A name another token of the same org
//! created is refused as such (`409` on create, `403` on read, re-key and delete: issue 13), so
//! the caller learns to pick another name rather than retry; a name in another org is the same
//! `404` as no peer at all, so nothing leaks across orgs. Every write answers only once the DNS
//! snapshot holding it is published (see [`ApiState::wait_published`]).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::auth::PeerAuth;
use super::body::{ApiPath, JsonObject};
use super::error::ApiError;
use super::{ApiState, Shared, rfc3339};
use crate::model::{GroupName, Peer, PeerName, Region, prefix_host};
use crate::store::{AuthToken, NewPeer, StoreError};
use crate::wireguard::PublicKey;

/// What the peer API answers for a peer. flyctl reads `us`, `them` and `key`.
#[derive(Debug, Serialize)]
pub struct PeerResponse {
    /// The peer's address, without prefix length.
    pub us: String,
    /// The gateway endpoint's host, without port.
    pub them: String,
    /// The gateway's WireGuard public key.
    pub key: String,
    /// The peer's name.
    pub name: String,
    /// The peer's group.
    pub group: String,
    /// The peer's region.
    pub region: String,
    /// The peer's org.
    pub org: String,
    /// The peer's public key.
    pub pubkey: String,
    /// The gateway endpoint, `host:port`.
    pub endpoint: String,
    /// The org's resolver address.
    pub dns: String,
    /// The org's prefix, to route through the tunnel.
    pub allowed_ips: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last re-key (or creation) time, RFC 3339.
    pub updated_at: String,
}

impl PeerResponse {
    fn new(token: &AuthToken, peer: &Peer, region: &Region) -> Self {
        PeerResponse {
            us: peer.address.to_string(),
            them: region.endpoint_host.clone(),
            key: region.public_key.to_base64(),
            name: peer.name.to_string(),
            group: peer.group.to_string(),
            region: peer.region.to_string(),
            org: peer.org.to_string(),
            pubkey: peer.pubkey.to_base64(),
            endpoint: region.endpoint(),
            dns: prefix_host(token.org_prefix, 3).to_string(),
            allowed_ips: token.org_prefix.to_string(),
            created_at: rfc3339(peer.created_at),
            updated_at: rfc3339(peer.updated_at),
        }
    }
}

/// The group a new peer gets when neither the request nor the token names one.
pub const DEFAULT_GROUP: &str = "default";

/// Parses the `pubkey` field. Surrounding whitespace is ignored: a key pasted from
/// `wg pubkey` output often brings its newline (issue 13). A gateway's own key is refused: a
/// peer holding it would shadow the gateway.
pub(super) fn parse_pubkey(state: &ApiState, text: &str) -> Result<PublicKey, ApiError> {
    let key = PublicKey::parse(text.trim()).map_err(|err| ApiError::InvalidField {
        field: "pubkey",
        reason: format!("is not a usable WireGuard public key: {err}"),
    })?;
    if let Some(region) = state.regions.iter().find(|r| r.public_key == key) {
        return Err(ApiError::InvalidField {
            field: "pubkey",
            reason: format!(
                "is the public key of the gateway of region {}, not a key of this node: \
                 generate the node's own key pair (`wg genkey | tee node.key | wg pubkey`)",
                region.code
            ),
        });
    }
    Ok(key)
}

/// Turns "no such peer of this token" into "the peer belongs to another token" when the name
/// exists in the token's org (issue 13); any other error passes through.
async fn explain_not_found(state: &ApiState, token: &AuthToken, err: StoreError) -> ApiError {
    let StoreError::PeerNotFound(name) = err else {
        return err.into();
    };
    match state.store.get_peer(&token.org, &name).await {
        Ok(_) => ApiError::PeerOfAnotherToken {
            name: name.to_string(),
            creating: false,
        },
        Err(StoreError::PeerNotFound(_) | StoreError::OrgNotFound(_)) => {
            StoreError::PeerNotFound(name).into()
        }
        Err(other) => other.into(),
    }
}

/// Parses a peer name given in the URL.
pub(super) fn parse_path_name(name: &str) -> Result<PeerName, ApiError> {
    name.parse()
        .map_err(|err| ApiError::not_a_label("name", name, err))
}

/// `POST /api/v3/wire_guard_peers`: creates a peer for the token.
pub async fn create(
    State(state): State<Shared>,
    PeerAuth(token): PeerAuth,
    body: JsonObject,
) -> Result<Json<PeerResponse>, ApiError> {
    let name_text = body.required_string("name")?;
    let name: PeerName = name_text
        .parse()
        .map_err(|err| ApiError::not_a_label("name", name_text, err))?;
    let group = match body.string("group")? {
        Some(text) => {
            let group: GroupName = text
                .parse()
                .map_err(|err| ApiError::not_a_label("group", text, err))?;
            if let Some(allowed) = &token.group
                && *allowed != group
            {
                return Err(ApiError::GroupNotAllowed {
                    allowed: allowed.to_string(),
                    requested: group.to_string(),
                });
            }
            group
        }
        None => match &token.group {
            Some(group) => group.clone(),
            None => DEFAULT_GROUP
                .parse()
                .expect("the default group is a DNS label"),
        },
    };
    let region = match body.string("region")? {
        Some(code) => state.region(code)?,
        None => state.default_region()?,
    };
    let pubkey = parse_pubkey(&state, body.required_string("pubkey")?)?;

    let new = NewPeer {
        name,
        group,
        region: region.code.clone(),
        pubkey,
    };
    let (peer, generation) = match state.store.register_peer(&token, new).await {
        Ok(done) => done,
        Err(StoreError::PeerNameTaken(name)) => {
            // The name is taken in the org: by this token (re-key it with PUT), or by another
            // one (pick another name).
            return Err(match state.store.token_peer(&token, &name).await {
                Err(StoreError::PeerNotFound(_)) => ApiError::PeerOfAnotherToken {
                    name: name.to_string(),
                    creating: true,
                },
                _ => StoreError::PeerNameTaken(name).into(),
            });
        }
        Err(err) => return Err(err.into()),
    };
    tracing::info!(org = %peer.org, peer = %peer.name, group = %peer.group, address = %peer.address,
        %generation, "peer registered");
    state.wait_published(generation).await;
    Ok(Json(PeerResponse::new(&token, &peer, region)))
}

/// `PUT /api/v3/wire_guard_peers/{name}`: re-keys one of the token's peers; the address stays.
///
/// flyctl sends `{"name":"","group":"","pubkey":"<new>","region":""}`: empty fields are ignored.
/// A non-empty field that contradicts the peer is refused rather than silently ignored.
pub async fn rekey(
    State(state): State<Shared>,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
    body: JsonObject,
) -> Result<Json<PeerResponse>, ApiError> {
    let name = parse_path_name(&name)?;
    let pubkey = parse_pubkey(&state, body.required_string("pubkey")?)?;
    if let Some(body_name) = body.string("name")?
        && !body_name.eq_ignore_ascii_case(name.as_str())
    {
        return Err(ApiError::Unsupported(format!(
            "field `name` ({body_name:?}) differs from the peer in the URL ({name}); peers cannot \
             be renamed: leave `name` empty"
        )));
    }
    // Read the peer first: its region must still be served, and a non-empty `group` or
    // `region` in the body must match it, before anything is written.
    let current = match state.store.token_peer(&token, &name).await {
        Ok(peer) => peer,
        Err(err) => return Err(explain_not_found(&state, &token, err).await),
    };
    let region = state.region_of(&current)?;
    if let Some(group) = body.string("group")?
        && !group.eq_ignore_ascii_case(current.group.as_str())
    {
        return Err(ApiError::Unsupported(format!(
            "peer {name} is in group {}; re-keying cannot move it to {group:?}: leave `group` \
             empty, or delete the peer and create it again",
            current.group
        )));
    }
    if let Some(code) = body.string("region")?
        && !code.eq_ignore_ascii_case(current.region.as_str())
    {
        return Err(ApiError::Unsupported(format!(
            "peer {name} is in region {}; re-keying cannot move it to {code:?}: leave `region` \
             empty, or delete the peer and create it again",
            current.region
        )));
    }

    let (peer, generation) = state.store.rekey_peer(&token, &name, pubkey).await?;
    tracing::info!(org = %peer.org, peer = %peer.name, %generation, "peer re-keyed");
    state.wait_published(generation).await;
    Ok(Json(PeerResponse::new(&token, &peer, region)))
}

/// `GET /api/v3/wire_guard_peers/{name}`: one of the token's peers.
pub async fn show(
    State(state): State<Shared>,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PeerResponse>, ApiError> {
    let name = parse_path_name(&name)?;
    let peer = match state.store.token_peer(&token, &name).await {
        Ok(peer) => peer,
        Err(err) => return Err(explain_not_found(&state, &token, err).await),
    };
    let region = state.region_of(&peer)?;
    Ok(Json(PeerResponse::new(&token, &peer, region)))
}

/// `DELETE /api/v3/wire_guard_peers/{name}`: deletes one of the token's peers.
pub async fn delete(
    State(state): State<Shared>,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = parse_path_name(&name)?;
    let generation = match state.store.delete_token_peer(&token, &name).await {
        Ok(generation) => generation,
        Err(err) => return Err(explain_not_found(&state, &token, err).await),
    };
    tracing::info!(org = %token.org, peer = %name, %generation, "peer deleted by its token");
    state.wait_published(generation).await;
    Ok(Json(serde_json::json!({ "deleted": name.as_str() })))
}

impl ApiState {
    /// The region new peers land in when they name none: the one marked default, else the first.
    ///
    /// # Errors
    /// [`ApiError::NoRegions`] when none is configured.
    pub fn default_region(&self) -> Result<&Region, ApiError> {
        self.regions
            .iter()
            .find(|r| r.default)
            .or_else(|| self.regions.first())
            .ok_or(ApiError::NoRegions)
    }

    /// The configured region with this code (case-insensitive).
    ///
    /// # Errors
    /// [`ApiError::UnknownRegion`], listing the known ones.
    pub fn region(&self, code: &str) -> Result<&Region, ApiError> {
        self.regions
            .iter()
            .find(|r| r.code.as_str().eq_ignore_ascii_case(code))
            .ok_or_else(|| ApiError::UnknownRegion {
                region: code.to_owned(),
                known: self.regions.iter().map(|r| r.code.to_string()).collect(),
            })
    }

    /// The configured region a stored peer lives in.
    fn region_of(&self, peer: &Peer) -> Result<&Region, ApiError> {
        self.regions
            .iter()
            .find(|r| r.code == peer.region)
            .ok_or_else(|| ApiError::RegionGone(peer.region.clone()))
    }
}
