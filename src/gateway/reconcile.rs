//! The reconcile diff: what must change on the interface so its peers equal the store's.
//!
//! Pure logic, no I/O: [`plan`] compares the peers the store wants ([`Wanted`]) with what the
//! interface reports ([`PeerInfo`]) and returns the [`Change`]s; [`to_update`] turns them into one
//! UAPI [`DeviceUpdate`]. Rules, in order of importance:
//! - A peer whose key and allowed IPs already match is never mentioned, so its session, endpoint
//!   and counters are untouched.
//! - A re-keyed peer (the interface holds its address under another key) becomes *remove old key +
//!   add new key* in the same request, so the address moves without a window where it is routed
//!   nowhere, and without touching anyone else.
//! - Everything else on the interface that the store does not want is removed.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};

use super::uapi::{DeviceUpdate, PeerInfo, PeerUpdate, RawKey};
use crate::model::{OrgSlug, PeerName};
use crate::wireguard::PublicKey;

/// A peer the store wants on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its org (for logs).
    pub org: OrgSlug,
    /// Its name (for logs).
    pub name: PeerName,
    /// Its public key.
    pub pubkey: PublicKey,
    /// Its address, routed to it as a /128.
    pub address: Ipv6Addr,
}

impl Wanted {
    /// The allowed IPs the peer must have: exactly its address.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        vec![IpNet::V6(host_net(self.address))]
    }
}

fn host_net(address: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new(address, 128).expect("128 is a valid IPv6 prefix length")
}

/// One change to the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new peer.
    Add(Wanted),
    /// The peer's address is on the interface under `old_key`: swap the key in place.
    Rekey {
        /// The key the interface holds now.
        old_key: RawKey,
        /// The peer as the store has it.
        peer: Wanted,
    },
    /// The key is right but the allowed IPs drifted: set them back.
    FixAllowedIps {
        /// The peer as the store has it.
        peer: Wanted,
        /// What the interface had.
        had: Vec<IpNet>,
    },
    /// A peer the store does not know (deleted, or another region's).
    Remove(RawKey),
}

/// What must change so the interface's peers equal `wanted`.
///
/// Duplicate keys in `wanted` (which the store forbids) keep the first entry.
pub fn plan(wanted: &[Wanted], actual: &[PeerInfo]) -> Vec<Change> {
    let actual_by_key: HashMap<&RawKey, &PeerInfo> =
        actual.iter().map(|p| (&p.public_key, p)).collect();
    let wanted_keys: HashSet<&RawKey> = wanted.iter().map(|w| w.pubkey.as_bytes()).collect();
    // Which unwanted key on the interface holds each /128, to recognise a re-key.
    let mut holder_of: HashMap<Ipv6Addr, &RawKey> = HashMap::new();
    for peer in actual {
        if wanted_keys.contains(&peer.public_key) {
            continue;
        }
        for net in &peer.allowed_ips {
            if let IpNet::V6(v6) = net
                && v6.prefix_len() == 128
            {
                holder_of.insert(v6.addr(), &peer.public_key);
            }
        }
    }

    let mut changes = Vec::new();
    let mut seen: HashSet<&RawKey> = HashSet::new();
    let mut rekeyed: HashSet<&RawKey> = HashSet::new();
    for want in wanted {
        let key = want.pubkey.as_bytes();
        if !seen.insert(key) {
            continue;
        }
        match actual_by_key.get(key) {
            Some(have) => {
                if !same_set(&have.allowed_ips, &want.allowed_ips()) {
                    changes.push(Change::FixAllowedIps {
                        peer: want.clone(),
                        had: have.allowed_ips.clone(),
                    });
                }
            }
            None => match holder_of.get(&want.address) {
                Some(old) if rekeyed.insert(*old) => changes.push(Change::Rekey {
                    old_key: **old,
                    peer: want.clone(),
                }),
                _ => changes.push(Change::Add(want.clone())),
            },
        }
    }
    for peer in actual {
        if !wanted_keys.contains(&peer.public_key) && !rekeyed.contains(&peer.public_key) {
            changes.push(Change::Remove(peer.public_key));
        }
    }
    changes
}

fn same_set(a: &[IpNet], b: &[IpNet]) -> bool {
    let a: HashSet<_> = a.iter().map(IpNet::trunc).collect();
    let b: HashSet<_> = b.iter().map(IpNet::trunc).collect();
    a == b
}

/// One UAPI request carrying all `changes`: removals first, then re-keys (old key removed, new
/// key added with the address), then additions and repairs. Unchanged peers are not named.
pub fn to_update(changes: &[Change]) -> DeviceUpdate {
    let mut peers = Vec::new();
    for change in changes {
        if let Change::Remove(key) = change {
            peers.push(PeerUpdate::remove(*key));
        }
    }
    for change in changes {
        match change {
            Change::Remove(_) => {}
            Change::Rekey { old_key, peer } => {
                peers.push(PeerUpdate::remove(*old_key));
                peers.push(PeerUpdate::upsert(
                    *peer.pubkey.as_bytes(),
                    peer.allowed_ips(),
                ));
            }
            Change::Add(peer) | Change::FixAllowedIps { peer, .. } => {
                peers.push(PeerUpdate::upsert(
                    *peer.pubkey.as_bytes(),
                    peer.allowed_ips(),
                ));
            }
        }
    }
    DeviceUpdate {
        peers,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::PrivateKey;

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes([n; 32]).public_key()
    }

    fn wanted(name: &str, n: u8, host: u16) -> Wanted {
        Wanted {
            org: "personal".parse().unwrap(),
            name: name.parse().unwrap(),
            pubkey: key(n),
            address: Ipv6Addr::new(0xfdaa, 0, 1, 1, 0, 0, 0, host),
        }
    }

    fn have(n: u8, nets: &[&str]) -> PeerInfo {
        PeerInfo {
            public_key: *key(n).as_bytes(),
            allowed_ips: nets.iter().map(|s| s.parse().unwrap()).collect(),
            rx_bytes: 99,
            ..Default::default()
        }
    }

    #[test]
    fn equal_state_plans_nothing() {
        let w = [wanted("a", 1, 1), wanted("b", 2, 2)];
        let h = [
            have(2, &["fdaa:0:1:1::2/128"]),
            have(1, &["fdaa:0:1:1::1/128"]),
        ];
        assert_eq!(plan(&w, &h), vec![]);
        assert!(to_update(&plan(&w, &h)).is_empty());
    }

    #[test]
    fn adds_and_removes() {
        let w = [wanted("a", 1, 1), wanted("c", 3, 3)];
        let h = [
            have(1, &["fdaa:0:1:1::1/128"]),
            have(2, &["fdaa:0:1:1::2/128"]),
        ];
        let changes = plan(&w, &h);
        assert_eq!(
            changes,
            vec![
                Change::Add(wanted("c", 3, 3)),
                Change::Remove(*key(2).as_bytes())
            ]
        );
        let update = to_update(&changes);
        // Removal first, then the addition; peer "a" is never named.
        assert_eq!(
            update.peers,
            vec![
                PeerUpdate::remove(*key(2).as_bytes()),
                PeerUpdate::upsert(
                    *key(3).as_bytes(),
                    vec!["fdaa:0:1:1::3/128".parse().unwrap()]
                ),
            ]
        );
        assert!(
            !update
                .peers
                .iter()
                .any(|p| p.public_key == *key(1).as_bytes())
        );
    }

    #[test]
    fn rekey_moves_the_address_in_one_request() {
        let w = [wanted("a", 1, 1), wanted("b", 9, 2)];
        let h = [
            have(1, &["fdaa:0:1:1::1/128"]),
            have(2, &["fdaa:0:1:1::2/128"]),
        ];
        let changes = plan(&w, &h);
        assert_eq!(
            changes,
            vec![Change::Rekey {
                old_key: *key(2).as_bytes(),
                peer: wanted("b", 9, 2)
            }]
        );
        assert_eq!(
            to_update(&changes).peers,
            vec![
                PeerUpdate::remove(*key(2).as_bytes()),
                PeerUpdate::upsert(
                    *key(9).as_bytes(),
                    vec!["fdaa:0:1:1::2/128".parse().unwrap()]
                ),
            ]
        );
    }

    #[test]
    fn repairs_drifted_allowed_ips_without_removing() {
        let w = [wanted("a", 1, 1)];
        let h = [have(1, &["fdaa:0:1:1::1/128", "10.0.0.0/8"])];
        let changes = plan(&w, &h);
        assert!(matches!(&changes[..], [Change::FixAllowedIps { .. }]));
        let update = to_update(&changes);
        assert_eq!(update.peers.len(), 1);
        assert!(update.peers[0].replace_allowed_ips && !update.peers[0].remove);
        // Same set in another order or with host bits in a wider net is not drift.
        let h = [have(1, &["fdaa:0:1:1::1/128"])];
        assert_eq!(plan(&w, &h), vec![]);
    }

    #[test]
    fn a_stale_key_holding_a_wanted_address_is_rekeyed_once() {
        // Two stale keys claim the same address (hand-made drift): one is re-keyed, one removed.
        let w = [wanted("a", 1, 1)];
        let h = [
            have(7, &["fdaa:0:1:1::1/128"]),
            have(8, &["fdaa:0:1:1::1/128"]),
        ];
        let changes = plan(&w, &h);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.iter().any(|c| matches!(c, Change::Rekey { .. })));
        assert!(changes.iter().any(|c| matches!(c, Change::Remove(_))));
    }

    #[test]
    fn empty_store_clears_the_interface_and_duplicates_keep_the_first() {
        let h = [have(1, &[]), have(2, &["fdaa::/16"])];
        assert_eq!(plan(&[], &h).len(), 2);
        let w = [wanted("a", 1, 1), wanted("b", 1, 2)];
        assert_eq!(plan(&w, &[]), vec![Change::Add(wanted("a", 1, 1))]);
    }
}
