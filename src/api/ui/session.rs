//! Console sessions: an API key (or the bootstrap admin token) exchanged for a random session id
//! in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS) that expires after
//! [`SESSION_TTL`].
//!
//! Sessions live in this process's memory: a restart signs everyone out, and with several
//! replicas behind one address a session holds on the replica that made it only. The key itself
//! stays server-side with its session and is authenticated again on every request, exactly as the
//! admin API authenticates it (the same rate limits, the same failed-auth accounting), so a
//! revoked or expired key ends its sessions at their next request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, Request, header};
use subtle::ConstantTimeEq;

use super::super::Shared;
use super::super::auth::AdminAuth;
use super::super::error::ApiError;

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; signing in beyond that ends the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// The session cookie's name.
pub const COOKIE: &str = "sixpn_console";

/// One signed-in browser.
struct Session {
    /// The presented credential, authenticated again on each request. Never logged or shown.
    key: String,
    /// The synchronizer token every form of this session carries.
    csrf: String,
    /// When it ends.
    expires: Instant,
}

/// The sessions of one console.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// 32 random bytes, hex.
fn random_id() -> String {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the system's random source");
    buf.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Sessions {
    /// Starts a session for `key`: its id and CSRF token.
    pub fn start(&self, key: &str) -> (String, String) {
        let id = random_id();
        let csrf = random_id();
        let now = Instant::now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                key: key.to_owned(),
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        (id, csrf)
    }

    /// The key and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some((s.key.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// The session id a request's cookies carry.
pub fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Authenticates `key` exactly as the admin API authenticates an `Authorization` header from
/// `client`: API keys (plain or derived) and the bootstrap token, with the same failed-auth
/// limits and charges.
pub async fn authenticate(
    state: &Shared,
    key: &str,
    client: Option<ConnectInfo<SocketAddr>>,
) -> Result<AdminAuth, ApiError> {
    // A key that cannot be a header value is charged as a wrong token, like any other.
    let value = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer -"));
    let (mut parts, ()) = Request::builder()
        .uri("/ui")
        .header(header::AUTHORIZATION, value)
        .body(())
        .map_err(|_| ApiError::BadAuthScheme)?
        .into_parts();
    if let Some(client) = client {
        parts.extensions.insert(client);
    }
    AdminAuth::from_request_parts(&mut parts, state).await
}

/// A request's live session: its id, CSRF token and the principal its key is right now.
pub struct Signed {
    /// The session id.
    pub id: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// What the key may do, as of this request.
    pub auth: AdminAuth,
}

/// Why a request has no live session.
pub enum NotSigned {
    /// No cookie, or an unknown or expired session.
    None,
    /// The session's key no longer authenticates (revoked, expired, deleted org): the session
    /// has been ended.
    Ended,
    /// The key is rate limited, or the store failed.
    Error(ApiError),
}

/// The live session of a request, its key authenticated again.
pub async fn signed_in(
    state: &Shared,
    sessions: &Sessions,
    headers: &HeaderMap,
    client: Option<ConnectInfo<SocketAddr>>,
) -> Result<Signed, NotSigned> {
    let id = cookie_id(headers).ok_or(NotSigned::None)?;
    let (key, csrf) = sessions.get(id).ok_or(NotSigned::None)?;
    match authenticate(state, &key, client).await {
        Ok(auth) => Ok(Signed {
            id: id.to_owned(),
            csrf,
            auth,
        }),
        Err(err) if err.status().as_u16() == 401 => {
            sessions.end(id);
            Err(NotSigned::Ended)
        }
        Err(err) => Err(NotSigned::Error(err)),
    }
}

/// Whether `presented` is the session's CSRF token (constant time).
pub fn csrf_ok(signed: &Signed, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| {
        p.len() == signed.csrf.len() && bool::from(p.as_bytes().ct_eq(signed.csrf.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.start("k");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={id}")).unwrap(),
        );
        assert_eq!(cookie_id(&headers), Some(id.as_str()));
        assert_eq!(sessions.get(&id).unwrap().0, "k");
        sessions.end(&id);
        assert!(sessions.get(&id).is_none());
        let cookie = set_cookie(&id, true);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
        assert!(!set_cookie(&id, false).contains("Secure"));
        headers.insert(header::COOKIE, HeaderValue::from_static("sixpn_console=zz"));
        assert_eq!(cookie_id(&headers), None);
    }
}
