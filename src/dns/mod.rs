//! The authoritative DNS server: hickory-server 0.26 on UDP and TCP, answering from the
//! [`crate::snapshot`] through our own [`Handler`].
//!
//! [`bind`] opens the sockets (so a caller learns the real ports before anything runs) and
//! [`serve`] runs them until the cancellation token fires. This module never touches the store:
//! every answer comes from the current snapshot, loaded once per query.
//!
//! hickory logs two INFO lines per query; add [`LOG_FILTER`] to the tracing filter to keep
//! per-query events at debug.

pub mod fit;
mod handler;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use fit::answers_that_fit;
pub use handler::{Handler, Lookup, MAX_UDP_PAYLOAD, lookup};

use crate::snapshot::SnapshotHandle;

/// Tracing directives that silence hickory's per-query INFO logging (two lines per query).
pub const LOG_FILTER: &str = "hickory_server=warn,hickory_net=warn,hickory_proto=warn";

/// A TCP connection that sends no query for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection before the handler waits for the client to read.
const TCP_RESPONSE_QUEUE: usize = 32;

/// How often [`bind`] retries finding a port free for both UDP and TCP when asked for port 0.
const PORT_ZERO_ATTEMPTS: usize = 32;

/// Why the DNS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listener task failed (e.g. its socket closed unexpectedly).
    #[error("DNS server failed: {0}")]
    Server(#[source] hickory_server::net::NetError),
}

/// Bound UDP sockets and TCP listeners, one of each per address, sharing the port.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
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
}

/// Binds UDP and TCP on every address of `listen`. For port 0 both get the same free port.
///
/// # Errors
/// The I/O error of the first address that cannot be bound, naming it.
pub async fn bind(listen: &[SocketAddr]) -> io::Result<Listeners> {
    let mut listeners = Listeners {
        udp: Vec::with_capacity(listen.len()),
        tcp: Vec::with_capacity(listen.len()),
    };
    for &addr in listen {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("binding DNS on {addr}: {e}"));
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let udp = UdpSocket::bind(addr).await.map_err(named)?;
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

/// Serves DNS on `listeners` from `snapshot` until `cancel` fires, then shuts down gracefully.
///
/// # Errors
/// [`DnsError::Server`] when a listener fails before cancellation.
pub async fn serve(
    listeners: Listeners,
    snapshot: SnapshotHandle,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    let mut server = Server::new(Handler::new(snapshot));
    for socket in listeners.udp {
        server.register_socket(socket);
    }
    for listener in listeners.tcp {
        server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_QUEUE);
    }
    let shutdown = server.shutdown_token().clone();
    let link = tokio::spawn(async move {
        cancel.cancelled().await;
        shutdown.cancel();
    });
    let res = server.block_until_done().await;
    link.abort();
    res.map_err(DnsError::Server)
}
