//! Authentication: the WireGuard-token extractor of the peer API and the admin-token extractor of
//! the admin API.
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

use super::Shared;
use super::error::ApiError;
use crate::store::AuthToken;

/// The admin credential. Only its SHA-256 digest is kept, and presented tokens are compared with
/// it in constant time. `Debug` is redacted.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
    empty: bool,
}

impl AdminToken {
    /// Wraps the configured admin token. An empty token matches nothing, which locks the admin
    /// API rather than opening it.
    pub fn new(secret: impl AsRef<str>) -> Self {
        let secret = secret.as_ref();
        AdminToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
            empty: secret.is_empty(),
        }
    }

    /// Whether `presented` is the admin token (constant time in the secret's content).
    pub fn matches(&self, presented: &str) -> bool {
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

/// A request authenticated with a live WireGuard token (peer API).
#[derive(Debug, Clone)]
pub struct PeerAuth(pub AuthToken);

impl FromRequestParts<Shared> for PeerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let secret = presented_token(&parts.headers)?;
        let token = state.store.authenticate(secret).await?;
        // The org, the token's name and group identify the caller in the logs; the secret never.
        let span = tracing::Span::current();
        span.record("org", tracing::field::display(&token.org));
        span.record("token", tracing::field::display(&token.name));
        Ok(PeerAuth(token))
    }
}

/// A request authenticated with the admin token (admin API).
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<Shared> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let presented = presented_token(&parts.headers)?;
        if state.admin_token.matches(presented) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::BadAdminToken)
        }
    }
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
    fn admin_token() {
        let admin = AdminToken::new("s3cret");
        assert!(admin.matches("s3cret"));
        assert!(!admin.matches("s3cre"));
        assert!(!admin.matches(""));
        assert!(!AdminToken::new("").matches(""));
        assert_eq!(format!("{admin:?}"), "AdminToken(<redacted>)");
    }
}
