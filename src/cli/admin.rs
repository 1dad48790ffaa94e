//! Admin commands: `org create|list|delete`, `token create|list|show|delete`,
//! `peer list|show|delete`.
//!
//! They talk only to the server's admin API (`/api/v1`), authenticated with an API key
//! (`--api-key`, `$SIXPN_API_KEY`), else `$SIXPN_ADMIN_TOKEN` or the admin-token file the server wrote into its data directory. They never print a token
//! secret except the one `token create` mints, once.

use std::io::{BufRead, IsTerminal as _};
use std::path::Path;

use super::client::{ApiClient, Credential};
use super::exit::{Failure, fail};
use super::node::request_body;
use super::output::{fields, print, print_typed, table, text};
use super::pages::{Listing, print_all};
use super::{
    AdminArgs, AuditArgs, OrgCommand, OrgListArgs, PeerCommand, PeerListArgs, TokenCreateArgs,
    TokenDeleteArgs, TokenShowArgs,
};
use crate::api::types::{
    AuditPageJson, DeletedJson, MintedToken, OrgCreate, OrgDeletedJson, OrgJson, PeerJson,
    PeerWithStatus, TokenCreate, TokenDeletedJson, TokenJson,
};
use crate::model::{OrgSlug, TokenName};
use anyhow::bail;
use reqwest::Method;

/// The name of the file in the data directory where the server keeps a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Runs `sixpn org …`.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn org(command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::Create { slug, admin, json } => {
            let client = admin_client(&admin)?;
            let body = request_body(&OrgCreate { slug })?;
            let org: OrgJson = client
                .send_typed(Method::POST, "api/v1/orgs", Some(&body))
                .await?;
            if json.json {
                return print_typed(&org);
            }
            print(&format!(
                "created org {}: prefix {}, resolver {}\n",
                text(Some(&org.slug), "-"),
                text(Some(&org.prefix), "-"),
                text(Some(&org.dns), "-"),
            ))
        }
        OrgCommand::List { admin, json, page } => {
            let client = admin_client(&admin)?;
            let row = |o: &OrgJson| {
                vec![
                    text(Some(&o.slug), "-"),
                    text(Some(&o.prefix), "-"),
                    text(Some(&o.dns), "-"),
                    text(Some(&o.created_at), "-"),
                ]
            };
            let listing = Listing {
                headers: &["SLUG", "PREFIX", "DNS", "CREATED"],
                row: &row,
            };
            print_all(&client, "api/v1/orgs", &page, json.json, listing).await?;
            Ok(())
        }
        OrgCommand::Delete {
            slug,
            cascade,
            yes,
            admin,
            json,
        } => {
            let client = admin_client(&admin)?;
            if !yes.yes {
                if !asks(false) {
                    return Err(fail(
                        Failure::Usage,
                        format!(
                            "refusing to delete org {slug} without confirmation: there is no \
                             terminal to ask on; pass --yes"
                        ),
                    ));
                }
                confirm(
                    &format!(
                        "delete org {slug}{}? Its /48 and audit log go with it.",
                        if cascade {
                            " with every token and peer in it"
                        } else {
                            ""
                        }
                    ),
                    &mut std::io::stdin().lock(),
                )?;
            }
            let mut path = format!("api/v1/orgs/{slug}");
            if cascade {
                path.push_str("?cascade=true");
            }
            let answer: OrgDeletedJson = client.send_typed(Method::DELETE, &path, None).await?;
            if json.json {
                return print_typed(&answer);
            }
            print(&format!(
                "deleted org {slug} (prefix {}) with {} peer(s) and {} token(s); {} API key(s) revoked\n",
                text(Some(&answer.prefix), "-"),
                answer.deleted_peers,
                answer.deleted_tokens,
                answer.revoked_api_keys
            ))
        }
    }
}

/// Runs `sixpn token create`: prints the secret once, as `SIXPN_WIREGUARD_TOKEN=…`.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let TokenCreateArgs {
        name,
        group,
        expires,
        max_peers,
        ephemeral,
        key_expiry,
        org,
        admin,
        json,
    } = args;
    let client = admin_client(&admin)?;
    let body = request_body(&TokenCreate {
        name: name.clone(),
        group,
        expires_in: expires.map(|d| d.as_secs()),
        max_peers,
        ephemeral,
        key_expiry: key_expiry.map(|d| d.as_secs()),
    })?;
    let minted: MintedToken = client
        .send_typed(Method::POST, &tokens_path(&org.org), Some(&body))
        .await?;
    let secret = minted.token.as_str();
    // The secret is printed as a shell assignment: it must be one plain word.
    if secret.is_empty()
        || !secret
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\'' && c != '"')
    {
        bail!(
            "the server at {} minted token {name} but its secret is not one plain word; delete it with `sixpn token delete {name}` and report this",
            client.base_url()
        );
    }
    if max_peers.is_none() {
        // Bounded by default (issue 23): say so once, on stderr, where --json output is not.
        eprintln!(
            "note: token {name} is uncapped: it may create peers up to the org's limit \
             ([orgs] max_peers); pass --max-peers N to cap it"
        );
    }
    if json.json {
        return print_typed(&minted);
    }
    print(&format!("SIXPN_WIREGUARD_TOKEN={secret}\n"))?;
    eprintln!(
        "minted {}token {name} for org {} (group {}, expires {}, max peers {}, key expiry {}); the secret above is shown only this once",
        if ephemeral { "ephemeral " } else { "" },
        org.org,
        text(minted.info.group.as_deref(), "any"),
        text(minted.info.expires_at.as_deref(), "never"),
        minted
            .info
            .max_peers
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        minted.info.key_expiry.map_or_else(
            || "the org default".to_owned(),
            |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
        ),
    );
    Ok(())
}

/// Runs `sixpn token list`: never shows a secret (the server has none to show).
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn token_list(args: OrgListArgs) -> anyhow::Result<()> {
    let client = admin_client(&args.admin)?;
    let row = |t: &TokenJson| {
        vec![
            text(Some(&t.name), "-"),
            text(t.group.as_deref(), "-"),
            text(t.expires_at.as_deref(), "never"),
            text(Some(&t.created_at), "-"),
            text(t.last_used_at.as_deref(), "never"),
            t.live_peers.to_string(),
            t.max_peers
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            t.key_expiry.map_or_else(
                || "-".to_owned(),
                |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
            ),
            if t.expired { "expired" } else { "active" }.to_owned(),
        ]
    };
    let listing = Listing {
        headers: &[
            "NAME",
            "GROUP",
            "EXPIRES",
            "CREATED",
            "LAST USED",
            "LIVE PEERS",
            "MAX PEERS",
            "KEY EXPIRY",
            "STATUS",
        ],
        row: &row,
    };
    let path = tokens_path(&args.org.org);
    let n = print_all(&client, &path, &args.page, args.json.json, listing).await?;
    if n == 0 && !args.json.json {
        eprintln!(
            "no tokens in org {}; mint one with `sixpn token create --name NAME`",
            args.org.org
        );
    }
    Ok(())
}

/// Runs `sixpn token show`: one token, never its secret (the server has none to show).
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error (404: no such token).
pub async fn token_show(args: TokenShowArgs) -> anyhow::Result<()> {
    let client = admin_client(&args.admin)?;
    let token: TokenJson = client
        .get(&format!("{}/{}", tokens_path(&args.org.org), args.name))
        .await?;
    if args.json.json {
        return print_typed(&token);
    }
    print(&fields(&[
        ("name", text(Some(&token.name), "-")),
        ("org", text(Some(&token.org), "-")),
        ("group", text(token.group.as_deref(), "any")),
        ("expires", text(token.expires_at.as_deref(), "never")),
        (
            "max peers",
            token.max_peers.map_or_else(
                || "uncapped (the org's limit applies)".to_owned(),
                |n| n.to_string(),
            ),
        ),
        ("live peers", token.live_peers.to_string()),
        (
            "ephemeral",
            if token.ephemeral { "yes" } else { "no" }.to_owned(),
        ),
        ("created", text(Some(&token.created_at), "-")),
        ("last used", text(token.last_used_at.as_deref(), "never")),
    ]))
}

/// Runs `sixpn audit`: one page of the org's audit log, newest first.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let client = admin_client(&args.admin)?;
    let mut path = format!("/api/v1/orgs/{}/audit?limit={}", args.org.org, args.limit);
    if let Some(before) = args.before {
        path.push_str(&format!("&before={before}"));
    }
    let page: AuditPageJson = client.get(&path).await?;
    if args.json.json {
        return print_typed(&page);
    }
    if page.entries.is_empty() {
        eprintln!("no changes logged in org {}", args.org.org);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                text(Some(&e.at), "-"),
                text(Some(&e.actor), "-"),
                text(e.source.as_deref(), "-"),
                text(Some(&e.action), "-"),
                text(Some(&e.target), "-"),
                text(e.detail.as_deref(), ""),
            ]
        })
        .collect();
    print(&table(
        &[
            "ID", "TIME", "ACTOR", "SOURCE", "ACTION", "TARGET", "DETAIL",
        ],
        &rows,
    ))?;
    if let Some(next) = page.next {
        eprintln!(
            "older entries: sixpn audit --org {} --before {next}",
            args.org.org
        );
    }
    Ok(())
}

/// Runs `sixpn token delete`: the token and every peer it created.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn token_delete(args: TokenDeleteArgs) -> anyhow::Result<()> {
    let client = admin_client(&args.admin)?;
    if asks(args.yes.yes) {
        // Say what goes with it; a failing list just leaves the count out of the question.
        let live = find_token(&client, &args.org.org, &args.name)
            .await
            .map(|t| format!(" and its {} live peer(s)", t.live_peers));
        confirm(
            &format!(
                "delete token {} of org {}{}? Every peer it created goes with it.",
                args.name,
                args.org.org,
                live.unwrap_or_default()
            ),
            &mut std::io::stdin().lock(),
        )?;
    }
    let path = format!("{}/{}", tokens_path(&args.org.org), args.name);
    let answer: TokenDeletedJson = client.send_typed(Method::DELETE, &path, None).await?;
    if args.json.json {
        return print_typed(&answer);
    }
    print(&format!(
        "deleted token {} and its {} peer(s)\n",
        args.name, answer.deleted_peers
    ))
}

/// Runs `sixpn peer …`.
///
/// # Errors
/// One line: no credential, server unreachable, or the server's error.
pub async fn peer(command: PeerCommand) -> anyhow::Result<()> {
    match command {
        PeerCommand::List(args) => peer_list(args).await,
        PeerCommand::Show {
            name,
            org,
            admin,
            json,
        } => {
            let client = admin_client(&admin)?;
            let peer: PeerWithStatus = client
                .get(&format!("{}/{name}", peers_path(&org.org)))
                .await?;
            if json.json {
                return print_typed(&peer);
            }
            print(&fields(&show_fields(&peer)))
        }
        PeerCommand::Delete {
            name,
            yes,
            org,
            admin,
            json,
        } => {
            let client = admin_client(&admin)?;
            if asks(yes.yes) {
                confirm(
                    &format!("delete peer {name} of org {}?", org.org),
                    &mut std::io::stdin().lock(),
                )?;
            }
            let answer: DeletedJson = client
                .send_typed(
                    Method::DELETE,
                    &format!("{}/{name}", peers_path(&org.org)),
                    None,
                )
                .await?;
            if json.json {
                return print_typed(&answer);
            }
            print(&format!("deleted peer {name}\n"))
        }
    }
}

/// Runs `sixpn peer list`: page after page, filtered on the server.
async fn peer_list(args: PeerListArgs) -> anyhow::Result<()> {
    let PeerListArgs {
        list:
            OrgListArgs {
                org,
                admin,
                json,
                page,
            },
        group,
        region,
        token,
        live,
        idle,
    } = args;
    let client = admin_client(&admin)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(group) = &group {
        query.append_pair("group", group.as_str());
    }
    if let Some(region) = &region {
        query.append_pair("region", region.as_str());
    }
    if let Some(token) = &token {
        query.append_pair("token", token.as_str());
    }
    if live || idle {
        query.append_pair("live", if live { "true" } else { "false" });
    }
    let query = query.finish();
    let mut path = peers_path(&org.org);
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let row = |p: &PeerJson| {
        let mut row: Vec<String> = [
            &p.name,
            &p.group,
            &p.region,
            &p.address,
            &p.token,
            &p.pubkey,
            &p.updated_at,
        ]
        .iter()
        .map(|s| text(Some(s), "-"))
        .collect();
        row.push(text(p.key_expires_at.as_deref(), "never"));
        row.push(if p.expired { "expired" } else { "active" }.to_owned());
        row
    };
    let listing = Listing {
        headers: &[
            "NAME",
            "GROUP",
            "REGION",
            "ADDRESS",
            "TOKEN",
            "PUBLIC KEY",
            "UPDATED",
            "KEY EXPIRES",
            "STATUS",
        ],
        row: &row,
    };
    let n = print_all(&client, &path, &page, json.json, listing).await?;
    if n == 0 && !json.json {
        if query.is_empty() {
            eprintln!(
                "no peers in org {}; a node joins with `sixpn token start NAME`",
                org.org
            );
        } else {
            eprintln!("no peers in org {} match", org.org);
        }
    }
    Ok(())
}

/// The live token `name` of `org`, looked for page by page; `None` when it is not there or the
/// list fails.
async fn find_token(client: &ApiClient, org: &OrgSlug, name: &TokenName) -> Option<TokenJson> {
    let mut after: Option<String> = None;
    loop {
        let mut path = format!(
            "{}?limit={}",
            tokens_path(org),
            crate::api::paging::LIST_MAX_LIMIT
        );
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (tokens, next) = client.get_page::<TokenJson>(&path).await.ok()?;
        if let Some(token) = tokens.into_iter().find(|t| t.name == name.as_str()) {
            return Some(token);
        }
        match next {
            Some(next)
                if after.as_deref() != Some(next.as_str()) && next.as_str() < name.as_str() =>
            {
                after = Some(next);
            }
            _ => return None,
        }
    }
}

/// Whether a destructive command asks first: only when a person can see the question and answer
/// it (stdin and stderr are both terminals), and not with `--yes`. A script, or a command whose
/// stderr goes to a log, is taken to mean it: it could not answer anyway.
pub(super) fn asks(yes: bool) -> bool {
    !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `question` on stderr and reads the answer from `input`: `y` or `yes` goes on.
///
/// # Errors
/// Any other answer, or none: "cancelled" (exit 1).
pub(super) fn confirm(question: &str, input: &mut impl BufRead) -> anyhow::Result<()> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(fail(
            Failure::Other,
            "cancelled; nothing was deleted (pass --yes to skip the question)",
        ))
    }
}

/// The lines of `peer show`, the gateway's status included when the server knows it.
fn show_fields(peer: &PeerWithStatus) -> Vec<(&'static str, String)> {
    let p = &peer.peer;
    let mut lines = vec![
        ("name", text(Some(&p.name), "-")),
        ("org", text(Some(&p.org), "-")),
        ("group", text(Some(&p.group), "-")),
        ("region", text(Some(&p.region), "-")),
        ("address", text(Some(&p.address), "-")),
        ("public key", text(Some(&p.pubkey), "-")),
        ("token", text(Some(&p.token), "-")),
        ("created", text(Some(&p.created_at), "-")),
        ("updated", text(Some(&p.updated_at), "-")),
        ("key expires", text(p.key_expires_at.as_deref(), "never")),
        (
            "status",
            if p.expired {
                "expired: not served until re-keyed".to_owned()
            } else {
                "active".to_owned()
            },
        ),
    ];
    match &peer.status {
        Some(status) => {
            lines.push((
                "last handshake",
                text(status.last_handshake.as_deref(), "never"),
            ));
            lines.push(("received", format!("{} B", status.rx_bytes)));
            lines.push(("sent", format!("{} B", status.tx_bytes)));
            lines.push(("endpoint", text(status.endpoint.as_deref(), "-")));
        }
        None => lines.push((
            "gateway status",
            "unknown (no gateway reports on this peer)".into(),
        )),
    }
    lines
}

fn tokens_path(org: &OrgSlug) -> String {
    format!("api/v1/orgs/{org}/wireguard_tokens")
}

fn peers_path(org: &OrgSlug) -> String {
    format!("api/v1/orgs/{org}/peers")
}

/// A client of the admin API with the caller's credential: an API key (`--api-key`,
/// `$SIXPN_API_KEY`) when given, else the bootstrap admin token.
pub(super) fn admin_client(args: &AdminArgs) -> anyhow::Result<ApiClient> {
    if let Some(key) = args
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        let credential = Credential {
            secret: key.to_owned(),
            source: "the API key ($SIXPN_API_KEY or --api-key)".into(),
        };
        return ApiClient::new(&args.api_url, args.cacert.as_deref(), credential);
    }
    let credential = admin_credential(
        std::env::var("SIXPN_ADMIN_TOKEN").ok().as_deref(),
        &args.data_dir,
    )?;
    ApiClient::new(&args.api_url, args.cacert.as_deref(), credential)
}

/// The admin credential: `$SIXPN_ADMIN_TOKEN` when set, else the server's admin-token file in
/// `data_dir`.
fn admin_credential(env_token: Option<&str>, data_dir: &Path) -> anyhow::Result<Credential> {
    if let Some(secret) = env_token.map(str::trim).filter(|s| !s.is_empty()) {
        return Ok(Credential {
            secret: secret.to_string(),
            source: "$SIXPN_ADMIN_TOKEN".into(),
        });
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Credential {
            secret: text.trim().to_string(),
            source: path.display().to_string(),
        }),
        Ok(_) => Err(fail(
            Failure::Auth,
            format!(
                "the admin token file {} is empty; set SIXPN_ADMIN_TOKEN to the server's admin token",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(
            Failure::Auth,
            format!(
                "no admin credential: set SIXPN_ADMIN_TOKEN, or point --data-dir (or SIXPN_DATA_DIR) at the server's data directory (there is no {})",
                path.display()
            ),
        )),
        Err(e) => bail!(
            "reading the admin token file {}: {e}; set SIXPN_ADMIN_TOKEN instead",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_prefers_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = admin_credential(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("set SIXPN_ADMIN_TOKEN"), "{err}");
        assert!(err.contains("admin-token"), "{err}");

        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "\n").unwrap();
        let err = admin_credential(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");

        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "from-file\n").unwrap();
        let c = admin_credential(Some("  "), dir.path()).unwrap();
        assert_eq!(c.secret, "from-file");
        assert!(c.source.ends_with("admin-token"));
        let c = admin_credential(Some("from-env"), dir.path()).unwrap();
        assert_eq!(c.secret, "from-env");
        assert_eq!(c.source, "$SIXPN_ADMIN_TOKEN");
    }

    #[test]
    fn confirmation_takes_only_yes() {
        for answer in ["y\n", "Y\n", " yes \n"] {
            confirm("go?", &mut answer.as_bytes()).unwrap();
        }
        for answer in ["\n", "n\n", "no\n", "yep\n", ""] {
            let err = confirm("go?", &mut answer.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with("cancelled"),
                "{answer:?}: {err}"
            );
        }
        assert!(!asks(true), "--yes never asks");
    }

    #[test]
    fn show_includes_status_when_present() {
        let answer = serde_json::json!({
            "org": "personal", "name": "node-1", "group": "web", "region": "local",
            "pubkey": "x", "address": "fdaa::2", "token": "k8s",
            "created_at": "2026-11-25T16:00:00Z", "updated_at": "2026-11-25T16:00:00Z",
            "ephemeral": false, "last_seen_at": null, "status": null,
        });
        let mut peer: PeerWithStatus = serde_json::from_value(answer.clone()).unwrap();
        let text = fields(&show_fields(&peer));
        assert!(text.contains("gateway status:"), "{text}");
        let mut answer = answer;
        answer["status"] = serde_json::json!({"last_handshake": "2026-11-25T16:00:00Z", "rx_bytes": 10, "tx_bytes": 20, "endpoint": null});
        peer = serde_json::from_value(answer).unwrap();
        let text = fields(&show_fields(&peer));
        assert!(
            text.contains("last handshake:  2026-11-25T16:00:00Z"),
            "{text}"
        );
        assert!(text.contains("received:        10 B"), "{text}");
        assert!(text.contains("sent:            20 B"), "{text}");
    }
}
