//! Authentication: the WireGuard-token extractor of the peer API and the admin extractor of the
//! admin API, which takes an API key (issue 16) or the bootstrap admin token and answers with a
//! principal: a role over a scope ([`AdminAuth`]).
//!
//! Accepted header forms: `Bearer <t>`, `FlyV1 <t>` and `Bearer FlyV1 <t>` (what flyctl and its
//! users send), with the scheme in any case and any amount of blank space. Nothing here logs the
//! header or the token.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use super::Shared;
use super::error::ApiError;
use super::limits::source_key;
use crate::model::OrgSlug;
use crate::store::{AuthToken, KeyScope, Role, Store, StoreError, is_api_key_shaped};
use crate::wireguard::derived::{self, Caveat, Derived, Kind};

/// The prefix of every WireGuard token secret. The store mints them (`store/secret.rs`, which
/// does not export its constant); the test `minted_tokens_are_token_shaped` keeps the two in step.
const TOKEN_PREFIX: &str = "sixpn_wg_";

pub use crate::config::MAX_ADMIN_TOKEN_LEN;

/// Whether `secret` has the form of a WireGuard token: `sixpn_wg_` and 64 lowercase hex
/// digits. Anything else cannot be one, and is refused without a database query.
pub fn is_token_shaped(secret: &str) -> bool {
    secret.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The admin credential. Only its SHA-256 digest is kept, and presented tokens are compared with
/// it in constant time. `Debug` is redacted.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
    empty: bool,
    /// `[api] bootstrap_token = false`: the token is recognised only to say it is turned off.
    disabled: bool,
}

impl AdminToken {
    /// Wraps the configured admin token. An empty token matches nothing, which locks the admin
    /// API rather than opening it.
    pub fn new(secret: impl AsRef<str>) -> Self {
        let secret = secret.as_ref();
        AdminToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
            empty: secret.is_empty(),
            disabled: false,
        }
    }

    /// This token, turned on or off (`[api] bootstrap_token`). A turned-off token matches
    /// nothing; [`AdminToken::is_turned_off`] recognises it so the refusal can say why.
    pub fn enabled(self, enabled: bool) -> Self {
        AdminToken {
            disabled: !enabled,
            ..self
        }
    }

    /// Whether `presented` is this token while it is turned off.
    pub fn is_turned_off(&self, presented: &str) -> bool {
        self.disabled && self.matches_digest(presented)
    }

    /// Whether `presented` is the admin token (constant time in the secret's content). A
    /// presented token longer than [`MAX_ADMIN_TOKEN_LEN`] never matches and is not hashed.
    pub fn matches(&self, presented: &str) -> bool {
        !self.disabled && self.matches_digest(presented)
    }

    fn matches_digest(&self, presented: &str) -> bool {
        if presented.len() > MAX_ADMIN_TOKEN_LEN {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let equal: bool = self.digest.ct_eq(&digest).into();
        equal && !self.empty
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Extracts the token from an `Authorization` header value.
///
/// # Errors
/// [`ApiError::BadAuthScheme`] unless the value is one or two schemes (`Bearer`, `FlyV1`, any
/// case) followed by exactly one token.
pub fn parse_authorization(value: &str) -> Result<&str, ApiError> {
    let mut words = value.split_ascii_whitespace().peekable();
    let mut n_schemes = 0;
    while let Some(word) = words.peek() {
        if word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("flyv1") {
            n_schemes += 1;
            words.next();
        } else {
            break;
        }
    }
    let token = words.next();
    match (n_schemes, token, words.next()) {
        (1 | 2, Some(token), None) => Ok(token),
        _ => Err(ApiError::BadAuthScheme),
    }
}

/// The presented token of a request, if any.
fn presented_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::MissingToken)?;
    let value = value.to_str().map_err(|_| ApiError::BadAuthScheme)?;
    if value.trim().is_empty() {
        return Err(ApiError::MissingToken);
    }
    parse_authorization(value)
}

/// The client's address, as the API's server saw it (`None` in in-process tests): what the
/// audit log records as a change's source.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; log them as a.b.c.d.
                .map(|ConnectInfo(addr)| addr.ip().to_canonical()),
        ))
    }
}

/// A request authenticated with a live WireGuard token (peer API).
#[derive(Debug, Clone)]
pub struct PeerAuth(pub AuthToken);

/// The failed-authentication limit of one request's source address. Requests that came
/// without an address (in-process tests) are not limited.
struct FailedAuth<'a> {
    state: &'a Shared,
    source: Option<std::net::IpAddr>,
    /// Why the source is over its limit, when it is.
    limited: Option<ApiError>,
}

impl<'a> FailedAuth<'a> {
    /// Looks up whether the source has failed too often lately; nothing is refused yet (see
    /// [`FailedAuth::refuse_unless`]).
    fn check(state: &'a Shared, parts: &Parts) -> Self {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| source_key(addr.ip()));
        let limited = source.and_then(|source| {
            state
                .limiters
                .failed_auth
                .check(source)
                .err()
                .map(|retry_after| ApiError::RateLimited {
                    what: "too many failed authentications from your address",
                    retry_after,
                })
        });
        FailedAuth {
            state,
            source,
            limited,
        }
    }

    /// Over the limit, refuses at once (no database query) unless `known_good`: the limit
    /// stops guessing, never a valid credential (issue 11).
    fn refuse_unless(&mut self, known_good: bool) -> Result<(), ApiError> {
        match self.limited.take() {
            Some(err) if !known_good => Err(err),
            _ => Ok(()),
        }
    }

    /// Charges the source for `err` when it is an authentication failure, and returns it.
    fn charge(&self, err: ApiError) -> ApiError {
        let failed = matches!(
            err,
            ApiError::MissingToken
                | ApiError::BadAuthScheme
                | ApiError::BadAdminToken
                | ApiError::MalformedToken
                | ApiError::Store(
                    StoreError::UnknownToken | StoreError::TokenDeleted | StoreError::TokenExpired
                )
        );
        if failed && let Some(source) = self.source {
            // The request is refused anyway; an empty bucket only matters for the next one.
            let _ = self.state.limiters.failed_auth.take(source);
        }
        err
    }
}

impl FailedAuth<'_> {
    /// Charges a wrong admin token to the source and to the global failed-admin-auth budget
    /// (issue 22: a /48 holds 65,536 sources, each with a budget of its own). Once the global
    /// budget is spent, wrong admin tokens from anywhere are answered `429` until it refills;
    /// the right one was compared before and is never refused for it.
    fn charge_admin(&self, err: ApiError) -> ApiError {
        let err = self.charge(err);
        match self.state.limiters.failed_admin_auth.take(()) {
            Ok(()) => err,
            Err(retry_after) => ApiError::RateLimited {
                what: "too many failed admin authentications from all addresses together",
                retry_after,
            },
        }
    }
}

impl FromRequestParts<Shared> for PeerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let mut failures = FailedAuth::check(state, parts);
        let secret = match presented_token(&parts.headers) {
            Ok(secret) => secret,
            Err(err) => {
                failures.refuse_unless(false)?;
                return Err(failures.charge(err));
            }
        };
        let known = &state.limiters.known_tokens;
        failures.refuse_unless(known.contains(secret))?;
        let token = if derived::is_derived(Kind::Token, secret) {
            match derived_token(state, secret).await {
                Ok(token) => {
                    known.insert(secret);
                    token
                }
                Err(err) => {
                    known.remove(secret);
                    return Err(charge_derived(&failures, err));
                }
            }
        } else {
            if !is_token_shaped(secret) {
                return Err(failures.charge(ApiError::MalformedToken));
            }
            match super::metrics::timed("authenticate", state.store.authenticate(secret)).await {
                Ok(token) => {
                    known.insert(secret);
                    token
                }
                Err(err) => {
                    known.remove(secret);
                    return Err(failures.charge(err.into()));
                }
            }
        };
        state
            .limiters
            .tokens
            .take(token.id)
            .map_err(|retry_after| ApiError::RateLimited {
                what: "this token is sending too many requests",
                retry_after,
            })?;
        // The org, the token's name and group identify the caller in the logs; the secret never.
        let span = tracing::Span::current();
        span.record("org", tracing::field::display(&token.org));
        span.record("token", tracing::field::display(&token.name));
        // A token without a key lifetime of its own gets the org-wide one (issue 23).
        let mut token = token;
        if token.key_expiry.is_none() {
            token.key_expiry = state.key_expiry.map(|d| d.as_secs().max(1));
        }
        Ok(PeerAuth(token))
    }
}

/// Who called the admin API: the bootstrap admin token (a break-glass `owner` of `"*"`) or an
/// API key, with the role and scope it holds (issue 16). Handlers ask it before acting:
/// [`AdminAuth::org`] for an org's resources, [`AdminAuth::global`] for what spans every org.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    /// What it may do.
    pub role: Role,
    /// Where.
    pub scope: KeyScope,
    /// What the audit log calls it: `bootstrap` or `key:<name>`.
    pub actor: String,
}

impl AdminAuth {
    /// The principal of the bootstrap admin token.
    fn bootstrap() -> Self {
        AdminAuth {
            role: Role::Owner,
            scope: KeyScope::All,
            actor: "bootstrap".to_owned(),
        }
    }

    /// What the caller is, for a refusal: `viewer of acme`.
    fn describe(&self) -> String {
        format!("{} of {}", self.role, self.scope)
    }

    /// Refuses unless the caller's role is at least `role` (403 naming the role).
    ///
    /// # Errors
    /// [`ApiError::RoleNeeded`].
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::RoleNeeded {
                needed: role.to_string(),
                have: self.describe(),
            })
        }
    }

    /// Parses the org `slug` of a path or body and checks the caller may act there with `role`.
    /// An org outside the caller's scope answers exactly like a missing one (404), before the
    /// role is looked at.
    ///
    /// # Errors
    /// [`ApiError::RoleNeeded`], or the errors of [`ApiError::no_such_org`].
    pub fn org(&self, slug: &str, role: Role) -> Result<OrgSlug, ApiError> {
        let org: OrgSlug = slug.parse().map_err(|_| ApiError::no_such_org(slug))?;
        if !self.scope.covers(&org) {
            return Err(ApiError::no_such_org(slug));
        }
        self.require(role)?;
        Ok(org)
    }

    /// Checks the caller may act on every org with `role` (creating orgs, keys of scope `"*"`).
    ///
    /// # Errors
    /// [`ApiError::RoleNeeded`].
    pub fn global(&self, role: Role) -> Result<(), ApiError> {
        if self.scope != KeyScope::All {
            return Err(ApiError::RoleNeeded {
                needed: format!("{role} of \"*\" (every org)"),
                have: self.describe(),
            });
        }
        self.require(role)
    }

    /// `store`, recording `source` and this caller in the audit log of the writes made through it.
    pub fn store(&self, store: &Store, source: Option<std::net::IpAddr>) -> Store {
        store.with_source(source).with_actor(&self.actor)
    }
}

impl FromRequestParts<Shared> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let mut failures = FailedAuth::check(state, parts);
        let presented = match presented_token(&parts.headers) {
            Ok(presented) => presented,
            Err(err) => {
                failures.refuse_unless(false)?;
                return Err(failures.charge(err));
            }
        };
        if derived::is_derived(Kind::ApiKey, presented) {
            let known = &state.limiters.known_tokens;
            failures.refuse_unless(known.contains(presented))?;
            return match derived_api_key(state, presented).await {
                Ok(auth) => {
                    known.insert(presented);
                    Ok(auth)
                }
                Err(err) => {
                    known.remove(presented);
                    Err(charge_derived(&failures, err))
                }
            };
        }
        if !is_api_key_shaped(presented) {
            // Compared in memory: the admin gets through its address's failed-auth limit.
            let matches = state.admin_token.matches(presented);
            failures.refuse_unless(matches)?;
            return if matches {
                Ok(AdminAuth::bootstrap())
            } else if state.admin_token.is_turned_off(presented) {
                // Charged like any refused credential, told apart only in the message.
                let _ = failures.charge_admin(ApiError::BadAdminToken);
                Err(ApiError::BootstrapDisabled)
            } else {
                Err(failures.charge_admin(ApiError::BadAdminToken))
            };
        }
        // An API key: read from the store on every request, so a revocation or an expiry holds
        // on every replica from its commit on. A key seen valid lately gets through the
        // failed-auth limit of its address, like a WireGuard token.
        let known = &state.limiters.known_tokens;
        failures.refuse_unless(known.contains(presented))?;
        let key = match super::metrics::timed(
            "authenticate_api_key",
            state.store.authenticate_api_key(presented),
        )
        .await
        {
            Ok(key) => {
                known.insert(presented);
                key
            }
            Err(err) => {
                known.remove(presented);
                if matches!(
                    err,
                    StoreError::ApiKeyUnknown
                        | StoreError::ApiKeyRevoked
                        | StoreError::ApiKeyExpired
                ) {
                    // Charged as a refused admin credential (to its source and to the global
                    // budget); the answer says which it was.
                    let _ = failures.charge_admin(ApiError::BadAdminToken);
                }
                return Err(err.into());
            }
        };
        key_principal(state, key.id, &key.name, key.role, key.scope)
    }
}

/// Charges the failed-auth limit of the source for a refused derived credential (as a malformed
/// token, or as the store error) and returns the answer: 401s, and 403 for a limit.
fn charge_derived(failures: &FailedAuth<'_>, err: ApiError) -> ApiError {
    match err {
        ApiError::DerivedInvalid => {
            let _ = failures.charge(ApiError::MalformedToken);
            err
        }
        ApiError::Store(
            StoreError::ApiKeyUnknown | StoreError::ApiKeyRevoked | StoreError::ApiKeyExpired,
        ) => {
            let _ = failures.charge(ApiError::BadAdminToken);
            err
        }
        err => failures.charge(err),
    }
}

/// Derived credentials that verified lately (process-wide; keyed by the root key and the
/// credential, so one cache serves every store and server in the process).
static VERIFIED: std::sync::LazyLock<derived::VerifyCache> =
    std::sync::LazyLock::new(derived::VerifyCache::default);

/// Verifies a derived credential (`text`, parsed) against its parent's stored public root key;
/// the caveats.
fn verify_derived(
    text: &str,
    derived: &Derived,
    derive_key: Option<&str>,
) -> Result<Vec<Caveat>, ApiError> {
    let root = derive_key
        .and_then(derived::parse_hex32)
        .ok_or(ApiError::DerivedInvalid)?;
    VERIFIED
        .verify(text, derived, &root)
        .map(|caveats| caveats.as_ref().clone())
        .map_err(|_| ApiError::DerivedInvalid)
}

/// The earliest expiry among `caveats`, refused when it has passed.
fn check_expiry(caveats: &[Caveat], expired: StoreError) -> Result<(), ApiError> {
    let now = crate::model::now_unix();
    if caveats
        .iter()
        .any(|c| matches!(c, Caveat::Expires(t) if *t <= now))
    {
        return Err(expired.into());
    }
    Ok(())
}

/// Authenticates a derived WireGuard token (`sixpn_dt_`, issue 16): parse (bounded), look up the
/// parent by the hash it names (deleted or expired parent: 401), verify the signature chain
/// with the parent's public root key (401), check the expiry (401), and answer as the parent
/// narrowed: its group (a group outside the parent's: 403) and the only peer names allowed.
/// Peers it creates belong to the parent, so deleting the parent deletes them.
async fn derived_token(state: &Shared, presented: &str) -> Result<AuthToken, ApiError> {
    let parsed = Derived::parse(Kind::Token, presented).map_err(|_| ApiError::DerivedInvalid)?;
    let parent = super::metrics::timed(
        "authenticate",
        state.store.authenticate_parent(&parsed.parent_hash_hex()),
    )
    .await?;
    let caveats = verify_derived(presented, &parsed, parent.derive_key.as_deref())?;
    check_expiry(&caveats, StoreError::TokenExpired)?;
    let mut token = parent.token;
    let mut peers = Vec::new();
    for caveat in caveats {
        match caveat {
            Caveat::Peer(name) => peers.push(name),
            Caveat::Group(group) => {
                let allowed = token.group.as_ref().map(ToString::to_string);
                match (group.parse(), allowed) {
                    (Ok(parsed), None) => token.group = Some(parsed),
                    (Ok(parsed), Some(_)) if token.group.as_ref() == Some(&parsed) => {}
                    (_, allowed) => {
                        return Err(ApiError::DerivedLimit(format!(
                            "this derived token is limited to group {group:?}, outside what its \
                             parent allows ({}): it can do nothing; derive it again",
                            allowed.unwrap_or_else(|| "a DNS label".to_owned())
                        )));
                    }
                }
            }
            Caveat::Expires(_) => {}
            Caveat::Org(_) | Caveat::Role(_) => return Err(ApiError::DerivedInvalid),
        }
    }
    if !peers.is_empty() {
        token.only_peers = Some(peers);
    }
    Ok(token)
}

/// Authenticates a derived API key (`sixpn_dk_`): like [`derived_token`], answering as the
/// parent key with a narrower scope (an org outside the parent's: 403) and a lower role.
async fn derived_api_key(state: &Shared, presented: &str) -> Result<AdminAuth, ApiError> {
    let parsed = Derived::parse(Kind::ApiKey, presented).map_err(|_| ApiError::DerivedInvalid)?;
    let (key, derive_key) = super::metrics::timed(
        "authenticate_api_key",
        state
            .store
            .authenticate_api_key_hash(&parsed.parent_hash_hex()),
    )
    .await?;
    let caveats = verify_derived(presented, &parsed, derive_key.as_deref())?;
    check_expiry(&caveats, StoreError::ApiKeyExpired)?;
    let mut role = key.role;
    let mut scope = key.scope;
    for caveat in caveats {
        match caveat {
            Caveat::Role(r) => {
                let limit = Role::ALL[usize::from(r).min(2)];
                role = role.min(limit);
            }
            Caveat::Org(org) => match (org.parse::<OrgSlug>(), &scope) {
                (Ok(org), KeyScope::All) => scope = KeyScope::Org(org),
                (Ok(org), KeyScope::Org(own)) if *own == org => {}
                _ => {
                    return Err(ApiError::DerivedLimit(format!(
                        "this derived API key is limited to org {org:?}, outside its parent's \
                         scope ({scope}): it can do nothing; derive it again"
                    )));
                }
            },
            Caveat::Expires(_) => {}
            Caveat::Peer(_) | Caveat::Group(_) => return Err(ApiError::DerivedInvalid),
        }
    }
    key_principal(state, key.id, &key.name, role, scope)
}

/// The principal of an API key, plain or derived: its request budget taken (API keys share the
/// per-token limit, keyed apart from WireGuard tokens' ids), and its name, never the key, on the
/// request's log span.
fn key_principal(
    state: &Shared,
    id: i64,
    name: &str,
    role: Role,
    scope: KeyScope,
) -> Result<AdminAuth, ApiError> {
    state
        .limiters
        .tokens
        .take(-id)
        .map_err(|retry_after| ApiError::RateLimited {
            what: "this API key is sending too many requests",
            retry_after,
        })?;
    let actor = format!("key:{name}");
    tracing::Span::current().record("token", tracing::field::display(&actor));
    Ok(AdminAuth { role, scope, actor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expect: Option<&str>) {
        assert_eq!(parse_authorization(value).ok(), expect, "{value:?}");
    }

    #[test]
    fn header_forms() {
        check("Bearer abc", Some("abc"));
        check("bearer abc", Some("abc"));
        check("FlyV1 abc", Some("abc"));
        check("Bearer FlyV1 abc", Some("abc"));
        check("  Bearer   FlyV1\tabc  ", Some("abc"));
        check("abc", None);
        check("Bearer", None);
        check("Bearer FlyV1", None);
        check("Basic abc", None);
        check("Bearer abc def", None);
        check("Bearer Bearer Bearer abc", None);
    }

    #[test]
    fn minted_tokens_are_token_shaped() {
        for _ in 0..10 {
            assert!(is_token_shaped(
                crate::store::TokenSecret::generate().expose()
            ));
        }
    }

    #[test]
    fn token_shapes() {
        let good = format!("{TOKEN_PREFIX}{}", "0123456789abcdef".repeat(4));
        assert!(is_token_shaped(&good));
        assert!(!is_token_shaped(&good.to_uppercase()));
        assert!(!is_token_shaped(&good[..good.len() - 1]));
        assert!(!is_token_shaped(&format!("{good}0")));
        assert!(!is_token_shaped(&good.replace("sixpn_wg_", "sixpn_xx_")));
        assert!(!is_token_shaped(&good.replace('a', "g")));
        assert!(!is_token_shaped("sixpn_wg_"));
        assert!(!is_token_shaped(""));
    }

    #[test]
    fn admin_token() {
        let admin = AdminToken::new("s3cret");
        assert!(admin.matches("s3cret"));
        assert!(!admin.matches("s3cre"));
        assert!(!admin.matches(""));
        assert!(!AdminToken::new("").matches(""));
        let long = "x".repeat(MAX_ADMIN_TOKEN_LEN + 1);
        assert!(!AdminToken::new(&long).matches(&long));
        assert_eq!(format!("{admin:?}"), "AdminToken(<redacted>)");
        let off = AdminToken::new("s3cret").enabled(false);
        assert!(!off.matches("s3cret"));
        assert!(off.is_turned_off("s3cret"));
        assert!(!off.is_turned_off("other"));
        assert!(!admin.is_turned_off("s3cret"));
    }

    #[test]
    fn principals() {
        let acme: OrgSlug = "acme".parse().unwrap();
        let viewer = AdminAuth {
            role: Role::Viewer,
            scope: KeyScope::Org(acme.clone()),
            actor: "key:v".into(),
        };
        assert_eq!(viewer.org("acme", Role::Viewer).unwrap(), acme);
        let err = viewer.org("acme", Role::Operator).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("operator"), "{err}");
        // Outside the scope: exactly what a missing org answers, whatever the role.
        let outside = viewer.org("beta", Role::Owner).unwrap_err();
        let missing = ApiError::no_such_org("beta");
        assert_eq!(outside.status(), 404);
        assert_eq!(outside.message(), missing.message());
        assert_eq!(viewer.global(Role::Viewer).unwrap_err().status(), 403);
        assert!(AdminAuth::bootstrap().global(Role::Owner).is_ok());
    }
}
