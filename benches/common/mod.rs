//! The synthetic store dump every benchmark builds on: one org, `n` peers `peer-<i>` in groups
//! `g-<i / 50>` of 50, addresses numbered from 1 as the store allocates them.

use sixpn::model::{Generation, Org, Peer};
use sixpn::store::Dump;

/// Members per group.
pub const GROUP_SIZE: usize = 50;

/// One org (`personal`, `fdaa:0:1::/48`) with `n_peers` peers.
pub fn dump(n_peers: usize) -> Dump {
    let org = Org {
        slug: "personal".parse().expect("valid"),
        prefix: "fdaa:0:1::/48".parse().expect("valid"),
        created_at: 0,
    };
    let pubkey = sixpn::wireguard::PrivateKey::from_bytes([7; 32]).public_key();
    let peers = (0..n_peers)
        .map(|i| Peer {
            org: org.slug.clone(),
            name: format!("peer-{i}").parse().expect("valid"),
            group: format!("g-{}", i / GROUP_SIZE).parse().expect("valid"),
            region: "local".parse().expect("valid"),
            pubkey,
            address: sixpn::store::peer_address(org.prefix, i as u64 + 1),
            token: "t".parse().expect("valid"),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        })
        .collect();
    Dump {
        generation: Generation(1),
        orgs: vec![org],
        peers,
    }
}
