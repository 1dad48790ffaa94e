//! The API keys of the admin API (issue 16): `POST`, `GET /api/v1/api_keys` and
//! `DELETE /api/v1/api_keys/{name}`, for owners. A key reaches what its scope reaches: an owner of
//! `acme` creates, lists and revokes keys of `acme` only; keys of `"*"` need an owner of `"*"`.
//!
//! A key appears in exactly one answer, the one that creates it; lists show metadata only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::AdminAuth;
use super::body::{ApiPath, JsonObject};
use super::error::ApiError;
use super::types::{ApiKeyCreate, ApiKeyJson, ApiKeyRevokedJson, CreatedApiKey, Label};
use super::{Shared, rfc3339};
use crate::model::now_unix;
use crate::store::{ApiKeyInfo, KeyScope, NewApiKey, Role};

impl From<&ApiKeyInfo> for ApiKeyJson {
    fn from(k: &ApiKeyInfo) -> Self {
        ApiKeyJson {
            name: k.name.clone(),
            org: k.scope.to_string(),
            role: k.role.to_string(),
            expires_at: k.expires_at.map(rfc3339),
            created_at: rfc3339(k.created_at),
            created_by: k.created_by.clone(),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// Reads a key's name: a DNS label.
fn parse_key_name(name: &str) -> Result<String, ApiError> {
    crate::model::parse_label(name).map_err(|err| ApiError::not_a_label("name", name, err))
}

/// `POST /api/v1/api_keys`: creates an API key; the only answer holding it.
#[utoipa::path(post, path = "/api/v1/api_keys", operation_id = "createApiKey", tag = "admin",
    summary = "Create an API key for one org (or \"*\") with a role; the key is shown once",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner"])), ("x-sixpn-scope" = json!("org"))),
    request_body = ApiKeyCreate,
    responses(
        (status = 201, description = "The key with its secret", body = CreatedApiKey,
            links(
                ("revokeApiKey" = (operation_id = "revokeApiKey",
                    parameters(("name" = "$response.body#/name")))),
            )),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        super::openapi::AdminGuarded,
        super::openapi::JsonBody,
    ))]
pub async fn create(
    auth: AdminAuth,
    State(state): State<Shared>,
    body: JsonObject,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let name = parse_key_name(body.required_string("name")?)?;
    let org = body.required_string("org")?;
    // The scope first: an org outside the caller's answers 404 like a missing one.
    let scope = if org == "*" {
        auth.global(Role::Owner)?;
        KeyScope::All
    } else {
        KeyScope::Org(auth.org(org, Role::Owner)?)
    };
    let role_text = body.required_string("role")?;
    let role: Role = role_text.parse().map_err(|reason| ApiError::InvalidField {
        field: "role",
        reason,
    })?;
    let expires_at = match body.0.get("expires_in") {
        Some(value) => {
            let secs = super::admin::parse_expires_in(value)?.as_secs();
            Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(|secs| now_unix().checked_add(secs))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "expires_in",
                        reason: "is too far in the future".to_owned(),
                    })?,
            )
        }
        None => None,
    };
    let new = NewApiKey {
        name,
        scope,
        role,
        expires_at,
    };
    let (info, key) = super::metrics::timed(
        "create_api_key",
        state.store.create_api_key(new, &auth.actor),
    )
    .await?;
    tracing::info!(key = %info.name, scope = %info.scope, role = %info.role, by = %auth.actor, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: key.expose().to_owned(),
            info: ApiKeyJson::from(&info),
        }),
    ))
}

/// `GET /api/v1/api_keys`: the live keys the caller's scope reaches, without the keys.
#[utoipa::path(get, path = "/api/v1/api_keys", operation_id = "listApiKeys", tag = "admin",
    summary = "The live API keys within the caller's scope (never the keys themselves)",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner"])), ("x-sixpn-scope" = json!("any"))),
    description = "Paged like every admin list: `limit` (default 1000, at most 10000) and \
        `after`, the `X-Next-Cursor` of the previous page; the last page has no `X-Next-Cursor`.",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "Keys per page (default 1000)"),
        ("after" = Option<Label>, Query,
            description = "The `X-Next-Cursor` of the previous page: only keys after it")),
    responses(
        (status = 200, description = "A page of the keys", body = Vec<ApiKeyJson>,
            headers(
                ("X-Next-Cursor" = String, description = "The next page's `after`; absent on the last page"),
                ("Link" = String, description = "The next page's URL, `<...>; rel=\"next\"`; absent on the last page"))),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn list(
    auth: AdminAuth,
    State(state): State<Shared>,
    uri: axum::http::Uri,
) -> Result<super::paging::Paged<ApiKeyJson>, ApiError> {
    auth.require(Role::Owner)?;
    let query = super::paging::list_query(uri.query(), &[])?;
    let page = super::metrics::timed(
        "list_api_keys",
        state
            .store
            .list_api_keys_page(&auth.scope, query.after.as_deref(), query.limit),
    )
    .await?;
    let items = page.items.iter().map(ApiKeyJson::from).collect();
    Ok(super::paging::Paged::new(&uri, items, page.next))
}

/// `DELETE /api/v1/api_keys/{name}`: revokes a key; every replica refuses it from then on.
#[utoipa::path(delete, path = "/api/v1/api_keys/{name}", operation_id = "revokeApiKey", tag = "admin",
    summary = "Revoke an API key: refused by every replica from the next request on",
    security(("adminToken" = []), ("apiKey" = [])),
    extensions(("x-sixpn-roles" = json!(["owner"])), ("x-sixpn-scope" = json!("org"))),
    params(("name" = Label, Path, description = "The key's name")),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyRevokedJson),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        super::openapi::AdminGuarded,
    ))]
pub async fn revoke(
    auth: AdminAuth,
    State(state): State<Shared>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ApiKeyRevokedJson>, ApiError> {
    let name = parse_key_name(&name)?;
    // A key outside the caller's scope is not found, whatever the caller's role: look first.
    super::metrics::timed("get_api_key", state.store.get_api_key(&name, &auth.scope)).await?;
    auth.require(Role::Owner)?;
    super::metrics::timed(
        "revoke_api_key",
        state.store.revoke_api_key(&name, &auth.scope),
    )
    .await?;
    tracing::info!(key = %name, by = %auth.actor, "API key revoked");
    Ok(Json(ApiKeyRevokedJson { revoked: name }))
}
