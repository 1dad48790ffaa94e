//! Key expiry in the change feed (issue 23): a peer whose key expired stops being served at its
//! deadline, on every server, without a store write.
//!
//! Each [`super::Feed`] keeps the deadlines of the peers it handed out that carry one
//! (`key_expires_at`), in a sorted set, earliest first. It leaves out what has already expired
//! (a full state drops such peers; an upsert of one becomes a removal), and when the earliest
//! deadline passes it hands its consumer a change set that removes the peers due, tagged with
//! the generation the consumer already holds: nothing was committed, the store's rows are
//! unchanged (the peer stays listed as expired), and only what is served changes. A re-key
//! writes a new deadline, which comes through the feed as an ordinary upsert and brings the
//! peer back.
//!
//! So the DNS publisher patches its snapshot and the gateway removes the peer at the deadline,
//! and the DNS hot path never looks at a clock. The cost is O(log n) per change that carries a
//! deadline, and memory only for peers that have one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::feed::Update;
use crate::model::{Change, ChangeSet, Generation, OrgSlug, Peer, PeerName};

/// The longest a feed sleeps before looking at the wall clock again, so that a clock that
/// jumped forward is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Now, unix milliseconds.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether `peer`'s key has expired at `now_ms` (unix milliseconds).
fn expired(peer: &Peer, now_ms: i64) -> bool {
    peer.key_expires_at
        .is_some_and(|t| t.saturating_mul(1000) <= now_ms)
}

/// The deadlines of the peers a feed handed out. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    /// (deadline in unix seconds, org, name), earliest first.
    deadlines: BTreeSet<(i64, OrgSlug, PeerName)>,
    /// The peers with a deadline, as last handed out (their removal carries the full row).
    peers: HashMap<(OrgSlug, PeerName), Peer>,
}

impl Expiry {
    /// How many peers have a pending deadline.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    /// How long until the earliest deadline (zero when one is due), at most [`MAX_SLEEP`];
    /// `None` when no peer has one.
    pub(super) fn wait(&self, now_ms: i64) -> Option<Duration> {
        let (deadline, _, _) = self.deadlines.first()?;
        let ms = deadline.saturating_mul(1000).saturating_sub(now_ms).max(0);
        Some(Duration::from_millis(ms as u64).min(MAX_SLEEP))
    }

    /// Takes out the peers whose deadline passed at `now_ms`: a change set that removes them,
    /// as of `generation` (the one the consumer holds), or `None` when none is due.
    pub(super) fn take_due(&mut self, now_ms: i64, generation: Generation) -> Option<ChangeSet> {
        let mut changes = Vec::new();
        while let Some((deadline, _, _)) = self.deadlines.first() {
            if deadline.saturating_mul(1000) > now_ms {
                break;
            }
            let (_, org, name) = self.deadlines.pop_first().expect("not empty");
            if let Some(peer) = self.peers.remove(&(org, name)) {
                tracing::debug!(org = %peer.org, peer = %peer.name, key_expires_at = peer.key_expires_at.unwrap_or_default(),
                    "peer's key expired; no longer served until it is re-keyed");
                changes.push(Change::PeerRemoved(peer));
            }
        }
        (!changes.is_empty()).then_some(ChangeSet {
            generation,
            changes,
        })
    }

    /// Leaves out of `update` what has expired at `now_ms` and records the deadlines of the
    /// rest.
    pub(super) fn filter(&mut self, update: Update, now_ms: i64) -> Update {
        match update {
            Update::Reload(mut dump) => {
                self.deadlines.clear();
                self.peers.clear();
                dump.peers.retain(|peer| !expired(peer, now_ms));
                for peer in &dump.peers {
                    self.track(peer);
                }
                Update::Reload(dump)
            }
            Update::Changes(sets) => Update::Changes(
                sets.into_iter()
                    .map(|set| self.filter_set(set, now_ms))
                    .collect(),
            ),
        }
    }

    fn filter_set(&mut self, set: Arc<ChangeSet>, now_ms: i64) -> Arc<ChangeSet> {
        let any_expired = set
            .changes
            .iter()
            .any(|c| matches!(c, Change::PeerUpserted(p) if expired(p, now_ms)));
        for change in &set.changes {
            match change {
                Change::OrgCreated(_) => {}
                Change::PeerUpserted(peer) => {
                    self.untrack(&peer.org, &peer.name);
                    if !expired(peer, now_ms) {
                        self.track(peer);
                    }
                }
                Change::PeerRemoved(peer) => self.untrack(&peer.org, &peer.name),
            }
        }
        if !any_expired {
            return set;
        }
        // Written with a deadline already past (a clock behind, a re-key with a tiny lifetime,
        // a set read late from the log): served as gone.
        let changes = set
            .changes
            .iter()
            .map(|c| match c {
                Change::PeerUpserted(p) if expired(p, now_ms) => Change::PeerRemoved(p.clone()),
                other => other.clone(),
            })
            .collect();
        Arc::new(ChangeSet {
            generation: set.generation,
            changes,
        })
    }

    fn track(&mut self, peer: &Peer) {
        if let Some(deadline) = peer.key_expires_at {
            self.deadlines
                .insert((deadline, peer.org.clone(), peer.name.clone()));
            self.peers
                .insert((peer.org.clone(), peer.name.clone()), peer.clone());
        }
    }

    fn untrack(&mut self, org: &OrgSlug, name: &PeerName) {
        if let Some(old) = self.peers.remove(&(org.clone(), name.clone()))
            && let Some(deadline) = old.key_expires_at
        {
            self.deadlines.remove(&(deadline, old.org, old.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Org;
    use crate::store::Dump;

    fn peer(n: u8, expires: Option<i64>) -> Peer {
        let prefix: ipnet::Ipv6Net = "fdaa:0:1::/48".parse().unwrap();
        Peer {
            org: "personal".parse().unwrap(),
            name: format!("node-{n}").parse().unwrap(),
            group: "web".parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: crate::wireguard::PrivateKey::from_bytes([n; 32]).public_key(),
            address: crate::model::prefix_host(prefix, (1u128 << 64) | u128::from(n)),
            token: "t".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
            key_expires_at: expires,
        }
    }

    fn names(set: &ChangeSet) -> Vec<(bool, String)> {
        set.changes
            .iter()
            .map(|c| match c {
                Change::PeerUpserted(p) => (true, p.name.to_string()),
                Change::PeerRemoved(p) => (false, p.name.to_string()),
                Change::OrgCreated(o) => (true, o.slug.to_string()),
            })
            .collect()
    }

    #[test]
    fn a_reload_drops_the_expired_and_times_the_rest() {
        let mut expiry = Expiry::default();
        let dump = Dump {
            generation: Generation(3),
            orgs: vec![Org {
                slug: "personal".parse().unwrap(),
                prefix: "fdaa:0:1::/48".parse().unwrap(),
                created_at: 0,
            }],
            peers: vec![peer(1, None), peer(2, Some(100)), peer(3, Some(200))],
        };
        let Update::Reload(dump) = expiry.filter(Update::Reload(dump), 150_000) else {
            panic!("a reload stays a reload");
        };
        let kept: Vec<String> = dump.peers.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(kept, ["node-1", "node-3"]);
        assert_eq!(expiry.len(), 1);
        assert_eq!(expiry.wait(150_000), Some(MAX_SLEEP));
        assert_eq!(expiry.wait(199_500), Some(Duration::from_millis(500)));
        assert!(expiry.take_due(199_999, Generation(3)).is_none());
        let due = expiry.take_due(200_000, Generation(3)).unwrap();
        assert_eq!(due.generation, Generation(3), "no new generation");
        assert_eq!(names(&due), [(false, "node-3".to_string())]);
        assert_eq!(expiry.wait(200_000), None);
    }

    #[test]
    fn a_rekey_moves_the_deadline_and_an_expired_upsert_is_a_removal() {
        let mut expiry = Expiry::default();
        let set = |g, changes| {
            Arc::new(ChangeSet {
                generation: Generation(g),
                changes,
            })
        };
        let Update::Changes(out) = expiry.filter(
            Update::Changes(vec![set(1, vec![Change::PeerUpserted(peer(1, Some(10)))])]),
            5_000,
        ) else {
            panic!()
        };
        assert_eq!(names(&out[0]), [(true, "node-1".to_string())]);
        // Re-keyed with a later deadline: the old one is gone.
        expiry.filter(
            Update::Changes(vec![set(2, vec![Change::PeerUpserted(peer(1, Some(20)))])]),
            6_000,
        );
        assert!(expiry.take_due(15_000, Generation(2)).is_none());
        assert_eq!(expiry.len(), 1);
        // Re-keyed with a deadline already past: served as removed, not tracked.
        let Update::Changes(out) = expiry.filter(
            Update::Changes(vec![set(3, vec![Change::PeerUpserted(peer(1, Some(4)))])]),
            7_000,
        ) else {
            panic!()
        };
        assert_eq!(out[0].generation, Generation(3));
        assert_eq!(names(&out[0]), [(false, "node-1".to_string())]);
        assert_eq!(expiry.len(), 0);
        // Re-keyed without expiry, then deleted: nothing left to time.
        expiry.filter(
            Update::Changes(vec![set(4, vec![Change::PeerUpserted(peer(2, Some(50)))])]),
            7_000,
        );
        expiry.filter(
            Update::Changes(vec![set(5, vec![Change::PeerRemoved(peer(2, Some(50)))])]),
            7_000,
        );
        assert_eq!(expiry.wait(7_000), None);
    }
}
