//! The authoritative DNS server: hickory-server 0.26 on UDP and TCP, answering from the
//! [`crate::snapshot`] through our own [`Handler`].
//!
//! UDP goes through the [`crate::fastpath`] first (batched `recvmmsg`/`sendmmsg`, one
//! `SO_REUSEPORT` socket and thread per core, answers written from prebuilt bytes); what it does
//! not fully handle reaches the same [`Handler`] (see [`udp`]). TCP runs our own accept and
//! connection loops around the same [`Handler`] (see [`tcp`]): pipelined queries on a
//! connection, under the caps of a [`TcpGate`] that every DNS TCP listener of the process shares.
//!
//! [`bind`] opens the sockets (so a caller learns the real ports before anything runs) and
//! [`serve`] runs them until the cancellation token fires. This module never touches the store:
//! every answer comes from the current snapshot, loaded once per query.
//!
//! In gateway mode, [`listeners`] serves the same way on each org's `::3` as orgs appear.
//!
//! hickory logs two INFO lines per query; [`crate::logging::LOG_FILTER`] in the tracing filter
//! keeps per-query events at debug.

pub mod fit;
mod handler;
pub mod listeners;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::net::UdpSocket;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fastpath::{FastServer, FastServerConfig, Rrl, RrlSettings};

pub use fit::answers_that_fit;
pub use handler::{Handler, Lookup, MAX_UDP_PAYLOAD, lookup};
pub use tcp::{TcpGate, TcpLimits};

use crate::snapshot::SnapshotHandle;

/// A TCP connection that sends no query for this long is closed (sooner near the cap: see
/// [`tcp`]).
pub const TCP_IDLE_TIMEOUT: Duration = tcp::IDLE_TIMEOUT;

/// How often [`bind`] retries finding a port free for both UDP and TCP when asked for port 0.
const PORT_ZERO_ATTEMPTS: usize = 32;

/// Why the DNS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A TCP listener failed (e.g. its socket closed unexpectedly).
    #[error("DNS over TCP failed: {0}")]
    Tcp(#[source] io::Error),
    /// The UDP fast path could not start (socket options or threads).
    #[error("starting the DNS fast path: {0}")]
    FastPath(#[source] io::Error),
}

/// `SO_RCVBUF` asked for each UDP socket: room for bursts (the kernel caps it at
/// `net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Bound UDP sockets and TCP listeners, one of each per address, sharing the port.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    /// Fast-path threads (and `SO_REUSEPORT` sockets) per UDP address; 0: one per CPU.
    workers: usize,
    /// The response-rate limit of negative UDP answers (`[dns] rrl_*`).
    rrl: RrlSettings,
    /// Where the table comes from when the limit follows configuration reloads.
    tuner: Option<crate::fastpath::RrlTuner>,
}

impl Listeners {
    /// The addresses actually bound (the real port when port 0 was asked for); UDP and TCP use
    /// the same address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Sets the response-rate limit of negative UDP answers (default:
    /// [`RrlSettings::default`], as `[dns]` has it by default).
    pub fn set_rrl(&mut self, rrl: RrlSettings) {
        self.rrl = rrl;
    }

    /// Takes the response-rate limit from `tuner`, which retunes it on a configuration reload.
    pub fn set_rrl_tuner(&mut self, tuner: crate::fastpath::RrlTuner) {
        self.rrl = tuner.settings();
        self.tuner = Some(tuner);
    }
}

/// Binds UDP and TCP on every address of `listen`. For port 0 both get the same free port.
///
/// # Errors
/// The I/O error of the first address that cannot be bound, naming it.
pub async fn bind(listen: &[SocketAddr]) -> io::Result<Listeners> {
    let mut listeners = Listeners {
        udp: Vec::with_capacity(listen.len()),
        tcp: Vec::with_capacity(listen.len()),
        workers: 0,
        rrl: RrlSettings::default(),
        tuner: None,
    };
    for &addr in listen {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("binding DNS on {addr}: {e}"));
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let udp = crate::fastpath::server::bind(addr, UDP_RECV_BUFFER).map_err(named)?;
            let bound = udp.local_addr().map_err(named)?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(e)
                    if addr.port() == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && attempt < PORT_ZERO_ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => return Err(named(e)),
            }
        };
        listeners.udp.push(udp);
        listeners.tcp.push(tcp);
    }
    Ok(listeners)
}

/// [`serve_with`] under a gate of its own with the default caps ([`TcpLimits::default`]).
///
/// # Errors
/// As [`serve_with`].
pub async fn serve(
    listeners: Listeners,
    snapshot: SnapshotHandle,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    serve_with(
        listeners,
        snapshot,
        &TcpGate::new(TcpLimits::default()),
        cancel,
    )
    .await
}

/// Serves DNS on `listeners` from `snapshot` until `cancel` fires, then shuts down gracefully.
///
/// Each UDP socket feeds a [`FastServer`] (its threads start here); the datagrams it delegates
/// wait in a [`udp::FairQueue`] and are answered by [`Handler`] on a task per address, from that
/// address. Negative UDP answers of both paths share one response-rate limit per server
/// (see [`crate::fastpath::rrl`]). TCP connections are admitted by `tcp`, which the caller may
/// share between servers (the org resolvers share the main server's), and answered by
/// [`Handler`] (see [`tcp`]).
///
/// # Errors
/// [`DnsError::FastPath`] when the fast path cannot start; [`DnsError::Tcp`] when a TCP listener
/// fails before cancellation.
pub async fn serve_with(
    listeners: Listeners,
    snapshot: SnapshotHandle,
    tcp: &TcpGate,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    let handler = Handler::new(snapshot.clone());
    // The fast path's buffers hold the largest answer it may write (`[dns] max_udp_payload`).
    let buf_size = usize::from(snapshot.load().fast().max_udp_payload);
    let source = Arc::new(snapshot);
    let rrl = match &listeners.tuner {
        Some(tuner) => Some(tuner.table()),
        None => Rrl::new(&listeners.rrl).map(Arc::new),
    };
    let mut fast = Vec::with_capacity(listeners.udp.len());
    let mut delegated = tokio::task::JoinSet::new();
    for socket in listeners.udp {
        let addr = socket.local_addr().map_err(DnsError::FastPath)?;
        let queue = Arc::new(udp::FairQueue::new(listeners.rrl.per_address));
        let config = FastServerConfig {
            workers: listeners.workers,
            buf_size: buf_size.max(4096),
            rrl: rrl.clone(),
            ..FastServerConfig::new(addr)
        };
        let server = FastServer::start_on(
            socket,
            &config,
            source.clone(),
            Arc::new(udp::ToHandler(queue.clone())),
        )
        .map_err(DnsError::FastPath)?;
        let reply = Arc::new(socket2::Socket::from(
            server.reply_socket().map_err(DnsError::FastPath)?,
        ));
        let (handler, rrl) = (handler.clone(), rrl.clone());
        delegated.spawn(async move {
            udp::supervise("delegated UDP queries", move || {
                udp::run_delegated(handler.clone(), reply.clone(), queue.clone(), rrl.clone())
            })
            .await;
        });
        fast.push(server);
    }
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners.tcp {
        accepting.spawn(tcp::serve_listener(
            listener,
            handler.clone(),
            tcp.clone(),
            cancel.clone(),
        ));
    }
    if accepting.is_empty() {
        cancel.cancelled().await;
    }
    // Until every TCP listener has stopped: on cancellation, or failed (the others go on).
    let mut res = Ok(());
    while let Some(joined) = accepting.join_next().await {
        let failed = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error,
            Err(error) => io::Error::other(format!("DNS TCP listener task: {error}")),
        };
        tracing::error!(error = %failed, "DNS: a TCP listener failed");
        res = Err(DnsError::Tcp(failed));
    }
    // Stop the fast-path threads (each notices within `fastpath::server::STOP_CHECK`); the
    // delegated-query tasks end when their queues, closed as those threads go, are empty.
    let _ =
        tokio::task::spawn_blocking(move || fast.into_iter().for_each(FastServer::shutdown)).await;
    delegated.shutdown().await;
    res
}
