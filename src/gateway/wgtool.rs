//! The same get/set operations as [`super::uapi`], through wireguard-tools' `wg` command, for
//! interfaces without a UAPI socket: the Linux kernel module (which `wg` reaches over netlink).
//!
//! `wg show IFACE dump` reads the interface; `wg set IFACE ...` applies a [`DeviceUpdate`] in
//! one invocation (the private key goes through stdin, never through argv or a file). `wg set`
//! has no `update-only`, so such a peer update is applied as a plain upsert, and its `allowed-ips`
//! always replaces the peer's list: [`DeviceUpdate`]s built by the reconcile always replace.

use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::uapi::{Device, DeviceUpdate, PeerInfo, RawKey};
use crate::wireguard::PrivateKey;

/// What can go wrong running `wg`.
#[derive(Debug, thiserror::Error)]
pub enum WgToolError {
    /// `wg` could not be started.
    #[error("running `wg` (wireguard-tools): {0}")]
    Spawn(std::io::Error),
    /// `wg` failed.
    #[error("`wg {args}` failed: {stderr}")]
    Failed {
        /// The arguments (never a key).
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `wg show dump` printed something unexpected.
    #[error("parsing `wg show dump`: {0}")]
    Parse(String),
}

fn decode_key(s: &str) -> Option<RawKey> {
    let mut out = [0u8; 32];
    match STANDARD.decode_slice(s, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

fn none(s: &str) -> Option<&str> {
    (s != "(none)" && s != "off").then_some(s)
}

/// Parses `wg show IFACE dump`: a device line, then one line per peer, tab-separated.
///
/// # Errors
/// [`WgToolError::Parse`] names the bad line.
pub fn parse_dump(text: &str) -> Result<Device, WgToolError> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let bad = |line: &str| WgToolError::Parse(format!("unexpected line {line:?}"));
    let first = lines
        .next()
        .ok_or_else(|| WgToolError::Parse("empty output".into()))?;
    let f: Vec<&str> = first.split('\t').collect();
    let [private_key, _public_key, listen_port, fwmark] = f[..] else {
        return Err(bad("<device line>"));
    };
    let mut device = Device {
        private_key: match none(private_key) {
            Some(k) => Some(PrivateKey::from_bytes(
                decode_key(k).ok_or_else(|| bad("<device line>"))?,
            )),
            None => None,
        },
        listen_port: listen_port.parse().map_err(|_| bad("<device line>"))?,
        fwmark: none(fwmark)
            .map(|v| {
                let v = v.trim_start_matches("0x");
                u32::from_str_radix(v, 16)
            })
            .transpose()
            .map_err(|_| bad("<device line>"))?
            .unwrap_or(0),
        peers: Vec::new(),
    };
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let [key, psk, endpoint, allowed, handshake, rx, tx, keepalive] = f[..] else {
            return Err(bad(line));
        };
        let allowed_ips = match none(allowed) {
            Some(list) => list
                .split(',')
                .map(|n| n.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad(line))?,
            None => Vec::new(),
        };
        device.peers.push(PeerInfo {
            public_key: decode_key(key).ok_or_else(|| bad(line))?,
            has_preshared_key: none(psk).is_some(),
            endpoint: none(endpoint).map(str::to_owned),
            last_handshake: (handshake.parse().map_err(|_| bad(line))?, 0),
            rx_bytes: rx.parse().map_err(|_| bad(line))?,
            tx_bytes: tx.parse().map_err(|_| bad(line))?,
            persistent_keepalive: none(keepalive)
                .map(str::parse)
                .transpose()
                .map_err(|_| bad(line))?
                .unwrap_or(0),
            allowed_ips,
        });
    }
    Ok(device)
}

/// The most argument bytes one `wg set` gets: far below Linux's limits (128 KiB per argument,
/// about 2 MiB for all of them with the environment), so a change of any size goes through.
pub const MAX_SET_ARGS_BYTES: usize = 96 * 1024;

/// Splits `update` into updates whose `wg set` arguments stay within `max_bytes` (one peer that is
/// bigger on its own still gets a batch of its own). The key and port go with the first batch. A
/// removal is never separated from the addition right after it, so a re-keyed peer's address
/// moves to its new key within one call.
pub fn batches(update: &DeviceUpdate, max_bytes: usize) -> Vec<DeviceUpdate> {
    let arg_len = |args: &[String]| args.iter().map(|a| a.len() + 1).sum::<usize>();
    let mut out = vec![DeviceUpdate {
        private_key: update.private_key.clone(),
        listen_port: update.listen_port,
        replace_peers: update.replace_peers,
        peers: Vec::new(),
    }];
    let mut used = arg_len(&set_args(&out[0]));
    let mut i = 0;
    while i < update.peers.len() {
        // A removal and the addition right after it travel together.
        let n =
            if update.peers[i].remove && update.peers.get(i + 1).is_some_and(|next| !next.remove) {
                2
            } else {
                1
            };
        let group = &update.peers[i..i + n];
        let len = arg_len(&set_args(&DeviceUpdate {
            peers: group.to_vec(),
            ..Default::default()
        }));
        let last = out.last_mut().expect("starts with one batch");
        if used + len > max_bytes && !last.peers.is_empty() {
            out.push(DeviceUpdate::default());
            used = 0;
        }
        out.last_mut()
            .expect("starts with one batch")
            .peers
            .extend_from_slice(group);
        used += len;
        i += n;
    }
    out
}

/// The `wg set` arguments for `update` (after `set IFACE`). A private key is read from stdin.
pub fn set_args(update: &DeviceUpdate) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(port) = update.listen_port {
        args.extend(["listen-port".to_owned(), port.to_string()]);
    }
    if update.private_key.is_some() {
        args.extend(["private-key".to_owned(), "/dev/stdin".to_owned()]);
    }
    // `replace_peers` has no `wg set` form; the reconcile never asks for it.
    for peer in &update.peers {
        args.extend(["peer".to_owned(), STANDARD.encode(peer.public_key)]);
        if peer.remove {
            args.push("remove".to_owned());
            continue;
        }
        if let Some(endpoint) = peer.endpoint {
            args.extend(["endpoint".to_owned(), endpoint.to_string()]);
        }
        if let Some(keepalive) = peer.persistent_keepalive {
            let v = if keepalive == 0 {
                "off".to_owned()
            } else {
                keepalive.to_string()
            };
            args.extend(["persistent-keepalive".to_owned(), v]);
        }
        if peer.replace_allowed_ips || !peer.allowed_ips.is_empty() {
            let list: Vec<String> = peer.allowed_ips.iter().map(|n| n.to_string()).collect();
            args.extend(["allowed-ips".to_owned(), list.join(",")]);
        }
    }
    args
}

/// Drives one interface with the `wg` command.
#[derive(Debug, Clone)]
pub struct WgTool {
    iface: String,
}

impl WgTool {
    /// The tool for `iface`.
    pub fn new(iface: &str) -> Self {
        WgTool {
            iface: iface.to_owned(),
        }
    }

    /// Reads the interface's state.
    ///
    /// # Errors
    /// [`WgToolError`].
    pub async fn get(&self) -> Result<Device, WgToolError> {
        let out = Command::new("wg")
            .args(["show", &self.iface, "dump"])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(WgToolError::Spawn)?;
        if !out.status.success() {
            return Err(WgToolError::Failed {
                args: format!("show {} dump", self.iface),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        parse_dump(&String::from_utf8_lossy(&out.stdout))
    }

    /// Applies `update` with as few `wg set` calls as the argument limit allows (see
    /// [`batches`]).
    ///
    /// # Errors
    /// [`WgToolError`]; batches before the failing one stay applied.
    pub async fn set(&self, update: &DeviceUpdate) -> Result<(), WgToolError> {
        for batch in batches(update, MAX_SET_ARGS_BYTES) {
            self.set_one(&batch).await?;
        }
        Ok(())
    }

    async fn set_one(&self, update: &DeviceUpdate) -> Result<(), WgToolError> {
        if update.is_empty() {
            return Ok(());
        }
        let args = set_args(update);
        let mut child = Command::new("wg")
            .args(["set", &self.iface])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(WgToolError::Spawn)?;
        // Dropping stdin (at the end of this block) closes it.
        if let Some(mut stdin) = child.stdin.take()
            && let Some(key) = &update.private_key
        {
            stdin
                .write_all(format!("{}\n", key.to_base64()).as_bytes())
                .await
                .map_err(WgToolError::Spawn)?;
        }
        let out = child.wait_with_output().await.map_err(WgToolError::Spawn)?;
        if !out.status.success() {
            return Err(WgToolError::Failed {
                args: format!("set {} {}", self.iface, args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::uapi::PeerUpdate;

    // From `wg show wgx dump` against wireguard-go (throwaway keys).
    const DUMP: &str = "oBU8H66UiFSrnlutrW6strX2MJkohK0hhf00JfMfDnw=\trf+FrigePINVDVNV9ihx5frC4MUXNAKE/j+hNG+e7hI=\t5555\toff
SB1MJHN8JNAuHlzZvOp/51J3QeOAEXDet0H39UCIzUI=\t(none)\t1.2.3.4:5\tfdaa::5/128,10.0.0.0/8\t1700000000\t10\t20\t25
kEgHfVZSlSJ8QGm5JK2Fvf9tDIpKR7tp4qasoEWOz2w=\t(none)\t(none)\t(none)\t0\t0\t0\toff
";

    #[test]
    fn parses_a_dump() {
        let device = parse_dump(DUMP).unwrap();
        assert_eq!(device.listen_port, 5555);
        assert_eq!(
            device.private_key.unwrap().public_key().to_base64(),
            "rf+FrigePINVDVNV9ihx5frC4MUXNAKE/j+hNG+e7hI="
        );
        assert_eq!(device.peers.len(), 2);
        let p = &device.peers[0];
        assert_eq!(p.endpoint.as_deref(), Some("1.2.3.4:5"));
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.last_handshake_unix(), Some(1_700_000_000));
        assert_eq!(
            (p.rx_bytes, p.tx_bytes, p.persistent_keepalive),
            (10, 20, 25)
        );
        let q = &device.peers[1];
        assert!(q.allowed_ips.is_empty() && q.endpoint.is_none());
        assert_eq!(q.last_handshake_unix(), None);
        assert!(parse_dump("").is_err());
        assert!(parse_dump("a\tb\n").is_err());
        assert!(parse_dump(&format!("{DUMP}x\ty\n")).is_err());
    }

    #[test]
    fn a_large_update_is_split_within_the_argument_limit() {
        let mut update = DeviceUpdate {
            listen_port: Some(51820),
            ..Default::default()
        };
        for i in 0..5_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            if i % 10 == 0 {
                // A re-key: remove the old key, add the new one right after.
                update.peers.push(PeerUpdate::remove([0xEE; 32]));
            }
            update.peers.push(PeerUpdate::upsert(
                key,
                vec![format!("fdaa::{i:x}/128").parse().unwrap()],
            ));
        }
        let batches = batches(&update, MAX_SET_ARGS_BYTES);
        assert!(batches.len() > 1, "5,000 peers need several calls");
        assert_eq!(batches[0].listen_port, Some(51820));
        assert!(batches[1..].iter().all(|b| b.listen_port.is_none()));
        let joined: Vec<PeerUpdate> = batches.iter().flat_map(|b| b.peers.clone()).collect();
        assert_eq!(joined, update.peers, "nothing lost, order kept");
        for b in &batches {
            let bytes: usize = set_args(b).iter().map(|a| a.len() + 1).sum();
            assert!(bytes <= MAX_SET_ARGS_BYTES, "{bytes}");
        }
        // No batch ends with a removal that the next batch's first addition belongs to.
        for pair in batches.windows(2) {
            assert!(!pair[0].peers.last().unwrap().remove);
        }
    }

    #[test]
    fn renders_set_arguments() {
        let k1 = decode_key("SB1MJHN8JNAuHlzZvOp/51J3QeOAEXDet0H39UCIzUI=").unwrap();
        let k2 = decode_key("kEgHfVZSlSJ8QGm5JK2Fvf9tDIpKR7tp4qasoEWOz2w=").unwrap();
        let update = DeviceUpdate {
            private_key: Some(PrivateKey::from_bytes([1; 32])),
            listen_port: Some(51820),
            replace_peers: false,
            peers: vec![
                PeerUpdate::remove(k1),
                PeerUpdate::upsert(k2, vec!["fdaa::5/128".parse().unwrap()]),
                PeerUpdate::upsert(k1, vec![]),
            ],
        };
        assert_eq!(
            set_args(&update).join(" "),
            "listen-port 51820 private-key /dev/stdin \
             peer SB1MJHN8JNAuHlzZvOp/51J3QeOAEXDet0H39UCIzUI= remove \
             peer kEgHfVZSlSJ8QGm5JK2Fvf9tDIpKR7tp4qasoEWOz2w= allowed-ips fdaa::5/128 \
             peer SB1MJHN8JNAuHlzZvOp/51J3QeOAEXDet0H39UCIzUI= allowed-ips "
        );
    }
}
