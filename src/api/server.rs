//! The HTTP/1.1 server the API runs on: our own accept loop over hyper, so that the limits a
//! public server needs are ours to set (`axum::serve` exposes none of them).
//!
//! - **Header-read timeout**: a client must send a whole request head within
//!   [`ServerLimits::header_read_timeout`] of connecting (or of its previous answer, on a
//!   keep-alive connection); half a request line is cut off, and so is an idle keep-alive.
//! - **Idle timeout**: a connection on which nothing is read or written for
//!   [`ServerLimits::idle_timeout`] while no request of it is being handled is closed (a client
//!   that does not read its answer). A request whose body stalls is answered `408` after the
//!   body timeout (`ApiState::body_timeout`), so a slow handler is never cut off mid-answer.
//! - **Connection caps**, in total and per source (an IPv4 address or an IPv6 /64, see
//!   [`source_key`]). At a cap, a new connection evicts an idle one, but never one idle for
//!   less than [`ServerLimits::eviction_floor`] (a client still in its TLS handshake or sending
//!   its request head over a slow link): when there is none to evict, the new connection is
//!   answered `503` with a JSON `error` and closed at once. The last quarter of the total cap
//!   is kept for sources that are not silent, so silent connections from a few hundred
//!   addresses cannot fill the server (see `Connections`).
//! - **Accept rate** per source ([`ServerLimits::accept_rate`], a token bucket): a source
//!   opening connections faster is refused at once, without a task or a timer.
//! - **JSON for hyper's own answers**: hyper answers requests it cannot parse (a garbage request
//!   line: `400`; a 100,000-character URI: `414`; oversized headers: `431`) itself, with an empty
//!   body and no hook to change it. [`GuardedIo`] recognises exactly those answers on the way
//!   out (an error status whose head says `content-length: 0`, which no answer of the router
//!   ever has) and gives them a JSON `error` body, as every other failure has.
//!
//! - **HTTPS**: with a certificate and key ([`load_tls`], from `[api] tls_cert`/`tls_key`) every
//!   connection is TLS (rustls) and nothing else is served; the handshake must finish within the
//!   header-read timeout. The pair is swapped in place when it changes ([`ApiTls`]). The limits above apply to the decrypted stream.
//!
//! Each request carries the client's address as [`ConnectInfo`], for the per-address limits.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;

use super::limits::{Buckets, source_key};
pub use super::tls::{ApiTls, TlsError, WATCH_PERIOD as TLS_WATCH_PERIOD, load_tls};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections being refused at once (each for at most a second); more are dropped unanswered.
const MAX_REFUSALS: usize = 256;

/// The largest read buffer of one connection, so also the largest request head.
const MAX_READ_BUF: usize = 128 * 1024;

/// How long open connections get to finish their answers once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The limits of the HTTP server (from `[api]`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time allowed for a whole request head.
    pub header_read_timeout: Duration,
    /// Time a connection may neither read nor write.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one source (an IPv4 address or an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// A connection idle for less than this (since it opened or since its last answer) is never
    /// evicted for a new one.
    pub eviction_floor: Duration,
    /// New connections per second from one source (0: no limit).
    pub accept_rate: f64,
    /// New connections one source may open at once before `accept_rate` applies.
    pub accept_burst: u32,
}

impl ServerLimits {
    /// The limits of an `[api]` section.
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        ServerLimits {
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
            max_connections: api.max_connections,
            max_connections_per_ip: api.max_connections_per_ip,
            eviction_floor: api.eviction_floor,
            accept_rate: api.accept_rate,
            accept_burst: api.accept_burst,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::from_config(&crate::config::ApiConfig::default())
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then gives open connections
/// five seconds to finish.
///
/// # Errors
/// None today: accept errors (such as running out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_tls(listener, app, limits, None, shutdown).await
}

/// Like [`serve`]; with `tls` (see [`load_tls`]) every connection is HTTPS.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_tls(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let conns = Arc::new(Connections::new(limits));
    // Refusing costs a task for up to a second; under a flood, refuse silently beyond this.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %err, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let slot = match conns.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let why = refusal.why();
                tracing::debug!(client = %peer, why, "refusing an API connection");
                match refusals.clone().try_acquire_owned() {
                    Ok(permit) if refusal != Refusal::Rate => {
                        tracker.spawn(refuse(stream, why, permit));
                    }
                    _ => refuse_now(&stream, why),
                }
                continue;
            }
        };
        tracker.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits,
            tls.clone(),
            shutdown.clone(),
            slot,
        ));
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some API connections were still open at shutdown");
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    slot: Slot,
) {
    let Some(acceptor) = tls else {
        return serve_stream(stream, peer, app, limits, shutdown, slot, false).await;
    };
    // The handshake counts against the header-read timeout: a client that connects and sends
    // nothing is cut off as it would be without TLS.
    let handshake = tokio::select! {
        res = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => res,
        () = slot.evicted.cancelled() => return,
        () = shutdown.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_stream(stream, peer, app, limits, shutdown, slot, true).await,
        Ok(Err(err)) => tracing::debug!(client = %peer, error = %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
    }
}

async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
    slot: Slot,
    tls: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(GuardedIo::new(
        stream,
        limits.idle_timeout,
        slot.busy.clone(),
    ));
    let evicted = slot.evicted.clone();
    let slot = Arc::new(slot);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if tls {
            // The console marks its session cookie `Secure` (issue 19).
            req.extensions_mut().insert(super::ui::ViaTls);
        }
        let busy = Busy::new(slot.clone());
        let app = app.clone();
        async move {
            let res = tower::ServiceExt::oneshot(app, req).await;
            drop(busy);
            res
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's default read buffer may grow to ~400 KiB per connection; a request head never
        // needs that. 128 KiB still lets an over-long URI (over 64 KiB) be answered 414.
        .max_buf_size(MAX_READ_BUF);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = evicted.cancelled() => {
            tracing::debug!(client = %peer, "idle API connection evicted for a new one");
            return;
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(res) => res,
                Err(_) => return,
            }
        }
    };
    if let Err(err) = res {
        // Timeouts, resets and unparsable requests: the client's doing, not worth more.
        tracing::debug!(client = %peer, error = %err, "API connection ended with an error");
    }
}

/// The `503` a refused connection gets, with a JSON `error` saying `why`.
fn refusal_answer(why: &str) -> String {
    let body = serde_json::json!({ "error": format!("{why}; try again shortly") }).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The cheap refusal: the `503` handed to the kernel in one non-blocking `send` (a fresh
/// socket's buffer takes it whole), and the socket closed when the caller drops it. No task, no
/// timer, no wait; a client that had already sent its request may see a reset instead.
fn refuse_now(stream: &TcpStream, why: &str) {
    let _ = socket2::SockRef::from(stream).send(refusal_answer(why).as_bytes());
}

/// Answers `503` with a JSON `error` on a connection over a cap, then closes it, reading what
/// the client sent meanwhile so that the answer is not lost to a reset.
async fn refuse(mut stream: TcpStream, why: &str, _refusal: OwnedSemaphorePermit) {
    let answer = refusal_answer(why);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, so the kernel does not reset the
        // connection (and drop our answer) over unread data.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its source opens connections faster than the accept rate.
    Rate,
    /// Its source holds its cap, all of it younger than the floor or busy.
    SourceCap,
    /// The server is three quarters full and its source already holds connections.
    Share,
    /// The server is full, every connection younger than the floor or busy.
    Full,
}

impl Refusal {
    fn why(self) -> &'static str {
        match self {
            Refusal::Rate => "too many new connections from your address",
            Refusal::SourceCap => "too many open connections from your address",
            Refusal::Share => "the server is busy and your address already holds open connections",
            Refusal::Full => "the server has too many open connections",
        }
    }
}

/// The open connections, for the caps. A connection is *idle* while no request of it is being
/// handled: before its first request head is complete (a TLS handshake included), and between
/// keep-alive requests.
///
/// Admission of a new connection from a source (see [`source_key`]):
/// 1. Over the source's accept rate: refused.
/// 2. The source holds `max_connections_per_ip`: its own connection idle longest is evicted,
///    so a source crowds out only itself.
/// 3. Three quarters of `max_connections` are open and the source is *silent*: it holds a
///    connection that has had no request yet, or one of its connections ended so (timed out,
///    evicted, or closed by its client) within the header-read timeout. A connection of a
///    source holding at least as many as it does is evicted. So the last quarter of the cap
///    stays for sources that send requests, or are new: a churn of silent connections from
///    many addresses, each closed and opened again, cannot creep into it.
/// 4. `max_connections` open: a connection from any source is evicted.
///
/// The evicted connection is always the one idle longest of the source holding the most
/// (which keeps evictions from cascading), and only a connection idle for at least the
/// eviction floor is ever evicted; when there is none, the new connection is refused instead.
/// So clients that connect and send nothing (slowloris) push out only each other once they are
/// past the floor, and a real client, admitted, has the floor to finish its handshake and send
/// its request head however fast the churn: a silent flood from a few hundred addresses fills
/// at most three quarters of the cap and leaves the rest to clients that talk.
struct Connections {
    limits: ServerLimits,
    /// New connections per source, for the accept rate.
    accepts: Buckets<IpAddr>,
    /// Sources whose connection lately ended without a request (each bucket holds one unit,
    /// spent when a connection ends silent, back after the header-read timeout).
    silent: Buckets<IpAddr>,
    state: Mutex<ConnectionsState>,
}

#[derive(Default)]
struct ConnectionsState {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Open connections by source.
    per_source: HashMap<IpAddr, usize>,
    /// Open connections by source that have not had a request yet.
    unproven: HashMap<IpAddr, usize>,
}

struct Entry {
    source: IpAddr,
    /// Requests being handled.
    busy: usize,
    /// Whether a request of it was ever handled (else it ends silent: see `Connections`).
    served: bool,
    /// Since when nothing is being handled (at first: since it opened).
    idle_since: Instant,
    evicted: CancellationToken,
}

/// Whose connection a newcomer may take the place of.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// Anyone's.
    Any,
    /// Its own source's.
    Own(IpAddr),
    /// A source's holding at least this many (its own included).
    HoldingAtLeast(usize),
}

impl ConnectionsState {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        Self::uncount(&mut self.per_source, entry.source);
        if !entry.served {
            Self::uncount(&mut self.unproven, entry.source);
        }
        Some(entry)
    }

    fn uncount(counts: &mut HashMap<IpAddr, usize>, source: IpAddr) {
        if let Some(count) = counts.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&source);
            }
        }
    }

    /// Notes that connection `id` had a request.
    fn served(&mut self, id: u64) {
        if let Some(entry) = self.open.get_mut(&id) {
            entry.busy += 1;
            if !entry.served {
                entry.served = true;
                let source = entry.source;
                Self::uncount(&mut self.unproven, source);
            }
        }
    }

    /// Evicts a connection idle since `before` or earlier whose source is `victim`'s: of the
    /// source holding the most, the one idle longest; `None` when there is none.
    ///
    /// Taking from the biggest holder first keeps evictions from cascading: a source that
    /// loses its only connection holds none, and could in turn evict another's at once, so
    /// that a churn from many addresses would keep every connection younger than the floor.
    fn evict_idlest(&mut self, victim: Victim, before: Instant) -> Option<Entry> {
        let per_source = &self.per_source;
        let idlest = self
            .open
            .iter()
            .filter(|(_, e)| {
                e.busy == 0
                    && e.idle_since <= before
                    && match victim {
                        Victim::Any => true,
                        Victim::Own(source) => e.source == source,
                        Victim::HoldingAtLeast(n) => per_source.get(&e.source) >= Some(&n),
                    }
            })
            .max_by_key(|(_, e)| {
                let holds = per_source.get(&e.source).copied().unwrap_or(0);
                (holds, std::cmp::Reverse(e.idle_since))
            })
            .map(|(id, _)| *id);
        let entry = self.remove(idlest?)?;
        entry.evicted.cancel();
        Some(entry)
    }
}

impl Connections {
    fn new(limits: ServerLimits) -> Self {
        Connections {
            limits,
            accepts: Buckets::new(limits.accept_rate, limits.accept_burst),
            silent: Buckets::new(1.0 / limits.header_read_timeout.as_secs_f64().max(0.001), 1),
            state: Mutex::new(ConnectionsState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes how a connection ended: one that never had a request handled (it timed out, was
    /// evicted, or was closed by its client, all silent) marks its source as silent for the
    /// header-read timeout.
    fn ended(&self, entry: &Entry) {
        if !entry.served {
            let _ = self.silent.take(entry.source);
        }
    }

    /// How many connections may be open before a source that holds some gets no more (the
    /// rest is kept for sources that hold none).
    fn shared_limit(&self) -> usize {
        self.limits.max_connections - self.limits.max_connections / 4
    }

    /// Counts a new connection from `ip`, evicting an idle one at a cap (see the type's docs);
    /// `Err` says why it is refused.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let source = source_key(ip);
        if self.accepts.take(source).is_err() {
            return Err(Refusal::Rate);
        }
        let now = Instant::now();
        // Only connections idle since then or earlier may be evicted (none just after boot,
        // when the monotonic clock cannot go back that far).
        let before = now.checked_sub(self.limits.eviction_floor);
        let silent = self.silent.check(source).is_err();
        let mut gone = None;
        let mut evict = |state: &mut ConnectionsState, victim: Victim| {
            gone = before.and_then(|before| state.evict_idlest(victim, before));
            gone.is_some()
        };
        let mut state = self.lock();
        let held = state.per_source.get(&source).copied().unwrap_or(0);
        // Silent lately: a connection that has had no request yet, or one that ended so.
        let suspect = silent || state.unproven.contains_key(&source);
        if held >= self.limits.max_connections_per_ip {
            if !evict(&mut state, Victim::Own(source)) {
                return Err(Refusal::SourceCap);
            }
        } else if suspect && state.open.len() >= self.shared_limit() {
            if !evict(&mut state, Victim::HoldingAtLeast(held.max(1))) {
                return Err(Refusal::Share);
            }
        } else if state.open.len() >= self.limits.max_connections && !evict(&mut state, Victim::Any)
        {
            return Err(Refusal::Full);
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.open.insert(
            id,
            Entry {
                source,
                busy: 0,
                idle_since: now,
                served: false,
                evicted: evicted.clone(),
            },
        );
        *state.per_source.entry(source).or_insert(0) += 1;
        *state.unproven.entry(source).or_insert(0) += 1;
        drop(state);
        if let Some(gone) = gone {
            self.ended(&gone);
        }
        Ok(Slot {
            conns: self.clone(),
            id,
            busy: Arc::new(AtomicUsize::new(0)),
            evicted,
        })
    }
}

/// One admitted connection; uncounted on drop.
struct Slot {
    conns: Arc<Connections>,
    id: u64,
    /// Requests being handled, shared with the connection's [`GuardedIo`].
    busy: Arc<AtomicUsize>,
    /// Cancelled when a new connection takes this one's place.
    evicted: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let entry = self.conns.lock().remove(self.id);
        if let Some(entry) = entry {
            self.conns.ended(&entry);
        }
    }
}

/// A request being handled on a connection: the connection is not idle meanwhile.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        slot.conns.lock().served(slot.id);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        if let Some(entry) = self.0.conns.lock().open.get_mut(&self.0.id) {
            entry.busy -= 1;
            if entry.busy == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

/// A stream (TCP, or TLS over TCP) with an idle timeout, which also gives hyper's bodyless error
/// answers a JSON body (see the module docs).
pub struct GuardedIo<S = TcpStream> {
    inner: S,
    /// Requests of this connection being handled; the idle timeout does not run meanwhile.
    busy: Arc<AtomicUsize>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    rewrite: Option<Rewrite>,
}

/// A replacement answer being written in place of the one hyper asked to write.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's buffer, reported as written once the replacement is out.
    original: usize,
}

impl<S> GuardedIo<S> {
    fn new(inner: S, idle: Duration, busy: Arc<AtomicUsize>) -> Self {
        GuardedIo {
            inner,
            busy,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            rewrite: None,
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn idle_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.deadline.as_mut().poll(cx));
            if self.busy.load(Ordering::Relaxed) == 0 {
                break;
            }
            // A handler is at work (hyper watches the socket meanwhile): not idle.
            self.touch();
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "API connection idle for too long",
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.idle_error(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_none()
            && let Some(bytes) = json_error_answer(buf)
        {
            this.rewrite = Some(Rewrite {
                bytes,
                written: 0,
                original: buf.len(),
            });
        }
        if let Some(rewrite) = &mut this.rewrite {
            // hyper hands the same buffer again after `Pending`; the replacement goes on.
            while rewrite.written < rewrite.bytes.len() {
                let n = match Pin::new(&mut this.inner)
                    .poll_write(cx, &rewrite.bytes[rewrite.written..])
                {
                    Poll::Ready(res) => res?,
                    Poll::Pending => {
                        return this.idle_error(cx).map(Err);
                    }
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                rewrite.written += n;
            }
            let original = rewrite.original;
            this.rewrite = None;
            this.touch();
            return Poll::Ready(Ok(original));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.idle_error(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// When `buf` is exactly an answer hyper wrote on its own (an error status, a head with
/// `content-length: 0` and no content type, nothing after the head), the same answer with a JSON
/// `error` body; else `None`.
fn json_error_answer(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let code: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !(400..600).contains(&code) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut zero_length = false;
    let mut kept = String::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return None;
            }
            zero_length = true;
        } else if name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        } else {
            kept.push_str(line);
            kept.push_str("\r\n");
        }
    }
    if !zero_length {
        return None;
    }
    let message = match code {
        400 => {
            "malformed HTTP request: the request line or a header could not be parsed; send \
             an HTTP/1.1 request such as `GET /healthz HTTP/1.1`"
        }
        414 => {
            "request URI is too long: peer, group and org names are DNS labels of at most 63 \
             characters"
        }
        431 => "request headers are too large: send fewer or shorter headers",
        505 => "HTTP version not supported: use HTTP/1.1",
        _ => "the request could not be handled",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{kept}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize, floor: Duration) -> ServerLimits {
        ServerLimits {
            max_connections: total,
            max_connections_per_ip: per_source,
            eviction_floor: floor,
            accept_rate: 0.0,
            ..ServerLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_young_connection_is_never_evicted_the_newcomer_is_refused() {
        let conns = Arc::new(Connections::new(limits(100, 2, LONG)));
        let first = conns.admit(ip("192.0.2.1")).unwrap();
        let _second = conns.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), Some(Refusal::SourceCap));
        assert!(!first.evicted.is_cancelled());
        // Another source is not affected.
        assert!(conns.admit(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn past_the_floor_the_idlest_is_evicted() {
        let conns = Arc::new(Connections::new(limits(100, 2, Duration::ZERO)));
        let first = conns.admit(ip("192.0.2.1")).unwrap();
        let second = conns.admit(ip("192.0.2.1")).unwrap();
        let third = conns.admit(ip("192.0.2.1")).unwrap();
        assert!(first.evicted.is_cancelled());
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        // A connection busy with a request is never evicted.
        let _busy = Busy::new(Arc::new(second));
        let _fourth = conns.admit(ip("192.0.2.1")).unwrap();
        assert!(third.evicted.is_cancelled());
    }

    #[test]
    fn sources_are_slash_64s_for_the_per_source_cap() {
        let conns = Arc::new(Connections::new(limits(100, 2, LONG)));
        let _a = conns.admit(ip("2001:db8:0:1::a")).unwrap();
        let _b = conns.admit(ip("2001:db8:0:1:ffff::b")).unwrap();
        assert_eq!(
            conns.admit(ip("2001:db8:0:1::c")).err(),
            Some(Refusal::SourceCap)
        );
        assert!(conns.admit(ip("2001:db8:0:2::a")).is_ok());
    }

    #[test]
    fn the_last_quarter_is_kept_for_sources_holding_none() {
        let conns = Arc::new(Connections::new(limits(8, 8, LONG)));
        let mut held: Vec<Slot> = (0..6)
            .map(|_| conns.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), Some(Refusal::Share));
        held.push(conns.admit(ip("192.0.2.2")).unwrap());
        assert_eq!(conns.admit(ip("192.0.2.2")).err(), Some(Refusal::Share));
        held.push(conns.admit(ip("192.0.2.3")).unwrap());
        assert_eq!(conns.admit(ip("192.0.2.4")).err(), Some(Refusal::Full));
        // A closed connection frees its place.
        held.pop();
        assert!(conns.admit(ip("192.0.2.4")).is_ok());
    }

    #[test]
    fn over_three_quarters_the_biggest_holders_give_way_first() {
        let conns = Arc::new(Connections::new(limits(8, 8, Duration::ZERO)));
        let b1 = conns.admit(ip("192.0.2.2")).unwrap();
        let a: Vec<Slot> = (0..5)
            .map(|_| conns.admit(ip("192.0.2.1")).unwrap())
            .collect();
        // Six open, A holds five: a new one of A's takes the place of A's idlest, not of B's
        // older one (B holds fewer).
        let _a6 = conns.admit(ip("192.0.2.1")).unwrap();
        assert!(a[0].evicted.is_cancelled());
        assert!(!b1.evicted.is_cancelled());
        // A source holding none takes a free place of the last quarter.
        let _c = conns.admit(ip("192.0.2.3")).unwrap();
        assert!(a[1..].iter().all(|s| !s.evicted.is_cancelled()));
    }

    #[test]
    fn a_source_gone_silent_does_not_get_the_last_quarter_one_that_talks_does() {
        let conns = Arc::new(Connections::new(limits(8, 8, LONG)));
        let _six: Vec<Slot> = (1..=6)
            .map(|i| conns.admit(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        // New, it gets a place of the last quarter; its connection ends without a request.
        drop(conns.admit(ip("192.0.2.100")).unwrap());
        assert_eq!(conns.admit(ip("192.0.2.100")).err(), Some(Refusal::Share));
        // A source whose connection had a request may open another there.
        let talks = Arc::new(conns.admit(ip("192.0.2.200")).unwrap());
        drop(Busy::new(talks.clone()));
        let _second = conns.admit(ip("192.0.2.200")).unwrap();
        assert_eq!(conns.admit(ip("192.0.2.201")).err(), Some(Refusal::Full));
    }

    #[test]
    fn over_the_accept_rate_a_source_is_refused() {
        let conns = Arc::new(Connections::new(ServerLimits {
            accept_rate: 0.001,
            accept_burst: 3,
            ..limits(100, 100, LONG)
        }));
        let held: Vec<Slot> = (0..3)
            .map(|_| conns.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), Some(Refusal::Rate));
        drop(held);
        // Closing them gives nothing back: the rate counts openings.
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), Some(Refusal::Rate));
        assert!(conns.admit(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn only_hyper_bodyless_errors_are_rewritten() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 23:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_error_answer(hyper_414).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("date: Mon"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("too long"));

        // Answers of the router: a body follows, or a content type is set, or it is a success.
        for buf in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"{\"error\":\"HTTP/1.1 400\"}",
        ] {
            assert!(
                json_error_answer(buf).is_none(),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}
