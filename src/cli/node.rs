//! Node commands: `token start` and `token update` register or re-key this machine as a peer and
//! write its wg-quick config; `keygen` prints a key pair.
//!
//! The private key is generated here and never leaves the machine: only the public key goes to
//! the server. The config file is created with mode 0600 from the first byte, and an existing
//! file is only ever replaced with `--force`, by an atomic rename. The file is claimed *before*
//! the server is called, so a name clash or an unwritable directory fails without registering a
//! peer whose private key would then be lost.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::answer::PeerAnswer;
use super::client::{ApiClient, Credential};
use super::exit::{Failure, fail, failure};
use super::output::{print, print_json};
use super::{EnsureArgs, NodeArgs, StartArgs, UpdateArgs};
use crate::api::types::{PeerCreate, PeerRekey};
use crate::model::{GroupName, PeerName, RegionCode};
use crate::wireguard::{PERSISTENT_KEEPALIVE, PrivateKey, WgQuickConfig, is_interface_name};

/// The environment variables a node token is read from, in order.
pub const TOKEN_VARS: [&str; 2] = ["SIXPN_WIREGUARD_TOKEN", "FLY_WIREGUARD_TOKEN"];

/// Runs `sixpn token start`: registers the peer and writes its config.
///
/// # Errors
/// One line: no token, bad arguments, file exists, server unreachable, or the server's error.
pub async fn start(args: StartArgs) -> anyhow::Result<()> {
    let client = node_client(&args.node)?;
    let group = optional_label::<GroupName>(args.group.as_deref(), "GROUP")?;
    let region = optional_label::<RegionCode>(args.region.as_deref(), "REGION")?;
    let output = Output::choose(args.file.as_deref(), &args.name, &args.node)?;
    let mut claim = output.claim(args.node.force)?;

    let private_key = PrivateKey::generate().map_err(random_error)?;
    let body = request_body(&PeerCreate {
        name: args.name.clone(),
        group,
        pubkey: private_key.public_key(),
        region: region.map(String::from),
        ephemeral: args.ephemeral,
    })?;
    let answer = client
        .send(Method::POST, "api/v3/wire_guard_peers", Some(&body))
        .await?;
    finish(
        Action::Registered,
        &args.name,
        &answer,
        &private_key,
        &mut claim,
        &args.node,
    )
}

/// Runs `sixpn token update`: re-keys the peer (its address stays) and writes the new config.
///
/// # Errors
/// One line: no token, file exists, server unreachable, or the server's error.
pub async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let client = node_client(&args.node)?;
    let output = Output::choose(args.file.as_deref(), &args.name, &args.node)?;
    let mut claim = output.claim(args.node.force)?;

    let private_key = PrivateKey::generate().map_err(random_error)?;
    let answer = rekey(&client, &args.name, &private_key).await?;
    finish(
        Action::Rekeyed,
        &args.name,
        &answer,
        &private_key,
        &mut claim,
        &args.node,
    )
}

/// `PUT /api/v3/wire_guard_peers/{name}` with the new public key.
async fn rekey(
    client: &ApiClient,
    name: &PeerName,
    private_key: &PrivateKey,
) -> anyhow::Result<Value> {
    // flyctl sends the empty fields too; the server ignores them.
    let body = request_body(&PeerRekey {
        pubkey: private_key.public_key(),
        name: Some(String::new()),
        group: Some(String::new()),
        region: Some(String::new()),
    })?;
    client
        .send(Method::PUT, &peer_path(name), Some(&body))
        .await
}

/// A request body of the API's own types (`api::types`) as JSON.
pub(super) fn request_body(request: &impl serde::Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(request).context("encoding the request body")
}

fn peer_path(name: &PeerName) -> String {
    format!("api/v3/wire_guard_peers/{name}")
}

/// Runs `sixpn token ensure`: leaves a peer that is in step with FILE alone, and otherwise
/// registers it (or re-keys it when the name exists) and replaces FILE. Safe to run in a loop.
///
/// "In step" means: the server holds the public key of FILE's private key, and the config
/// rendered from the server's answer equals FILE. When only the gateway's details changed, FILE
/// is rewritten with the same key; when the peer was deleted (404) or holds another key, a new
/// key pair is made and registered. A key that expires (`key_expires_at`, issue 23) is rotated
/// once less than a third of its lifetime is left ([`PeerAnswer::rotation_due`]), so a loop
/// keeps the peer served; otherwise a run changes nothing.
///
/// # Errors
/// One line: no token, bad arguments, server unreachable, or the server's error.
pub async fn ensure(args: EnsureArgs) -> anyhow::Result<()> {
    let name = if args.normalize_name {
        normalize_name(&args.name)?
    } else {
        args.name.parse::<PeerName>().map_err(|e| {
            fail(
                Failure::Usage,
                format!(
                    "NAME {:?} {e}; pass --normalize-name to turn it into a DNS label",
                    args.name
                ),
            )
        })?
    };
    let client = node_client(&args.node)?;
    let group = optional_label::<GroupName>(args.group.as_deref(), "GROUP")?;
    let region = optional_label::<RegionCode>(args.region.as_deref(), "REGION")?;
    let output = Output::choose(args.file.as_deref(), &name, &args.node)?;

    if let Output::File(path) = &output
        && let Some((text, existing)) = read_existing(path)
    {
        match client.send(Method::GET, &peer_path(&name), None).await {
            Ok(answer) => {
                let peer = PeerAnswer::from_json(&answer)?;
                if let Some(answered) = &peer.name
                    && *answered != name
                {
                    bail!(
                        "the server answered for peer {answered}, not {name}; refusing to write a config from it"
                    );
                }
                if peer.pubkey == Some(existing.private_key.public_key())
                    && peer.rotation_due(std::time::SystemTime::now())
                {
                    // In step, but the key expires soon (or did): rotate it now.
                    let mut claim = Output::File(path.clone()).claim(true)?;
                    let private_key = PrivateKey::generate().map_err(random_error)?;
                    let answer = rekey(&client, &name, &private_key).await?;
                    eprintln!(
                        "peer {name}'s key expires at {}; less than a third of its lifetime is left",
                        humantime::format_rfc3339_seconds(
                            peer.key_expires_at.unwrap_or(std::time::UNIX_EPOCH)
                        )
                    );
                    return finish(
                        Action::Rekeyed,
                        &name,
                        &answer,
                        &private_key,
                        &mut claim,
                        &args.node,
                    );
                }
                // A server that does not say which key it holds gets a fresh one each time.
                if peer.pubkey == Some(existing.private_key.public_key()) {
                    let config = node_config(&existing.private_key, &peer, &args.node);
                    let rendered = config.render()?;
                    if rendered == text {
                        eprintln!(
                            "peer {name} is in step with {}; nothing to do",
                            shown_path(path)
                        );
                        return Ok(());
                    }
                    let mut claim = Output::File(path.clone()).claim(true)?;
                    claim.commit(rendered.as_bytes())?;
                    eprintln!(
                        "peer {name} keeps its key; rewrote {} with the server's current details",
                        shown_path(path)
                    );
                    return Ok(());
                }
            }
            // Deleted (by an admin, or by a preStop hook of an earlier pod): register again.
            Err(e) if failure(&e) == Failure::NotFound => {}
            Err(e) => return Err(e),
        }
    }

    // With FILE `-` nothing keeps the private key between runs, so whether the server holds it
    // cannot be checked. A peer that exists is then left alone: re-keying it on every run would
    // cut off the live tunnel each time (issue 23). Only a missing peer is registered.
    if output == Output::Stdout {
        match client.send(Method::GET, &peer_path(&name), None).await {
            Ok(answer) => {
                let peer = PeerAnswer::from_json(&answer)?;
                if let Some(answered) = &peer.name
                    && *answered != name
                {
                    bail!("the server answered for peer {answered}, not {name}");
                }
                eprintln!(
                    "peer {name} exists (address {}); left alone, no config printed: with FILE - its \
                     key lives wherever the first run's config went. `sixpn token update {name} -` \
                     re-keys it and prints a new config",
                    peer.us
                );
                return Ok(());
            }
            Err(e) if failure(&e) == Failure::NotFound => {}
            Err(e) => return Err(e),
        }
    }

    // Always replace: ensure converges on a working file, whatever was there.
    let mut claim = output.claim(true)?;
    let private_key = PrivateKey::generate().map_err(random_error)?;
    let body = request_body(&PeerCreate {
        name: name.clone(),
        group,
        pubkey: private_key.public_key(),
        region: region.map(String::from),
        ephemeral: false,
    })?;
    let (action, answer) = match client
        .send(Method::POST, "api/v3/wire_guard_peers", Some(&body))
        .await
    {
        Ok(answer) => (Action::Registered, answer),
        Err(e) if failure(&e) == Failure::Conflict => {
            (Action::Rekeyed, rekey(&client, &name, &private_key).await?)
        }
        Err(e) => return Err(e),
    };
    finish(action, &name, &answer, &private_key, &mut claim, &args.node)
}

/// The file at `path` and its config, when it is a wg-quick file this module could have written.
fn read_existing(path: &Path) -> Option<(String, WgQuickConfig)> {
    let text = std::fs::read_to_string(path).ok()?;
    let config = WgQuickConfig::parse(&text).ok()?;
    Some((text, config))
}

/// Turns a machine's name into a peer name: ASCII letters lowercased, every other byte but
/// digits and `-` (dots, `_`, non-ASCII) made `-`, leading `-` dropped, cut to 63 bytes,
/// trailing `-` dropped. `Node-1.eu-west.compute.internal` → `node-1-eu-west-compute-internal`.
/// The deploy scripts do the same with `tr`, `sed` and `cut`.
///
/// # Errors
/// When nothing is left (the name held no letter or digit).
pub fn normalize_name(raw: &str) -> anyhow::Result<PeerName> {
    let mapped: String = raw
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b.to_ascii_lowercase())
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('-');
    let cut = &trimmed[..trimmed.len().min(63)];
    cut.trim_end_matches('-').parse().map_err(|_| {
        fail(
            Failure::Usage,
            format!("NAME {raw:?} holds no letter or digit to make a peer name of"),
        )
    })
}

/// Runs `sixpn keygen`.
///
/// # Errors
/// The OS random source failed, or stdout is gone.
pub fn keygen(json: bool) -> anyhow::Result<()> {
    let private_key = PrivateKey::generate().map_err(random_error)?;
    let public_key = private_key.public_key();
    if json {
        return print_json(&json!({
            "private_key": private_key.to_base64(),
            "public_key": public_key.to_base64(),
        }));
    }
    print(&format!(
        "private key: {}\npublic key:  {}\n",
        private_key.to_base64(),
        public_key
    ))
}

#[derive(Clone, Copy)]
enum Action {
    Registered,
    Rekeyed,
}

/// Checks the server's answer, renders the config, writes it and tells the user what happened.
fn finish(
    action: Action,
    name: &PeerName,
    answer: &Value,
    private_key: &PrivateKey,
    claim: &mut Claim,
    args: &NodeArgs,
) -> anyhow::Result<()> {
    let peer = PeerAnswer::from_json(answer)?;
    if let Some(stored) = &peer.pubkey
        && *stored != private_key.public_key()
    {
        bail!(
            "the server stored public key {stored} for peer {name}, not the one just generated ({}); run `sixpn token update {name}` to re-key it",
            private_key.public_key()
        );
    }
    if let Some(answered) = &peer.name
        && answered != name
    {
        bail!(
            "the server answered for peer {answered}, not {name}; refusing to write a config from it"
        );
    }
    let text = node_config(private_key, &peer, args).render()?;
    claim.commit(text.as_bytes()).with_context(|| {
        format!(
            "peer {name} is {} but its config could not be saved, so its private key is lost; run `sixpn token update {name}` to re-key it",
            match action {
                Action::Registered => "registered",
                Action::Rekeyed => "re-keyed",
            }
        )
    })?;
    if args.json {
        print_json(answer)?;
    }

    let what = match action {
        Action::Registered => format!(
            "registered peer {name} (group {}, region {}) at {}",
            peer.group.as_ref().map_or("-", |g| g.as_str()),
            peer.region.as_ref().map_or("-", |r| r.as_str()),
            peer.us
        ),
        Action::Rekeyed => format!("re-keyed peer {name}, address {} kept", peer.us),
    };
    match claim.target() {
        None => eprintln!("{what}"),
        Some(path) => {
            let shown = shown_path(path);
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let hint = if path.extension().and_then(|e| e.to_str()) == Some("conf")
                && is_interface_name(stem)
            {
                format!("bring it up with: sudo wg-quick up {shown}")
            } else {
                "wg-quick takes the interface name from the file name, so copy it to e.g. /etc/wireguard/wg0.conf before `wg-quick up`".to_string()
            };
            eprintln!("{what}; wrote {shown} (mode 0600); {hint}");
        }
    }
    Ok(())
}

/// The config a node writes: its own key, the checked answer, and its flags.
fn node_config(private_key: &PrivateKey, peer: &PeerAnswer, args: &NodeArgs) -> WgQuickConfig {
    WgQuickConfig {
        private_key: private_key.clone(),
        address: peer.us,
        dns: (!args.no_dns).then_some(IpAddr::V6(peer.dns)),
        mtu: args.mtu,
        gateway_key: peer.key,
        allowed_ips: peer.allowed_ips,
        endpoint: peer.endpoint.clone(),
        persistent_keepalive: Some(PERSISTENT_KEEPALIVE),
    }
}

fn node_client(args: &NodeArgs) -> anyhow::Result<ApiClient> {
    let secret = node_token(|var| std::env::var(var).ok())?;
    ApiClient::new(&args.api_url, args.cacert.as_deref(), secret)
}

/// The node's WireGuard token from the environment.
fn node_token(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Credential> {
    for var in TOKEN_VARS {
        if let Some(secret) = get(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            return Ok(Credential {
                secret,
                source: format!("${var}"),
            });
        }
    }
    Err(fail(
        Failure::Auth,
        "no WireGuard token: set SIXPN_WIREGUARD_TOKEN to a token from `sixpn token create`",
    ))
}

/// An optional positional label where `""` means "the server's default", as flyctl sends it.
fn optional_label<T>(text: Option<&str>, what: &str) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match text.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| {
            fail(
                Failure::Usage,
                format!("{what} {text:?} {e}; leave it out or pass \"\" for the default"),
            )
        }),
    }
}

/// Where the config goes.
#[derive(Debug, PartialEq)]
enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    fn choose(file: Option<&str>, name: &PeerName, args: &NodeArgs) -> anyhow::Result<Output> {
        let output = match file {
            Some("-" | "stdout") => Output::Stdout,
            Some("") => {
                return Err(fail(
                    Failure::Usage,
                    "FILE is empty; give a path, or - to print the config",
                ));
            }
            Some(path) => Output::File(PathBuf::from(path)),
            None => Output::File(PathBuf::from(format!("{name}.conf"))),
        };
        if output == Output::Stdout && args.json {
            return Err(fail(
                Failure::Usage,
                "--json and FILE - both want stdout; give the config a FILE, or leave out --json",
            ));
        }
        Ok(output)
    }

    /// Claims the destination before anything is registered: creates the file (mode 0600,
    /// failing if it exists) or, with `force`, a temporary file beside it that replaces it on
    /// commit.
    fn claim(self, force: bool) -> anyhow::Result<Claim> {
        let path = match self {
            Output::Stdout => {
                return Ok(Claim {
                    target: None,
                    created: None,
                    committed: false,
                });
            }
            Output::File(path) => path,
        };
        if path.is_dir() {
            bail!(
                "{} is a directory; give a file path for the config, e.g. {}",
                path.display(),
                path.join("wg0.conf").display()
            );
        }
        if force {
            let tmp = temp_path_beside(&path)?;
            let file = create_private(&tmp)
                .with_context(|| format!("creating a temporary file beside {}", path.display()))?;
            return Ok(Claim {
                target: Some(path),
                created: Some((tmp, file)),
                committed: false,
            });
        }
        match create_private(&path) {
            Ok(file) => Ok(Claim {
                target: Some(path.clone()),
                created: Some((path, file)),
                committed: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(fail(
                Failure::Conflict,
                format!(
                    "{} already exists; pass --force to replace it, or give another FILE (or - to print the config)",
                    path.display()
                ),
            )),
            Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
        }
    }
}

/// A destination claimed for the config. Dropped without [`commit`](Claim::commit), it removes
/// the file it created, so a failed registration leaves nothing behind.
#[derive(Debug)]
struct Claim {
    /// The path the user asked for; `None` for stdout.
    target: Option<PathBuf>,
    /// The file created for writing: the target itself, or a temporary file to rename over it.
    created: Option<(PathBuf, File)>,
    committed: bool,
}

impl Claim {
    fn target(&self) -> Option<&Path> {
        self.target.as_deref()
    }

    fn commit(&mut self, contents: &[u8]) -> anyhow::Result<()> {
        let (Some(target), Some((created_path, file))) = (&self.target, &mut self.created) else {
            return print(&String::from_utf8_lossy(contents));
        };
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", created_path.display()))?;
        if created_path != target {
            std::fs::rename(&*created_path, target).with_context(|| {
                format!(
                    "replacing {} with {}",
                    target.display(),
                    created_path.display()
                )
            })?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.committed
            && let Some((path, _)) = &self.created
        {
            // Best effort: the error being reported matters more than a leftover file.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates `path` with mode 0600, failing if anything is there already (no symlink following).
fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A fresh temporary name in `path`'s directory, so the final rename stays on one file system.
fn temp_path_beside(path: &Path) -> anyhow::Result<PathBuf> {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(random_error)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    Ok(path.with_file_name(format!(".{file_name}.{suffix}.tmp")))
}

fn random_error(e: getrandom::Error) -> anyhow::Error {
    anyhow!("reading the OS random source: {e}")
}

/// The path as a user would type it for wg-quick, which needs a `/` to take it for a file.
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains('/') {
        text
    } else {
        format!("./{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn node_args() -> NodeArgs {
        NodeArgs {
            force: false,
            no_dns: false,
            mtu: None,
            json: false,
            api_url: crate::cli::DEFAULT_API_URL.into(),
            cacert: None,
        }
    }

    #[test]
    fn token_comes_from_either_variable() {
        let err = node_token(|_| None).unwrap_err().to_string();
        assert_eq!(
            err,
            "no WireGuard token: set SIXPN_WIREGUARD_TOKEN to a token from `sixpn token create`"
        );
        let c = node_token(|v| (v == "FLY_WIREGUARD_TOKEN").then(|| " fly ".into())).unwrap();
        assert_eq!(
            (c.secret.as_str(), c.source.as_str()),
            ("fly", "$FLY_WIREGUARD_TOKEN")
        );
        let c = node_token(|v| Some(format!("{v}-value"))).unwrap();
        assert_eq!(c.secret, "SIXPN_WIREGUARD_TOKEN-value");
        let c = node_token(|v| {
            Some(
                if v == "SIXPN_WIREGUARD_TOKEN" {
                    ""
                } else {
                    "f"
                }
                .into(),
            )
        })
        .unwrap();
        assert_eq!(c.secret, "f");
    }

    #[test]
    fn output_choice() {
        let name: PeerName = "node-1".parse().unwrap();
        let args = node_args();
        assert_eq!(
            Output::choose(None, &name, &args).unwrap(),
            Output::File("node-1.conf".into())
        );
        assert_eq!(
            Output::choose(Some("-"), &name, &args).unwrap(),
            Output::Stdout
        );
        assert_eq!(
            Output::choose(Some("stdout"), &name, &args).unwrap(),
            Output::Stdout
        );
        assert!(Output::choose(Some(""), &name, &args).is_err());
        let json = NodeArgs {
            json: true,
            ..node_args()
        };
        assert!(Output::choose(Some("-"), &name, &json).is_err());
    }

    #[test]
    fn claim_creates_0600_and_refuses_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.conf");

        // An abandoned claim leaves nothing behind.
        drop(Output::File(path.clone()).claim(false).unwrap());
        assert!(!path.exists());

        let mut claim = Output::File(path.clone()).claim(false).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        claim.commit(b"first\n").unwrap();
        drop(claim);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");

        let err = Output::File(path.clone())
            .claim(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists; pass --force"), "{err}");

        // --force replaces by rename; the old file's wider mode does not carry over.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut claim = Output::File(path.clone()).claim(true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        claim.commit(b"second\n").unwrap();
        drop(claim);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        let err = Output::File(dir.path().to_owned())
            .claim(true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
        let err = Output::File(dir.path().to_owned())
            .claim(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");

        // An abandoned forced claim keeps the old file and removes its temporary file.
        drop(Output::File(path.clone()).claim(true).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn names_are_normalised_like_the_deploy_scripts() {
        let check = |raw: &str, expect: &str| {
            assert_eq!(normalize_name(raw).unwrap().as_str(), expect, "{raw:?}");
        };
        check("node-1", "node-1");
        check(
            "Node-1.eu-west.compute.internal",
            "node-1-eu-west-compute-internal",
        );
        check("ip_10_0_0_1", "ip-10-0-0-1");
        check("..a..", "a");
        check("nœud", "n--ud");
        check(&format!("{}-b", "a".repeat(62)), &"a".repeat(62));
        check(&"x".repeat(100), &"x".repeat(63));
        let err = normalize_name("...").unwrap_err();
        assert_eq!(crate::cli::exit::exit_code(&err), 2);
    }

    #[test]
    fn labels() {
        assert_eq!(optional_label::<GroupName>(None, "GROUP").unwrap(), None);
        assert_eq!(
            optional_label::<GroupName>(Some(""), "GROUP").unwrap(),
            None
        );
        assert_eq!(
            optional_label::<GroupName>(Some("Web"), "GROUP").unwrap(),
            Some("web".parse().unwrap())
        );
        let err = optional_label::<GroupName>(Some("a b"), "GROUP")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("GROUP \"a b\" may only contain"), "{err}");
    }
}
