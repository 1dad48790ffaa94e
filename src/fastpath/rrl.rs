//! Response-rate limiting (RRL) of negative UDP answers, after BIND's and Knot's RRL: a source
//! that draws more than `responses_per_second` NXDOMAIN, REFUSED or FORMERR answers a second gets
//! the excess dropped, except every `slip`-th one, which is sent truncated (TC set, no records),
//! so a real client behind a forged flood still gets through by retrying over TCP.
//!
//! Positive answers (NOERROR, NODATA included) are never counted: the caller checks the answer's
//! response code first, one byte, and only negative answers reach [`Rrl::check`].
//!
//! # Sources
//! A source is counted by its network, as BIND counts it: an IPv4 address by its /24, an IPv6
//! address by its /56 (an attacker holding a /64 cannot spread over many budgets), except an
//! address inside the per-address network ([`RrlSettings::per_address`], the `ula_prefix` the
//! orgs' /48s come from), which is counted alone: those addresses reach the server through
//! WireGuard, whose cryptokey routing makes them unforgeable, and many nodes of one org share a
//! /64. An IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! # Accounting
//! Each source has a balance: it earns `responses_per_second` a second, up to that many (one
//! second of burst), and spends one per negative answer; an answer is sent while the balance is
//! not below zero. The balance may fall to `-responses_per_second × window`, so a source that
//! keeps flooding stays limited until its rate over the last `window` seconds is back under the
//! limit.
//!
//! # Memory
//! The table is a fixed array of [`TABLE_SLOTS`] 64-bit atomics allocated once, so a flood from
//! forged sources costs no allocation: a source's slot is chosen by a keyed hash, and a source
//! that lands on a slot another one holds takes it over with a fresh balance (a forged flood of
//! random sources is then limited only by the work it makes, as in BIND, whose table evicts
//! too). Each check is one load and one compare-and-swap; no lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use ipnet::Ipv6Net;

/// Slots in the table (a power of two): 65,536 × 8 bytes = 512 KiB per server.
pub const TABLE_SLOTS: usize = 1 << 16;

/// The most `responses_per_second` can be (the balance must fit its 24 bits with the window).
pub const MAX_RATE: u32 = crate::config::MAX_RRL_RATE;

/// The longest window, in seconds.
pub const MAX_WINDOW: u32 = crate::config::MAX_RRL_WINDOW;

/// The IPv4 prefix a source is counted by.
pub const IPV4_PREFIX: u8 = 24;

/// The IPv6 prefix a source is counted by (outside [`RrlSettings::per_address`]).
pub const IPV6_PREFIX: u8 = 56;

/// The limits, from `[dns] rrl_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlSettings {
    /// Negative answers a second per source; 0 turns RRL off.
    pub responses_per_second: u32,
    /// Every `slip`-th limited answer is sent truncated instead of dropped; 0: all are dropped,
    /// 1: all are truncated.
    pub slip: u32,
    /// Seconds over which a flood is remembered (1 to [`MAX_WINDOW`]).
    pub window: u32,
    /// Sources inside this network are counted one address each (see the module docs).
    pub per_address: Option<Ipv6Net>,
}

impl Default for RrlSettings {
    /// The `[dns]` defaults: 200 a second, every second limited answer truncated, a 5 s window,
    /// addresses in `fdaa::/16` (the default `ula_prefix`) counted one by one.
    fn default() -> Self {
        RrlSettings {
            responses_per_second: DEFAULT_RATE,
            slip: DEFAULT_SLIP,
            window: DEFAULT_WINDOW,
            per_address: Some("fdaa::/16".parse().expect("valid literal")),
        }
    }
}

/// The default of `[dns] rrl_responses_per_second` ([`crate::config`] defines it).
pub const DEFAULT_RATE: u32 = crate::config::DEFAULT_RRL_RATE;

/// The default of `[dns] rrl_slip`.
pub const DEFAULT_SLIP: u32 = crate::config::DEFAULT_RRL_SLIP;

/// The default of `[dns] rrl_window`, in seconds.
pub const DEFAULT_WINDOW: u32 = crate::config::DEFAULT_RRL_WINDOW;

impl RrlSettings {
    /// The limit `[dns] rrl_*` asks for, counting addresses inside `ula_prefix` (the orgs'
    /// tunnel addresses) one by one.
    pub fn from_config(dns: &crate::config::DnsConfig, ula_prefix: Ipv6Net) -> RrlSettings {
        RrlSettings {
            responses_per_second: dns.rrl_responses_per_second,
            slip: dns.rrl_slip,
            window: dns.rrl_window.as_secs().min(u64::from(u32::MAX)) as u32,
            per_address: Some(ula_prefix),
        }
    }

    /// RRL turned off.
    pub fn off() -> RrlSettings {
        RrlSettings {
            responses_per_second: 0,
            slip: 0,
            window: 1,
            per_address: None,
        }
    }
}

/// The RRL settings of a server and its live tables: every DNS listener of the process (each
/// org's `::3` too) takes its table from here, and a configuration reload retunes them all.
#[derive(Debug, Clone)]
pub struct RrlTuner(std::sync::Arc<TunerInner>);

#[derive(Debug)]
struct TunerInner {
    current: std::sync::Mutex<RrlSettings>,
    live: std::sync::Mutex<Vec<std::sync::Weak<Rrl>>>,
}

impl RrlTuner {
    /// A tuner starting at `settings`.
    pub fn new(settings: RrlSettings) -> RrlTuner {
        RrlTuner(std::sync::Arc::new(TunerInner {
            current: std::sync::Mutex::new(settings),
            live: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> RrlSettings {
        *self.0.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A table for a new listener, at the settings in force, retuned with the others from now on.
    pub fn table(&self) -> std::sync::Arc<Rrl> {
        let table = std::sync::Arc::new(Rrl::build(&self.settings()));
        let mut live = self.0.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|t| t.strong_count() > 0);
        live.push(std::sync::Arc::downgrade(&table));
        table
    }

    /// Applies `settings` to every live table and to the tables made later.
    pub fn retune(&self, settings: RrlSettings) {
        *self.0.current.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        let live = self.0.live.lock().unwrap_or_else(|e| e.into_inner());
        for table in live.iter().filter_map(std::sync::Weak::upgrade) {
            table.retune(&settings);
        }
    }
}

/// What to do with a negative answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Send,
    /// Send it truncated (see [`truncate`]).
    Slip,
    /// Send nothing.
    Drop,
}

/// The rate-limit table of one server (shared by its fast-path threads and its delegated path).
pub struct Rrl {
    /// Negative answers a second per source; 0: off (everything is sent). Atomics so that a
    /// configuration reload retunes a live table ([`RrlTuner`]); relaxed loads cost nothing.
    rate: AtomicI64,
    /// The lowest balance: `-rate × window`.
    floor: AtomicI64,
    slip: AtomicU32,
    per_address: Option<(u128, u128)>,
    /// The secret key of the slot hash.
    seed: [u64; 2],
    table: Box<[AtomicU64]>,
    /// Limited answers so far, for choosing every `slip`-th.
    limited: AtomicU32,
    /// [`super::sys::coarse_seconds`] when the table was made.
    epoch: u64,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("rate", &self.rate.load(Ordering::Relaxed))
            .field("floor", &self.floor.load(Ordering::Relaxed))
            .field("slip", &self.slip.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// An entry: tag (20 bits) | time in seconds since `epoch`, wrapping (20 bits) | balance (24 bits,
// two's complement). 0 is an empty slot (tags are never 0).
const TAG_SHIFT: u32 = 44;
const TIME_SHIFT: u32 = 24;
const TIME_MASK: u64 = (1 << 20) - 1;
const BAL_MASK: u64 = (1 << 24) - 1;

fn pack(tag: u64, time: u32, balance: i64) -> u64 {
    (tag << TAG_SHIFT) | ((u64::from(time) & TIME_MASK) << TIME_SHIFT) | (balance as u64 & BAL_MASK)
}

fn unpack(entry: u64) -> (u64, u32, i64) {
    let tag = entry >> TAG_SHIFT;
    let time = ((entry >> TIME_SHIFT) & TIME_MASK) as u32;
    // Sign-extend the low 24 bits.
    let balance = ((entry << 40) as i64) >> 40;
    (tag, time, balance)
}

impl Rrl {
    /// A table for `settings`; `None` when RRL is off (rate 0).
    pub fn new(settings: &RrlSettings) -> Option<Rrl> {
        (settings.responses_per_second != 0).then(|| Rrl::build(settings))
    }

    /// A table for `settings`, also when RRL is off (rate 0: everything is sent until a retune
    /// turns it on).
    fn build(settings: &RrlSettings) -> Rrl {
        let rrl = Rrl {
            rate: AtomicI64::new(0),
            floor: AtomicI64::new(0),
            slip: AtomicU32::new(0),
            per_address: settings.per_address.map(net_bits),
            seed: random_seed(),
            table: (0..TABLE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            limited: AtomicU32::new(0),
            epoch: super::sys::coarse_seconds(),
        };
        rrl.retune(settings);
        rrl
    }

    /// Applies the rate, slip and window of `settings` to this live table (the network counted
    /// by address stays as built). What each source has spent stays spent.
    pub fn retune(&self, settings: &RrlSettings) {
        let rate = i64::from(settings.responses_per_second.min(MAX_RATE));
        let window = i64::from(settings.window.clamp(1, MAX_WINDOW));
        self.floor.store(-rate * window, Ordering::Relaxed);
        self.slip.store(settings.slip, Ordering::Relaxed);
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// The clock [`Rrl::check`] takes: whole seconds since the table was made (the coarse
    /// monotonic clock: a few nanoseconds to read).
    pub fn now(&self) -> u32 {
        super::sys::coarse_seconds().saturating_sub(self.epoch) as u32
    }

    /// The key a source is counted by (see the module docs).
    fn key(&self, src: IpAddr) -> u128 {
        source_key(src, IPV4_PREFIX, IPV6_PREFIX, self.per_address)
    }

    /// The slot hash of `key`: two folded multiplies (as foldhash mixes) under the secret seed.
    /// Cheap, since it runs per negative answer; keyed, so no one can aim forged sources at a
    /// victim's slot.
    #[inline]
    fn hash(&self, key: u128) -> u64 {
        let fold = |a: u64, b: u64| {
            let full = u128::from(a).wrapping_mul(u128::from(b));
            (full as u64) ^ ((full >> 64) as u64)
        };
        let h = fold(
            (key as u64) ^ self.seed[0],
            ((key >> 64) as u64) ^ self.seed[1],
        );
        fold(h ^ self.seed[1], 0x9E37_79B9_7F4A_7C15)
    }

    /// Charges one negative answer to `src` at `now` (from [`Rrl::now`]) and says what to do
    /// with it.
    pub fn check(&self, src: IpAddr, now: u32) -> Verdict {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return Verdict::Send;
        }
        let floor = self.floor.load(Ordering::Relaxed);
        let hash = self.hash(self.key(src));
        let slot = &self.table[hash as usize & (TABLE_SLOTS - 1)];
        let tag = (hash >> TAG_SHIFT).max(1);
        let mut current = slot.load(Ordering::Relaxed);
        let balance = loop {
            let (old_tag, then, old_balance) = unpack(current);
            let earned = if old_tag == tag {
                let elapsed = i64::from(now.wrapping_sub(then) & TIME_MASK as u32);
                (old_balance + elapsed * rate).min(rate)
            } else {
                rate
            };
            let balance = earned - 1;
            let new = pack(tag, now, balance.max(floor));
            match slot.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break balance,
                Err(actual) => current = actual,
            }
        };
        if balance >= 0 {
            Verdict::Send
        } else if let slip = self.slip.load(Ordering::Relaxed)
            && slip != 0
            && self
                .limited
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(slip)
        {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// A random seed for the slot hash; should the system's randomness fail, one from the clock and
/// an address (weaker against an attacker aiming at a slot, still a correct table).
fn random_seed() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let here = &bytes as *const _ as usize as u128;
        bytes = (nanos ^ (here << 64)).to_le_bytes();
    }
    let (a, b) = bytes.split_at(8);
    [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ]
}

/// `src` as a number: its first `v4_prefix` bits for IPv4 (also IPv4-mapped IPv6), its first
/// `v6_prefix` bits for IPv6, or all of it inside `per_address` (network, netmask as numbers).
/// An IPv4 key is its IPv4-mapped IPv6 network, so IPv4 and IPv6 keys never collide.
pub fn source_key(
    src: IpAddr,
    v4_prefix: u8,
    v6_prefix: u8,
    per_address: Option<(u128, u128)>,
) -> u128 {
    let v4 = match src {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => {
                let bits = u128::from(v6);
                return match per_address {
                    Some((net, mask)) if bits & mask == net => bits,
                    _ => bits & prefix_mask(128, v6_prefix),
                };
            }
        },
    };
    (0xffff << 32) | (u128::from(u32::from(v4)) & prefix_mask(32, v4_prefix))
}

/// The netmask of a `prefix`-bit network in a `bits`-bit address, as a number.
fn prefix_mask(bits: u32, prefix: u8) -> u128 {
    let host = bits.saturating_sub(u32::from(prefix));
    let host_mask = if host == 0 {
        0
    } else {
        u128::MAX >> (128 - host)
    };
    (u128::MAX >> (128 - bits)) & !host_mask
}

/// `net` as (network, netmask) numbers, for [`source_key`].
pub fn net_bits(net: Ipv6Net) -> (u128, u128) {
    let mask = u128::from(net.netmask());
    (u128::from(net.network()) & mask, mask)
}

/// Whether an answer whose fourth header byte is `flags_low` is one RRL counts: NXDOMAIN,
/// REFUSED or FORMERR.
#[inline(always)]
pub fn is_negative(flags_low: u8) -> bool {
    matches!(flags_low & 0x0F, 1 | 3 | 5)
}

/// Cuts the answer `reply` down to its header and question, with TC set and no records, in
/// place; returns its new length (the header alone when the question cannot be read).
pub fn truncate(reply: &mut [u8]) -> usize {
    if reply.len() < 12 {
        return reply.len();
    }
    let mut end = 12;
    if u16::from_be_bytes([reply[4], reply[5]]) == 1 {
        let mut at = 12;
        let question_end = loop {
            match reply.get(at) {
                Some(0) => break (at + 5 <= reply.len()).then_some(at + 5),
                Some(&len) if len <= 63 => at += 1 + usize::from(len),
                _ => break None,
            }
        };
        if let Some(question_end) = question_end {
            end = question_end;
        }
    }
    if end == 12 {
        reply[4..6].fill(0);
    }
    reply[2] |= 0x02;
    reply[6..12].fill(0);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_dns_section() {
        let config = crate::config::Config::default();
        assert_eq!(
            RrlSettings::from_config(&config.dns, config.ula_prefix),
            RrlSettings::default()
        );
    }

    fn rrl(rate: u32, slip: u32, window: u32) -> Rrl {
        Rrl::new(&RrlSettings {
            responses_per_second: rate,
            slip,
            window,
            per_address: Some("fdaa::/16".parse().unwrap()),
        })
        .unwrap()
    }

    fn count(rrl: &Rrl, src: &str, n: usize, now: u32) -> [usize; 3] {
        let mut out = [0; 3];
        for _ in 0..n {
            match rrl.check(src.parse().unwrap(), now) {
                Verdict::Send => out[0] += 1,
                Verdict::Slip => out[1] += 1,
                Verdict::Drop => out[2] += 1,
            }
        }
        out
    }

    #[test]
    fn entries_round_trip() {
        for balance in [-6_000_000, -1, 0, 1, 100_000] {
            assert_eq!(
                unpack(pack(0xABCDE, 0xFFFFF, balance)),
                (0xABCDE, 0xFFFFF, balance)
            );
        }
    }

    #[test]
    fn a_source_gets_its_rate_then_every_slip_th_answer_truncated() {
        let rrl = rrl(10, 2, 5);
        assert_eq!(count(&rrl, "192.0.2.1", 30, 0), [10, 10, 10]);
        // The same /24 shares the budget; another /24 has its own.
        assert_eq!(count(&rrl, "192.0.2.200", 1, 0)[0], 0);
        assert_eq!(count(&rrl, "192.0.3.1", 10, 0), [10, 0, 0]);
        // IPv4-mapped IPv6 is the IPv4 source.
        assert_eq!(count(&rrl, "::ffff:192.0.2.7", 1, 0)[0], 0);
    }

    #[test]
    fn a_flood_is_remembered_for_the_window_then_forgiven() {
        let rrl = rrl(10, 0, 3);
        assert_eq!(count(&rrl, "2001:db8:1:2::1", 1000, 0), [10, 0, 990]);
        // In debt to the floor (-30): a second earns 10, not enough.
        assert_eq!(count(&rrl, "2001:db8:1:2::1", 1, 1)[0], 0);
        // After the window the source is back to its full rate, no more.
        assert_eq!(count(&rrl, "2001:db8:1:2::1", 20, 10), [10, 0, 10]);
    }

    #[test]
    fn ipv6_counts_by_56_except_inside_the_per_address_network() {
        let rrl = rrl(5, 0, 1);
        assert_eq!(count(&rrl, "2001:db8:0:1::1", 5, 0), [5, 0, 0]);
        assert_eq!(count(&rrl, "2001:db8:0:ff::2", 1, 0), [0, 0, 1], "same /56");
        assert_eq!(
            count(&rrl, "2001:db8:0:100::2", 1, 0),
            [1, 0, 0],
            "next /56"
        );
        // Nodes of one org, in one /64, each have their own budget.
        assert_eq!(count(&rrl, "fdaa:1:2:1::1", 5, 0), [5, 0, 0]);
        assert_eq!(count(&rrl, "fdaa:1:2:1::2", 5, 0), [5, 0, 0]);
        assert_eq!(count(&rrl, "fdaa:1:2:1::1", 1, 0), [0, 0, 1]);
    }

    #[test]
    fn off_is_none_and_only_negative_codes_count() {
        assert!(Rrl::new(&RrlSettings::off()).is_none());
        for (rcode, negative) in [
            (0, false),
            (1, true),
            (2, false),
            (3, true),
            (4, false),
            (5, true),
        ] {
            assert_eq!(is_negative(0x80 | rcode), negative, "{rcode}");
        }
    }

    #[test]
    fn a_tuner_retunes_every_live_table_and_the_next_ones() {
        let settings = |rate| RrlSettings {
            responses_per_second: rate,
            slip: 0,
            window: 1,
            per_address: None,
        };
        let tuner = RrlTuner::new(settings(0));
        let (a, b) = (tuner.table(), tuner.table());
        // Off: everything is sent.
        assert_eq!(count(&a, "192.0.2.1", 50, 0), [50, 0, 0]);
        tuner.retune(settings(5));
        for table in [&a, &b, &tuner.table()] {
            assert_eq!(count(table, "192.0.2.1", 8, 1), [5, 0, 3]);
        }
        // Raised: the same second's source gets more.
        tuner.retune(settings(100));
        assert_eq!(count(&a, "198.51.100.1", 50, 2), [50, 0, 0]);
        assert_eq!(tuner.settings(), settings(100));
        drop(b);
        tuner.retune(settings(1));
        assert_eq!(count(&a, "203.0.113.1", 3, 3), [1, 0, 2]);
    }

    #[test]
    fn source_keys() {
        let per_address = Some(net_bits("fdaa::/16".parse().unwrap()));
        let key = |s: &str, v4, v6| source_key(s.parse().unwrap(), v4, v6, per_address);
        assert_eq!(key("192.0.2.77", 24, 56), key("::ffff:192.0.2.1", 24, 56));
        assert_ne!(key("192.0.2.77", 32, 56), key("192.0.2.1", 32, 56));
        assert_eq!(key("0.0.0.0", 0, 0), key("255.255.255.255", 0, 0));
        assert_eq!(key("2001:db8::1", 56, 64), key("2001:db8:0:ff::2", 56, 56));
        assert_ne!(key("2001:db8::1", 56, 64), key("2001:db8:0:100::", 56, 56));
        assert_ne!(key("fdaa::1", 24, 0), key("fdaa::2", 24, 0));
        assert_eq!(
            key("2001:db8::1", 24, 128),
            u128::from("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap())
        );
    }

    #[test]
    fn the_table_never_grows() {
        let rrl = rrl(1, 0, 1);
        for i in 0..200_000u32 {
            let _ = rrl.check(IpAddr::V4((i << 8).into()), 0);
        }
        assert_eq!(rrl.table.len(), TABLE_SLOTS);
    }

    #[test]
    fn truncate_keeps_header_and_question() {
        // id, flags (QR AA, NXDOMAIN), counts 1/0/1/1, question `a.` AAAA IN, then records.
        let mut reply = vec![
            0x12, 0x34, 0x84, 0x03, 0, 1, 0, 0, 0, 1, 0, 1, 1, b'a', 0, 0, 28, 0, 1, 0xde, 0xad,
        ];
        let n = truncate(&mut reply);
        assert_eq!(n, 19);
        assert_eq!(
            &reply[..n],
            &[
                0x12, 0x34, 0x86, 0x03, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 28, 0, 1
            ]
        );
        // No readable question: the header alone.
        let mut bad = vec![0x12, 0x34, 0x84, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0];
        assert_eq!(truncate(&mut bad), 12);
        assert_eq!(&bad[4..12], &[0; 8]);
        assert_eq!(truncate(&mut [1, 2, 3]), 3);
    }
}
