//! Waiting on state instead of the wall clock: a generation reached, or a condition that an
//! outside process (PostgreSQL, wireguard-go, a reaper on its own timer) makes true, polled with
//! a generous deadline that only bounds a failure.

use std::future::Future;
use std::time::{Duration, Instant};

use sixpn::model::Generation;
use tokio::sync::watch;

/// How often the polling helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `condition` (blocking) until it holds; panics with "timed out: `what`" after `within`.
pub fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `attempt` until it returns `Ok`, and returns that value; after `within` panics with
/// `what` and the last `Err` (what was seen instead).
pub async fn eventually_async<T, F, Fut>(within: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {within:?}: {what}: {seen}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `published` reaches `generation` (a gateway's applied generation, a store's
/// change feed); panics naming `what` if it has not within `within`.
pub async fn reached(
    published: &mut watch::Receiver<Generation>,
    generation: Generation,
    within: Duration,
    what: &str,
) {
    tokio::time::timeout(within, published.wait_for(|g| *g >= generation))
        .await
        .unwrap_or_else(|_| panic!("{what}: generation {generation:?} not reached in {within:?}"))
        .expect("the sender is alive");
}

/// Waits until the DNS state saved in `data_dir` holds `generation` or a later one (the
/// publisher writes it at most every [`sixpn::snapshot::disk::MIN_INTERVAL`]).
pub async fn state_saved(data_dir: &std::path::Path, generation: Generation) {
    let path = data_dir.join(sixpn::snapshot::disk::FILE_NAME);
    eventually_async(
        Duration::from_secs(15),
        "the DNS state saved with the last write",
        || {
            let path = path.clone();
            async move {
                let saved = tokio::task::spawn_blocking(move || {
                    sixpn::snapshot::disk::StateFile::load_any(&path)
                        .map(|(model, _)| model.generation())
                })
                .await
                .unwrap();
                match saved {
                    Some(saved) if saved >= generation => Ok(()),
                    other => Err(format!("saved {other:?}, want {generation:?}")),
                }
            }
        },
    )
    .await;
}
