//! [`ApiError`]: every way a request can fail, mapped to a status and a JSON body in one `match`.
//!
//! Every answer that is not a success carries `{"error": "<what was wrong and how to fix it>"}`:
//! flyctl ignores the status when the body parses, so an error body without `error` would be taken
//! for success. A 5xx body reveals nothing; its cause is logged once, here, inside the request's
//! trace span (which carries the method and matched path, never a header).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::model::{OrgSlug, RegionCode};
use crate::store::StoreError;

/// Everything the HTTP API can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization` header.
    #[error(
        "missing Authorization header: send `Authorization: Bearer <token>` (FlyV1 <token> works too)"
    )]
    MissingToken,
    /// An `Authorization` header that is not `Bearer <t>`, `FlyV1 <t>` or `Bearer FlyV1 <t>`.
    #[error(
        "malformed Authorization header: expected `Bearer <token>`, `FlyV1 <token>` or `Bearer FlyV1 <token>`"
    )]
    BadAuthScheme,
    /// The admin API was called without the admin token.
    #[error(
        "invalid admin token: send `Authorization: Bearer <admin token>` (SIXPN_ADMIN_TOKEN, or the admin-token file in the data directory)"
    )]
    BadAdminToken,
    /// The body is not JSON at all.
    #[error("malformed JSON in request body: {0}")]
    MalformedJson(String),
    /// The body is valid JSON of the wrong shape.
    #[error("invalid request body: {0}")]
    BadBody(String),
    /// The `Content-Type` is not JSON.
    #[error(
        "unsupported content type {0}: send the body as JSON with `Content-Type: application/json`"
    )]
    WrongContentType(String),
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// The body could not be read for another reason.
    #[error("could not read the request body: {0}")]
    BodyUnreadable(String),
    /// A required field is missing or empty.
    #[error("field `{0}` is required")]
    MissingField(&'static str),
    /// A field has a value of the wrong kind or form; the string says why.
    #[error("field `{field}` {reason}")]
    InvalidField {
        /// The field (or path parameter) name.
        field: &'static str,
        /// What is wrong with it, a full clause such as "must be a string".
        reason: String,
    },
    /// The region is not configured.
    #[error("unknown region {region:?}: this server knows {}", known.join(", "))]
    UnknownRegion {
        /// What was asked for.
        region: String,
        /// The configured region codes.
        known: Vec<String>,
    },
    /// No region is configured at all, so no peer can be placed.
    #[error("this server has no gateway region configured; ask the operator to add one")]
    NoRegions,
    /// The peer's stored region is no longer configured.
    #[error(
        "peer's region {0} is no longer served by this server; delete the peer and create it again"
    )]
    RegionGone(RegionCode),
    /// A group-confined token asked for another group.
    #[error(
        "this token is confined to group {allowed}: it cannot use group {requested}; leave `group` empty or set it to {allowed}"
    )]
    GroupNotAllowed {
        /// The token's group.
        allowed: String,
        /// The group asked for.
        requested: String,
    },
    /// A body field contradicts the URL or asks for a change the API does not make.
    #[error("{0}")]
    Unsupported(String),
    /// A failure reported by the store (mapped per variant).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No route matches the path.
    #[error("no such endpoint {0}; see GET /api/openapi.json for the API")]
    NoRoute(String),
    /// The path exists but not with this method.
    #[error("method {method} is not allowed on {path}; see the Allow header")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// A handler panicked (a bug); the panic message is logged, not shown.
    #[error("internal error")]
    Panic,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::BadAuthScheme | ApiError::BadAdminToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::MalformedJson(_) | ApiError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            ApiError::WrongContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::MissingField(_)
            | ApiError::InvalidField { .. }
            | ApiError::UnknownRegion { .. }
            | ApiError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RegionGone(_) => StatusCode::CONFLICT,
            ApiError::NoRegions => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GroupNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Panic => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(err) => store_status(err),
        }
    }

    /// The `error` text of the body. For 5xx it reveals nothing about the cause.
    pub fn message(&self) -> String {
        match self {
            ApiError::Store(err) => store_message(err),
            other => other.to_string(),
        }
    }

    /// A field that is not a DNS label.
    pub(crate) fn not_a_label(
        field: &'static str,
        value: &str,
        err: crate::model::LabelError,
    ) -> Self {
        ApiError::InvalidField {
            field,
            reason: format!(
                "is not a DNS label ({err}): got {value:?}; use 1-63 letters, digits and '-'"
            ),
        }
    }

    /// An org named in a path that does not exist or cannot exist.
    pub(crate) fn no_such_org(slug: &str) -> Self {
        match slug.parse::<OrgSlug>() {
            Ok(slug) => ApiError::Store(StoreError::OrgNotFound(slug)),
            Err(err) => ApiError::not_a_label("org", slug, err),
        }
    }
}

fn store_status(err: &StoreError) -> StatusCode {
    match err {
        StoreError::UnknownToken | StoreError::TokenDeleted | StoreError::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        StoreError::OrgNotFound(_) | StoreError::TokenNotFound(_) | StoreError::PeerNotFound(_) => {
            StatusCode::NOT_FOUND
        }
        StoreError::OrgExists(_)
        | StoreError::TokenNameTaken(_)
        | StoreError::PeerNameTaken(_)
        | StoreError::PubkeyInUse => StatusCode::CONFLICT,
        StoreError::PeerCapReached(_) => StatusCode::TOO_MANY_REQUESTS,
        StoreError::AddressesExhausted | StoreError::PrefixesExhausted => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        StoreError::BadUrl(_) | StoreError::Migrate(_) | StoreError::Database(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn store_message(err: &StoreError) -> String {
    match err {
        StoreError::UnknownToken => {
            "unknown token: it was never minted here; check SIXPN_WIREGUARD_TOKEN".to_owned()
        }
        StoreError::TokenDeleted => {
            "token has been deleted: ask an admin to mint a new one".to_owned()
        }
        StoreError::TokenExpired => "token has expired: ask an admin to mint a new one".to_owned(),
        StoreError::PeerNameTaken(name) => format!(
            "peer {name} already exists: to give it a new key, re-key it with \
             PUT /api/v3/wire_guard_peers/{name} (`sixpn token update {name}`), or pick another name"
        ),
        StoreError::PubkeyInUse => "this public key is already used by another peer: generate a \
             fresh key pair for every peer (`wg genkey | wg pubkey`)"
            .to_owned(),
        StoreError::PeerCapReached(cap) => format!(
            "this token has reached its cap of {cap} live peers: delete one of its peers or ask \
             an admin for another token"
        ),
        StoreError::TokenNameTaken(name) => format!(
            "a token named {name} already exists in this org: pick another name or delete it first"
        ),
        StoreError::OrgExists(slug) => format!("org {slug} already exists"),
        StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
            "the database is unavailable; try again shortly".to_owned()
        }
        StoreError::BadUrl(_) | StoreError::Migrate(_) | StoreError::Database(_) => {
            "internal error".to_owned()
        }
        // The remaining variants' own messages say what is wrong and are safe to show.
        other => other.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The one place a 5xx cause is logged; the body stays generic.
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            // The reason a request was refused; it names fields and names, never a secret.
            tracing::debug!(status = status.as_u16(), error = %self.message(), "request refused");
        }
        let mut res =
            (status, Json(serde_json::json!({ "error": self.message() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sixpn\""),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_message_and_a_fitting_status() {
        let cases = [
            ApiError::MissingToken,
            ApiError::BadAuthScheme,
            ApiError::BadAdminToken,
            ApiError::MalformedJson("x".into()),
            ApiError::WrongContentType("text/plain".into()),
            ApiError::BodyTooLarge(10),
            ApiError::MissingField("pubkey"),
            ApiError::NoRegions,
            ApiError::Store(StoreError::PeerCapReached(3)),
            ApiError::Store(StoreError::Database(sqlx::Error::RowNotFound)),
            ApiError::Panic,
        ];
        for err in cases {
            assert!(!err.message().is_empty(), "{err:?}");
            assert!(
                err.status().is_client_error() || err.status().is_server_error(),
                "{err:?}"
            );
        }
    }

    #[test]
    fn database_errors_reveal_nothing() {
        let err = ApiError::Store(StoreError::Database(sqlx::Error::Protocol(
            "secret detail".into(),
        )));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message(), "internal error");
    }

    #[test]
    fn duplicate_name_points_at_put() {
        let err = ApiError::Store(StoreError::PeerNameTaken("node-1".parse().unwrap()));
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert!(
            err.message()
                .contains("PUT /api/v3/wire_guard_peers/node-1")
        );
    }
}
