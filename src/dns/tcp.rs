//! DNS over TCP with caps (issue 22): our own accept loop and connection loop around the
//! [`Handler`], in place of hickory's `Server::register_listener`, which accepts every
//! connection it is offered and has no hook to refuse one (it takes the listener whole).
//!
//! # Framing
//! Each message is preceded by its length in two bytes (RFC 1035 §4.2.2, RFC 7766). The queries
//! of a connection are answered one after another, in order, so a client may pipeline several
//! without waiting. Each answer is built by [`super::udp::full_answer`] for
//! [`Protocol::Tcp`]: byte for byte what hickory's server sent, including its silence (a message
//! shorter than a header, or a response, gets nothing and the connection stays open) and its
//! FORMERR for what does not parse. The answers to queries that arrived together are written
//! together, in one `write`, once no whole query is left unread.
//!
//! # The gate
//! One [`TcpGate`] admits the connections of every DNS TCP listener of the process (the
//! configured ones and each org's `::3`), so DNS TCP never holds more descriptors than its cap:
//! - at most `max_per_source` connections from one source (an IPv4 address, an IPv6 /64, or one
//!   address inside the tunnel network, which WireGuard authenticates); more are refused;
//! - at most `max_connections` in all. A newcomer beyond it takes the place of the connection
//!   idle longest among those at least [`YOUNG`] old; when every connection is younger, the
//!   newcomer is refused. A churn of connections never cuts a client off in its first seconds.
//! - A refused connection is reset at once (so no `TIME_WAIT` is kept for it) and counted in
//!   `sixpn_dns_tcp_refused_total{reason="per_source"|"total"}`; an evicted one in
//!   `sixpn_dns_tcp_evicted_total`. `sixpn_dns_tcp_connections` is the number open.
//!
//! A connection that sends no whole query for [`IDLE_TIMEOUT`] is closed. Once more than three
//! quarters of the cap are open (until it is back to half), the limit is [`BUSY_IDLE_TIMEOUT`],
//! never counted from before the connection is [`YOUNG`] old. Time runs from the last whole
//! query or answer, so a client dribbling a query byte by byte gains nothing. A client that
//! does not read its answers is closed after [`WRITE_TIMEOUT`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Handler;
use crate::fastpath::rrl;

/// A connection that sends no whole query for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The idle limit once the server is near its cap (more than three quarters of it open).
pub const BUSY_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection younger than this is never evicted for a newcomer, nor closed by the shorter
/// idle limit of a busy server: long enough for a client across a WAN to send its query.
pub const YOUNG: Duration = Duration::from_secs(3);

/// An answer the client does not read within this time closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long accepting pauses when the process is out of descriptors (the kernel keeps the
/// connections waiting in the listen backlog meanwhile).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often, at most, running out of descriptors is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Read buffer per connection: many pipelined queries, a few bytes each.
const READ_BUFFER: usize = 2048;

/// Answers to pipelined queries are written together up to about this many bytes.
const WRITE_BATCH: usize = 16 * 1024;

/// The caps of DNS over TCP (from `[dns] tcp_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once over every listener sharing the gate.
    pub max_connections: usize,
    /// Connections open at once from one source.
    pub max_per_source: usize,
    /// The tunnel network (`ula_prefix`): addresses in it are sources one by one, every other
    /// IPv6 address by its /64.
    pub per_address: Option<ipnet::Ipv6Net>,
    /// The idle limit of a server that is not near its cap ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
}

impl TcpLimits {
    /// The caps of a `[dns]` section, with `ula_prefix` as the tunnel network.
    pub fn from_config(dns: &crate::config::DnsConfig, ula_prefix: ipnet::Ipv6Net) -> TcpLimits {
        TcpLimits {
            max_connections: dns.tcp_max_connections.max(1),
            max_per_source: dns.tcp_max_connections_per_source.max(1),
            per_address: Some(ula_prefix),
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: crate::config::DEFAULT_DNS_TCP_MAX_CONNECTIONS,
            max_per_source: crate::config::DEFAULT_DNS_TCP_MAX_CONNECTIONS_PER_SOURCE,
            per_address: None,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Why a connection was refused (the `reason` label of `sixpn_dns_tcp_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source already holds `max_per_source` connections.
    PerSource,
    /// `max_connections` are open and every one of them is younger than [`YOUNG`].
    Total,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerSource => "per_source",
            Refused::Total => "total",
        }
    }
}

/// Admits DNS TCP connections under [`TcpLimits`]; cheap to clone, every clone shares the
/// same count. See the module docs.
#[derive(Debug, Clone)]
pub struct TcpGate {
    inner: Arc<Gate>,
}

#[derive(Debug)]
struct Gate {
    limits: TcpLimits,
    per_address: Option<(u128, u128)>,
    /// Times are kept as nanoseconds since this instant.
    epoch: Instant,
    state: Mutex<GateState>,
    /// Whether the server is near its cap (the short idle limit applies).
    busy: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct GateState {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    per_source: HashMap<u128, usize>,
}

#[derive(Debug)]
struct Conn {
    source: u128,
    /// When it was accepted (ns since the gate's epoch).
    accepted: u64,
    /// When it last received a whole query or wrote an answer (ns since the epoch).
    active: AtomicU64,
    /// Cancelled when a newcomer takes its place.
    evicted: CancellationToken,
}

/// A connection's place in the gate, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    conn: Arc<Conn>,
}

impl TcpGate {
    /// A gate with nothing open.
    pub fn new(limits: TcpLimits) -> TcpGate {
        // The series show from the start, at zero (the recorder must be there to keep them).
        crate::metrics::init();
        metrics::gauge!("sixpn_dns_tcp_connections").increment(0.0);
        metrics::counter!("sixpn_dns_tcp_evicted_total").increment(0);
        for reason in [Refused::PerSource, Refused::Total] {
            metrics::counter!("sixpn_dns_tcp_refused_total", "reason" => reason.label())
                .increment(0);
        }
        TcpGate {
            inner: Arc::new(Gate {
                limits,
                per_address: limits.per_address.map(rrl::net_bits),
                epoch: Instant::now(),
                state: Mutex::new(GateState::default()),
                busy: watch::Sender::new(false),
            }),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> TcpLimits {
        self.inner.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().open.len()
    }

    /// Whether the server is near its cap now (the short idle limit applies).
    pub fn is_busy(&self) -> bool {
        *self.inner.busy.borrow()
    }

    /// Admits a connection from `src` accepted at `now`, evicting the longest-idle connection
    /// that is not young when the gate is full; or says why not. Counts a refusal or an
    /// eviction in the metrics.
    ///
    /// # Errors
    /// [`Refused`]: the source, or the whole gate, is full.
    pub fn admit(&self, src: IpAddr, now: Instant) -> Result<Ticket, Refused> {
        let gate = &self.inner;
        let limits = &gate.limits;
        let source = rrl::source_key(src, 32, 64, gate.per_address);
        let now = gate.nanos(now);
        let mut state = gate.lock();
        let result = if state.per_source.get(&source).copied().unwrap_or(0) >= limits.max_per_source
        {
            Err(Refused::PerSource)
        } else if state.open.len() >= limits.max_connections {
            let young = nanos(YOUNG);
            let victim = state
                .open
                .iter()
                .filter(|(_, c)| now.saturating_sub(c.accepted) >= young)
                .min_by_key(|(_, c)| c.active.load(Ordering::Relaxed))
                .map(|(&id, _)| id);
            match victim.and_then(|id| gate.remove(&mut state, id)) {
                Some(conn) => {
                    conn.evicted.cancel();
                    metrics::counter!("sixpn_dns_tcp_evicted_total").increment(1);
                    Ok(())
                }
                None => Err(Refused::Total),
            }
        } else {
            Ok(())
        };
        if let Err(reason) = result {
            drop(state);
            metrics::counter!("sixpn_dns_tcp_refused_total", "reason" => reason.label())
                .increment(1);
            return Err(reason);
        }
        let id = state.next_id;
        state.next_id += 1;
        let conn = Arc::new(Conn {
            source,
            accepted: now,
            active: AtomicU64::new(now),
            evicted: CancellationToken::new(),
        });
        state.open.insert(id, conn.clone());
        *state.per_source.entry(source).or_insert(0) += 1;
        metrics::gauge!("sixpn_dns_tcp_connections").increment(1.0);
        gate.update_busy(state.open.len());
        drop(state);
        Ok(Ticket {
            gate: gate.clone(),
            id,
            conn,
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    /// Takes connection `id` out of the count (`None`: it was no longer in it).
    fn remove(&self, state: &mut GateState, id: u64) -> Option<Arc<Conn>> {
        let conn = state.open.remove(&id)?;
        if let Some(n) = state.per_source.get_mut(&conn.source) {
            *n -= 1;
            if *n == 0 {
                state.per_source.remove(&conn.source);
            }
        }
        metrics::gauge!("sixpn_dns_tcp_connections").decrement(1.0);
        self.update_busy(state.open.len());
        Some(conn)
    }

    /// Busy above three quarters of the cap, until back to half of it.
    fn update_busy(&self, open: usize) {
        let max = self.limits.max_connections;
        self.busy.send_if_modified(|busy| {
            let now = if *busy {
                open * 2 > max
            } else {
                open * 4 > max * 3
            };
            std::mem::replace(busy, now) != now
        });
    }
}

impl Ticket {
    /// Notes activity (a whole query received, an answer written) at `now`.
    fn touch(&self, now: Instant) {
        self.conn
            .active
            .store(self.gate.nanos(now), Ordering::Relaxed);
    }

    /// When the connection is closed if it sends no whole query before.
    fn deadline(&self) -> Instant {
        let at = |ns: u64| self.gate.epoch + Duration::from_nanos(ns);
        let last = at(self.conn.active.load(Ordering::Relaxed));
        if *self.gate.busy.borrow() {
            (last + BUSY_IDLE_TIMEOUT).max(at(self.conn.accepted) + YOUNG)
        } else {
            last + self.gate.limits.idle_timeout
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        self.gate.remove(&mut state, self.id);
    }
}

/// Accepts DNS TCP connections on `listener` through `gate` and answers them with `handler`,
/// until `cancel` fires (then every connection is closed and waited for).
///
/// # Errors
/// The listener fails for good (closed, not a socket). Running out of descriptors is not an
/// error: accepting pauses a moment.
pub(super) async fn serve_listener(
    listener: TcpListener,
    handler: Handler,
    gate: TcpGate,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut conns = JoinSet::new();
    let mut warned: Option<Instant> = None;
    let result = loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = cancel.cancelled() => break Ok(()),
        };
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, src)) => match gate.admit(src.ip(), Instant::now()) {
                Ok(ticket) => {
                    conns.spawn(connection(
                        stream,
                        src,
                        handler.clone(),
                        ticket,
                        cancel.clone(),
                    ));
                }
                Err(reason) => {
                    tracing::debug!(%src, reason = reason.label(), "DNS: TCP connection refused");
                    reset(stream);
                }
            },
            Err(error) if is_fatal(&error) => break Err(error),
            Err(error) if is_out_of_resources(&error) => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(%error, open = gate.open(), "DNS: cannot accept a TCP connection (out of descriptors or memory); pausing");
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                    () = cancel.cancelled() => break Ok(()),
                }
            }
            // A connection reset before it was accepted, and the like.
            Err(error) => tracing::debug!(%error, "DNS: accepting a TCP connection failed"),
        }
    };
    drop(listener);
    if result.is_err() {
        conns.shutdown().await;
    } else {
        // Every connection watches `cancel`.
        while conns.join_next().await.is_some() {}
    }
    result
}

/// Errors after which the listener cannot accept again.
fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// Errors that pass once descriptors or memory are freed.
fn is_out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Closes `stream` with a reset: at once, and without leaving the socket in `TIME_WAIT`.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads one length-prefixed message.
async fn read_frame(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Vec<u8>> {
    let len = reader.read_u16().await?;
    let mut message = vec![0; usize::from(len)];
    reader.read_exact(&mut message).await?;
    Ok(message)
}

/// Answers the queries of one connection in order until the client closes it, it stays idle
/// past its deadline, it is evicted, or `cancel` fires.
async fn connection(
    stream: TcpStream,
    src: SocketAddr,
    handler: Handler,
    ticket: Ticket,
    cancel: CancellationToken,
) {
    // Answers go out as soon as they are written (several pipelined answers must not wait
    // for the client's delayed ACK).
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut busy = ticket.gate.busy.subscribe();
    let evicted = ticket.conn.evicted.clone();
    // Answers not yet written: those of pipelined queries go out together, in one write, once
    // no whole query is left in the read buffer.
    let mut out: Vec<u8> = Vec::new();
    loop {
        if !out.is_empty() && (!has_whole_frame(reader.buffer()) || out.len() >= WRITE_BATCH) {
            tokio::select! {
                written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out)) => {
                    if !matches!(written, Ok(Ok(()))) {
                        return;
                    }
                }
                () = evicted.cancelled() => return,
                () = cancel.cancelled() => return,
            }
            out.clear();
            ticket.touch(Instant::now());
        }
        let message = {
            let read = read_frame(&mut reader);
            tokio::pin!(read);
            loop {
                let deadline = ticket.deadline();
                tokio::select! {
                    message = &mut read => break message,
                    () = tokio::time::sleep_until(deadline) => {
                        if Instant::now() >= ticket.deadline() {
                            return;
                        }
                    }
                    // The idle limit changed: compute the deadline again.
                    changed = busy.changed() => if changed.is_err() {
                        return;
                    },
                    () = evicted.cancelled() => return,
                    () = cancel.cancelled() => return,
                }
            }
        };
        // The client closed the connection, or broke it mid-message.
        let Ok(message) = message else { return };
        ticket.touch(Instant::now());
        let Some(answer) = super::udp::full_answer(&handler, message, src, Protocol::Tcp).await
        else {
            continue;
        };
        // The encoder caps a TCP answer at 65,535 bytes.
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer);
    }
}

/// Whether `buffered` starts with a whole length-prefixed message.
fn has_whole_frame(buffered: &[u8]) -> bool {
    match buffered {
        [hi, lo, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn gate(max: usize, per_source: usize) -> TcpGate {
        TcpGate::new(TcpLimits {
            max_connections: max,
            max_per_source: per_source,
            per_address: Some("fdaa::/16".parse().unwrap()),
            ..TcpLimits::default()
        })
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_whole_frame_is_seen_in_the_read_buffer() {
        assert!(!has_whole_frame(&[]));
        assert!(!has_whole_frame(&[0]));
        assert!(has_whole_frame(&[0, 0]));
        assert!(!has_whole_frame(&[0, 3, 1, 2]));
        assert!(has_whole_frame(&[0, 3, 1, 2, 3]));
        assert!(has_whole_frame(&[0, 1, 9, 0, 5]));
    }

    #[test]
    fn a_source_holds_at_most_its_cap() {
        let gate = gate(64, 4);
        let now = Instant::now();
        let held: Vec<Ticket> = (0..4).map(|_| gate.admit(v4(1), now).unwrap()).collect();
        assert_eq!(gate.admit(v4(1), now).unwrap_err(), Refused::PerSource);
        // Another source is not affected.
        let other = gate.admit(v4(2), now).unwrap();
        assert_eq!(gate.open(), 5);
        // A closed connection frees its place.
        drop(held);
        assert_eq!(gate.open(), 1);
        gate.admit(v4(1), now).unwrap();
        drop(other);
    }

    #[test]
    fn an_ipv6_source_is_its_64_outside_the_tunnel_and_its_address_inside() {
        let gate = gate(64, 2);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = [gate.admit(a, now).unwrap(), gate.admit(b, now).unwrap()];
        assert_eq!(gate.admit(a, now).unwrap_err(), Refused::PerSource);
        let _c = gate.admit(c, now).unwrap();
        // Inside the tunnel network each address is its own source.
        let tunnel: Vec<Ticket> = (1..=8u16)
            .map(|i| {
                let addr = Ipv6Addr::new(0xfdaa, 1, 2, 0, 0, 0, 0, i);
                gate.admit(IpAddr::V6(addr), now).unwrap()
            })
            .collect();
        assert_eq!(tunnel.len(), 8);
    }

    #[test]
    fn a_full_gate_refuses_while_every_connection_is_young() {
        let gate = gate(8, 8);
        let start = Instant::now();
        let held: Vec<Ticket> = (0..8).map(|i| gate.admit(v4(i), start).unwrap()).collect();
        let soon = start + YOUNG - Duration::from_millis(1);
        assert_eq!(gate.admit(v4(100), soon).unwrap_err(), Refused::Total);
        assert!(held.iter().all(|t| !t.conn.evicted.is_cancelled()));
        assert_eq!(gate.open(), 8);
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_longest_idle_old_connection() {
        let gate = gate(4, 4);
        let start = Instant::now();
        let held: Vec<Ticket> = (0..4).map(|i| gate.admit(v4(i), start).unwrap()).collect();
        // All old now; the second one has been idle longest, the others were active later.
        let later = start + YOUNG + Duration::from_secs(1);
        for (i, t) in held.iter().enumerate() {
            if i != 1 {
                t.touch(later);
            }
        }
        let newcomer = gate.admit(v4(100), later).unwrap();
        assert!(held[1].conn.evicted.is_cancelled());
        assert_eq!(
            held.iter()
                .filter(|t| t.conn.evicted.is_cancelled())
                .count(),
            1
        );
        assert_eq!(gate.open(), 4);
        // The evicted connection's ticket no longer counts when it is dropped.
        let mut held = held;
        drop(held.remove(1));
        assert_eq!(gate.open(), 4);
        // The newcomer is young: the next one evicts an older connection, never the newcomer.
        let next = gate.admit(v4(101), later).unwrap();
        assert!(!newcomer.conn.evicted.is_cancelled());
        assert_eq!(
            held.iter()
                .filter(|t| t.conn.evicted.is_cancelled())
                .count(),
            1
        );
        drop(next);
    }

    #[test]
    fn the_idle_limit_shortens_near_the_cap_but_never_for_a_young_connection() {
        let gate = gate(8, 8);
        let start = Instant::now();
        let first = gate.admit(v4(0), start).unwrap();
        assert!(!gate.is_busy());
        assert_eq!(first.deadline(), start + IDLE_TIMEOUT);
        let mut more: Vec<Ticket> = (1..6).map(|i| gate.admit(v4(i), start).unwrap()).collect();
        assert!(!gate.is_busy(), "6 of 8 is not above three quarters");
        more.push(gate.admit(v4(6), start).unwrap());
        assert!(gate.is_busy());
        // Young: not before it is YOUNG old.
        assert_eq!(first.deadline(), start + YOUNG);
        let later = start + Duration::from_secs(5);
        first.touch(later);
        assert_eq!(first.deadline(), later + BUSY_IDLE_TIMEOUT);
        // Back to half of the cap: the normal limit again.
        more.truncate(4);
        assert!(gate.is_busy(), "5 of 8 is still above half");
        more.truncate(3);
        assert!(!gate.is_busy());
        assert_eq!(first.deadline(), later + IDLE_TIMEOUT);
    }
}
