//! The gateway's resolvers: DNS on each org's `<prefix>::3`, UDP and TCP, for every org —
//! including orgs created while the server runs (issue 12).
//!
//! The gateway puts `::3` on its WireGuard interface; this module binds to that address alone,
//! never to a wildcard, so the DNS is not exposed on any other interface whatever `[dns] listen`
//! says. The sockets are bound with `IPV6_FREEBIND`, so binding does not wait for the gateway to
//! add the address: queries arrive as soon as the address is there.
//!
//! [`serve_org_resolvers`] follows the snapshot: it reads the org list on every publish and
//! binds the addresses of new orgs (an org that is gone has its listeners stopped). Each address
//! is served as [`super::serve`] serves the configured listeners: UDP through the fast path (one
//! thread per address: these carry one org's tunnel traffic) with the full handler behind it,
//! TCP under the caps of the one [`super::TcpGate`] every DNS TCP listener of the process shares.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{DnsError, Listeners, UDP_RECV_BUFFER};
use crate::snapshot::SnapshotHandle;

/// The port the org resolvers listen on (what every wg-quick file's `DNS =` implies).
pub const RESOLVER_PORT: u16 = 53;

/// How soon an address that could not be bound is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Binds UDP and TCP on `addr` with `IPV6_FREEBIND` (the address need not exist yet), for one
/// fast-path thread.
///
/// # Errors
/// Creating, configuring or binding a socket, naming the address.
pub fn bind_freebind(addr: SocketAddrV6) -> io::Result<Listeners> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("binding DNS on {addr}: {e}"));
    let sockaddr = SocketAddr::V6(addr).into();

    let udp = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(named)?;
    udp.set_only_v6(true).map_err(named)?;
    udp.set_freebind_ipv6(true).map_err(named)?;
    // Best effort: a smaller buffer only means drops under overload.
    let _ = udp.set_recv_buffer_size(UDP_RECV_BUFFER);
    udp.bind(&sockaddr).map_err(named)?;

    let tcp = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    tcp.set_only_v6(true).map_err(named)?;
    tcp.set_freebind_ipv6(true).map_err(named)?;
    tcp.set_reuse_address(true).map_err(named)?;
    tcp.bind(&sockaddr).map_err(named)?;
    tcp.listen(1024).map_err(named)?;
    tcp.set_nonblocking(true).map_err(named)?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp)).map_err(named)?;

    Ok(Listeners {
        udp: vec![udp.into()],
        tcp: vec![tcp],
        workers: 1,
        rrl: crate::fastpath::RrlSettings::default(),
        tuner: None,
    })
}

/// The resolver addresses the current snapshot's orgs need.
fn wanted(snapshot: &SnapshotHandle) -> BTreeSet<Ipv6Addr> {
    snapshot
        .load()
        .orgs()
        .iter()
        .map(|o| o.dns_addr())
        .collect()
}

/// Serves DNS on `<org>::3` port `port` for every org of `snapshot`, following the org list as
/// it changes, until `cancel` fires. Each resolver limits negative answers by `rrl`, and admits
/// TCP connections through `tcp` (shared by all of them and the configured listeners).
///
/// An address that cannot be bound is logged and tried again every few seconds; it never stops
/// the server. A resolver whose server fails is logged and bound again.
///
/// # Errors
/// None today; the `Result` is for the caller's task set.
pub async fn serve_org_resolvers(
    snapshot: SnapshotHandle,
    port: u16,
    rrl: crate::fastpath::RrlTuner,
    tcp: super::TcpGate,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    let mut published = snapshot.published();
    let mut running: HashMap<Ipv6Addr, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        // Resolvers that stopped on their own (a failed socket) are bound again below.
        running.retain(|addr, (_, task)| {
            if task.is_finished() {
                tracing::warn!(dns = %addr, "org resolver stopped; binding it again");
                false
            } else {
                true
            }
        });
        let want = wanted(&snapshot);
        let mut failed = false;
        for &addr in &want {
            if running.contains_key(&addr) {
                continue;
            }
            let sockaddr = SocketAddrV6::new(addr, port, 0, 0);
            match bind_freebind(sockaddr) {
                Ok(mut listeners) => {
                    listeners.set_rrl_tuner(rrl.clone());
                    let stop = cancel.child_token();
                    let task = tokio::spawn({
                        let (snapshot, stop, tcp) = (snapshot.clone(), stop.clone(), tcp.clone());
                        async move {
                            if let Err(error) =
                                super::serve_with(listeners, snapshot, &tcp, stop).await
                            {
                                tracing::warn!(dns = %sockaddr, %error, "org resolver failed");
                            }
                        }
                    });
                    tracing::info!(dns = %sockaddr, "org resolver listening (UDP and TCP)");
                    running.insert(addr, (stop, task));
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(dns = %sockaddr, %error, "cannot serve an org resolver; retrying");
                }
            }
        }
        let gone: Vec<Ipv6Addr> = running
            .keys()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some((stop, task)) = running.remove(&addr) {
                stop.cancel();
                let _ = task.await;
                tracing::info!(dns = %addr, "org resolver stopped: the org is gone");
            }
        }
        // Wait for a publish that changes the org list (most publishes do not), or a retry.
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = retry => {}
            changed = async {
                loop {
                    if published.changed().await.is_err() {
                        // The publisher is gone: the server is stopping.
                        cancel.cancelled().await;
                        return;
                    }
                    if wanted(&snapshot) != want {
                        return;
                    }
                }
            } => changed,
        }
    }
    for (_, (stop, task)) in running {
        stop.cancel();
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_org_address_binds_before_it_exists() {
        // An address no interface has (yet): IPV6_FREEBIND lets UDP and TCP bind it anyway.
        let addr: Ipv6Addr = "fdaa:ffff:fffe::3".parse().unwrap();
        let listeners = bind_freebind(SocketAddrV6::new(addr, 0, 0, 0)).unwrap();
        let bound = listeners.local_addrs();
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].ip(), std::net::IpAddr::V6(addr));
        assert_eq!(listeners.tcp[0].local_addr().unwrap().ip(), bound[0].ip());
        assert_eq!(listeners.workers, 1);
    }
}
