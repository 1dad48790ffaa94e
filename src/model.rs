//! Shared domain types: names, orgs, peers, tokens and the change generation.
//!
//! Everything here is plain data that `store/`, `api/`, `dns/`, `snapshot/`, `gateway/` and `cli/`
//! share. Names are parsed once (parse, don't validate): a [`PeerName`] is always a lowercase DNS
//! label, so nothing downstream checks it again.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::wireguard::PublicKey;

/// A monotonically increasing number bumped by every committed write that changes peers.
///
/// The DNS snapshot and the gateway record the generation they were built from, so a caller can
/// wait until the change it made is visible.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than 63 bytes.
    #[error("must be at most 63 characters long")]
    TooLong,
    /// The string holds a character outside `a-z`, `0-9` and `-`.
    #[error("may only contain letters, digits and '-'")]
    BadChar,
    /// The string starts or ends with `-`.
    #[error("must not start or end with '-'")]
    Hyphen,
}

/// Checks that `s` is a DNS label (RFC 1123 host label) and returns it lowercased.
pub fn parse_label(s: &str) -> Result<String, LabelError> {
    if s.is_empty() {
        return Err(LabelError::Empty);
    }
    if s.len() > 63 {
        return Err(LabelError::TooLong);
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(LabelError::BadChar);
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(LabelError::Hyphen);
    }
    Ok(s.to_ascii_lowercase())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The label, lowercase.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = LabelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_label(s).map($name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = LabelError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

label_type!(
    /// A peer's name: a lowercase DNS label, unique (case-insensitively) in its org.
    PeerName
);
label_type!(
    /// A group's name: a lowercase DNS label. `<group>._g.internal` resolves to all its peers.
    GroupName
);
label_type!(
    /// An org's slug, e.g. `personal` or `acme`: a lowercase DNS label.
    OrgSlug
);
label_type!(
    /// A WireGuard token's name, unique among the live tokens of its org.
    TokenName
);
label_type!(
    /// A gateway region code, e.g. `ams` or `local`.
    RegionCode
);

/// The slug of the org that exists from first start.
pub const DEFAULT_ORG: &str = "personal";

/// A tenant with its own private IPv6 /48.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// The org's slug.
    pub slug: OrgSlug,
    /// The org's private /48, carved from the configured ULA prefix.
    pub prefix: Ipv6Net,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

impl Org {
    /// The org's resolver address, `<prefix>::3`, served by the gateway's DNS.
    pub fn dns_addr(&self) -> Ipv6Addr {
        prefix_host(self.prefix, 3)
    }

    /// The gateway's own address in the org, `<prefix>::1`.
    pub fn gateway_addr(&self) -> Ipv6Addr {
        prefix_host(self.prefix, 1)
    }
}

/// `prefix` with `host` added to its network address.
pub fn prefix_host(prefix: Ipv6Net, host: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix.network()) | host)
}

/// A named WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The org the peer lives in.
    pub org: OrgSlug,
    /// The peer's name, unique in its org.
    pub name: PeerName,
    /// The peer's group.
    pub group: GroupName,
    /// The gateway region the peer connects to.
    pub region: RegionCode,
    /// The peer's WireGuard public key; unique among live peers.
    pub pubkey: PublicKey,
    /// The peer's address in the org's /48; never changes while the peer exists.
    pub address: Ipv6Addr,
    /// The name of the token that created the peer.
    pub token: TokenName,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last change (creation or re-key), unix seconds.
    pub updated_at: i64,
    /// When the peer's key expires, unix seconds: from then on it is no longer served (DNS,
    /// gateways) until a re-key. `None`: never (issue 23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expires_at: Option<i64>,
}

impl Peer {
    /// Whether the peer's key has expired at `now` (unix seconds).
    pub fn key_expired(&self, now: i64) -> bool {
        self.key_expires_at.is_some_and(|t| t <= now)
    }
}

/// What an admin sees of a WireGuard token. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The org the token belongs to.
    pub org: OrgSlug,
    /// The token's name, unique among the org's live tokens.
    pub name: TokenName,
    /// The group the token is confined to, if any.
    pub group: Option<GroupName>,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Cap on the number of live peers the token may have.
    pub max_peers: Option<u32>,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Last successful use, unix seconds.
    pub last_used_at: Option<i64>,
    /// Number of live peers created with this token.
    pub live_peers: u64,
    /// Every peer the token creates is ephemeral (removed once idle).
    pub ephemeral: bool,
    /// Key lifetime, seconds, of the peers the token creates or re-keys; `None`: the org-wide
    /// default (`[peers] key_expiry`), if any.
    #[serde(default)]
    pub key_expiry: Option<u64>,
}

impl TokenInfo {
    /// Whether the token has expired at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A gateway region as the API hands it to nodes, resolved from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Region code.
    pub code: RegionCode,
    /// The gateway's public host (IPv4 address or hostname), what flyctl calls `them`.
    pub endpoint_host: String,
    /// The gateway's WireGuard UDP port.
    pub port: u16,
    /// The gateway's WireGuard public key.
    pub public_key: PublicKey,
    /// Whether peers that name no region land here.
    pub default: bool,
}

impl Region {
    /// `host:port`, with brackets around an IPv6 host.
    pub fn endpoint(&self) -> String {
        if self.endpoint_host.contains(':') {
            format!("[{}]:{}", self.endpoint_host, self.port)
        } else {
            format!("{}:{}", self.endpoint_host, self.port)
        }
    }
}

/// What the gateway's WireGuard interface reports about one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Last completed handshake, unix seconds; `None` before the first.
    pub last_handshake: Option<i64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// The peer's current outer endpoint, if known.
    pub endpoint: Option<String>,
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, LabelError>) {
        assert_eq!(
            parse_label(input).as_deref().map_err(Clone::clone),
            expect,
            "{input:?}"
        );
    }

    #[test]
    fn labels() {
        check("node-1", Ok("node-1"));
        check("NoDe-1", Ok("node-1"));
        check("a", Ok("a"));
        check(&"a".repeat(63), Ok(&"a".repeat(63)));
        check(&"a".repeat(64), Err(LabelError::TooLong));
        check("", Err(LabelError::Empty));
        check("-a", Err(LabelError::Hyphen));
        check("a-", Err(LabelError::Hyphen));
        check("a.b", Err(LabelError::BadChar));
        check("a_b", Err(LabelError::BadChar));
        check("ä", Err(LabelError::BadChar));
    }

    #[test]
    fn org_addresses() {
        let org = Org {
            slug: "personal".parse().unwrap(),
            prefix: "fdaa:1:2::/48".parse().unwrap(),
            created_at: 0,
        };
        assert_eq!(org.dns_addr(), "fdaa:1:2::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            org.gateway_addr(),
            "fdaa:1:2::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}

/// One thing a committed write changed, as DNS and the gateway need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A new org (its /48 becomes a DNS view and gets addresses on the gateway).
    OrgCreated(Org),
    /// A peer was created, or re-keyed (same org and name, same address, new key): the full row
    /// as it is now.
    PeerUpserted(Peer),
    /// A peer was deleted (alone, or with its token): the row as it was.
    PeerRemoved(Peer),
}

/// Everything one committed write transaction changed, with the generation it committed as.
///
/// Generations are consecutive: change set `g + 1` follows `g`, and a consumer that applied every
/// set up to `g` and then applies `g + 1` holds exactly the state of generation `g + 1`. A write
/// that changes nothing a consumer sees (a token minted) makes no change set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The generation the write committed as.
    pub generation: Generation,
    /// What it changed, in order.
    pub changes: Vec<Change>,
}
