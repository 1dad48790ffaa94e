//! A client for WireGuard's cross-platform userspace API (UAPI): the line-oriented `key=value`
//! protocol spoken over `/run/wireguard/<iface>.sock` by `wireguard-go` and boringtun
//! (<https://www.wireguard.com/xplatform/>).
//!
//! This module knows the wire format and nothing about sixpn: it reads a [`Device`] with
//! [`UapiClient::get`] and applies a [`DeviceUpdate`] with [`UapiClient::set`]. Keys travel as
//! lowercase hex. One connection carries one operation; each operation has a deadline, so a hung
//! daemon cannot stall the caller.
//!
//! It never logs or formats a private key: [`Device`] and [`DeviceUpdate`] hold it as a
//! [`PrivateKey`], whose `Debug` is redacted.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::wireguard::PrivateKey;

/// How long one get or set may take before it is abandoned.
const DEADLINE: Duration = Duration::from_secs(5);

/// Largest answer accepted from the daemon (a `get` grows by about 300 bytes per peer).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// What can go wrong talking to the UAPI socket.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The socket could not be reached.
    #[error(
        "connecting to the WireGuard UAPI socket {path}: {source} (is the interface up, e.g. `wireguard-go {iface}`?)"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The interface name the path was derived from.
        iface: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("talking to the WireGuard UAPI socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("the WireGuard UAPI socket {0} did not answer within {DEADLINE:?}")]
    Timeout(PathBuf),
    /// The daemon refused the operation; `errno` is what it reported (e.g. 22 for EINVAL).
    #[error("the WireGuard daemon refused the operation: errno {errno} ({})", std::io::Error::from_raw_os_error(*.errno))]
    Errno {
        /// The errno the daemon reported.
        errno: i32,
    },
    /// The answer did not follow the protocol.
    #[error("malformed UAPI answer: {0}")]
    Protocol(String),
}

/// A raw 32-byte Curve25519 public key as the interface reports it.
///
/// The interface may hold keys sixpn would never accept (e.g. a low-order point set by hand), so
/// this stays raw bytes; compare with [`crate::wireguard::PublicKey::as_bytes`].
pub type RawKey = [u8; 32];

/// The interface's state as `get=1` reports it.
#[derive(Debug, Clone, Default)]
pub struct Device {
    /// The interface's private key, if one is set.
    pub private_key: Option<PrivateKey>,
    /// The UDP port it listens on (0 when not yet bound).
    pub listen_port: u16,
    /// The firewall mark, 0 when unset.
    pub fwmark: u32,
    /// Its peers, in the daemon's order.
    pub peers: Vec<PeerInfo>,
}

/// One peer of a [`Device`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's public key.
    pub public_key: RawKey,
    /// Whether a preshared key is set (its value is never kept).
    pub has_preshared_key: bool,
    /// The peer's current outer endpoint as the daemon wrote it (`ip:port`, `[ip%zone]:port`).
    pub endpoint: Option<String>,
    /// Last completed handshake as (seconds, nanoseconds) since the unix epoch; (0, 0) before any.
    pub last_handshake: (i64, i64),
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds, 0 when off.
    pub persistent_keepalive: u16,
    /// The networks routed to this peer.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerInfo {
    /// The last handshake in unix seconds, `None` before the first one.
    pub fn last_handshake_unix(&self) -> Option<i64> {
        (self.last_handshake != (0, 0)).then_some(self.last_handshake.0)
    }
}

/// A `set=1` operation: everything in it is applied by the daemon as one request.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    /// New private key.
    pub private_key: Option<PrivateKey>,
    /// New listen port.
    pub listen_port: Option<u16>,
    /// Remove every peer not named below first.
    pub replace_peers: bool,
    /// Peer changes, applied in order.
    pub peers: Vec<PeerUpdate>,
}

/// One peer's part of a [`DeviceUpdate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerUpdate {
    /// Which peer (created unless `update_only` or `remove`).
    pub public_key: RawKey,
    /// Remove the peer.
    pub remove: bool,
    /// Only change the peer if it exists already; never create it.
    pub update_only: bool,
    /// Replace the peer's allowed IPs with `allowed_ips` instead of adding to them.
    pub replace_allowed_ips: bool,
    /// Allowed IPs to add (an allowed IP moves from any other peer that had it).
    pub allowed_ips: Vec<IpNet>,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New persistent keepalive interval, seconds (0 turns it off).
    pub persistent_keepalive: Option<u16>,
}

impl PeerUpdate {
    /// Removes the peer with this key.
    pub fn remove(public_key: RawKey) -> Self {
        PeerUpdate {
            public_key,
            remove: true,
            ..Default::default()
        }
    }

    /// Creates (or updates) the peer with exactly these allowed IPs.
    pub fn upsert(public_key: RawKey, allowed_ips: Vec<IpNet>) -> Self {
        PeerUpdate {
            public_key,
            replace_allowed_ips: true,
            allowed_ips,
            ..Default::default()
        }
    }
}

impl DeviceUpdate {
    /// Whether applying this would change nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && !self.replace_peers
            && self.peers.is_empty()
    }

    /// The request text, ending with the blank line that terminates it.
    pub fn render(&self) -> String {
        let mut out = String::from("set=1\n");
        // `write!` to a String cannot fail.
        if let Some(key) = &self.private_key {
            let _ = writeln!(out, "private_key={}", key.to_hex());
        }
        if let Some(port) = self.listen_port {
            let _ = writeln!(out, "listen_port={port}");
        }
        if self.replace_peers {
            out.push_str("replace_peers=true\n");
        }
        for peer in &self.peers {
            let _ = writeln!(out, "public_key={}", hex(&peer.public_key));
            if peer.remove {
                out.push_str("remove=true\n");
                continue;
            }
            if peer.update_only {
                out.push_str("update_only=true\n");
            }
            if let Some(endpoint) = peer.endpoint {
                let _ = writeln!(out, "endpoint={endpoint}");
            }
            if let Some(keepalive) = peer.persistent_keepalive {
                let _ = writeln!(out, "persistent_keepalive_interval={keepalive}");
            }
            if peer.replace_allowed_ips {
                out.push_str("replace_allowed_ips=true\n");
            }
            for net in &peer.allowed_ips {
                let _ = writeln!(out, "allowed_ip={net}");
            }
        }
        out.push('\n');
        out
    }
}

/// Lowercase hex of 32 bytes.
pub fn hex(key: &RawKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hex_key(s: &str) -> Option<RawKey> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses the text of a `get=1` answer (without the final blank line).
///
/// # Errors
/// [`UapiError::Errno`] when the daemon reported a failure, [`UapiError::Protocol`] when the text
/// is not well-formed. Unknown keys are skipped, as the protocol asks.
pub fn parse_get(text: &str) -> Result<Device, UapiError> {
    let mut device = Device::default();
    let mut errno = None;
    let bad = |line: &str, what: &str| UapiError::Protocol(format!("{what} in line {line:?}"));
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| bad(line, "no '='"))?;
        match key {
            "errno" => errno = Some(value.parse::<i32>().map_err(|_| bad(line, "bad errno"))?),
            "private_key" => {
                let raw = parse_hex_key(value).ok_or_else(|| bad(line, "bad key"))?;
                // An all-zero key is how some implementations say "no key".
                device.private_key = (raw != [0; 32]).then(|| PrivateKey::from_bytes(raw));
            }
            "listen_port" => {
                device.listen_port = value.parse().map_err(|_| bad(line, "bad port"))?;
            }
            "fwmark" => device.fwmark = value.parse().map_err(|_| bad(line, "bad fwmark"))?,
            "public_key" => {
                let raw = parse_hex_key(value).ok_or_else(|| bad(line, "bad key"))?;
                device.peers.push(PeerInfo {
                    public_key: raw,
                    ..Default::default()
                });
            }
            _ => {
                let Some(peer) = device.peers.last_mut() else {
                    // A device-level key this client does not know.
                    continue;
                };
                match key {
                    "preshared_key" => {
                        let raw = parse_hex_key(value).ok_or_else(|| bad(line, "bad key"))?;
                        peer.has_preshared_key = raw != [0; 32];
                    }
                    "endpoint" => {
                        // Kept as text: zones may be names, and nothing here routes by it.
                        peer.endpoint = Some(value.to_owned());
                    }
                    "last_handshake_time_sec" => {
                        peer.last_handshake.0 = value.parse().map_err(|_| bad(line, "bad time"))?;
                    }
                    "last_handshake_time_nsec" => {
                        peer.last_handshake.1 = value.parse().map_err(|_| bad(line, "bad time"))?;
                    }
                    "rx_bytes" => {
                        peer.rx_bytes = value.parse().map_err(|_| bad(line, "bad count"))?
                    }
                    "tx_bytes" => {
                        peer.tx_bytes = value.parse().map_err(|_| bad(line, "bad count"))?
                    }
                    "persistent_keepalive_interval" => {
                        peer.persistent_keepalive =
                            value.parse().map_err(|_| bad(line, "bad interval"))?;
                    }
                    "allowed_ip" => {
                        peer.allowed_ips.push(
                            parse_allowed_ip(value).ok_or_else(|| bad(line, "bad allowed_ip"))?,
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    match errno {
        Some(0) => Ok(device),
        Some(errno) => Err(UapiError::Errno { errno }),
        None => Err(UapiError::Protocol("answer has no errno line".into())),
    }
}

/// Parses an `allowed_ip` value; a bare address counts as a host route.
fn parse_allowed_ip(value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Parses the answer to a `set=1`: one `errno=N` line.
///
/// # Errors
/// [`UapiError::Errno`] or [`UapiError::Protocol`].
pub fn parse_set(text: &str) -> Result<(), UapiError> {
    let mut errno = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some(("errno", v)) => {
                errno = Some(
                    v.parse::<i32>()
                        .map_err(|_| UapiError::Protocol(format!("bad errno line {line:?}")))?,
                );
            }
            _ => return Err(UapiError::Protocol(format!("unexpected line {line:?}"))),
        }
    }
    match errno {
        Some(0) => Ok(()),
        Some(errno) => Err(UapiError::Errno { errno }),
        None => Err(UapiError::Protocol("answer has no errno line".into())),
    }
}

/// Talks to one interface's UAPI socket.
#[derive(Debug, Clone)]
pub struct UapiClient {
    path: PathBuf,
    iface: String,
}

impl UapiClient {
    /// The client for `<dir>/<iface>.sock`; `dir` defaults to `/run/wireguard`.
    pub fn new(dir: Option<&Path>, iface: &str) -> Self {
        let dir = dir.unwrap_or(Path::new("/run/wireguard"));
        UapiClient {
            path: dir.join(format!("{iface}.sock")),
            iface: iface.to_owned(),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the interface's state.
    ///
    /// # Errors
    /// [`UapiError`]: the socket is unreachable, the daemon failed or answered nonsense.
    pub async fn get(&self) -> Result<Device, UapiError> {
        let text = self.exchange("get=1\n\n").await?;
        parse_get(&text)
    }

    /// Applies `update` as one request.
    ///
    /// # Errors
    /// [`UapiError::Errno`] when the daemon refused it (then, as with `wg set`, part of it may
    /// have been applied already); the other variants when it could not be delivered.
    pub async fn set(&self, update: &DeviceUpdate) -> Result<(), UapiError> {
        let text = self.exchange(&update.render()).await?;
        parse_set(&text)
    }

    /// Sends `request` and reads the answer up to the blank line that ends it.
    async fn exchange(&self, request: &str) -> Result<String, UapiError> {
        let io = |source| UapiError::Io {
            path: self.path.clone(),
            source,
        };
        let work = async {
            let mut stream =
                UnixStream::connect(&self.path)
                    .await
                    .map_err(|source| UapiError::Connect {
                        path: self.path.clone(),
                        iface: self.iface.clone(),
                        source,
                    })?;
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut reader = BufReader::new(stream);
            let mut answer = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).await.map_err(io)?;
                if n == 0 {
                    // The daemon closed the connection: what we have is the whole answer.
                    break;
                }
                if line == "\n" {
                    break;
                }
                answer.push_str(&line);
                if answer.len() > MAX_RESPONSE {
                    return Err(UapiError::Protocol("answer too large".into()));
                }
            }
            Ok(answer)
        };
        tokio::time::timeout(DEADLINE, work)
            .await
            .map_err(|_| UapiError::Timeout(self.path.clone()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const K2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceae27f23ce42";

    // The example answer from https://www.wireguard.com/xplatform/.
    const GET: &str = "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
listen_port=12912
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceae27f23ce42
allowed_ip=192.168.4.6/32
persistent_keepalive_interval=111
endpoint=182.122.22.19:3233
tx_bytes=38333
rx_bytes=2224
last_handshake_time_sec=1700000000
last_handshake_time_nsec=5
protocol_version=1
allowed_ip=fdaa:0:1:1::2/128
errno=0
";

    #[test]
    fn parses_the_documented_get_answer() {
        let device = parse_get(GET).unwrap();
        assert_eq!(device.listen_port, 12912);
        assert_eq!(device.private_key.unwrap().to_hex(), K1);
        assert_eq!(device.peers.len(), 2);
        let first = &device.peers[0];
        assert!(first.has_preshared_key);
        assert_eq!(first.last_handshake_unix(), None);
        assert_eq!(
            first.allowed_ips,
            vec!["192.168.4.4/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(first.endpoint.as_deref(), Some("[abcd:23::33%2]:51820"));
        let second = &device.peers[1];
        assert_eq!(hex(&second.public_key), K2);
        assert_eq!(second.tx_bytes, 38333);
        assert_eq!(second.rx_bytes, 2224);
        assert_eq!(second.persistent_keepalive, 111);
        assert_eq!(second.last_handshake_unix(), Some(1_700_000_000));
        assert_eq!(
            second.allowed_ips,
            vec![
                "192.168.4.6/32".parse::<IpNet>().unwrap(),
                "fdaa:0:1:1::2/128".parse().unwrap()
            ]
        );
    }

    #[test]
    fn get_errors() {
        assert!(matches!(
            parse_get("errno=19\n"),
            Err(UapiError::Errno { errno: 19 })
        ));
        assert!(matches!(
            parse_get("listen_port=1\n"),
            Err(UapiError::Protocol(_))
        ));
        assert!(matches!(
            parse_get("garbage\nerrno=0\n"),
            Err(UapiError::Protocol(_))
        ));
        assert!(matches!(
            parse_get("public_key=zz\nerrno=0\n"),
            Err(UapiError::Protocol(_))
        ));
        assert!(matches!(
            parse_get(&format!("public_key={K2}\nallowed_ip=nope\nerrno=0\n")),
            Err(UapiError::Protocol(_))
        ));
        // Unknown keys are skipped; an empty device has no peers and no key.
        let device = parse_get("future_key=1\nlisten_port=0\nerrno=0\n").unwrap();
        assert!(device.private_key.is_none() && device.peers.is_empty());
    }

    #[test]
    fn set_answers() {
        assert!(parse_set("errno=0\n").is_ok());
        let err = parse_set("errno=22\n").unwrap_err();
        assert!(matches!(err, UapiError::Errno { errno: 22 }));
        assert!(err.to_string().contains("errno 22"), "{err}");
        assert!(matches!(parse_set(""), Err(UapiError::Protocol(_))));
        assert!(matches!(
            parse_set("errno=x\n"),
            Err(UapiError::Protocol(_))
        ));
        assert!(matches!(
            parse_set("what=1\nerrno=0\n"),
            Err(UapiError::Protocol(_))
        ));
    }

    #[test]
    fn renders_a_set_request() {
        let k1 = parse_hex_key(K1).unwrap();
        let k2 = parse_hex_key(K2).unwrap();
        let update = DeviceUpdate {
            private_key: Some(PrivateKey::from_bytes(k1)),
            listen_port: Some(51820),
            replace_peers: false,
            peers: vec![
                PeerUpdate::remove(k1),
                PeerUpdate::upsert(k2, vec!["fdaa:0:1:1::2/128".parse().unwrap()]),
                PeerUpdate {
                    public_key: k1,
                    update_only: true,
                    persistent_keepalive: Some(0),
                    endpoint: Some("10.0.0.1:51820".parse().unwrap()),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            update.render(),
            format!(
                "set=1\nprivate_key={K1}\nlisten_port=51820\n\
                 public_key={K1}\nremove=true\n\
                 public_key={K2}\nreplace_allowed_ips=true\nallowed_ip=fdaa:0:1:1::2/128\n\
                 public_key={K1}\nupdate_only=true\nendpoint=10.0.0.1:51820\npersistent_keepalive_interval=0\n\n"
            )
        );
        assert!(
            !format!("{update:?}").contains(K1),
            "Debug must not reveal the private key"
        );
        assert!(DeviceUpdate::default().is_empty());
    }

    #[test]
    fn hex_keys() {
        let k = parse_hex_key(K2).unwrap();
        assert_eq!(hex(&k), K2);
        assert_eq!(parse_hex_key(&K2.to_uppercase()), Some(k));
        assert_eq!(parse_hex_key(&K2[1..]), None);
        assert_eq!(parse_hex_key(&format!("{}g", &K2[1..])), None);
        assert_eq!(parse_hex_key(&"é".repeat(32)), None);
    }
}
