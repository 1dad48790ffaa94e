//! A small HTTP client for the sixpn APIs, turning every failure into one line that says what to do.
//!
//! The CLI talks to the server only through this client (never to the database). It knows the
//! wire shapes only as `serde_json::Value`; the command modules pick out the fields they show.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The server's address when `SIXPN_API_URL` is unset: where `sixpn serve` listens by default.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:4280";

/// How long one request may take in all before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A bearer credential and where it came from, so an authentication error can say which one failed.
pub struct Credential {
    /// The secret sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// Where the secret was read from, e.g. `$SIXPN_ADMIN_TOKEN`.
    pub source: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// An HTTP client bound to one server and one credential.
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
    credential: Credential,
}

impl ApiClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:4280`).
    ///
    /// # Errors
    /// When `base_url` is not an http(s) URL.
    pub fn new(base_url: &str, credential: Credential) -> anyhow::Result<ApiClient> {
        let base = parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sixpn/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        Ok(ApiClient {
            base,
            http,
            credential,
        })
    }

    /// The server's base URL, as shown in messages.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET path`, decoded into `T`.
    ///
    /// # Errors
    /// See [`send`](Self::send).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_typed(Method::GET, path, None).await
    }

    /// Sends a request and decodes the JSON answer into `T`.
    ///
    /// # Errors
    /// See [`send`](Self::send), plus an answer that does not have the expected shape.
    pub async fn send_typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let value = self.send(method, path, body).await?;
        serde_json::from_value(value).map_err(|e| {
            anyhow!(
                "unexpected answer from {}{path}: {e}; is SIXPN_API_URL pointing at a sixpn server?",
                self.base_url()
            )
        })
    }

    /// Sends a request with the credential and returns the JSON answer.
    ///
    /// # Errors
    /// One message per failure: the server cannot be reached (naming the URL), it did not answer
    /// in time, it answered an error (its `error` text and the HTTP status), or the answer is not
    /// JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("building a URL from {} and {path}", self.base))?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.credential.secret);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = json
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&bytes);
                    let text = text.trim();
                    if text.is_empty() {
                        status
                            .canonical_reason()
                            .unwrap_or("no error message")
                            .to_string()
                    } else {
                        text.chars().take(200).collect()
                    }
                });
            let mut line = format!(
                "the server answered {} {}: {message} (HTTP {})",
                method,
                url.path(),
                status.as_u16()
            );
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                line.push_str(&format!(
                    "; the credential came from {}",
                    self.credential.source
                ));
            }
            bail!(line);
        }
        json.ok_or_else(|| {
            anyhow!(
                "the server at {} answered {} {} with something that is not JSON; is SIXPN_API_URL pointing at a sixpn server?",
                self.base_url(),
                method,
                url.path()
            )
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let base = self.base_url();
        if e.is_timeout() {
            anyhow!(
                "the sixpn server at {base} did not answer within {REQUEST_TIMEOUT:?}; check that it is healthy, or set SIXPN_API_URL to another server"
            )
        } else if e.is_connect() {
            anyhow!(
                "cannot reach the sixpn server at {base} ({}); start it with `sixpn serve`, or set SIXPN_API_URL to its address",
                root_cause(e)
            )
        } else {
            anyhow!(
                "talking to the sixpn server at {base} failed: {}",
                root_cause(e)
            )
        }
    }
}

/// The innermost error message, which says what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Parses the API base URL, making sure joins keep its path.
///
/// # Errors
/// When the text is not an `http://` or `https://` URL.
pub fn parse_base_url(text: &str) -> anyhow::Result<Url> {
    let text = text.trim();
    let mut url = Url::parse(text).map_err(|e| {
        anyhow!("SIXPN_API_URL {text:?} is not a URL ({e}); expected e.g. {DEFAULT_API_URL}")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("SIXPN_API_URL {text:?} must start with http:// or https://");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let check = |text: &str, expect: &str| {
            let url = parse_base_url(text).unwrap();
            assert_eq!(url.join("api/v1/orgs").unwrap().as_str(), expect);
        };
        check("http://127.0.0.1:4280", "http://127.0.0.1:4280/api/v1/orgs");
        check(
            "http://127.0.0.1:4280/",
            "http://127.0.0.1:4280/api/v1/orgs",
        );
        check(
            "https://sixpn.example.com/prefix",
            "https://sixpn.example.com/prefix/api/v1/orgs",
        );
        assert!(parse_base_url("127.0.0.1:4280").is_err());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("").is_err());
    }
}
