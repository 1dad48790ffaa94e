//! `sixpn token attenuate` and `sixpn apikey attenuate` (issue 16): narrow a WireGuard token or an
//! API key offline, with no call to the server. The format and the signatures are in
//! `wireguard/derived.rs`; this only reads the parent from the environment, checks the limits'
//! form and prints the derived credential once, as `SIXPN_WIREGUARD_TOKEN=…` / `SIXPN_API_KEY=…`.

use std::time::Duration;

use anyhow::Context as _;

use super::exit::{Failure, fail};
use super::node::TOKEN_VARS;
use super::output::print;
use super::{ApiKeyAttenuateArgs, TokenAttenuateArgs};
use crate::model::{GroupName, OrgSlug, PeerName, now_unix};
use crate::wireguard::derived::{self, Caveat, Kind};

/// The first non-empty variable of `vars`.
fn parent_from_env(vars: &[&str], missing: &str) -> anyhow::Result<String> {
    vars.iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
        .ok_or_else(|| fail(Failure::Auth, missing))
}

fn expiry(expires: Option<Duration>) -> anyhow::Result<Option<Caveat>> {
    expires
        .map(|d| {
            let secs = i64::try_from(d.as_secs()).context("--expires is too long")?;
            Ok(Caveat::Expires(now_unix().saturating_add(secs)))
        })
        .transpose()
}

fn seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("the OS random source failed")?;
    Ok(seed)
}

fn derive(kind: Kind, parent: &str, caveats: &[Caveat]) -> anyhow::Result<String> {
    derived::attenuate(kind, parent, caveats, seed()?).map_err(|_| {
        fail(
            Failure::Usage,
            "the credential to narrow is not a sixpn one, or has been narrowed too often already",
        )
    })
}

/// `sixpn token attenuate`: prints `SIXPN_WIREGUARD_TOKEN=<derived>`.
///
/// # Errors
/// No token in the environment, or a limit that is no DNS label.
pub fn token(args: TokenAttenuateArgs) -> anyhow::Result<()> {
    let parent = parent_from_env(
        &TOKEN_VARS,
        "no WireGuard token to narrow: set SIXPN_WIREGUARD_TOKEN",
    )?;
    if !(parent.starts_with("sixpn_wg_") || derived::is_derived(Kind::Token, &parent)) {
        return Err(fail(
            Failure::Usage,
            "SIXPN_WIREGUARD_TOKEN is not a sixpn WireGuard token (sixpn_wg_… or sixpn_dt_…)",
        ));
    }
    let mut caveats = Vec::new();
    if let Some(name) = args.name {
        let name: PeerName = name
            .parse()
            .map_err(|e| fail(Failure::Usage, format!("--name {name:?}: {e}")))?;
        caveats.push(Caveat::Peer(name.to_string()));
    }
    if let Some(group) = args.group {
        let group: GroupName = group
            .parse()
            .map_err(|e| fail(Failure::Usage, format!("--group {group:?}: {e}")))?;
        caveats.push(Caveat::Group(group.to_string()));
    }
    caveats.extend(expiry(args.expires)?);
    let token = derive(Kind::Token, &parent, &caveats)?;
    print(&format!("SIXPN_WIREGUARD_TOKEN={token}\n"))
}

/// `sixpn apikey attenuate`: prints `SIXPN_API_KEY=<derived>`.
///
/// # Errors
/// No key in the environment, or an org that is no slug.
pub fn api_key(args: ApiKeyAttenuateArgs) -> anyhow::Result<()> {
    let parent = match args.api_key {
        Some(key) => key.trim().to_owned(),
        None => parent_from_env(
            &["SIXPN_API_KEY"],
            "no API key to narrow: set SIXPN_API_KEY",
        )?,
    };
    if !(parent.starts_with("sixpn_ak_") || derived::is_derived(Kind::ApiKey, &parent)) {
        return Err(fail(
            Failure::Usage,
            "SIXPN_API_KEY is not a sixpn API key (sixpn_ak_… or sixpn_dk_…); the bootstrap admin \
             token cannot be narrowed: create an API key first",
        ));
    }
    let mut caveats = Vec::new();
    if let Some(org) = args.org {
        let org: OrgSlug = org
            .parse()
            .map_err(|e| fail(Failure::Usage, format!("--org {org:?}: {e}")))?;
        caveats.push(Caveat::Org(org.to_string()));
    }
    if let Some(role) = args.role {
        let r = match role.as_str() {
            "viewer" => 0,
            "operator" => 1,
            _ => 2,
        };
        caveats.push(Caveat::Role(r));
    }
    caveats.extend(expiry(args.expires)?);
    let key = derive(Kind::ApiKey, &parent, &caveats)?;
    print(&format!("SIXPN_API_KEY={key}\n"))
}
