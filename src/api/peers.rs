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

use super::auth::{PeerAuth, Source};
use super::body::{ApiPath, JsonObject};
use super::error::ApiError;
use super::types::{DeletedJson, Label, PeerCreate, PeerRekey, PeerResponse};
use super::{ApiState, Shared, rfc3339};
use crate::model::{GroupName, Peer, PeerName, Region, prefix_host};
use crate::store::{AuthToken, NewPeer, StoreError};
use crate::wireguard::PublicKey;

impl PeerResponse {
    pub(super) fn new(token: &AuthToken, peer: &Peer, region: &Region) -> Self {
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
            ephemeral: None,
            key_expires_at: peer.key_expires_at.map(rfc3339),
        }
    }
}

/// The group a new peer gets when neither the request nor the token names one.
pub const DEFAULT_GROUP: &str = "default";

/// Parses the `pubkey` field. Surrounding whitespace is ignored: a key pasted from
/// `wg pubkey` output often brings its newline (issue 13). A gateway's own key is a conflict
/// (409, like a key another peer holds): a peer holding it would shadow the gateway.
pub(super) fn parse_pubkey(state: &ApiState, text: &str) -> Result<PublicKey, ApiError> {
    let key = PublicKey::parse(text.trim()).map_err(|err| ApiError::InvalidField {
        field: "pubkey",
        reason: format!("is not a usable WireGuard public key: {err}"),
    })?;
    if let Some(region) = state.regions.iter().find(|r| r.public_key == key) {
        return Err(ApiError::Conflict(format!(
            "field `pubkey` is the public key of the gateway of region {}, not a key of this \
             node: generate the node's own key pair (`wg genkey | tee node.key | wg pubkey`)",
            region.code
        )));
    }
    Ok(key)
}

/// Turns "no such peer of this token" into "the peer belongs to another token" when the name
/// exists in the token's org (issue 13); any other error passes through.
async fn explain_not_found(state: &ApiState, token: &AuthToken, err: StoreError) -> ApiError {
    let StoreError::PeerNotFound(name) = err else {
        return err.into();
    };
    match super::metrics::timed("get_peer", state.store.get_peer(&token.org, &name)).await {
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

/// Reads a create request; the group and region are checked against the token and the
/// configuration afterwards.
fn read_create(state: &ApiState, body: &JsonObject) -> Result<PeerCreate, ApiError> {
    let name_text = body.required_string("name")?;
    let name: PeerName = name_text
        .parse()
        .map_err(|err| ApiError::not_a_label("name", name_text, err))?;
    let group = match body.string("group")? {
        Some(text) => Some(
            text.parse::<GroupName>()
                .map_err(|err| ApiError::not_a_label("group", text, err))?,
        ),
        None => None,
    };
    let region = body.string("region")?.map(str::to_owned);
    let pubkey = parse_pubkey(state, body.required_string("pubkey")?)?;
    // flyctl never sends it: absent means no.
    let ephemeral = body.bool("ephemeral")?.unwrap_or(false);
    Ok(PeerCreate {
        name,
        group,
        pubkey,
        region,
        ephemeral,
    })
}

/// A derived token limited to other peer names (issue 16): 403.
fn allowed_peer(token: &AuthToken, name: &str) -> Result<(), ApiError> {
    if token.allows_peer(name) {
        Ok(())
    } else {
        Err(ApiError::DerivedLimit(format!(
            "this derived token is limited to peer {}: it cannot use peer {name}",
            token
                .only_peers
                .as_deref()
                .unwrap_or_default()
                .join(" and ")
        )))
    }
}

/// `POST /api/v3/wire_guard_peers`: creates a peer for the token.
#[utoipa::path(post, path = "/api/v3/wire_guard_peers", operation_id = "createPeer", tag = "peer",
    summary = "Create a named peer for the token (flyctl `wireguard token start`)",
    security(("bearerToken" = []), ("flyV1Token" = [])),
    request_body = PeerCreate,
    responses(
        (status = 200, description = "The peer and how to reach the gateway", body = PeerResponse,
            links(
                ("getPeer" = (operation_id = "getPeer",
                    parameters(("name" = "$response.body#/name")))),
                ("rekeyPeer" = (operation_id = "rekeyPeer",
                    parameters(("name" = "$response.body#/name")))),
                ("deletePeer" = (operation_id = "deletePeer",
                    parameters(("name" = "$response.body#/name")))),
            )),
        (status = 403, response = super::openapi::Forbidden),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::Guarded,
        super::openapi::JsonBody,
    ))]
pub async fn create(
    State(state): State<Shared>,
    Source(source): Source,
    PeerAuth(token): PeerAuth,
    body: JsonObject,
) -> Result<Json<PeerResponse>, ApiError> {
    let PeerCreate {
        name,
        group,
        pubkey,
        region,
        ephemeral,
    } = read_create(&state, &body)?;
    allowed_peer(&token, name.as_str())?;
    let group = match group {
        Some(group) => {
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
    let region = match region {
        Some(code) => state.region(&code)?,
        None => state.default_region()?,
    };

    let new = NewPeer {
        name,
        group,
        region: region.code.clone(),
        pubkey,
    };
    let store = state.store.with_source(source);
    let (peer, generation, ephemeral) = match super::metrics::timed(
        "register_peer",
        store.register_peer_opts(&token, new, ephemeral),
    )
    .await
    {
        Ok(done) => done,
        Err(StoreError::PeerNameTaken(name)) => {
            // The name is taken in the org: by this token (re-key it with PUT), or by another
            // one (pick another name).
            return Err(
                match super::metrics::timed("token_peer", state.store.token_peer(&token, &name))
                    .await
                {
                    Err(StoreError::PeerNotFound(_)) => ApiError::PeerOfAnotherToken {
                        name: name.to_string(),
                        creating: true,
                    },
                    _ => StoreError::PeerNameTaken(name).into(),
                },
            );
        }
        Err(err) => return Err(err.into()),
    };
    tracing::info!(org = %peer.org, peer = %peer.name, group = %peer.group, address = %peer.address,
        %generation, "peer registered");
    state.wait_published(generation).await;
    let mut res = PeerResponse::new(&token, &peer, region);
    res.ephemeral = Some(ephemeral);
    Ok(Json(res))
}

/// `PUT /api/v3/wire_guard_peers/{name}`: re-keys one of the token's peers; the address stays.
///
/// flyctl sends `{"name":"","group":"","pubkey":"<new>","region":""}`: empty fields are ignored.
/// A non-empty field that contradicts the peer is a conflict (409) rather than silently ignored.
#[utoipa::path(put, path = "/api/v3/wire_guard_peers/{name}", operation_id = "rekeyPeer",
    tag = "peer",
    summary = "Re-key one of the token's peers; its address stays (flyctl `wireguard token update`)",
    security(("bearerToken" = []), ("flyV1Token" = [])),
    params(("name" = Label, Path, description = "The peer's name (a DNS label, case-insensitive)")),
    request_body = PeerRekey,
    responses(
        (status = 200, description = "The re-keyed peer", body = PeerResponse),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::Guarded,
        super::openapi::JsonBody,
    ))]
pub async fn rekey(
    State(state): State<Shared>,
    Source(source): Source,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
    body: JsonObject,
) -> Result<Json<PeerResponse>, ApiError> {
    let name = parse_path_name(&name)?;
    allowed_peer(&token, name.as_str())?;
    let request = PeerRekey {
        pubkey: parse_pubkey(&state, body.required_string("pubkey")?)?,
        name: body.string("name")?.map(str::to_owned),
        group: body.string("group")?.map(str::to_owned),
        region: body.string("region")?.map(str::to_owned),
    };
    if let Some(body_name) = &request.name
        && !body_name.eq_ignore_ascii_case(name.as_str())
    {
        return Err(ApiError::Conflict(format!(
            "field `name` ({body_name:?}) differs from the peer in the URL ({name}); peers cannot \
             be renamed: leave `name` empty"
        )));
    }
    // Read the peer first: its region must still be served, and a non-empty `group` or
    // `region` in the body must match it, before anything is written.
    let current =
        match super::metrics::timed("token_peer", state.store.token_peer(&token, &name)).await {
            Ok(peer) => peer,
            Err(err) => return Err(explain_not_found(&state, &token, err).await),
        };
    let region = state.region_of(&current)?;
    if let Some(group) = &request.group
        && !group.eq_ignore_ascii_case(current.group.as_str())
    {
        return Err(ApiError::Conflict(format!(
            "peer {name} is in group {}; re-keying cannot move it to {group:?}: leave `group` \
             empty, or delete the peer and create it again",
            current.group
        )));
    }
    if let Some(code) = &request.region
        && !code.eq_ignore_ascii_case(current.region.as_str())
    {
        return Err(ApiError::Conflict(format!(
            "peer {name} is in region {}; re-keying cannot move it to {code:?}: leave `region` \
             empty, or delete the peer and create it again",
            current.region
        )));
    }

    let (peer, generation) = super::metrics::timed(
        "rekey_peer",
        state
            .store
            .with_source(source)
            .rekey_peer(&token, &name, request.pubkey),
    )
    .await?;
    tracing::info!(org = %peer.org, peer = %peer.name, %generation, "peer re-keyed");
    state.wait_published(generation).await;
    Ok(Json(PeerResponse::new(&token, &peer, region)))
}

/// `GET /api/v3/wire_guard_peers/{name}`: one of the token's peers.
#[utoipa::path(get, path = "/api/v3/wire_guard_peers/{name}", operation_id = "getPeer",
    tag = "peer", summary = "One of the token's peers",
    security(("bearerToken" = []), ("flyV1Token" = [])),
    params(("name" = Label, Path, description = "The peer's name (a DNS label, case-insensitive)")),
    responses(
        (status = 200, description = "The peer", body = PeerResponse),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::Guarded,
    ))]
pub async fn show(
    State(state): State<Shared>,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PeerResponse>, ApiError> {
    let name = parse_path_name(&name)?;
    allowed_peer(&token, name.as_str())?;
    let peer =
        match super::metrics::timed("token_peer", state.store.token_peer(&token, &name)).await {
            Ok(peer) => peer,
            Err(err) => return Err(explain_not_found(&state, &token, err).await),
        };
    let region = state.region_of(&peer)?;
    Ok(Json(PeerResponse::new(&token, &peer, region)))
}

/// `DELETE /api/v3/wire_guard_peers/{name}`: deletes one of the token's peers.
#[utoipa::path(delete, path = "/api/v3/wire_guard_peers/{name}", operation_id = "deletePeer",
    tag = "peer", summary = "Delete one of the token's peers",
    security(("bearerToken" = []), ("flyV1Token" = [])),
    params(("name" = Label, Path, description = "The peer's name (a DNS label, case-insensitive)")),
    responses(
        (status = 200, description = "Deleted", body = DeletedJson),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::Guarded,
    ))]
pub async fn delete(
    State(state): State<Shared>,
    Source(source): Source,
    PeerAuth(token): PeerAuth,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DeletedJson>, ApiError> {
    let name = parse_path_name(&name)?;
    allowed_peer(&token, name.as_str())?;
    let generation = match super::metrics::timed(
        "delete_token_peer",
        state
            .store
            .with_source(source)
            .delete_token_peer(&token, &name),
    )
    .await
    {
        Ok(generation) => generation,
        Err(err) => return Err(explain_not_found(&state, &token, err).await),
    };
    tracing::info!(org = %token.org, peer = %name, %generation, "peer deleted by its token");
    state.wait_published(generation).await;
    Ok(Json(DeletedJson {
        deleted: name.to_string(),
    }))
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
