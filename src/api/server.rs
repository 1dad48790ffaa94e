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
//! - **Connection caps**, in total and per source address. At a cap, a new connection evicts
//!   the one idle longest (see `Connections`); only when every connection is busy with a
//!   request is the new one answered `503` with a JSON `error` and closed at once.
//! - **JSON for hyper's own answers**: hyper answers requests it cannot parse (a garbage request
//!   line: `400`; a 100,000-character URI: `414`; oversized headers: `431`) itself, with an empty
//!   body and no hook to change it. [`GuardedIo`] recognises exactly those answers on the way
//!   out (an error status whose head says `content-length: 0`, which no answer of the router
//!   ever has) and gives them a JSON `error` body, as every other failure has.
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
    /// Connections open at once from one address.
    pub max_connections_per_ip: usize,
}

impl ServerLimits {
    /// The limits of an `[api]` section.
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        ServerLimits {
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
            max_connections: api.max_connections,
            max_connections_per_ip: api.max_connections_per_ip,
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
            Err(why) => {
                tracing::debug!(client = %peer, why, "refusing an API connection");
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    tracker.spawn(refuse(stream, why, refusal));
                }
                continue;
            }
        };
        tracker.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits,
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
    shutdown: CancellationToken,
    slot: Slot,
) {
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

/// Answers `503` with a JSON `error` on a connection over a cap, then closes it.
async fn refuse(mut stream: TcpStream, why: &str, _refusal: OwnedSemaphorePermit) {
    let body = serde_json::json!({ "error": format!("{why}; try again shortly") }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
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

/// The open connections, for the caps. A connection is *idle* while no request of it is being
/// handled: before its first request head is complete, and between keep-alive requests.
///
/// At a cap, a new connection evicts the connection that has been idle longest (overall, or from
/// the same address for the per-address cap) instead of being refused: clients that open
/// connections and send nothing (slowloris) then only ever push out each other, and a real
/// client, which sends its request at once, gets through. Only when every connection is busy
/// handling a request is a new one refused.
struct Connections {
    limits: ServerLimits,
    state: Mutex<ConnectionsState>,
}

#[derive(Default)]
struct ConnectionsState {
    next_id: u64,
    open: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: IpAddr,
    /// Requests being handled.
    busy: usize,
    /// Since when nothing is being handled.
    idle_since: Instant,
    evicted: CancellationToken,
}

impl ConnectionsState {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&entry.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
        Some(entry)
    }

    /// Evicts the longest-idle connection (from `ip`, when given); `false` when all are busy.
    fn evict_idlest(&mut self, ip: Option<IpAddr>) -> bool {
        let idlest = self
            .open
            .iter()
            .filter(|(_, e)| e.busy == 0 && ip.is_none_or(|ip| e.ip == ip))
            .min_by_key(|(_, e)| e.idle_since)
            .map(|(id, _)| *id);
        match idlest.and_then(|id| self.remove(id)) {
            Some(entry) => {
                entry.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

impl Connections {
    fn new(limits: ServerLimits) -> Self {
        Connections {
            limits,
            state: Mutex::new(ConnectionsState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, evicting an idle one at a cap; `Err` says why it is
    /// refused.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut state = self.lock();
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_connections_per_ip
            && !state.evict_idlest(Some(ip))
        {
            return Err("too many open connections from your address");
        }
        if state.open.len() >= self.limits.max_connections && !state.evict_idlest(None) {
            return Err("the server has too many open connections");
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.open.insert(
            id,
            Entry {
                ip,
                busy: 0,
                idle_since: Instant::now(),
                evicted: evicted.clone(),
            },
        );
        *state.per_ip.entry(ip).or_insert(0) += 1;
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
        self.conns.lock().remove(self.id);
    }
}

/// A request being handled on a connection: the connection is not idle meanwhile.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = slot.conns.lock().open.get_mut(&slot.id) {
            entry.busy += 1;
        }
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

/// A TCP stream with an idle timeout, which also gives hyper's bodyless error answers a JSON
/// body (see the module docs).
pub struct GuardedIo {
    inner: TcpStream,
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

impl GuardedIo {
    fn new(inner: TcpStream, idle: Duration, busy: Arc<AtomicUsize>) -> Self {
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

impl AsyncRead for GuardedIo {
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

impl AsyncWrite for GuardedIo {
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
