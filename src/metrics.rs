//! Prometheus metrics: one process-wide recorder (the `metrics` facade with
//! `metrics-exporter-prometheus` as its backend, without its HTTP listener), rendered by the API's
//! `GET /metrics` in the Prometheus text format. Every name starts with `sixpn_`.
//!
//! Two kinds of sources:
//! - Events counted as they happen: API requests (by the API's middleware), store calls timed by
//!   the API, gateway sync errors, reaped peers. They go through the `metrics` macros.
//! - DNS queries. The UDP fast path has a budget of a few hundred instructions per query, so it
//!   never touches a shared counter per query: each worker thread counts into a plain
//!   [`FastCounts`] and adds it into the shared atomics here once per batch. The full (hickory)
//!   path adds once per query ([`count_full_query`]); its cost dwarfs an atomic add. Both are
//!   copied into the recorder at scrape time.
//!
//! What is a state rather than an event (snapshot generation and age, peers and tokens per org,
//! handshake ages) is read by the API when it is scraped, never kept here.
//!
//! This module never blocks and never fails: a metric that cannot be recorded is dropped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for latencies, in seconds (1 ms to 10 s).
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Response codes counted one by one; every other one is counted under [`OTHER_RCODE`].
const N_RCODES: usize = 17;
/// The slot for response codes above 16.
const OTHER_RCODE: usize = N_RCODES;

/// Which DNS path answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsPath {
    /// The UDP fast path (prebuilt answer bytes).
    Fast,
    /// The full hickory handler (TCP, and whatever the fast path delegates).
    Full,
}

struct DnsCounters {
    /// Answers by response code (index: the code; the last slot: any code above 16).
    rcodes: [AtomicU64; N_RCODES + 1],
    /// Answers sent with TC set.
    truncated: AtomicU64,
    /// Negative answers the response-rate limit dropped (built, never sent).
    rrl_dropped: AtomicU64,
}

impl DnsCounters {
    const fn new() -> DnsCounters {
        DnsCounters {
            rcodes: [const { AtomicU64::new(0) }; N_RCODES + 1],
            truncated: AtomicU64::new(0),
            rrl_dropped: AtomicU64::new(0),
        }
    }
}

static FAST: DnsCounters = DnsCounters::new();
static FULL: DnsCounters = DnsCounters::new();

fn rcode_slot(rcode: u16) -> usize {
    usize::from(rcode).min(OTHER_RCODE)
}

/// Counts one answer of the full DNS path with response code `rcode`.
pub fn count_full_query(rcode: u16, truncated: bool) {
    FULL.rcodes[rcode_slot(rcode)].fetch_add(1, Ordering::Relaxed);
    if truncated {
        FULL.truncated.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one answer of the full DNS path that the response-rate limit dropped.
pub fn count_full_rrl_drop() {
    FULL.rrl_dropped.fetch_add(1, Ordering::Relaxed);
}

/// A fast-path worker thread's own counts: plain integers, added into the shared counters by
/// [`FastCounts::flush`] once per batch.
#[derive(Debug, Default)]
pub struct FastCounts {
    rcodes: [u64; N_RCODES + 1],
    truncated: u64,
    rrl_dropped: u64,
    any: bool,
}

impl FastCounts {
    /// Counts a reply the fast path built (a DNS message, at least its 12-byte header).
    #[inline]
    pub fn reply(&mut self, reply: &[u8]) {
        if let [_, _, flags, rcode, ..] = *reply {
            self.rcodes[usize::from(rcode & 0x0f)] += 1;
            self.truncated += u64::from(flags & 0x02 != 0);
            self.any = true;
        }
    }

    /// Counts a negative answer the response-rate limit dropped (only ever under a flood).
    #[inline]
    pub fn rrl_drop(&mut self) {
        self.rrl_dropped += 1;
        self.any = true;
    }

    /// Adds the counts into the shared counters and starts again from zero.
    pub fn flush(&mut self) {
        if !self.any {
            return;
        }
        for (shared, n) in FAST.rcodes.iter().zip(&mut self.rcodes) {
            if *n != 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        if self.truncated != 0 {
            FAST.truncated.fetch_add(self.truncated, Ordering::Relaxed);
            self.truncated = 0;
        }
        if self.rrl_dropped != 0 {
            FAST.rrl_dropped
                .fetch_add(self.rrl_dropped, Ordering::Relaxed);
            self.rrl_dropped = 0;
        }
        self.any = false;
    }
}

/// The response code's name as DNS tools print it.
fn rcode_name(slot: usize) -> &'static str {
    match slot {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        _ => "OTHER",
    }
}

/// Answers of one path with one response code: `(path, rcode name, answers)`.
type RcodeCount = (DnsPath, &'static str, u64);

/// Per-path totals: `(path, answers sent truncated, answers the rate limit dropped)`.
type PathCount = (DnsPath, u64, u64);

/// The DNS counts so far: `(path, rcode name, answers)` for every code seen (and always the
/// common ones), then the truncated and rate-limited answers per path.
fn dns_counts() -> (Vec<RcodeCount>, [PathCount; 2]) {
    let mut out = Vec::new();
    for (path, counters) in [(DnsPath::Fast, &FAST), (DnsPath::Full, &FULL)] {
        let mut other = 0;
        for (slot, n) in counters.rcodes.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            let name = rcode_name(slot);
            if name == "OTHER" {
                other += n;
            } else if n != 0 || matches!(slot, 0 | 2 | 3 | 5) {
                out.push((path, name, n));
            }
        }
        if other != 0 {
            out.push((path, "OTHER", other));
        }
    }
    let per_path = |path, counters: &DnsCounters| {
        (
            path,
            counters.truncated.load(Ordering::Relaxed),
            counters.rrl_dropped.load(Ordering::Relaxed),
        )
    };
    (
        out,
        [
            per_path(DnsPath::Fast, &FAST),
            per_path(DnsPath::Full, &FULL),
        ],
    )
}

impl DnsPath {
    fn label(self) -> &'static str {
        match self {
            DnsPath::Fast => "fast",
            DnsPath::Full => "full",
        }
    }
}

/// The process-wide recorder, installed on first use. If another recorder was installed first
/// (a test harness, an embedding program), this one still renders what is recorded through
/// it, which is nothing from the macros: `/metrics` then shows only the scrape-time values.
/// Log lines dropped because stderr could not take them (see [`crate::logging`]).
static LOG_WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts a log line that could not be written.
pub fn count_log_write_error() {
    LOG_WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// DNS queries refused because their source is in no view.
static REFUSED_NO_VIEW: AtomicU64 = AtomicU64::new(0);

/// Counts a DNS query refused because its source is in no view.
pub fn count_refused_no_view() {
    REFUSED_NO_VIEW.fetch_add(1, Ordering::Relaxed);
}

/// Failed attempts of the gateway to bring its interface in step with the store.
static GATEWAY_SYNC_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts a failed gateway reconcile.
pub fn count_gateway_sync_error() {
    GATEWAY_SYNC_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// The reapers of [`crate::reaper`], the `reaper` label of their pass counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaper {
    /// Idle ephemeral peers.
    Idle,
    /// Peers whose key expired past the grace.
    Expired,
    /// Audit entries past the retention.
    Audit,
}

impl Reaper {
    const ALL: [Reaper; 3] = [Reaper::Idle, Reaper::Expired, Reaper::Audit];

    fn label(self) -> &'static str {
        match self {
            Reaper::Idle => "idle",
            Reaper::Expired => "expired",
            Reaper::Audit => "audit",
        }
    }
}

/// Per reaper (index: `Reaper as usize`): passes started, and passes the store failed.
static REAPER_RUNS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static REAPER_ERRORS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Counts one pass of `reaper`, and whether the store failed it.
pub fn count_reaper_pass(reaper: Reaper, failed: bool) {
    REAPER_RUNS[reaper as usize].fetch_add(1, Ordering::Relaxed);
    if failed {
        REAPER_ERRORS[reaper as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what sixpn reads at scrape time");
        }
        describe();
        handle
    })
}

/// Installs the recorder (idempotent). Call before anything records.
pub fn init() {
    handle();
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "sixpn_api_requests_total",
        "API requests by matched route, method and status"
    );
    describe_histogram!(
        "sixpn_api_request_duration_seconds",
        Unit::Seconds,
        "API request latency by matched route and method"
    );
    describe_histogram!(
        "sixpn_store_duration_seconds",
        Unit::Seconds,
        "Latency of store calls made by the API, by operation"
    );
    describe_counter!(
        "sixpn_store_errors_total",
        "Store calls made by the API that failed with a database error, by operation"
    );
    describe_counter!(
        "sixpn_dns_queries_total",
        "DNS answers by path (fast: UDP fast path, full: hickory handler) and response code"
    );
    describe_counter!(
        "sixpn_dns_truncated_total",
        "DNS answers sent truncated (TC set), by path"
    );
    describe_counter!(
        "sixpn_dns_rrl_dropped_total",
        "Negative DNS answers (NXDOMAIN, REFUSED, FORMERR) the response-rate limit dropped, by path; those it let slip go out truncated and count in sixpn_dns_truncated_total"
    );
    describe_counter!(
        "sixpn_dns_tcp_refused_total",
        "DNS TCP connections reset at once, by reason: per_source (its source held its cap) or total (every place taken by a connection too young to evict)"
    );
    describe_counter!(
        "sixpn_dns_tcp_evicted_total",
        "DNS TCP connections closed to make room for a newcomer (the longest idle, never one younger than 3 s)"
    );
    describe_gauge!(
        "sixpn_dns_tcp_connections",
        "DNS TCP connections open, over every DNS listener"
    );
    describe_counter!(
        "sixpn_gateway_sync_errors_total",
        "Failed attempts to bring the WireGuard interface in step with the store (0 without [gateway])"
    );
    describe_counter!(
        "sixpn_reaper_runs_total",
        "Passes of each reaper (idle: ephemeral peers, expired: expired keys, audit: audit retention), counted as they start"
    );
    describe_counter!(
        "sixpn_reaper_errors_total",
        "Reaper passes that failed because the store did (retried on the next pass), by reaper"
    );
    describe_counter!(
        "sixpn_peers_reaped_total",
        "Ephemeral peers removed for being idle"
    );
    describe_counter!(
        "sixpn_audit_pruned_total",
        "Audit log entries deleted for being older than [audit] retention"
    );
    describe_counter!(
        "sixpn_dns_refused_total",
        "DNS queries refused by policy, by reason (no_view: the source is in no view)"
    );
    describe_counter!(
        "sixpn_log_write_errors_total",
        "Log lines dropped because stderr could not take them (its reader gone)"
    );
    describe_gauge!(
        "sixpn_snapshot_generation",
        "Store generation of the published DNS snapshot"
    );
    describe_gauge!(
        "sixpn_snapshot_age_seconds",
        Unit::Seconds,
        "Time since this process last published a DNS snapshot"
    );
    describe_gauge!(
        "sixpn_snapshot_stale_seconds",
        Unit::Seconds,
        "How long DNS has been answering from a state the store could not confirm (the store down, or the saved state at start); 0 when current"
    );
    describe_gauge!(
        "sixpn_snapshot_behind_seconds",
        Unit::Seconds,
        "How long the oldest generation this process knows committed has waited to be published to DNS; 0 when DNS serves every committed change"
    );
    describe_gauge!(
        "sixpn_store_generation",
        "Newest store generation this process knows to be committed"
    );
    describe_gauge!(
        "sixpn_store_up",
        "1 when the store answered the scrape's queries in time, else 0"
    );
    describe_gauge!("sixpn_org_peers", "Live peers per org");
    describe_gauge!("sixpn_org_tokens", "Live WireGuard tokens per org");
    describe_gauge!(
        "sixpn_gateway_peers",
        "Peers on the gateway interface, by handshake state (0 on a process without [gateway])"
    );
    describe_gauge!(
        "sixpn_gateway_oldest_handshake_age_seconds",
        Unit::Seconds,
        "Age of the oldest last handshake among the gateway's peers that have one (0 when none has, or without [gateway])"
    );
}

/// Renders everything in the Prometheus text format, copying the DNS counts in first.
pub fn render() -> String {
    let handle = handle();
    let (queries, per_path) = dns_counts();
    for (path, rcode, n) in queries {
        metrics::counter!("sixpn_dns_queries_total", "path" => path.label(), "rcode" => rcode)
            .absolute(n);
    }
    for (path, truncated, dropped) in per_path {
        metrics::counter!("sixpn_dns_truncated_total", "path" => path.label()).absolute(truncated);
        metrics::counter!("sixpn_dns_rrl_dropped_total", "path" => path.label()).absolute(dropped);
    }
    metrics::counter!("sixpn_dns_refused_total", "reason" => "no_view")
        .absolute(REFUSED_NO_VIEW.load(Ordering::Relaxed));
    metrics::counter!("sixpn_log_write_errors_total")
        .absolute(LOG_WRITE_ERRORS.load(Ordering::Relaxed));
    metrics::counter!("sixpn_gateway_sync_errors_total")
        .absolute(GATEWAY_SYNC_ERRORS.load(Ordering::Relaxed));
    for reaper in Reaper::ALL {
        let i = reaper as usize;
        metrics::counter!("sixpn_reaper_runs_total", "reaper" => reaper.label())
            .absolute(REAPER_RUNS[i].load(Ordering::Relaxed));
        metrics::counter!("sixpn_reaper_errors_total", "reaper" => reaper.label())
            .absolute(REAPER_ERRORS[i].load(Ordering::Relaxed));
    }
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_counts_read_the_reply_header_and_flush_once() {
        let mut counts = FastCounts::default();
        // id, flags (QR AA TC), rcode NXDOMAIN.
        counts.reply(&[0, 1, 0x86, 0x03, 0, 0, 0, 0, 0, 0, 0, 0]);
        counts.reply(&[0, 1, 0x84, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        counts.reply(&[0, 1]);
        let before_nx = FAST.rcodes[3].load(Ordering::Relaxed);
        let before_tc = FAST.truncated.load(Ordering::Relaxed);
        let before_dropped = FAST.rrl_dropped.load(Ordering::Relaxed);
        counts.rrl_drop();
        counts.flush();
        assert!(FAST.rrl_dropped.load(Ordering::Relaxed) > before_dropped);
        assert!(FAST.rcodes[3].load(Ordering::Relaxed) > before_nx);
        assert!(FAST.truncated.load(Ordering::Relaxed) > before_tc);
        assert_eq!(counts.rcodes, [0; N_RCODES + 1]);
        assert!(!counts.any);
    }

    #[test]
    fn rcodes_above_16_share_a_slot() {
        assert_eq!(rcode_slot(3), 3);
        assert_eq!(rcode_slot(16), 16);
        assert_eq!(rcode_slot(23), OTHER_RCODE);
        assert_eq!(rcode_name(OTHER_RCODE), "OTHER");
    }
}
