//! wg-quick configuration files: rendering the file a node brings its tunnel up with, and reading
//! one back.
//!
//! The file holds the node's private key, so this module only produces text; writing it with mode
//! 0600 is the caller's job (`cli/`). It never touches the network.
//!
//! wg-quick runs `PostUp`/`PreUp` lines as root, so one newline smuggled into a value is a command
//! on the node (issue 11). Every field is a checked type ([`Endpoint`] for the one that was free
//! text), and [`WgQuickConfig::render`] still refuses any value holding a control character, so a
//! future `String` field cannot reopen the hole.

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
    pub endpoint: Endpoint,
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
    /// A value to render holds a newline or another control character, which would let it start
    /// a line of its own (e.g. `PostUp = …`).
    #[error("{key} holds a control character")]
    ControlChar {
        /// The key whose value was refused.
        key: &'static str,
    },
}

/// Why a text is not a WireGuard endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The text is empty.
    #[error("is empty")]
    Empty,
    /// The text holds a newline or another control character.
    #[error("holds a control character")]
    ControlChar,
    /// The host is neither a DNS name, an IPv4 address nor a bracketed IPv6 address.
    #[error("host {0:?} is not a DNS name, an IPv4 address or a bracketed IPv6 address")]
    BadHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    /// There is no port, and none may be assumed.
    #[error("has no port (expected host:port)")]
    NoPort,
}

/// A WireGuard endpoint: a host (DNS name, IPv4 or IPv6 address) and a UDP port, checked on
/// parse, so it renders as exactly one `host:port` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: EndpointHost,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointHost {
    Name(String),
    V4(std::net::Ipv4Addr),
    V6(Ipv6Addr),
}

impl Endpoint {
    /// Parses `host:port`, `[ipv6]:port`, or, when `default_port` is given, a bare host (`host`,
    /// `ipv4`, `ipv6` or `[ipv6]`). A host is a DNS name (letters, digits, `-` and `.`, labels of
    /// 1–63 characters, at most 253 in all), an IPv4 address or an IPv6 address.
    ///
    /// # Errors
    /// [`EndpointError`] says which part is wrong.
    pub fn parse(text: &str, default_port: Option<u16>) -> Result<Endpoint, EndpointError> {
        if text.chars().any(char::is_control) {
            return Err(EndpointError::ControlChar);
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        let with_default = |host: EndpointHost| match default_port {
            // Port 0 is no port: such an endpoint would render as `host:0`, which parse refuses
            // (found by fuzzing, issue 11).
            Some(0) => Err(EndpointError::BadPort("0".into())),
            Some(port) => Ok(Endpoint { host, port }),
            None => Err(EndpointError::NoPort),
        };
        // A bare IPv6 address: its colons are not a port separator.
        if let Ok(v6) = text.parse::<Ipv6Addr>() {
            return with_default(EndpointHost::V6(v6));
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| EndpointError::BadHost(text.to_string()))?;
            let v6 = inside
                .parse::<Ipv6Addr>()
                .map_err(|_| EndpointError::BadHost(inside.to_string()))?;
            return match after {
                "" => with_default(EndpointHost::V6(v6)),
                _ => match after.strip_prefix(':') {
                    Some(port) => Ok(Endpoint {
                        host: EndpointHost::V6(v6),
                        port: parse_port(port)?,
                    }),
                    None => Err(EndpointError::BadHost(text.to_string())),
                },
            };
        }
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (text, None),
        };
        let host = parse_host(host)?;
        match port {
            Some(port) => Ok(Endpoint { host, port }),
            None => with_default(host),
        }
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as written in a URL or config: a DNS name, an IPv4 address, or an IPv6 address
    /// without brackets.
    pub fn host(&self) -> String {
        match &self.host {
            EndpointHost::Name(name) => name.clone(),
            EndpointHost::V4(v4) => v4.to_string(),
            EndpointHost::V6(v6) => v6.to_string(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            EndpointHost::Name(name) => write!(f, "{name}:{}", self.port),
            EndpointHost::V4(v4) => write!(f, "{v4}:{}", self.port),
            EndpointHost::V6(v6) => write!(f, "[{v6}]:{}", self.port),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    /// `host:port` only; see [`Endpoint::parse`] for a default port.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s, None)
    }
}

fn parse_port(text: &str) -> Result<u16, EndpointError> {
    // Digits only: u16::from_str would also take a leading `+`.
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(EndpointError::BadPort(text.to_string())),
    }
}

fn parse_host(text: &str) -> Result<EndpointHost, EndpointError> {
    let bad = || EndpointError::BadHost(text.to_string());
    if let Ok(v4) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(EndpointHost::V4(v4));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let labels_ok = name.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    // All digits and dots but not an IPv4 address (e.g. 1.2.3.999): not a name either.
    let numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !labels_ok || numeric {
        return Err(bad());
    }
    Ok(EndpointHost::Name(name.to_ascii_lowercase()))
}

impl WgQuickConfig {
    /// Renders the file. The layout follows SPEC.md: `[Interface]` (PrivateKey, Address, DNS, MTU)
    /// then `[Peer]` (PublicKey, AllowedIPs, Endpoint, PersistentKeepalive).
    ///
    /// # Errors
    /// [`ConfError::ControlChar`] when a value would hold a newline or another control character.
    /// The field types already rule that out; this check is the second line of defence for a
    /// file that wg-quick reads as root.
    pub fn render(&self) -> Result<String, ConfError> {
        let mut lines: Vec<(&'static str, String)> = vec![
            ("[Interface]", String::new()),
            ("PrivateKey", self.private_key.to_base64()),
            ("Address", format!("{}/128", self.address)),
        ];
        if let Some(dns) = self.dns {
            lines.push(("DNS", dns.to_string()));
        }
        if let Some(mtu) = self.mtu {
            lines.push(("MTU", mtu.to_string()));
        }
        lines.push(("", String::new()));
        lines.push(("[Peer]", String::new()));
        lines.push(("PublicKey", self.gateway_key.to_base64()));
        lines.push(("AllowedIPs", self.allowed_ips.to_string()));
        lines.push(("Endpoint", self.endpoint.to_string()));
        if let Some(keepalive) = self.persistent_keepalive {
            lines.push(("PersistentKeepalive", keepalive.to_string()));
        }
        let mut out = String::new();
        for (key, value) in lines {
            if value.chars().any(char::is_control) {
                return Err(ConfError::ControlChar { key });
            }
            // Writing into a String cannot fail.
            let _ = match (key, value.is_empty()) {
                (_, true) => writeln!(out, "{key}"),
                (_, false) => writeln!(out, "{key} = {value}"),
            };
        }
        Ok(out)
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
                (Section::Peer, "endpoint") => {
                    endpoint = Some(Endpoint::parse(value, None).map_err(|e| bad(e.to_string()))?);
                }
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
            endpoint: "127.0.0.1:51820".parse().unwrap(),
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
        assert_eq!(sample().render().unwrap(), expect);
    }

    #[test]
    fn optional_lines() {
        let mut c = sample();
        c.dns = None;
        c.mtu = Some(1380);
        c.persistent_keepalive = None;
        let text = c.render().unwrap();
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
            let text = c.render().unwrap();
            let back = WgQuickConfig::parse(&text).unwrap();
            assert_eq!(back.render().unwrap(), text);
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
        assert_eq!(c.endpoint.to_string(), "gw.example.com:51820");
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
            .unwrap()
            .replace("Endpoint = 127.0.0.1:51820\n", "");
        check(&no_endpoint, ConfError::Missing("[Peer] Endpoint"));
    }

    #[test]
    fn endpoints_get_a_port() {
        let check = |host: &str, expect: &str| {
            let endpoint = Endpoint::parse(host, Some(DEFAULT_WIREGUARD_PORT)).unwrap();
            assert_eq!(endpoint.to_string(), expect);
        };
        check("203.0.113.7", "203.0.113.7:51820");
        check("203.0.113.7:4500", "203.0.113.7:4500");
        check("gw.example.com", "gw.example.com:51820");
        check("GW.Example.com.:4500", "gw.example.com:4500");
        check("2001:db8::1", "[2001:db8::1]:51820");
        check("[2001:db8::1]", "[2001:db8::1]:51820");
        check("[2001:db8::1]:4500", "[2001:db8::1]:4500");
        assert_eq!(
            "gw.example.com".parse::<Endpoint>(),
            Err(EndpointError::NoPort)
        );
    }

    #[test]
    fn hostile_endpoints_are_refused() {
        let check = |text: &str, expect: EndpointError| {
            assert_eq!(
                Endpoint::parse(text, Some(DEFAULT_WIREGUARD_PORT)),
                Err(expect),
                "{text:?}"
            );
        };
        check(
            "1.2.3.4:51820\n[Interface]\nPostUp = touch /tmp/pwned",
            EndpointError::ControlChar,
        );
        check("1.2.3.4\r", EndpointError::ControlChar);
        check("gw\u{0}.example.com", EndpointError::ControlChar);
        check("", EndpointError::Empty);
        check("1.2.3.4:0", EndpointError::BadPort("0".into()));
        // issue 11 (fuzzing): a default port of 0 is refused, not rendered as `host:0`.
        assert_eq!(
            Endpoint::parse("[2001:db8::2]", Some(0)),
            Err(EndpointError::BadPort("0".into()))
        );
        check("1.2.3.4:+80", EndpointError::BadPort("+80".into()));
        check("1.2.3.4:65536", EndpointError::BadPort("65536".into()));
        check("1.2.3.4:80:81", EndpointError::BadPort("80:81".into()));
        check("gw example", EndpointError::BadHost("gw example".into()));
        check("gw;rm -rf /", EndpointError::BadHost("gw;rm -rf /".into()));
        check("-gw.example", EndpointError::BadHost("-gw.example".into()));
        check("a..b", EndpointError::BadHost("a..b".into()));
        check("1.2.3.999", EndpointError::BadHost("1.2.3.999".into()));
        check("[::1", EndpointError::BadHost("[::1".into()));
        check("[nope]:1", EndpointError::BadHost("nope".into()));
        check("[::1]x", EndpointError::BadHost("[::1]x".into()));
        check(&"a".repeat(64), EndpointError::BadHost("a".repeat(64)));
    }

    #[test]
    fn render_refuses_control_characters() {
        // Endpoint::parse cannot build this; only code inside this module could. render must
        // refuse it all the same (defence in depth for a file wg-quick runs as root).
        let mut c = sample();
        c.endpoint = Endpoint {
            host: EndpointHost::Name("1.2.3.4\n[Interface]\nPostUp = touch /tmp/pwned".into()),
            port: 51820,
        };
        assert_eq!(c.render(), Err(ConfError::ControlChar { key: "Endpoint" }));
        c.endpoint.host = EndpointHost::Name("gw\r".into());
        assert_eq!(c.render(), Err(ConfError::ControlChar { key: "Endpoint" }));
        let text = sample().render().unwrap();
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn parse_refuses_bad_endpoints() {
        let text = sample()
            .render()
            .unwrap()
            .replace("127.0.0.1:51820", "127.0.0.1:51820; PostUp");
        assert!(matches!(
            WgQuickConfig::parse(&text),
            Err(ConfError::BadValue { key, .. }) if key == "Endpoint"
        ));
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
