//! The admin console at `/ui` (issue 19): server-rendered HTML over the same store, roles and
//! scopes as the admin API, with a little progressive JavaScript (`static/console.js`).
//!
//! - Sign-in exchanges an API key (or the bootstrap token) for a session ([`session`]).
//! - Every page shows only what the key's role and scope allow; a viewer gets no form that
//!   changes anything, and a POST needs an operator (`403` otherwise) and the session's CSRF
//!   token (`403` without it), checked before anything else.
//! - Pages: the orgs overview, an org page (peers, groups, tokens, a DNS look-up box answered
//!   from the published DNS snapshot), the org's audit log, and confirmation pages for deletes.
//! - Every answer carries a strict Content-Security-Policy: scripts and styles only from
//!   `/ui/static/`, no inline script, no framing.
//!
//! With `[api] admin_listen` the console is on the admin listener only (it is part of the admin
//! plane).

mod html;
mod picture;
mod session;
mod summary;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use self::html::{Frame, age, bytes, esc, page, pct};
use self::session::{NotSigned, Sessions, Signed};
use self::summary::Summaries;
use super::Shared;
use super::error::ApiError;
use crate::model::{GroupName, OrgSlug, PeerName, TokenName, now_unix};
use crate::store::{NewToken, Role};

/// A peer is shown live when its last handshake is at most this old (the default
/// `[groups] health_window`).
const LIVE_WINDOW: i64 = crate::config::DEFAULT_HEALTH_WINDOW.as_secs() as i64;

/// Peers per page of the org page.
const PEERS_PER_PAGE: usize = 100;

/// Groups the org page's groups section lists (by name); the rest are counted.
const MAX_GROUPS_SHOWN: usize = 200;

/// Audit entries per console page.
const AUDIT_PER_PAGE: u32 = 100;

/// The most audit entries one console page scans looking for matches of its filters.
const AUDIT_SCAN: u32 = 1000;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// Whether a request came over TLS; the API server marks such requests (`Secure` cookies).
#[derive(Debug, Clone, Copy)]
pub struct ViaTls;

/// The console's routes, each with its own session store.
pub(super) fn routes() -> Router<Shared> {
    let sessions = Arc::new(Sessions::default());
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
        .route("/ui/orgs/{org}", get(org_page))
        .route("/ui/orgs/{org}/audit", get(audit_page))
        .route("/ui/orgs/{org}/events", get(events))
        .route("/ui/orgs/{org}/tokens", axum::routing::post(mint))
        .route(
            "/ui/orgs/{org}/peers/{name}/delete",
            get(confirm_delete_peer).post(delete_peer),
        )
        .route(
            "/ui/orgs/{org}/tokens/{name}/delete",
            get(confirm_delete_token).post(delete_token),
        )
        .layer(axum::middleware::map_response(security_headers))
        .layer(Extension(sessions))
        .layer(Extension(Arc::new(Summaries::default())))
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn css(_: Conn) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js(_: Conn) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// The client's address and whether it came over TLS, as the API's server saw them (`None`
/// and `false` in in-process tests).
#[derive(Clone, Copy)]
struct Conn {
    client: Option<ConnectInfo<SocketAddr>>,
    tls: bool,
}

/// Every console handler takes a [`Conn`]: with `[ui] enabled = false` it answers every console
/// path exactly as a path that exists nowhere.
impl axum::extract::FromRequestParts<Shared> for Conn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        if !state.console {
            return Err(ApiError::NoRoute(parts.uri.path().to_owned()));
        }
        Ok(Conn {
            client: parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
            tls: parts.extensions.get::<ViaTls>().is_some(),
        })
    }
}

impl Conn {
    /// The address the audit log records.
    fn source(self) -> Option<std::net::IpAddr> {
        self.client.map(|ConnectInfo(a)| a.ip().to_canonical())
    }
}

type Client = Option<ConnectInfo<SocketAddr>>;
type Sess = Extension<Arc<Sessions>>;

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// `viewer of acme`.
fn who(signed: &Signed) -> String {
    format!(
        "{} ({} of {})",
        signed.auth.actor, signed.auth.role, signed.auth.scope
    )
}

/// A page in the signed-in frame.
fn signed_page(signed: &Signed, status: StatusCode, title: &str, body: &str) -> Response {
    let who = who(signed);
    html(
        status,
        page(
            &Frame {
                title,
                who: Some(&who),
                csrf: Some(&signed.csrf),
            },
            body,
        ),
    )
}

/// An error page: the API's status and message.
fn error_page(signed: &Signed, err: &ApiError) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back to the orgs</a></p>",
        err.status().as_u16(),
        esc(&err.message())
    );
    signed_page(signed, err.status(), "Error", &body)
}

/// The request's session, or the answer for a request without one: GETs go to the sign-in
/// page, POSTs are `401`.
async fn require_session(
    state: &Shared,
    sessions: &Sessions,
    headers: &HeaderMap,
    client: Client,
    post: bool,
) -> Result<Signed, Response> {
    match session::signed_in(state, sessions, headers, client).await {
        Ok(signed) => Ok(signed),
        Err(NotSigned::None) if !post => Err(see_other("/ui/login")),
        Err(NotSigned::Ended) if !post => Err(see_other("/ui/login?ended=1")),
        Err(NotSigned::None | NotSigned::Ended) => Err(login_page(
            StatusCode::UNAUTHORIZED,
            Some("Your session has ended. Sign in again."),
        )),
        Err(NotSigned::Error(err)) => Err(login_page(err.status(), Some(&err.message()))),
    }
}

/// A POST's session, CSRF token checked: `403` when it is missing or wrong.
async fn require_post(
    state: &Shared,
    sessions: &Sessions,
    headers: &HeaderMap,
    client: Client,
    form: &HashMap<String, String>,
) -> Result<Signed, Response> {
    let signed = require_session(state, sessions, headers, client, true).await?;
    if !session::csrf_ok(&signed, form.get("csrf").map(String::as_str)) {
        let body = format!(
            "<h1>403</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back to the orgs</a></p>",
            esc(
                "This form is not from this session (its CSRF token is missing or wrong). \
                 Reload the page and try again."
            )
        );
        return Err(signed_page(
            &signed,
            StatusCode::FORBIDDEN,
            "Refused",
            &body,
        ));
    }
    Ok(signed)
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(message) = message {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            esc(message)
        );
    }
    body.push_str(
        "<form method=\"post\" action=\"/ui/login\" class=\"stack\">\
         <label for=\"key\">API key (<code>sixpn_ak_…</code>) or admin token</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The key stays on the server; the browser holds a session cookie \
         for at most 12 hours.</p>",
    );
    html(
        status,
        page(
            &Frame {
                title: "Sign in",
                who: None,
                csrf: None,
            },
            &body,
        ),
    )
}

async fn login_form(_: Conn, Query(query): Query<HashMap<String, String>>) -> Response {
    let message = query
        .contains_key("ended")
        .then_some("Your session has ended (signed out, expired, or its key was revoked).");
    login_page(StatusCode::OK, message)
}

async fn login(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let key = form
        .ok()
        .and_then(|Form(f)| f.get("key").cloned())
        .unwrap_or_default();
    if key.trim().is_empty() {
        return login_page(StatusCode::BAD_REQUEST, Some("Enter an API key."));
    }
    match session::authenticate(&state, &key, conn.client).await {
        Ok(auth) => {
            let (id, _) = sessions.start(key.trim());
            tracing::info!(by = %auth.actor, "console sign-in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/ui".to_owned()),
                    (header::SET_COOKIE, session::set_cookie(&id, conn.tls)),
                ],
            )
                .into_response()
        }
        Err(err) => {
            let message = match err.status().as_u16() {
                401 => "That key was not accepted: it is wrong, revoked or expired.".to_owned(),
                _ => err.message(),
            };
            login_page(err.status(), Some(&message))
        }
    }
}

async fn logout(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let signed = match require_post(&state, &sessions, &headers, conn.client, &form).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    sessions.end(&signed.id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/login".to_owned()),
            (header::SET_COOKIE, session::clear_cookie(conn.tls)),
        ],
    )
        .into_response()
}

/// Counts of one org for the overview.
struct OrgCounts {
    peers: usize,
    live: usize,
    groups: usize,
    tokens: usize,
    last_change: Option<i64>,
}

/// An org's counts for the overview, without reading its peers: the counter the database keeps,
/// the cached group summary ([`summary`]), the tokens and the newest audit entry.
async fn org_counts(
    state: &Shared,
    summaries: &Summaries,
    org: &OrgSlug,
) -> Result<OrgCounts, ApiError> {
    let peers = state.store.org_peer_count(org).await?;
    let summary = summaries.get(&state.store, org, LIVE_WINDOW).await?;
    let tokens = state.store.list_tokens(org).await?;
    let audit = state.store.audit_log(org, None, 1).await?;
    Ok(OrgCounts {
        peers: usize::try_from(peers).unwrap_or(usize::MAX),
        live: usize::try_from(summary.live()).unwrap_or(usize::MAX),
        groups: summary.n_groups(),
        tokens: tokens.len(),
        last_change: audit.entries.first().map(|e| e.at),
    })
}

async fn overview(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    Extension(summaries): Extension<Arc<Summaries>>,
    conn: Conn,
    headers: HeaderMap,
) -> Response {
    let signed = match require_session(&state, &sessions, &headers, conn.client, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let orgs = match state.store.list_orgs().await {
        Ok(orgs) => orgs,
        Err(err) => return error_page(&signed, &err.into()),
    };
    let now = now_unix();
    let mut body = String::from(
        "<h1>Orgs</h1><table><thead><tr><th scope=\"col\">Org</th><th scope=\"col\">Prefix</th>\
         <th scope=\"col\">Peers</th><th scope=\"col\">Live</th><th scope=\"col\">Groups</th>\
         <th scope=\"col\">Tokens</th><th scope=\"col\">Last change</th></tr></thead><tbody>",
    );
    for org in orgs.iter().filter(|o| signed.auth.scope.covers(&o.slug)) {
        let counts = match org_counts(&state, &summaries, &org.slug).await {
            Ok(c) => c,
            // Deleted meanwhile: leave it out.
            Err(_) => continue,
        };
        let slug = org.slug.as_str();
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/orgs/{}\">{}</a></td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(slug),
            esc(slug),
            esc(&org.prefix.to_string()),
            counts.peers,
            counts.live,
            counts.groups,
            counts.tokens,
            counts
                .last_change
                .map_or_else(|| "—".to_owned(), |at| format!("{} ago", age(at, now)))
        );
    }
    body.push_str("</tbody></table>");
    signed_page(&signed, StatusCode::OK, "Orgs", &body)
}

/// What `name` (`<group>._g.internal` or `<peer>._peer.internal`) answers in `org`'s view of the
/// published DNS snapshot.
fn dns_lookup(state: &Shared, org: &OrgSlug, name: &str) -> Result<Vec<String>, String> {
    let Some(handle) = &state.snapshot else {
        return Err("this server has no DNS snapshot".to_owned());
    };
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let ok_shape = matches!(labels.as_slice(), [l, "_g" | "_peer", "internal"]
        if crate::model::parse_label(l).is_ok());
    if !ok_shape {
        return Err(format!(
            "{name:?} is not <group>._g.internal or <peer>._peer.internal"
        ));
    }
    let wire: Vec<&[u8]> = labels.iter().map(|l| l.as_bytes()).collect();
    let wire = crate::snapshot::name::wire_from_labels(&wire);
    let snapshot = handle.load();
    let view = snapshot
        .view_of(org)
        .ok_or_else(|| "this org is not in the published snapshot yet".to_owned())?;
    Ok(snapshot
        .get(view, &wire)
        .map(|hit| {
            hit.addrs()
                .iter()
                .map(|a| std::net::Ipv6Addr::from(*a).to_string())
                .collect()
        })
        .unwrap_or_default())
}

fn can_write(signed: &Signed) -> bool {
    signed.auth.role >= Role::Operator
}

/// Where a shared render of an org page takes the session's CSRF token.
const CSRF_SLOT: &str = "\u{0}csrf\u{0}";

/// [`hidden_csrf`] with [`CSRF_SLOT`] for the token.
fn hidden_csrf_slot() -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{CSRF_SLOT}\">")
}

fn hidden_csrf(signed: &Signed) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&signed.csrf)
    )
}

async fn org_page(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    Extension(summaries): Extension<Arc<Summaries>>,
    conn: Conn,
    headers: HeaderMap,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let signed = match require_session(&state, &sessions, &headers, conn.client, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let org = match signed.auth.org(&org, Role::Viewer) {
        Ok(org) => org,
        Err(err) => return error_page(&signed, &err),
    };
    // Open consoles fetch the page again after each change: those that ask for the same view
    // (org, query, role) at the same generation share one render, made by the first of them
    // (the session's CSRF token is put in afterwards).
    let key = summary::render_key(&org, state.published.borrow().0, &query, can_write(&signed));
    let rendered = summaries
        .renders
        .cell(key)
        .get_or_try_init(|| org_body(&state, &summaries, &signed, &org, &query))
        .await
        .cloned();
    match rendered {
        Ok(body) => signed_page(
            &signed,
            StatusCode::OK,
            org.as_str(),
            &body.replace(CSRF_SLOT, &esc(&signed.csrf)),
        ),
        Err(res) => res,
    }
}

/// The body of an org page, with [`CSRF_SLOT`] for the session's CSRF token.
#[allow(clippy::too_many_lines)]
async fn org_body(
    state: &Shared,
    summaries: &Summaries,
    signed: &Signed,
    org: &OrgSlug,
    query: &HashMap<String, String>,
) -> Result<Arc<String>, Response> {
    let org = org.clone();
    // Bounded at any size: one keyset page of peers (a name-prefix search is a range of the
    // same index), the org's counter, and the cached group summary; never the whole org.
    let q = query.get("q").map(String::as_str).unwrap_or("").trim();
    let after = query
        .get("after")
        .map(String::as_str)
        .filter(|a| !a.is_empty());
    let loaded = async {
        let total = state.store.org_peer_count(&org).await?;
        let page = peers_page(state, &org, q, after).await?;
        let summary = summaries.get(&state.store, &org, LIVE_WINDOW).await?;
        let shown = shown_groups(&summary.groups);
        let members = super::metrics::timed(
            "group_members",
            state.store.group_members(&org, &shown, summary::FIRST),
        )
        .await?;
        let tokens = state.store.list_tokens(&org).await?;
        Ok::<_, ApiError>((total, page, summary, members, tokens))
    }
    .await;
    let (total, (page, next), summary, members, tokens) = match loaded {
        Ok(x) => x,
        Err(err) => return Err(error_page(signed, &err)),
    };
    let statuses = match &state.gateway {
        Some(gw) => gw.peer_statuses().await.ok(),
        None => None,
    };
    let now = now_unix();
    let slug = esc(org.as_str());
    let write = can_write(signed);
    let mut body = format!(
        "<h1>Org <code>{slug}</code></h1><nav class=\"tabs\">\
        <a href=\"#peers\">Peers</a> <a href=\"#groups\">Groups</a> <a href=\"#tokens\">Tokens</a> \
        <a href=\"#dns\">DNS look-up</a> <a href=\"#network\">Network</a>"
    );
    if write {
        let _ = write!(body, " <a href=\"/ui/orgs/{slug}/audit\">Audit log</a>");
    }
    body.push_str("</nav>");

    // DNS look-up.
    let lookup = query.get("lookup").map(String::as_str).unwrap_or("");
    let _ = write!(
        body,
        "<section id=\"dns\"><h2>DNS look-up</h2>\
         <form method=\"get\" action=\"/ui/orgs/{slug}#dns\" class=\"row\">\
         <label for=\"lookup\">Name</label>\
         <input id=\"lookup\" name=\"lookup\" value=\"{}\" placeholder=\"web._g.internal\">\
         <button type=\"submit\">Look up</button></form>",
        esc(lookup)
    );
    if !lookup.is_empty() {
        match dns_lookup(state, &org, lookup) {
            Ok(addrs) if addrs.is_empty() => {
                let _ = write!(
                    body,
                    "<p class=\"result\" id=\"dns-answer\"><code>{}</code>: no AAAA (NXDOMAIN or no data) in this org now</p>",
                    esc(lookup)
                );
            }
            Ok(addrs) => {
                let _ = write!(
                    body,
                    "<p class=\"result\" id=\"dns-answer\"><code>{}</code> AAAA:</p><ul>",
                    esc(lookup)
                );
                for a in addrs {
                    let _ = write!(body, "<li><code>{}</code></li>", esc(&a));
                }
                body.push_str("</ul>");
            }
            Err(msg) => {
                let _ = write!(
                    body,
                    "<p class=\"error\" role=\"alert\" id=\"dns-answer\">{}</p>",
                    esc(&msg)
                );
            }
        }
    }
    body.push_str("</section>");

    // Peers: searched (by name prefix) and paged (by name) on the server.
    let _ = write!(
        body,
        "<section id=\"peers\" data-events=\"/ui/orgs/{slug}\"><h2>Peers ({})</h2>\
         <form method=\"get\" action=\"/ui/orgs/{slug}#peers\" class=\"row\">\
         <label for=\"q\">Search (name starts with)</label><input id=\"q\" name=\"q\" value=\"{}\">\
         <button type=\"submit\">Search</button></form>\
         <table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Group</th>\
         <th scope=\"col\">Region</th><th scope=\"col\">Address</th><th scope=\"col\">Ephemeral</th>\
         <th scope=\"col\">Last handshake</th><th scope=\"col\">State</th><th scope=\"col\">rx / tx</th>\
         <th scope=\"col\">Token</th>{}</tr></thead><tbody>",
        total,
        esc(q),
        if write {
            "<th scope=\"col\">Actions</th>"
        } else {
            ""
        }
    );
    for listed in &page {
        let p = &listed.peer;
        let (at, eph) = (listed.last_seen_at, listed.ephemeral);
        let live = at.is_some_and(|at| now - at <= LIVE_WINDOW);
        let traffic = statuses
            .as_ref()
            .and_then(|s| s.get(p.pubkey.as_bytes()))
            .map_or_else(
                || "—".to_owned(),
                |s| format!("{} / {}", bytes(s.rx_bytes), bytes(s.tx_bytes)),
            );
        let name = esc(p.name.as_str());
        let _ = write!(
            body,
            "<tr class=\"{}\"><td>{name}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            if live { "live" } else { "idle" },
            esc(p.group.as_str()),
            esc(p.region.as_str()),
            p.address,
            if eph { "yes" } else { "no" },
            at.map_or_else(|| "never".to_owned(), |at| format!("{} ago", age(at, now))),
            if live { "live" } else { "idle" },
            esc(&traffic),
            esc(p.token.as_str()),
        );
        if write {
            let _ = write!(
                body,
                "<td><a class=\"danger\" href=\"/ui/orgs/{slug}/peers/{name}/delete\">Delete…</a></td>"
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table>");
    if after.is_some() || next.is_some() {
        body.push_str("<p class=\"pages\">");
        if after.is_some() {
            let _ = write!(
                body,
                "<a href=\"/ui/orgs/{slug}?q={}#peers\">First page</a>",
                pct(q)
            );
        }
        if let Some(next) = &next {
            let _ = write!(
                body,
                " <a href=\"/ui/orgs/{slug}?q={}&amp;after={}#peers\">Next</a>",
                pct(q),
                pct(next)
            );
        }
        body.push_str("</p>");
    }
    body.push_str("</section>");

    // Groups, live members highlighted: sizes from the cached summary merged over regions, the
    // names read now (a group whose members are all gone is left out).
    let named = picture::Members::new(&members, |at| at.is_some_and(|at| now - at <= LIVE_WINDOW));
    let mut groups: BTreeMap<&str, GroupRow<'_>> = BTreeMap::new();
    for g in &summary.groups {
        let entry = groups.entry(g.group.as_str()).or_default();
        entry.0 += g.members;
        entry.1 += g.live;
    }
    let n_groups = groups.len();
    groups.retain(|group, entry| {
        entry.2 = named.of(group).map(|(n, _, l)| (n, l)).collect();
        !entry.2.is_empty()
    });
    body.push_str(
        "<section id=\"groups\"><h2>Groups</h2><table><thead><tr><th scope=\"col\">Group</th>\
         <th scope=\"col\">Live / members</th><th scope=\"col\">Members</th></tr></thead><tbody>",
    );
    for (group, (members, n_live, first)) in groups.iter().take(MAX_GROUPS_SHOWN) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{n_live} / {members}</td><td>",
            esc(group),
        );
        let shown = first.len().min(summary::FIRST as usize);
        for (i, (name, live)) in first.iter().take(shown).enumerate() {
            if i > 0 {
                body.push_str(", ");
            }
            if *live {
                let _ = write!(body, "<strong class=\"live\">{}</strong>", esc(name));
            } else {
                body.push_str(&esc(name));
            }
        }
        if *members > shown as u64 {
            let _ = write!(body, " … and {} more", *members - shown as u64);
        }
        body.push_str("</td></tr>");
    }
    if n_groups > MAX_GROUPS_SHOWN {
        let _ = write!(
            body,
            "<tr><td colspan=\"3\">… and {} more groups</td></tr>",
            n_groups - MAX_GROUPS_SHOWN
        );
    }
    body.push_str("</tbody></table></section>");

    // Tokens, never their secrets.
    body.push_str(
        "<section id=\"tokens\"><h2>Tokens</h2><table><thead><tr><th scope=\"col\">Name</th>\
         <th scope=\"col\">Group</th><th scope=\"col\">Live peers</th><th scope=\"col\">Max peers</th>\
         <th scope=\"col\">Ephemeral</th><th scope=\"col\">Expires</th><th scope=\"col\">Last used</th>",
    );
    if write {
        body.push_str("<th scope=\"col\">Actions</th>");
    }
    body.push_str("</tr></thead><tbody>");
    for t in &tokens {
        let name = esc(t.name.as_str());
        let _ = write!(
            body,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            t.group
                .as_ref()
                .map_or("any".to_owned(), |g| esc(g.as_str())),
            t.live_peers,
            t.max_peers.map_or("—".to_owned(), |n| n.to_string()),
            if t.ephemeral { "yes" } else { "no" },
            t.expires_at.map_or("never".to_owned(), super::rfc3339),
            t.last_used_at
                .map_or("never".to_owned(), |at| format!("{} ago", age(at, now))),
        );
        if write {
            let _ = write!(
                body,
                "<td><a class=\"danger\" href=\"/ui/orgs/{slug}/tokens/{name}/delete\">Delete…</a></td>"
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table>");
    if write {
        let _ = write!(
            body,
            "<h3>Mint a token</h3><form method=\"post\" action=\"/ui/orgs/{slug}/tokens\" class=\"stack\" id=\"mint\">{}\
             <label for=\"t-name\">Name</label><input id=\"t-name\" name=\"name\" required>\
             <label for=\"t-group\">Group (optional)</label><input id=\"t-group\" name=\"group\">\
             <label for=\"t-exp\">Expires in (optional, e.g. 30d)</label><input id=\"t-exp\" name=\"expires_in\">\
             <label for=\"t-max\">Max peers (optional)</label><input id=\"t-max\" name=\"max_peers\" inputmode=\"numeric\">\
             <label><input type=\"checkbox\" name=\"ephemeral\" value=\"1\"> Ephemeral peers</label>\
             <button type=\"submit\">Mint</button></form>",
            hidden_csrf_slot()
        );
    }
    body.push_str("</section>");

    // The picture: regions → gateways → groups → peers.
    let _ = write!(
        body,
        "<section id=\"network\"><h2>Network</h2><div class=\"picture\">{}</div></section>",
        picture::render(&state.regions, &summary.groups, &named)
    );
    Ok(Arc::new(body))
}

/// The groups an org page names members of: the first [`MAX_GROUPS_SHOWN`] by name (the groups
/// section), and each region's first [`picture::MAX_GROUPS`] (the picture).
fn shown_groups(groups: &[crate::store::GroupSummary]) -> Vec<&str> {
    let mut names: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let all: std::collections::BTreeSet<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    names.extend(all.into_iter().take(MAX_GROUPS_SHOWN));
    // `groups` is ordered by region, then group.
    let mut region: Option<&str> = None;
    let mut n = 0;
    for g in groups {
        if region != Some(g.region.as_str()) {
            region = Some(g.region.as_str());
            n = 0;
        }
        if n < picture::MAX_GROUPS {
            names.insert(g.group.as_str());
            n += 1;
        }
    }
    names.into_iter().collect()
}

/// A row of the groups section: members, live members, and the first members (name, live).
type GroupRow<'a> = (u64, u64, Vec<(&'a str, bool)>);

/// One page of the org's peers by name after `after`, those whose name starts with `q` (all
/// when empty), and the cursor of the next page: a range of the `(org_id, name)` index, O(page).
async fn peers_page(
    state: &Shared,
    org: &OrgSlug,
    q: &str,
    after: Option<&str>,
) -> Result<(Vec<crate::store::ListedPeer>, Option<String>), ApiError> {
    // A name is a DNS label: a prefix with other characters matches nothing.
    if !q
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Ok((Vec::new(), None));
    }
    // Without a cursor a search starts just before `q`: its last character one lower, then a
    // character above every label character, so `q` itself is the first name that can follow.
    let start = match (after, q.as_bytes().split_last()) {
        (Some(after), _) => after.to_owned(),
        (None, Some((last, head))) => {
            let mut s = String::from_utf8_lossy(head).into_owned();
            s.push(char::from(last - 1));
            s.push('\u{7f}');
            s
        }
        (None, None) => String::new(),
    };
    let filter = crate::store::PeerFilter::default();
    let page = super::metrics::timed(
        "list_peers_page",
        state
            .store
            .list_peers_page(org, &filter, Some(&start), PEERS_PER_PAGE as u32),
    )
    .await?;
    let mut items = page.items;
    let before = items.len();
    items.retain(|p| p.peer.name.as_str().starts_with(q));
    // Past the prefix's range: no page follows.
    let next = if items.len() == before {
        page.next
    } else {
        None
    };
    Ok((items, next))
}

/// Reads the console's mint form into the admin API's request.
fn read_mint_form(form: &HashMap<String, String>) -> Result<(NewToken, bool), ApiError> {
    let field = |k: &str| form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let name_text = field("name").ok_or(ApiError::InvalidField {
        field: "name",
        reason: "is required".to_owned(),
    })?;
    let name: TokenName = name_text
        .parse()
        .map_err(|err| ApiError::not_a_label("name", name_text, err))?;
    let group = match field("group") {
        Some(g) => Some(
            g.parse::<GroupName>()
                .map_err(|err| ApiError::not_a_label("group", g, err))?,
        ),
        None => None,
    };
    let expires_at = match field("expires_in") {
        Some(text) => {
            let secs = super::admin::parse_expires_in(&serde_json::Value::String(text.to_owned()))?
                .as_secs();
            Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(|s| now_unix().checked_add(s))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "expires_in",
                        reason: "is too far in the future".to_owned(),
                    })?,
            )
        }
        None => None,
    };
    let max_peers = match field("max_peers") {
        Some(text) => Some(
            text.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::InvalidField {
                    field: "max_peers",
                    reason: format!("must be a whole number of at least 1, got {text:?}"),
                })?,
        ),
        None => None,
    };
    let ephemeral = field("ephemeral").is_some();
    Ok((
        NewToken {
            name,
            group,
            expires_at,
            max_peers,
            // The org's `[peers] key_expiry` applies; the console's form sets none of its own.
            key_expiry: None,
        },
        ephemeral,
    ))
}

async fn mint(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path(org): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let source = conn.source();
    let signed = match require_post(&state, &sessions, &headers, conn.client, &form).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let org = match signed.auth.org(&org, Role::Operator) {
        Ok(org) => org,
        Err(err) => return error_page(&signed, &err),
    };
    let (new, ephemeral) = match read_mint_form(&form) {
        Ok(x) => x,
        Err(err) => return error_page(&signed, &err),
    };
    let minted = signed
        .auth
        .store(&state.store, source)
        .mint_token_opts(&org, new, ephemeral)
        .await;
    let (info, secret) = match minted {
        Ok(x) => x,
        Err(err) => return error_page(&signed, &err.into()),
    };
    tracing::info!(org = %info.org, token = %info.name, by = %signed.auth.actor, "token minted in the console");
    state.limiters.known_tokens.insert(secret.expose());
    let slug = esc(org.as_str());
    let body = format!(
        "<h1>Token <code>{}</code> minted</h1>\
         <p>This is the only time its secret is shown. Copy it now.</p>\
         <p><code id=\"secret\" class=\"secret\">{}</code> \
         <button type=\"button\" data-copy=\"secret\">Copy</button></p>\
         <p><a href=\"/ui/orgs/{slug}#tokens\">Back to {slug}</a></p>",
        esc(info.name.as_str()),
        esc(secret.expose())
    );
    signed_page(&signed, StatusCode::CREATED, "Token minted", &body)
}

/// The confirmation page of a delete.
async fn confirm(
    state: Shared,
    sessions: Arc<Sessions>,
    client: Client,
    headers: HeaderMap,
    org: String,
    what: &str,
    name: String,
) -> Response {
    let signed = match require_session(&state, &sessions, &headers, client, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let org = match signed.auth.org(&org, Role::Operator) {
        Ok(org) => org,
        Err(err) => return error_page(&signed, &err),
    };
    let (slug, n) = (esc(org.as_str()), esc(&name));
    let (noun, path, extra) = if what == "peer" {
        ("peer", "peers", "Its DNS name disappears at once.")
    } else {
        (
            "token",
            "tokens",
            "Every peer it created is deleted with it.",
        )
    };
    let body = format!(
        "<h1>Delete {noun} <code>{n}</code>?</h1><p>{extra}</p>\
         <form method=\"post\" action=\"/ui/orgs/{slug}/{path}/{n}/delete\" class=\"row\">{}\
         <button type=\"submit\" class=\"danger\">Delete {noun} {n}</button> \
         <a href=\"/ui/orgs/{slug}\">Cancel</a></form>",
        hidden_csrf(&signed)
    );
    signed_page(&signed, StatusCode::OK, "Confirm", &body)
}

async fn confirm_delete_peer(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
) -> Response {
    confirm(state, sessions, conn.client, headers, org, "peer", name).await
}

async fn confirm_delete_token(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
) -> Response {
    confirm(state, sessions, conn.client, headers, org, "token", name).await
}

async fn delete_peer(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let source = conn.source();
    let signed = match require_post(&state, &sessions, &headers, conn.client, &form).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let done = async {
        let org = signed.auth.org(&org, Role::Operator)?;
        let name: PeerName = name
            .parse()
            .map_err(|err| ApiError::not_a_label("name", &name, err))?;
        let generation = signed
            .auth
            .store(&state.store, source)
            .delete_peer(&org, &name)
            .await?;
        tracing::info!(%org, peer = %name, by = %signed.auth.actor, "peer deleted in the console");
        state.wait_published(generation).await;
        Ok::<_, ApiError>(org)
    }
    .await;
    match done {
        Ok(org) => see_other(&format!("/ui/orgs/{}#peers", org.as_str())),
        Err(err) => error_page(&signed, &err),
    }
}

async fn delete_token(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let source = conn.source();
    let signed = match require_post(&state, &sessions, &headers, conn.client, &form).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let done = async {
        let org = signed.auth.org(&org, Role::Operator)?;
        let name: TokenName = name
            .parse()
            .map_err(|err| ApiError::not_a_label("name", &name, err))?;
        let (n, generation) = signed
            .auth
            .store(&state.store, source)
            .delete_token(&org, &name)
            .await?;
        tracing::info!(%org, token = %name, deleted_peers = n, by = %signed.auth.actor, "token deleted in the console");
        state.wait_published(generation).await;
        Ok::<_, ApiError>(org)
    }
    .await;
    match done {
        Ok(org) => see_other(&format!("/ui/orgs/{}#tokens", org.as_str())),
        Err(err) => error_page(&signed, &err),
    }
}

async fn audit_page(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let signed = match require_session(&state, &sessions, &headers, conn.client, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let org = match signed.auth.org(&org, Role::Operator) {
        Ok(org) => org,
        Err(err) => return error_page(&signed, &err),
    };
    let filter = |k: &str| {
        query
            .get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (action, actor, target) = (filter("action"), filter("actor"), filter("target"));
    let mut before = query
        .get("before")
        .and_then(|b| b.parse::<i64>().ok())
        .filter(|b| *b > 0);
    // Scan pages until one console page is full of matches, at most AUDIT_SCAN entries.
    let mut shown = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    loop {
        let mut full = false;
        let page = match state.store.audit_log(&org, before, AUDIT_PER_PAGE).await {
            Ok(p) => p,
            Err(err) => return error_page(&signed, &err.into()),
        };
        for e in page.entries {
            scanned += 1;
            next = Some(e.id);
            let matches = action.as_ref().is_none_or(|a| e.action == *a)
                && actor.as_ref().is_none_or(|a| e.actor.contains(a.as_str()))
                && target
                    .as_ref()
                    .is_none_or(|t| e.target.contains(t.as_str()));
            if matches {
                shown.push(e);
                if shown.len() as u32 >= AUDIT_PER_PAGE {
                    full = true;
                    break;
                }
            }
        }
        if full {
            break;
        }
        match page.next {
            Some(n) if scanned < AUDIT_SCAN => {
                before = Some(n);
            }
            Some(_) => break,
            None => {
                next = None;
                break;
            }
        }
    }
    let slug = esc(org.as_str());
    let val = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let mut body = format!(
        "<h1>Audit log of <code>{slug}</code></h1><p><a href=\"/ui/orgs/{slug}\">Back to {slug}</a></p>\
         <form method=\"get\" action=\"/ui/orgs/{slug}/audit\" class=\"row\">\
         <label for=\"f-action\">Action</label><input id=\"f-action\" name=\"action\" value=\"{}\" placeholder=\"peer_deleted\">\
         <label for=\"f-actor\">Actor</label><input id=\"f-actor\" name=\"actor\" value=\"{}\">\
         <label for=\"f-target\">Target</label><input id=\"f-target\" name=\"target\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>\
         <table><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Actor</th><th scope=\"col\">Source</th>\
         <th scope=\"col\">Action</th><th scope=\"col\">Target</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
        val(&action),
        val(&actor),
        val(&target)
    );
    for e in &shown {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&super::rfc3339(e.at)),
            esc(&e.actor),
            esc(e.source.as_deref().unwrap_or("—")),
            esc(&e.action),
            esc(&e.target),
            esc(e.detail.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table>");
    if shown.is_empty() {
        body.push_str("<p>No matching entries.</p>");
    }
    if let Some(next) = next {
        let mut link = format!("/ui/orgs/{}/audit?before={next}", org.as_str());
        for (k, v) in [("action", &action), ("actor", &actor), ("target", &target)] {
            if let Some(v) = v {
                let _ = write!(link, "&{k}={}", pct(v));
            }
        }
        let _ = write!(
            body,
            "<p class=\"pages\"><a href=\"{}\">Older entries</a></p>",
            esc(&link)
        );
    }
    signed_page(&signed, StatusCode::OK, "Audit log", &body)
}

/// How often a live feed authenticates its session's key again.
const FEED_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// What a live feed follows.
struct Feed {
    published: tokio::sync::watch::Receiver<crate::model::Generation>,
    state: Shared,
    sessions: Arc<Sessions>,
    headers: HeaderMap,
    client: Client,
    checked: std::time::Instant,
    first: bool,
}

/// `GET /ui/orgs/{org}/events`: server-sent events, one `generation` event each time the DNS
/// snapshot publishes a new generation (the same feed writes wait on), so an open org page
/// refreshes its lists when a peer appears or goes. The session's key is authenticated again
/// every [`FEED_RECHECK`]; the feed ends when it no longer is.
async fn events(
    State(state): State<Shared>,
    Extension(sessions): Sess,
    conn: Conn,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let signed = match require_session(&state, &sessions, &headers, conn.client, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    if let Err(err) = signed.auth.org(&org, Role::Viewer) {
        return error_page(&signed, &err);
    }
    let feed = Feed {
        published: state.published.clone(),
        state: Arc::clone(&state),
        sessions,
        headers,
        client: conn.client,
        checked: std::time::Instant::now(),
        first: true,
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        let event = |g: crate::model::Generation| {
            Ok::<_, std::convert::Infallible>(
                Event::default().event("generation").data(g.0.to_string()),
            )
        };
        if f.first {
            f.first = false;
            let g = *f.published.borrow_and_update();
            return Some((event(g), f));
        }
        loop {
            let left = FEED_RECHECK.saturating_sub(f.checked.elapsed());
            match tokio::time::timeout(left, f.published.changed()).await {
                Ok(Ok(())) => {
                    let g = *f.published.borrow_and_update();
                    return Some((event(g), f));
                }
                // The publisher has stopped: the server is shutting down.
                Ok(Err(_)) => return None,
                Err(_) => {
                    if session::signed_in(&f.state, &f.sessions, &f.headers, f.client)
                        .await
                        .is_err()
                    {
                        return None;
                    }
                    f.checked = std::time::Instant::now();
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
