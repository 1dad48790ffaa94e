//! A small HTTP client for the sixpn APIs, turning every failure into one line that says what to do.
//!
//! The CLI talks to the server only through this client (never to the database). It returns
//! answers as `serde_json::Value`; the command modules check and pick out the fields they use.
//! Every failure carries its kind (`exit::Failure`), mapped from the HTTP status or the transport
//! error here and nowhere else.
//!
//! Over https it trusts the bundled web roots, the system's trust store, and the CA file given by
//! `--cacert` / `$SIXPN_CA_CERT` (issue 12), so a server with a private CA needs no system change.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::exit::{Failure, fail};

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
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:4280`), trusting the CA
    /// certificates in `cacert` besides the system's roots.
    ///
    /// # Errors
    /// When `base_url` is not an http(s) URL, or `cacert` cannot be read or holds no certificate.
    pub fn new(
        base_url: &str,
        cacert: Option<&Path>,
        credential: Credential,
    ) -> anyhow::Result<ApiClient> {
        let base = parse_base_url_from(base_url, api_url_source(base_url))?;
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sixpn/", env!("CARGO_PKG_VERSION")));
        // Plain http needs no roots: skip reading the system store.
        if base.scheme() == "https" {
            for certificate in system_roots() {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(path) = cacert {
            for certificate in load_ca_file(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().context("setting up the HTTP client")?;
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

    /// `GET path`, one page of a paged admin list: its items and the next page's cursor (the
    /// `X-Next-Cursor` header; `None` on the last page).
    ///
    /// # Errors
    /// See [`send`](Self::send), plus an answer that is not a JSON array of `T`.
    pub async fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<(Vec<T>, Option<String>)> {
        let (value, headers) = self.send_with_headers(Method::GET, path, None).await?;
        let items = serde_json::from_value(value).map_err(|e| {
            anyhow!(
                "unexpected answer from {}/{}: {e}; is SIXPN_API_URL pointing at a sixpn server?",
                self.base_url(),
                path.trim_start_matches('/')
            )
        })?;
        let next = headers
            .get(crate::api::paging::NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((items, next))
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
        Ok(self.send_with_headers(method, path, body).await?.0)
    }

    /// [`send`](Self::send), with the answer's headers.
    async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
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
        let headers = response.headers().clone();
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
            return Err(fail(Failure::from_status(status), line));
        }
        let json = json.ok_or_else(|| {
            anyhow!(
                "the server at {} answered {} {} with something that is not JSON; is SIXPN_API_URL pointing at a sixpn server?",
                self.base_url(),
                method,
                url.path()
            )
        })?;
        Ok((json, headers))
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let base = self.base_url();
        let cause = root_cause(e);
        // rustls reports an untrusted or mismatched certificate as a connect error; retrying
        // will not help, the trust settings will.
        if cause.contains("CaUsedAsEndEntity") {
            // A self-signed CA certificate served as the server's own: webpki refuses it
            // whatever the client trusts, so --cacert cannot help (issue 23).
            fail(
                Failure::Other,
                format!(
                    "the sixpn server at {base} presents a CA certificate (basicConstraints CA:TRUE) as its own TLS certificate, which TLS clients refuse even with --cacert; give the server ([api] tls_cert) a certificate for its name signed by that CA, and pass the CA with --cacert FILE (or SIXPN_CA_CERT)"
                ),
            )
        } else if cause.contains("NotValidForName") {
            fail(
                Failure::Other,
                format!(
                    "the TLS certificate of the sixpn server at {base} is not valid for {}; use the name or address the certificate was issued for in --api-url (SIXPN_API_URL), or reissue the certificate with it",
                    self.base.host_str().unwrap_or("this host")
                ),
            )
        } else if cause.contains("certificate") || cause.contains("CertificateRequired") {
            let cause = readable_certificate_error(&cause);
            fail(
                Failure::Other,
                format!(
                    "the TLS certificate of the sixpn server at {base} is not trusted ({cause}); pass --cacert FILE (or set SIXPN_CA_CERT) with the CA that signed it"
                ),
            )
        } else if e.is_timeout() {
            fail(
                Failure::Unavailable,
                format!(
                    "the sixpn server at {base} did not answer within {REQUEST_TIMEOUT:?}; check that it is healthy, or set SIXPN_API_URL to another server"
                ),
            )
        } else if e.is_connect() {
            fail(
                Failure::Unavailable,
                format!(
                    "cannot reach the sixpn server at {base} ({cause}); start it with `sixpn serve`, or set SIXPN_API_URL to its address"
                ),
            )
        } else {
            fail(
                Failure::Unavailable,
                format!("talking to the sixpn server at {base} failed: {cause}"),
            )
        }
    }
}

/// rustls's certificate error without the Rust `Debug` names it carries
/// (`invalid peer certificate: UnknownIssuer`, `Other(OtherError(…))`) where a reader-facing
/// phrase exists.
fn readable_certificate_error(cause: &str) -> String {
    for (debug, phrase) in [
        (
            "UnknownIssuer",
            "it is signed by a CA this client does not trust",
        ),
        ("Expired", "it has expired"),
        ("NotValidYet", "it is not valid yet (check the clocks)"),
        ("Revoked", "it was revoked"),
        ("BadSignature", "its signature is wrong"),
    ] {
        if cause.contains(debug) {
            return phrase.to_owned();
        }
    }
    if cause.contains("Other(") {
        return "the certificate was refused".to_owned();
    }
    cause.to_owned()
}

/// The system's trust store (e.g. /etc/ssl/certs), besides the web roots built into the binary.
/// A store that cannot be read is no error: the bundled roots and `--cacert` still apply.
fn system_roots() -> Vec<reqwest::Certificate> {
    let loaded = rustls_native_certs::load_native_certs();
    loaded
        .certs
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
        .collect()
}

/// The CA certificates in a PEM file (one or more `BEGIN CERTIFICATE` blocks) or a DER file.
///
/// # Errors
/// One line naming the file: it cannot be read, or holds no certificate.
pub fn load_ca_file(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let usage = |why: String| fail(Failure::Usage, why);
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        usage(format!(
            "reading the CA certificate {shown} (--cacert or SIXPN_CA_CERT): {e}"
        ))
    })?;
    let is_pem = bytes
        .windows(b"-----BEGIN".len())
        .any(|w| w == b"-----BEGIN");
    let certificates = if is_pem {
        if !bytes
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(usage(format!(
                "the CA file {shown} holds no certificate (a PEM file with -----BEGIN CERTIFICATE----- blocks is expected; is it a key?)"
            )));
        }
        reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| {
            usage(format!(
                "the CA file {shown} is not valid PEM ({}); expected -----BEGIN CERTIFICATE----- blocks",
                root_cause(&e)
            ))
        })?
    } else {
        // DER: one certificate, an ASN.1 SEQUENCE. reqwest checks it only when the client is built.
        if bytes.first() != Some(&0x30) {
            return Err(usage(format!(
                "the CA file {shown} is neither PEM nor DER; expected -----BEGIN CERTIFICATE----- blocks"
            )));
        }
        vec![reqwest::Certificate::from_der(&bytes).map_err(|e| {
            usage(format!(
                "the CA file {shown} is neither PEM nor DER ({}); expected -----BEGIN CERTIFICATE----- blocks",
                root_cause(&e)
            ))
        })?]
    };
    if certificates.is_empty() {
        return Err(usage(format!(
            "the CA file {shown} holds no certificate; expected -----BEGIN CERTIFICATE----- blocks"
        )));
    }
    Ok(certificates)
}

/// The innermost error message, which says what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Where the base URL `value` came from, for messages: `SIXPN_API_URL` when that variable holds
/// it, else the `--api-url` flag (which wins over the variable).
fn api_url_source(value: &str) -> &'static str {
    match std::env::var("SIXPN_API_URL") {
        Ok(var) if var.trim() == value.trim() => "SIXPN_API_URL",
        _ => "--api-url",
    }
}

/// Parses the API base URL, making sure joins keep its path; errors name `source` (`--api-url`
/// or `SIXPN_API_URL`).
///
/// # Errors
/// When the text is not an `http://` or `https://` URL.
fn parse_base_url_from(text: &str, source: &str) -> anyhow::Result<Url> {
    let text = text.trim();
    let mut url = Url::parse(text).map_err(|e| {
        fail(
            Failure::Usage,
            format!("{source} {text:?} is not a URL ({e}); expected e.g. {DEFAULT_API_URL}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(
            Failure::Usage,
            format!("{source} {text:?} must start with http:// or https://"),
        ));
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
            let url = parse_base_url_from(text, "--api-url").unwrap();
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
        assert!(parse_base_url_from("127.0.0.1:4280", "--api-url").is_err());
        assert!(parse_base_url_from("ftp://x", "--api-url").is_err());
        assert!(parse_base_url_from("", "--api-url").is_err());
        let err = parse_base_url_from("notaurl", "--api-url").unwrap_err();
        assert!(
            err.to_string().starts_with("--api-url \"notaurl\""),
            "{err}"
        );
        let err = parse_base_url_from("ftp://x", "SIXPN_API_URL").unwrap_err();
        assert_eq!(super::super::exit::exit_code(&err), 2);
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let check_err = |name: &str, contents: Option<&[u8]>, expect: &str| {
            let path = dir.path().join(name);
            if let Some(contents) = contents {
                std::fs::write(&path, contents).unwrap();
            }
            let err = load_ca_file(&path).unwrap_err();
            let line = err.to_string();
            assert!(line.contains(expect), "{name}: {line}");
            assert!(line.contains(&path.display().to_string()), "{line}");
            assert_eq!(super::super::exit::exit_code(&err), 2);
        };
        check_err("missing.pem", None, "--cacert or SIXPN_CA_CERT");
        check_err("empty.pem", Some(b""), "neither PEM nor DER");
        check_err("text.pem", Some(b"hello\n"), "neither PEM nor DER");
        check_err(
            "key.pem",
            Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            "holds no certificate",
        );
        check_err(
            "broken.pem",
            Some(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            "not valid PEM",
        );

        let ca = rcgen::generate_simple_self_signed(vec!["sixpn.test".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        let two = format!("{}{}", ca.cert.pem(), ca.cert.pem());
        std::fs::write(&path, two).unwrap();
        assert_eq!(load_ca_file(&path).unwrap().len(), 2);
        let der = dir.path().join("ca.der");
        std::fs::write(&der, ca.cert.der()).unwrap();
        assert_eq!(load_ca_file(&der).unwrap().len(), 1);
        let credential = Credential {
            secret: "x".into(),
            source: "test".into(),
        };
        ApiClient::new("https://sixpn.test:4280", Some(&path), credential).unwrap();
    }
}
