//! wg-quick configuration files: rendering the file a node brings its tunnel up with, and reading
//! one back.
//!
//! The file holds the node's private key, so this module only produces text; writing it with mode
//! 0600 is the caller's job (`cli/`). It never touches the network.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;

use super::{KeyError, PrivateKey, PublicKey};

/// The keepalive every node sends, in seconds: short enough to keep NAT and conntrack mappings
/// open, so the gateway can always reach the node.
pub const PERSISTENT_KEEPALIVE: u16 = 15;

/// The UDP port a gateway listens on when its endpoint names none.
pub const DEFAULT_WIREGUARD_PORT: u16 = 51820;

/// A wg-quick file for one node with one peer, the gateway of its region.
#[derive(Debug, Clone)]
pub struct WgQuickConfig {
    /// The node's private key (`[Interface] PrivateKey`).
    pub private_key: PrivateKey,
    /// The node's address in its org's /48, written as a /128 (`[Interface] Address`).
    pub address: Ipv6Addr,
    /// The org's resolver (`[Interface] DNS`); `None` leaves the line out, for hosts without
    /// `resolvconf`, which wg-quick needs to apply it.
    pub dns: Option<IpAddr>,
    /// `[Interface] MTU`; `None` lets wg-quick pick one.
    pub mtu: Option<u16>,
    /// The gateway's public key (`[Peer] PublicKey`).
    pub gateway_key: PublicKey,
    /// What the tunnel routes (`[Peer] AllowedIPs`): the org's /48.
    pub allowed_ips: Ipv6Net,
    /// The gateway's `host:port` (`[Peer] Endpoint`).
    pub endpoint: String,
    /// `[Peer] PersistentKeepalive` in seconds; `None` leaves the line out.
    pub persistent_keepalive: Option<u16>,
}

/// Why a text is not a wg-quick file this module can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// A line is neither a section header, a comment, nor `Key = Value`.
    #[error("line {line}: expected `[Section]` or `Key = Value`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A key appears outside the section it belongs to, or is unknown.
    #[error("line {line}: unexpected key {key} in [{section}]")]
    UnexpectedKey {
        /// 1-based line number.
        line: usize,
        /// The key as written.
        key: String,
        /// The section it appeared in.
        section: String,
    },
    /// A value does not parse.
    #[error("line {line}: bad {key}: {message}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// The key as written.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
    /// A required key is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The file has more than one `[Peer]`; a node config has exactly one.
    #[error("more than one [Peer] section")]
    SeveralPeers,
}

impl WgQuickConfig {
    /// Renders the file. The layout follows SPEC.md: `[Interface]` (PrivateKey, Address, DNS, MTU)
    /// then `[Peer]` (PublicKey, AllowedIPs, Endpoint, PersistentKeepalive).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, so the fmt::Results below are always Ok.
        let _ = writeln!(out, "[Interface]");
        let _ = writeln!(out, "PrivateKey = {}", self.private_key.to_base64());
        let _ = writeln!(out, "Address = {}/128", self.address);
        if let Some(dns) = self.dns {
            let _ = writeln!(out, "DNS = {dns}");
        }
        if let Some(mtu) = self.mtu {
            let _ = writeln!(out, "MTU = {mtu}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[Peer]");
        let _ = writeln!(out, "PublicKey = {}", self.gateway_key.to_base64());
        let _ = writeln!(out, "AllowedIPs = {}", self.allowed_ips);
        let _ = writeln!(out, "Endpoint = {}", self.endpoint);
        if let Some(keepalive) = self.persistent_keepalive {
            let _ = writeln!(out, "PersistentKeepalive = {keepalive}");
        }
        out
    }

    /// Reads back a file in the shape [`render`](Self::render) writes. Keys are matched
    /// case-insensitively, as wg-quick does; `#` starts a comment.
    ///
    /// # Errors
    /// [`ConfError`] names the line at fault or the missing key.
    pub fn parse(text: &str) -> Result<WgQuickConfig, ConfError> {
        #[derive(PartialEq)]
        enum Section {
            None,
            Interface,
            Peer,
        }
        let mut section = Section::None;
        let mut n_peers = 0;
        let mut private_key = None;
        let mut address = None;
        let mut dns = None;
        let mut mtu = None;
        let mut gateway_key = None;
        let mut allowed_ips = None;
        let mut endpoint = None;
        let mut persistent_keepalive = None;

        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                section = match line[1..line.len() - 1].trim().to_ascii_lowercase().as_str() {
                    "interface" => Section::Interface,
                    "peer" => {
                        n_peers += 1;
                        if n_peers > 1 {
                            return Err(ConfError::SeveralPeers);
                        }
                        Section::Peer
                    }
                    _ => return Err(ConfError::Syntax { line: line_no }),
                };
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfError::Syntax { line: line_no });
            };
            let (key, value) = (key.trim(), value.trim());
            let bad = |message: String| ConfError::BadValue {
                line: line_no,
                key: key.to_string(),
                message,
            };
            let key_error = |e: KeyError| bad(e.to_string());
            match (&section, key.to_ascii_lowercase().as_str()) {
                (Section::Interface, "privatekey") => {
                    private_key = Some(PrivateKey::parse(value).map_err(key_error)?);
                }
                (Section::Interface, "address") => {
                    let addr = value.split('/').next().unwrap_or(value);
                    address = Some(addr.parse::<Ipv6Addr>().map_err(|e| bad(e.to_string()))?);
                }
                (Section::Interface, "dns") => {
                    dns = Some(value.parse::<IpAddr>().map_err(|e| bad(e.to_string()))?);
                }
                (Section::Interface, "mtu") => {
                    mtu = Some(value.parse::<u16>().map_err(|e| bad(e.to_string()))?);
                }
                (Section::Peer, "publickey") => {
                    gateway_key = Some(PublicKey::parse(value).map_err(key_error)?);
                }
                (Section::Peer, "allowedips") => {
                    allowed_ips = Some(value.parse::<Ipv6Net>().map_err(|e| bad(e.to_string()))?);
                }
                (Section::Peer, "endpoint") => endpoint = Some(value.to_string()),
                (Section::Peer, "persistentkeepalive") => {
                    persistent_keepalive =
                        Some(value.parse::<u16>().map_err(|e| bad(e.to_string()))?);
                }
                _ => {
                    return Err(ConfError::UnexpectedKey {
                        line: line_no,
                        key: key.to_string(),
                        section: match section {
                            Section::None => "no section".into(),
                            Section::Interface => "Interface".into(),
                            Section::Peer => "Peer".into(),
                        },
                    });
                }
            }
        }

        Ok(WgQuickConfig {
            private_key: private_key.ok_or(ConfError::Missing("[Interface] PrivateKey"))?,
            address: address.ok_or(ConfError::Missing("[Interface] Address"))?,
            dns,
            mtu,
            gateway_key: gateway_key.ok_or(ConfError::Missing("[Peer] PublicKey"))?,
            allowed_ips: allowed_ips.ok_or(ConfError::Missing("[Peer] AllowedIPs"))?,
            endpoint: endpoint.ok_or(ConfError::Missing("[Peer] Endpoint"))?,
            persistent_keepalive,
        })
    }
}

/// `host:port` for a gateway host that may name no port, bracketing a bare IPv6 address.
///
/// `"203.0.113.7"` → `"203.0.113.7:51820"`, `"2001:db8::1"` → `"[2001:db8::1]:51820"`,
/// `"gw.example.com:4500"` and `"[2001:db8::1]:4500"` are kept.
pub fn endpoint_with_port(host: &str) -> String {
    let host = host.trim();
    if host.parse::<Ipv6Addr>().is_ok() {
        return format!("[{host}]:{DEFAULT_WIREGUARD_PORT}");
    }
    let has_port = match host.rsplit_once(':') {
        Some((h, port)) => port.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')),
        None => false,
    };
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_WIREGUARD_PORT}")
    }
}

/// Whether wg-quick accepts `file_stem` as an interface name (`[a-zA-Z0-9_=+.-]{1,15}`):
/// `wg-quick up ./x.conf` derives the interface from the file name.
pub fn is_interface_name(file_stem: &str) -> bool {
    (1..=15).contains(&file_stem.len())
        && file_stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIV: &str = "uIifE+ZJ/igbATs1pzLUTJyEVWp5xL1lpTBiPpVcpHw=";
    const GW: &str = "s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=";

    fn sample() -> WgQuickConfig {
        WgQuickConfig {
            private_key: PrivateKey::parse(PRIV).unwrap(),
            address: "fdaa:1:2::5".parse().unwrap(),
            dns: Some("fdaa:1:2::3".parse().unwrap()),
            mtu: None,
            gateway_key: PublicKey::parse(GW).unwrap(),
            allowed_ips: "fdaa:1:2::/48".parse().unwrap(),
            endpoint: "127.0.0.1:51820".into(),
            persistent_keepalive: Some(PERSISTENT_KEEPALIVE),
        }
    }

    #[test]
    fn renders_the_spec_layout() {
        let expect = "\
[Interface]
PrivateKey = uIifE+ZJ/igbATs1pzLUTJyEVWp5xL1lpTBiPpVcpHw=
Address = fdaa:1:2::5/128
DNS = fdaa:1:2::3

[Peer]
PublicKey = s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=
AllowedIPs = fdaa:1:2::/48
Endpoint = 127.0.0.1:51820
PersistentKeepalive = 15
";
        assert_eq!(sample().render(), expect);
    }

    #[test]
    fn optional_lines() {
        let mut c = sample();
        c.dns = None;
        c.mtu = Some(1380);
        c.persistent_keepalive = None;
        let text = c.render();
        assert!(!text.contains("DNS"), "{text}");
        assert!(text.contains("\nMTU = 1380\n"), "{text}");
        assert!(!text.contains("PersistentKeepalive"), "{text}");
    }

    #[test]
    fn parse_round_trips() {
        for c in [sample(), {
            let mut c = sample();
            c.dns = None;
            c.mtu = Some(1280);
            c
        }] {
            let back = WgQuickConfig::parse(&c.render()).unwrap();
            assert_eq!(back.render(), c.render());
            assert_eq!(back.private_key.public_key(), c.private_key.public_key());
        }
    }

    #[test]
    fn parse_accepts_wg_quick_spelling() {
        let text = "# written by hand\n[interface]\nprivatekey=uIifE+ZJ/igbATs1pzLUTJyEVWp5xL1lpTBiPpVcpHw=\n\
                    address = fdaa:1:2::5/120 # flyctl style\n\n[Peer]\nPublicKey = s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=\n\
                    AllowedIPs = fdaa:1:2::/48\nEndpoint = gw.example.com:51820\n";
        let c = WgQuickConfig::parse(text).unwrap();
        assert_eq!(c.address, "fdaa:1:2::5".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.endpoint, "gw.example.com:51820");
        assert_eq!(c.dns, None);
        assert_eq!(c.persistent_keepalive, None);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let check = |text: &str, expect: ConfError| {
            assert_eq!(WgQuickConfig::parse(text).unwrap_err(), expect, "{text:?}");
        };
        check("[Interface]\nnonsense\n", ConfError::Syntax { line: 2 });
        check("[Wat]\n", ConfError::Syntax { line: 1 });
        check(
            "Address = ::1\n",
            ConfError::UnexpectedKey {
                line: 1,
                key: "Address".into(),
                section: "no section".into(),
            },
        );
        check(
            "[Interface]\nAddress = nope\n",
            ConfError::BadValue {
                line: 2,
                key: "Address".into(),
                message: "invalid IPv6 address syntax".into(),
            },
        );
        check(
            "[Interface]\n",
            ConfError::Missing("[Interface] PrivateKey"),
        );
        check("[Peer]\n[Peer]\n", ConfError::SeveralPeers);
        let no_endpoint = sample()
            .render()
            .replace("Endpoint = 127.0.0.1:51820\n", "");
        check(&no_endpoint, ConfError::Missing("[Peer] Endpoint"));
    }

    #[test]
    fn endpoints_get_a_port() {
        let check = |host: &str, expect: &str| assert_eq!(endpoint_with_port(host), expect);
        check("203.0.113.7", "203.0.113.7:51820");
        check("203.0.113.7:4500", "203.0.113.7:4500");
        check("gw.example.com", "gw.example.com:51820");
        check("gw.example.com:4500", "gw.example.com:4500");
        check("2001:db8::1", "[2001:db8::1]:51820");
        check("[2001:db8::1]:4500", "[2001:db8::1]:4500");
    }

    #[test]
    fn interface_names() {
        assert!(is_interface_name("wg0"));
        assert!(is_interface_name("node-1"));
        assert!(is_interface_name("fifteen-chars-x"));
        assert!(!is_interface_name("sixteen-chars-xx"));
        assert!(!is_interface_name(""));
        assert!(!is_interface_name("a b"));
    }
}
