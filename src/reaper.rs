//! The reaper: removes ephemeral peers that have been idle for `[peers] ephemeral_idle`, and
//! peers whose key expired more than `[peers] expired_grace` ago and were not re-keyed since
//! ([`run_expired`], issue 23).
//!
//! It only decides *when* to look; [`Store::reap_idle_peers`] decides what is idle and removes
//! it in an ordinary write transaction, so DNS and every gateway follow through the change feed
//! like after any delete. Every replica may run a reaper: the transaction takes the generation
//! lock, so a peer is reaped once, and what counts as idle comes from the handshake times the
//! gateways record in the store, which every replica reads alike.
//!
//! It never touches the WireGuard interface or the DNS snapshot itself.
//!
//! Every pass of each reaper is counted in `sixpn_reaper_runs_total`, and a pass the store failed
//! in `sixpn_reaper_errors_total` (by `reaper`: `idle`, `expired`, `audit`).
//!
//! It also prunes the audit log ([`run_audit_retention`]): entries older than `[audit] retention`
//! go, in small batches that never hold writers up for long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The longest pause between two passes.
pub const MAX_PERIOD: Duration = Duration::from_secs(60);

/// How often to look for idle peers: a quarter of the idle time (so a peer goes at most 25 %
/// late), between 1 s and [`MAX_PERIOD`].
pub fn period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), MAX_PERIOD)
}

/// Runs the reaper until `cancel` fires. Failures (the database is down) are logged once per
/// outage and retried on the next pass.
pub async fn run(store: Store, idle: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(period(idle));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // Drain: a pass removes at most a batch; go on while batches come back full of work.
        let mut failed = false;
        loop {
            match store.reap_idle_peers(idle).await {
                Ok((reaped, generation)) => {
                    if failing {
                        tracing::info!("reaper: the store answers again");
                        failing = false;
                    }
                    for peer in &reaped {
                        tracing::info!(org = %peer.org, peer = %peer.name, address = %peer.address,
                            %generation, idle = %humantime::format_duration(idle), "ephemeral peer reaped");
                    }
                    metrics::counter!("sixpn_peers_reaped_total").increment(reaped.len() as u64);
                    if reaped.is_empty() || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    failed = true;
                    if !failing {
                        tracing::warn!(error = %e, "reaper: removing idle ephemeral peers failed; retrying");
                        failing = true;
                    }
                    break;
                }
            }
        }
        crate::metrics::count_reaper_pass(crate::metrics::Reaper::Idle, failed);
    }
}

/// Runs the reaper of expired keys until `cancel` fires: every [`period`] of `grace`, removes
/// the peers whose key expired more than `grace` ago ([`Store::reap_expired_peers`]). Until
/// then such a peer is listed as expired and a re-key revives it; it is not served either way.
pub async fn run_expired(store: Store, grace: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(period(grace));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let mut failed = false;
        loop {
            match store.reap_expired_peers(grace).await {
                Ok((reaped, generation)) => {
                    if failing {
                        tracing::info!("reaper: the store answers again");
                        failing = false;
                    }
                    for peer in &reaped {
                        tracing::info!(org = %peer.org, peer = %peer.name, address = %peer.address,
                            %generation, grace = %humantime::format_duration(grace), "peer with an expired key reaped");
                    }
                    metrics::counter!("sixpn_peers_reaped_total").increment(reaped.len() as u64);
                    if reaped.is_empty() || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    failed = true;
                    if !failing {
                        tracing::warn!(error = %e, "reaper: removing peers with expired keys failed; retrying");
                        failing = true;
                    }
                    break;
                }
            }
        }
        crate::metrics::count_reaper_pass(crate::metrics::Reaper::Expired, failed);
    }
}

/// The longest pause between two audit prunes.
pub const MAX_AUDIT_PERIOD: Duration = Duration::from_secs(10 * 60);

/// How often to prune the audit log: a hundredth of the retention (an entry stays at most 1 %
/// longer), between 1 s and [`MAX_AUDIT_PERIOD`].
pub fn audit_period(retention: Duration) -> Duration {
    (retention / 100).clamp(Duration::from_secs(1), MAX_AUDIT_PERIOD)
}

/// The pause between two batches of one prune: other writers get the database in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// Prunes audit entries older than `retention` every [`audit_period`] (the first pass at once)
/// until `cancel` fires. Each batch is one short statement ([`Store::prune_audit_batch`]), so a
/// large backlog is worked off without blocking writes. Failures are logged once per outage.
pub async fn run_audit_retention(store: Store, retention: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(audit_period(retention));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let cutoff = crate::model::now_unix().saturating_sub(retention_secs);
        let mut pruned = 0u64;
        let mut failed = false;
        loop {
            match store.prune_audit_batch(cutoff).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("reaper: the store answers again");
                        failing = false;
                    }
                    pruned += n;
                    if n < crate::store::AUDIT_PRUNE_BATCH as u64 || cancel.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
                Err(e) => {
                    failed = true;
                    if !failing {
                        tracing::warn!(error = %e, "reaper: pruning the audit log failed; retrying");
                        failing = true;
                    }
                    break;
                }
            }
        }
        crate::metrics::count_reaper_pass(crate::metrics::Reaper::Audit, failed);
        if pruned > 0 {
            tracing::info!(pruned, retention = %humantime::format_duration(retention),
                "audit entries older than the retention pruned");
            metrics::counter!("sixpn_audit_pruned_total").increment(pruned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_period_is_a_hundredth_of_retention_within_bounds() {
        assert_eq!(
            audit_period(Duration::from_secs(90 * 86_400)),
            MAX_AUDIT_PERIOD
        );
        assert_eq!(
            audit_period(Duration::from_secs(3000)),
            Duration::from_secs(30)
        );
        assert_eq!(
            audit_period(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn period_is_a_quarter_of_idle_within_bounds() {
        assert_eq!(period(Duration::from_secs(30 * 60)), MAX_PERIOD);
        assert_eq!(period(Duration::from_secs(120)), Duration::from_secs(30));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
