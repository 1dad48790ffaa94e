//! `GET /metrics` and what the API itself counts: requests by matched route, method and status
//! with their latency, and the latency of the store calls the handlers make.
//!
//! States are read at scrape time, each bounded by [`SCRAPE_TIMEOUT`] so a scrape never hangs
//! while the database or the interface is down: the snapshot's generation and age, the store's
//! generation, how long DNS has lagged it ([`BehindClock`]), and the gateway's handshake ages
//! (zeros on a process without `[gateway]`). The per-org counts are the one state that costs
//! the database work (a count over every peer): they come from a [`CountsCache`] that asks the
//! store at most once per [`COUNTS_REFRESH`], however many clients scrape (issue 22). Recording
//! itself lives in [`crate::metrics`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Inner, Shared};
use crate::store::{OrgCounts, Store, StoreError};

/// How long a scrape waits for the store, and for the gateway interface.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one read of the per-org counts serves every scrape before the store is asked again.
pub const COUNTS_REFRESH: Duration = Duration::from_secs(5);

/// The per-org peer and token counts `/metrics` shows, read from the store at most once per
/// [`COUNTS_REFRESH`] (a failed read too: an outage is not asked about on every scrape either).
/// Single flight: scrapes that find the counts stale wait for the one read in progress instead
/// of starting their own, so 64 concurrent scrapes cost one query. Each read is timed as the
/// store call `org_counts` (`sixpn_store_duration_seconds_count{op="org_counts"}` counts them).
#[derive(Debug)]
pub(super) struct CountsCache {
    /// The last read, if any.
    last: tokio::sync::Mutex<Option<CountsRead>>,
    /// How long a read serves.
    refresh: Duration,
    /// Reads made so far.
    reads: AtomicU64,
}

/// One read of the per-org counts.
#[derive(Debug)]
struct CountsRead {
    /// When it was made.
    at: Instant,
    /// What came back; `None`: the store failed or was too slow.
    counts: Option<Arc<Vec<OrgCounts>>>,
}

impl CountsCache {
    pub(super) fn new() -> CountsCache {
        CountsCache::with_refresh(COUNTS_REFRESH)
    }

    fn with_refresh(refresh: Duration) -> CountsCache {
        CountsCache {
            last: tokio::sync::Mutex::new(None),
            refresh,
            reads: AtomicU64::new(0),
        }
    }

    /// The counts, read from `store` when the last read is older than [`COUNTS_REFRESH`];
    /// `None` when that read failed or took longer than [`SCRAPE_TIMEOUT`].
    async fn get(&self, store: &Store) -> Option<Arc<Vec<OrgCounts>>> {
        // Held across the read: the single flight.
        let mut last = self.last.lock().await;
        if let Some(read) = &*last
            && read.at.elapsed() < self.refresh
        {
            return read.counts.clone();
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let read = tokio::time::timeout(SCRAPE_TIMEOUT, timed("org_counts", store.org_counts()));
        let counts = match read.await {
            Ok(Ok(counts)) => Some(Arc::new(counts)),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "metrics: the store failed");
                None
            }
            Err(_) => {
                tracing::debug!("metrics: the store did not answer in time");
                None
            }
        };
        *last = Some(CountsRead {
            at: Instant::now(),
            counts: counts.clone(),
        });
        counts
    }
}

/// Handshake ages the gateway gauge is bucketed by, in seconds (cumulative, like `le`).
const HANDSHAKE_BUCKETS: [(i64, &str); 4] = [
    (180, "180"),
    (600, "600"),
    (1800, "1800"),
    (86_400, "86400"),
];

/// The methods HTTP defines (RFC 9110, PATCH from RFC 5789): the only values the `method`
/// label takes besides [`OTHER_METHOD`].
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The `method` label of every request whose method is not one of [`KNOWN_METHODS`].
pub(super) const OTHER_METHOD: &str = "other";

/// The `method` label of `method`: the method's name when HTTP defines it, else
/// [`OTHER_METHOD`]. A label never takes free text from a request: hyper accepts any token as a
/// method (4,000 letters and more), and each distinct label value is a series the recorder keeps
/// for good (issue 22).
pub(super) fn method_label(method: &axum::http::Method) -> &'static str {
    let name = method.as_str();
    KNOWN_METHODS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// The answer to a method HTTP does not define: `405` with a JSON `error`, the same on every
/// path (no route takes one), without the method in it.
fn unknown_method() -> Response {
    let body = serde_json::json!({
        "error": "unknown HTTP method: this API answers GET, POST, PUT and DELETE; see /api/openapi.json"
    });
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD, POST, PUT, DELETE")],
        axum::Json(body),
    )
        .into_response()
}

/// Counts and times every request, by the route that matched (never the raw path, which holds
/// names), the method's label ([`method_label`]) and the status. A method HTTP does not define
/// is answered `405` here, before any handler or extractor runs, and counted as
/// [`OTHER_METHOD`].
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let start = Instant::now();
    let res = if method == OTHER_METHOD {
        drop(req);
        unknown_method()
    } else {
        next.run(req).await
    };
    let status = res.status().as_u16().to_string();
    metrics::histogram!("sixpn_api_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("sixpn_api_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    res
}

/// Runs a store call and records its latency under `op` (and a failure of the database).
pub(super) async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let res = call.await;
    metrics::histogram!("sixpn_store_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    // Every op made shows an error count, 0 until one fails: a rate over it is then 0, not
    // absent, and an alert can tell "no errors" from "no data".
    let failed = matches!(res, Err(StoreError::Database(_)));
    metrics::counter!("sixpn_store_errors_total", "op" => op).increment(u64::from(failed));
    res
}

/// Keeps the time of the newest snapshot publish this process saw, for the age gauge.
#[derive(Debug)]
pub(super) struct PublishClock {
    /// Unix milliseconds of the last publish (or of when the router was built).
    at_ms: Arc<AtomicI64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PublishClock {
    /// Follows `published` on a task of its own (when a runtime runs) until its sender goes.
    pub(super) fn follow(
        published: &tokio::sync::watch::Receiver<crate::model::Generation>,
    ) -> PublishClock {
        let at_ms = Arc::new(AtomicI64::new(now_ms()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut published = published.clone();
            let at = Arc::clone(&at_ms);
            runtime.spawn(async move {
                while published.changed().await.is_ok() {
                    at.store(now_ms(), Ordering::Relaxed);
                }
            });
        }
        PublishClock { at_ms }
    }

    fn age(&self) -> f64 {
        (now_ms() - self.at_ms.load(Ordering::Relaxed)).max(0) as f64 / 1000.0
    }
}

/// How far DNS lags the store: the generations this process knows committed ([`Store::changes`])
/// that the snapshot has not published yet, each with when it was first seen.
#[derive(Debug)]
pub(super) struct BehindClock {
    /// Oldest first; the first one's age is the lag.
    pending: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, Instant)>>>,
}

/// The most pending generations a [`BehindClock`] keeps: past it, the ones after the oldest are
/// merged (the oldest, whose age is the lag, is kept).
const MAX_PENDING: usize = 1024;

impl BehindClock {
    /// Follows `committed` and `published` on a task of its own (when a runtime runs) until
    /// either sender goes.
    pub(super) fn follow(
        committed: &tokio::sync::watch::Receiver<crate::model::Generation>,
        published: &tokio::sync::watch::Receiver<crate::model::Generation>,
    ) -> BehindClock {
        let pending = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mut committed, mut published) = (committed.clone(), published.clone());
            let pending = Arc::clone(&pending);
            runtime.spawn(async move {
                loop {
                    let store = committed.borrow_and_update().0;
                    let served = published.borrow_and_update().0;
                    note(&pending, store, served, Instant::now());
                    tokio::select! {
                        changed = committed.changed() => if changed.is_err() { break },
                        changed = published.changed() => if changed.is_err() { break },
                    }
                }
            });
        }
        BehindClock { pending }
    }

    /// Seconds the oldest unpublished committed generation has waited; 0 when none waits.
    fn behind(&self) -> f64 {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending
            .front()
            .map_or(0.0, |(_, since)| since.elapsed().as_secs_f64())
    }
}

/// Records that the store has committed `store` and DNS serves `served`, at `now`.
fn note(
    pending: &std::sync::Mutex<std::collections::VecDeque<(u64, Instant)>>,
    store: u64,
    served: u64,
    now: Instant,
) {
    let mut pending = pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while pending.front().is_some_and(|(g, _)| *g <= served) {
        pending.pop_front();
    }
    if store > served && pending.back().is_none_or(|(g, _)| *g < store) {
        if pending.len() >= MAX_PENDING {
            pending.remove(1);
        }
        pending.push_back((store, now));
    }
}

/// `GET /metrics`: the Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    summary = "Prometheus metrics (text format 0.0.4), names prefixed sixpn_",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<Shared>) -> Response {
    let text = state.renders.share(render(&state)).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Scrapes that arrive while a render runs wait for it to end and share the next one: every
/// scrape gets a render that started after it arrived (never an older text), yet a flood of
/// concurrent scrapes costs about one render at a time instead of one each (issue 22).
#[derive(Debug, Default)]
pub(super) struct RenderShare {
    /// Renders started so far.
    started: AtomicU64,
    /// The newest render and its number; held while rendering, so renders run one at a time.
    last: tokio::sync::Mutex<Option<(u64, Bytes)>>,
}

impl RenderShare {
    /// The text of a render that started after this call did: a newer one than any this
    /// scrape could have seen, shared when another scrape started it, else `render`'s.
    async fn share(&self, render: impl Future<Output = Bytes>) -> Bytes {
        let arrived = self.started.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((n, text)) = &*last
            && *n > arrived
        {
            return text.clone();
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let text = render.await;
        *last = Some((n, text.clone()));
        text
    }
}

/// Sets the gauges read at scrape time and renders every metric.
async fn render(state: &Inner) -> Bytes {
    let generation = state.published.borrow().0;
    metrics::gauge!("sixpn_snapshot_generation").set(generation as f64);
    metrics::gauge!("sixpn_snapshot_age_seconds").set(state.publish_clock.age());
    metrics::gauge!("sixpn_store_generation").set(state.store.changes().borrow().0 as f64);
    metrics::gauge!("sixpn_snapshot_behind_seconds").set(state.behind_clock.behind());

    let gateway = async {
        match &state.gateway {
            Some(gateway) => tokio::time::timeout(SCRAPE_TIMEOUT, gateway.peer_statuses())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        }
    };
    let (counts, statuses) = tokio::join!(state.org_counts.get(&state.store), gateway);
    match counts {
        Some(counts) => {
            metrics::gauge!("sixpn_store_up").set(1.0);
            for c in counts.iter() {
                let org = c.org.to_string();
                metrics::gauge!("sixpn_org_peers", "org" => org.clone()).set(c.peers as f64);
                metrics::gauge!("sixpn_org_tokens", "org" => org).set(c.tokens as f64);
            }
        }
        None => metrics::gauge!("sixpn_store_up").set(0.0),
    }
    if state.gateway.is_none() {
        // No interface here: no peers on it (the series stay, so dashboards and alerts that
        // sum over replicas see every process).
        for label in ["never", "any"].into_iter().map(str::to_owned).chain(
            HANDSHAKE_BUCKETS
                .iter()
                .map(|(_, l)| format!("within_{l}s")),
        ) {
            metrics::gauge!("sixpn_gateway_peers", "handshake" => label).set(0.0);
        }
        metrics::gauge!("sixpn_gateway_oldest_handshake_age_seconds").set(0.0);
    }
    if let Some(statuses) = statuses {
        let now = crate::model::now_unix();
        let ages: Vec<i64> = statuses
            .values()
            .filter_map(|s| s.last_handshake)
            .map(|t| (now - t).max(0))
            .collect();
        let never = statuses.len() - ages.len();
        metrics::gauge!("sixpn_gateway_peers", "handshake" => "never").set(never as f64);
        for (secs, label) in HANDSHAKE_BUCKETS {
            let n = ages.iter().filter(|a| **a <= secs).count();
            let name = format!("within_{label}s");
            metrics::gauge!("sixpn_gateway_peers", "handshake" => name).set(n as f64);
        }
        let n_all = statuses.len();
        metrics::gauge!("sixpn_gateway_peers", "handshake" => "any").set(n_all as f64);
        let oldest = ages.iter().copied().max().unwrap_or(0);
        metrics::gauge!("sixpn_gateway_oldest_handshake_age_seconds").set(oldest as f64);
    }
    Bytes::from(crate::metrics::render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_is_the_age_of_the_oldest_unpublished_generation() {
        let pending = std::sync::Mutex::new(std::collections::VecDeque::new());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        note(&pending, 5, 5, at(0));
        assert!(pending.lock().unwrap().is_empty());
        note(&pending, 6, 5, at(10));
        note(&pending, 7, 5, at(20));
        // Seen again: the first sighting stays.
        note(&pending, 7, 5, at(30));
        let front = |p: &std::sync::Mutex<std::collections::VecDeque<(u64, Instant)>>| {
            p.lock().unwrap().front().copied()
        };
        assert_eq!(front(&pending), Some((6, at(10))));
        // 6 published: 7 waits since it was seen.
        note(&pending, 7, 6, at(40));
        assert_eq!(front(&pending), Some((7, at(20))));
        note(&pending, 7, 7, at(50));
        assert!(pending.lock().unwrap().is_empty());
        // A long backlog keeps its oldest.
        for g in 8..(8 + 3 * MAX_PENDING as u64) {
            note(&pending, g, 7, at(g));
        }
        assert!(pending.lock().unwrap().len() <= MAX_PENDING);
        assert_eq!(front(&pending), Some((8, at(8))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_read_of_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, "fdaa::/16".parse().unwrap())
            .await
            .unwrap();
        let cache = Arc::new(CountsCache::with_refresh(Duration::from_secs(3600)));
        let scrapes: Vec<_> = (0..64)
            .map(|_| {
                let (cache, store) = (Arc::clone(&cache), store.clone());
                tokio::spawn(async move { cache.get(&store).await })
            })
            .collect();
        for scrape in scrapes {
            let counts = scrape.await.unwrap().expect("counts");
            assert!(counts.iter().any(|c| c.org.to_string() == "personal"));
        }
        assert_eq!(cache.reads.load(Ordering::Relaxed), 1);
        // Within the window, later scrapes read nothing either.
        cache.get(&store).await.unwrap();
        assert_eq!(cache.reads.load(Ordering::Relaxed), 1);
        // Once it has passed, the next scrape reads again, once.
        let stale = CountsCache::with_refresh(Duration::ZERO);
        stale.get(&store).await.unwrap();
        stale.get(&store).await.unwrap();
        assert_eq!(stale.reads.load(Ordering::Relaxed), 2);
        // A store that fails is remembered as failed for the window too.
        store.close().await;
        let closed = CountsCache::with_refresh(Duration::from_secs(3600));
        assert!(closed.get(&store).await.is_none());
        assert!(closed.get(&store).await.is_none());
        assert_eq!(closed.reads.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_a_render_that_started_after_they_arrived() {
        let share = Arc::new(RenderShare::default());
        let renders = Arc::new(AtomicU64::new(0));
        let render = |renders: Arc<AtomicU64>| async move {
            let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Bytes::from(n.to_string())
        };
        // One after the other: each scrape renders afresh.
        for want in ["1", "2"] {
            assert_eq!(share.share(render(Arc::clone(&renders))).await, want);
        }
        // 64 at once: the first renders, the rest wait for it and share the next one (two
        // renders; a few more only if the machine stalls a task for a whole render).
        let scrapes: Vec<_> = (0..64)
            .map(|_| {
                let (share, renders) = (Arc::clone(&share), Arc::clone(&renders));
                tokio::spawn(async move { share.share(render(renders)).await })
            })
            .collect();
        for scrape in scrapes {
            let text = scrape.await.unwrap();
            let n: u64 = std::str::from_utf8(&text).unwrap().parse().unwrap();
            assert!(n >= 3, "a scrape got a render older than itself: {n}");
        }
        let n = renders.load(Ordering::SeqCst) - 2;
        assert!(n <= 16, "64 concurrent scrapes rendered {n} times");
        // And a later scrape never gets an old text.
        assert_eq!(
            share.share(render(Arc::clone(&renders))).await,
            (renders.load(Ordering::SeqCst)).to_string()
        );
    }
}
