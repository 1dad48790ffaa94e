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
use crate::store::{StoreError, is_unavailable};

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
    /// A bearer token that cannot be a WireGuard token (wrong prefix, length or characters);
    /// refused without asking the database.
    #[error(
        "unknown token: this is not a sixpn WireGuard token (expected `sixpn_wg_` and 64 hex digits); check SIXPN_WIREGUARD_TOKEN"
    )]
    MalformedToken,
    /// A derived (attenuated) token or API key that is malformed, tampered with, or whose parent
    /// this server cannot verify it against (issue 16).
    #[error(
        "invalid derived credential: malformed, tampered with, or its parent is unknown (present the parent once after an upgrade); derive it again"
    )]
    DerivedInvalid,
    /// A derived credential used outside its limits (issue 16).
    #[error("{0}")]
    DerivedLimit(String),
    /// Too many requests from one token, or too many failed authentications from one address.
    #[error("{what}; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// What limit was hit, a full clause.
        what: &'static str,
        /// When a request will be accepted again (`Retry-After`).
        retry_after: std::time::Duration,
    },
    /// The peer name exists in the org, but another token created it.
    #[error(
        "peer {name} belongs to another token of this org: a token can only {} peers it created itself{}",
        if *creating { "re-key" } else { "read, re-key and delete" },
        if *creating { "; pick another name, or ask an admin to delete the other peer" } else { "; use the token that created it, or ask an admin" }
    )]
    PeerOfAnotherToken {
        /// The peer's name.
        name: String,
        /// Whether this was a create (409) rather than a read, re-key or delete (403).
        creating: bool,
    },
    /// `/readyz`: the server should not take traffic yet; the string says why.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The admin API was called without the admin token.
    #[error(
        "invalid admin token: send `Authorization: Bearer <admin token>` (SIXPN_ADMIN_TOKEN, or the admin-token file in the data directory)"
    )]
    BadAdminToken,
    /// The admin token was presented, but `[api] bootstrap_token = false` turned it off.
    #[error(
        "the bootstrap admin token is turned off on this server ([api] bootstrap_token = false): use an API key (SIXPN_API_KEY)"
    )]
    BootstrapDisabled,
    /// An API key whose role (or scope) does not allow the operation (issue 16).
    #[error(
        "this operation needs the {needed} role; this API key is {have}: ask an owner for a key with that role"
    )]
    RoleNeeded {
        /// The role needed, e.g. `operator`, or `owner` with scope `"*"`.
        needed: String,
        /// What the key is, e.g. `viewer of acme`.
        have: String,
    },
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
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {} s; send it at once", .0.as_secs())]
    BodyTimeout(std::time::Duration),
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
    /// The request conflicts with what is stored: a re-key that names another peer, group or
    /// region, or a gateway's own public key as a peer's.
    #[error("{0}")]
    Conflict(String),
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
            ApiError::MissingToken
            | ApiError::BadAuthScheme
            | ApiError::BadAdminToken
            | ApiError::BootstrapDisabled
            | ApiError::MalformedToken
            | ApiError::DerivedInvalid => StatusCode::UNAUTHORIZED,
            ApiError::DerivedLimit(_) => StatusCode::FORBIDDEN,
            ApiError::RoleNeeded { .. } => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PeerOfAnotherToken { creating: true, .. } => StatusCode::CONFLICT,
            ApiError::PeerOfAnotherToken {
                creating: false, ..
            } => StatusCode::FORBIDDEN,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MalformedJson(_) | ApiError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::WrongContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::MissingField(_)
            | ApiError::InvalidField { .. }
            | ApiError::UnknownRegion { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
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
        StoreError::UnknownToken
        | StoreError::TokenDeleted
        | StoreError::TokenExpired
        | StoreError::ApiKeyUnknown
        | StoreError::ApiKeyRevoked
        | StoreError::ApiKeyExpired => StatusCode::UNAUTHORIZED,
        StoreError::OrgNotFound(_)
        | StoreError::TokenNotFound(_)
        | StoreError::PeerNotFound(_)
        | StoreError::ApiKeyNotFound(_) => StatusCode::NOT_FOUND,
        StoreError::ApiKeyNameTaken(_)
        | StoreError::OrgExists(_)
        | StoreError::TokenNameTaken(_)
        | StoreError::PeerNameTaken(_)
        | StoreError::PubkeyInUse
        // A cap stays reached until a peer goes: waiting does not help, so not 429 (issue 23).
        | StoreError::PeerCapReached(_)
        | StoreError::OrgPeerCapReached { .. }
        | StoreError::OrgNotEmpty { .. }
        | StoreError::DefaultOrg(_) => StatusCode::CONFLICT,
        StoreError::AddressesExhausted | StoreError::PrefixesExhausted => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        // Down, unreachable, or its SQLite file unreadable (not a database, damaged).
        unavailable if unavailable.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::BadUrl(_)
        | StoreError::ReadReplicaNeedsPostgres
        | StoreError::NotReady(_)
        | StoreError::MultiHostUrl(_)
        | StoreError::Reopen(_)
        | StoreError::Migrate(_)
        | StoreError::Database(_) => {
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
            "this token has reached its cap (max_peers = {cap}) of live peers: delete one of its \
             peers or ask an admin for another token; retrying will not help"
        ),
        StoreError::OrgPeerCapReached { org, cap } => format!(
            "org {org} has reached its cap ([orgs] max_peers = {cap}) of live peers: delete some \
             of its peers, or ask the operator to raise [orgs] max_peers; retrying will not help"
        ),
        StoreError::OrgNotEmpty { org, peers, tokens } => format!(
            "org {org} still has {peers} peer(s) and {tokens} token(s): delete them first, or \
             delete everything with ?cascade=true (`sixpn org delete {org} --cascade`)"
        ),
        StoreError::DefaultOrg(org) => format!(
            "org {org} is the default org: every server recreates it at start, so it cannot be \
             deleted; delete its tokens and peers instead"
        ),
        StoreError::TokenNameTaken(name) => format!(
            "a token named {name} already exists in this org: pick another name or delete it first"
        ),
        StoreError::OrgExists(slug) => format!("org {slug} already exists"),
        StoreError::ApiKeyUnknown => "unknown API key or admin token: check SIXPN_API_KEY (an API \
             key is `sixpn_ak_` and 64 hex digits) or the admin token"
            .to_owned(),
        StoreError::ApiKeyRevoked => {
            "API key has been revoked: ask an owner for a new one".to_owned()
        }
        StoreError::ApiKeyExpired => "API key has expired: ask an owner for a new one".to_owned(),
        StoreError::Database(err)
        | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(err))
            if is_unavailable(err) =>
        {
            // Why, in a few words (never the driver's text): a client, a load balancer or an
            // operator reading the answer can tell a full disk from a corrupt file (issue 23).
            let reason = crate::store::unavailable_reason(err).unwrap_or("unknown cause");
            if reason.contains("operator") {
                format!("the database is unavailable: {reason}")
            } else {
                format!("the database is unavailable: {reason}; try again shortly")
            }
        }
        StoreError::NotReady(Some(reason)) if reason.contains("operator") => {
            format!("the database is unavailable: {reason}")
        }
        StoreError::NotReady(Some(reason)) => {
            format!("the database is unavailable: {reason}; try again shortly")
        }
        StoreError::NotReady(None) => {
            "the database is being prepared (migrations); try again shortly".to_owned()
        }
        unavailable if unavailable.is_unavailable() => {
            "the database is unavailable; try again shortly".to_owned()
        }
        StoreError::BadUrl(_)
        | StoreError::ReadReplicaNeedsPostgres
        | StoreError::MultiHostUrl(_)
        | StoreError::Reopen(_)
        | StoreError::Migrate(_)
        | StoreError::Database(_) => "internal error".to_owned(),
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
        if let ApiError::RateLimited { retry_after, .. } = &self {
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE
            && !res.headers().contains_key(header::RETRY_AFTER)
        {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
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
    use crate::store::{unavailable_sqlite_code, unavailable_sqlstate};

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
        let err = ApiError::Store(StoreError::Database(sqlx::Error::ColumnNotFound(
            "secret detail".into(),
        )));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message(), "internal error");
    }

    /// issue 11: a full disk, a broken connection or a locked database is 503, not 500.
    #[tokio::test]
    async fn issue11_unavailable_databases_are_503() {
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            // issue 17: a proxy in front of an unreachable database accepts and closes.
            sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into()),
        ] {
            let err = ApiError::Store(StoreError::Database(err));
            assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
            assert!(err.message().contains("unavailable"));
        }
        // A real SQLITE_FULL: a database that may not grow past one page.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("PRAGMA max_page_count = 2")
            .execute(&pool)
            .await
            .unwrap();
        let mut full = None;
        for _ in 0..100 {
            if let Err(e) = sqlx::query("INSERT INTO t VALUES (randomblob(1000))")
                .execute(&pool)
                .await
            {
                full = Some(e);
                break;
            }
        }
        let err = ApiError::Store(StoreError::Database(full.expect("the disk fills up")));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
        // PostgreSQL: disk full, admin shutdown, connection failure; not a syntax error.
        for code in ["53100", "57P01", "08006", "40001"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        assert!(!unavailable_sqlstate("42601"));
        assert!(!unavailable_sqlstate("23505"));
        assert!(unavailable_sqlite_code(13));
        // issue 23: a corrupt file, or one that is not a database, is 503 with the reason.
        assert!(unavailable_sqlite_code(11) && unavailable_sqlite_code(26));
        assert!(crate::store::unavailable_reason(&sqlx::Error::PoolTimedOut).is_some());
        assert!(unavailable_sqlite_code(266)); // SQLITE_IOERR_READ
        assert!(!unavailable_sqlite_code(2067)); // SQLITE_CONSTRAINT_UNIQUE
    }

    /// issue 23: a SQLite file that is not a database (overwritten, a wrong file restored) is
    /// 503 with a JSON `error` that says so, not a bare 500.
    #[tokio::test]
    async fn issue23_a_file_that_is_not_a_database_is_503_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sixpn.db");
        std::fs::write(&path, "this is not a database, only text ".repeat(200)).unwrap();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let failed = sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&pool)
            .await
            .expect_err("not a database");
        let err = ApiError::Store(StoreError::Database(failed));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
        let message = err.message();
        assert!(
            message.contains("not a SQLite database") && message.contains("restore"),
            "{message}"
        );
    }

    #[test]
    fn a_peer_of_another_token_is_409_on_create_403_otherwise() {
        let create = ApiError::PeerOfAnotherToken {
            name: "node-1".into(),
            creating: true,
        };
        assert_eq!(create.status(), StatusCode::CONFLICT);
        assert!(!create.message().contains("PUT"));
        let read = ApiError::PeerOfAnotherToken {
            name: "node-1".into(),
            creating: false,
        };
        assert_eq!(read.status(), StatusCode::FORBIDDEN);
        assert!(read.message().contains("belongs to another token"));
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let res = ApiError::RateLimited {
            what: "too many",
            retry_after: std::time::Duration::from_secs(3),
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
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
