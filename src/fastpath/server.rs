//! The fast path's UDP server: one `SO_REUSEPORT` socket and one dedicated thread per core, each
//! receiving datagrams in batches (`recvmmsg`), answering what [`answer`] can into a reply batch
//! sent with one `sendmmsg`, and handing the rest to a [`Delegate`] (the full hickory handler).
//!
//! The threads block in the kernel while idle: no polling, no async runtime on the hot path.
//! Each socket has a receive timeout so a thread notices [`FastServer::shutdown`] within
//! [`STOP_CHECK`]; the kernel spreads clients over the sockets by their address.
//!
//! Negative answers (NXDOMAIN, REFUSED, FORMERR) pass through [`FastServerConfig::rrl`] when set
//! (see [`super::rrl`]); positive ones cost one compare of the response code.
//!
//! A panic while answering (a bug) does not stop a socket: it is logged as an error and the
//! thread's loop starts again on the same socket with fresh buffers (the batch in hand is lost).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};

use super::rrl::{self, Rrl, Verdict};
use super::sys::Batch;
use super::{Outcome, answer};
use crate::snapshot::Index;

/// Panics caught in fast-path threads since the process started (each restarted its loop).
pub static PANICS: AtomicU64 = AtomicU64::new(0);

/// How often an idle thread checks whether it should stop.
pub const STOP_CHECK: Duration = Duration::from_millis(250);

/// Where the server gets the current index from; read once per received batch.
pub trait IndexSource: Send + Sync + 'static {
    /// Calls `f` with the current index (`None`: delegate everything).
    fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R;
}

impl IndexSource for ArcSwap<Index> {
    fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R {
        let guard = self.load();
        f(Some(&guard))
    }
}

impl<S: IndexSource> IndexSource for Arc<S> {
    fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R {
        (**self).with_index(f)
    }
}

/// Receives the datagrams the fast path does not answer.
pub trait Delegate: Send + Sync + 'static {
    /// `packet` came from `src` and needs the full handler. Called on a fast-path thread: copy
    /// what you need and return at once (never block).
    fn delegate(&self, packet: &[u8], src: SocketAddr);
}

impl<F: Fn(&[u8], SocketAddr) + Send + Sync + 'static> Delegate for F {
    fn delegate(&self, packet: &[u8], src: SocketAddr) {
        self(packet, src)
    }
}

/// How to run the fast-path server.
#[derive(Debug, Clone)]
pub struct FastServerConfig {
    /// UDP address to bind (port 0: an ephemeral port shared by all the sockets).
    pub addr: SocketAddr,
    /// Sockets and threads; 0 = one per CPU the process may run on.
    pub workers: usize,
    /// Datagrams per `recvmmsg`/`sendmmsg`.
    pub batch: usize,
    /// Receive and reply buffer size per datagram; longer queries are dropped, replies are
    /// capped at this size.
    pub buf_size: usize,
    /// `SO_RCVBUF` to ask for (the kernel may cap it at `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// The response-rate limit of negative answers; `None`: none.
    pub rrl: Option<Arc<Rrl>>,
}

impl FastServerConfig {
    /// Defaults for `addr`: a thread per CPU, batches of 64, 4 KiB buffers, 4 MiB socket buffer.
    pub fn new(addr: SocketAddr) -> FastServerConfig {
        FastServerConfig {
            addr,
            workers: 0,
            batch: 64,
            buf_size: 4096,
            recv_buffer: 4 << 20,
            rrl: None,
        }
    }
}

/// The running fast-path server. Stops its threads on [`FastServer::shutdown`] or drop.
#[derive(Debug)]
pub struct FastServer {
    local_addr: SocketAddr,
    reply_socket: UdpSocket,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FastServer {
    /// Binds the sockets and starts the threads.
    ///
    /// # Errors
    /// Creating, configuring or binding a socket, or spawning a thread.
    pub fn start<S: IndexSource, D: Delegate>(
        config: &FastServerConfig,
        source: Arc<S>,
        delegate: Arc<D>,
    ) -> io::Result<FastServer> {
        let first = bind(config.addr, config.recv_buffer)?;
        FastServer::start_on(first, config, source, delegate)
    }

    /// Like [`FastServer::start`], with `first` as the first socket: already bound (the address
    /// in `config` is ignored), with `SO_REUSEPORT` set when more than one worker runs. The other
    /// workers' sockets bind to its address. `first` is switched to blocking mode with a receive
    /// timeout.
    ///
    /// # Errors
    /// Configuring or binding a socket, or spawning a thread.
    pub fn start_on<S: IndexSource, D: Delegate>(
        first: UdpSocket,
        config: &FastServerConfig,
        source: Arc<S>,
        delegate: Arc<D>,
    ) -> io::Result<FastServer> {
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let batch = config.batch.max(1);
        let buf_size = config.buf_size.max(512);
        first.set_nonblocking(false)?;
        first.set_read_timeout(Some(STOP_CHECK))?;
        let local_addr = first.local_addr()?;
        let reply_socket = first.try_clone()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind(local_addr, config.recv_buffer)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(workers);
        for (i, socket) in sockets.into_iter().enumerate() {
            let (source, delegate, stop) = (source.clone(), delegate.clone(), stop.clone());
            let rrl = config.rrl.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dns-fast-{i}"))
                .spawn(move || {
                    let rrl = rrl.as_deref();
                    supervise(&stop, || {
                        run(&socket, &*source, &*delegate, &stop, rrl, batch, buf_size);
                    });
                })?;
            threads.push(thread);
        }
        Ok(FastServer {
            local_addr,
            reply_socket,
            stop,
            threads,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A socket bound to the server's address, for sending the delegated answers: a duplicate of
    /// the first socket, so it shares that socket's blocking mode (send with `MSG_DONTWAIT`, and
    /// never change its flags or receive on it).
    ///
    /// # Errors
    /// Duplicating the descriptor.
    pub fn reply_socket(&self) -> io::Result<UdpSocket> {
        self.reply_socket.try_clone()
    }

    /// Stops the threads and waits for them (at most about [`STOP_CHECK`]).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for FastServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT` (so more can bind the same address and share
/// its datagrams), IPv6-only for an IPv6 address, a `recv_buffer`-byte receive buffer (best
/// effort), blocking with a [`STOP_CHECK`] receive timeout.
///
/// # Errors
/// Creating, configuring or binding the socket.
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means drops under overload.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_read_timeout(Some(STOP_CHECK))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Runs `body` until `stop` is set, running it again whenever it panics (logged as an error and
/// counted in [`PANICS`]), so a bug on one query never silently stops a socket.
fn supervise(stop: &AtomicBool, mut body: impl FnMut()) {
    while !stop.load(Ordering::Relaxed) {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body));
        if let Err(panic) = res {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(
                panic = what,
                "dns fast path: a thread panicked; its socket keeps being served"
            );
            // Not a tight loop should the panic repeat on every batch.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn run<S: IndexSource, D: Delegate>(
    socket: &UdpSocket,
    source: &S,
    delegate: &D,
    stop: &AtomicBool,
    rrl: Option<&Rrl>,
    batch: usize,
    buf_size: usize,
) {
    let mut batch = Batch::new(batch, buf_size);
    // Plain per-thread counts, added into the shared metrics once per batch (issue 10).
    let mut counts = crate::metrics::FastCounts::default();
    let fd = socket.as_fd();
    while !stop.load(Ordering::Relaxed) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dns fast path: receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // The rate limit's clock, read at most once per batch.
        let mut now = None;
        source.with_index(|index| {
            for i in 0..n {
                let (_, truncated, src) = batch.datagram(i);
                // Like hickory: nothing goes back to port 0; a datagram cut by the buffer is junk.
                let Some(src) = src.filter(|a| a.port() != 0) else {
                    continue;
                };
                if truncated {
                    continue;
                }
                let outcome = match index {
                    Some(index) => {
                        let (query, out) = batch.datagram_and_reply_buf(i);
                        let mut outcome = answer(index, src.ip(), query, out);
                        if let Outcome::Reply(len) = outcome {
                            // Positive answers stop at the first test.
                            if rrl::is_negative(out[3])
                                && let Some(rrl) = rrl
                            {
                                let now = *now.get_or_insert_with(|| rrl.now());
                                match rrl.check(src.ip(), now) {
                                    Verdict::Send => {}
                                    Verdict::Slip => {
                                        outcome = Outcome::Reply(rrl::truncate(&mut out[..len]))
                                    }
                                    Verdict::Drop => {
                                        counts.rrl_drop();
                                        outcome = Outcome::Drop;
                                    }
                                }
                            }
                            if let Outcome::Reply(len) = outcome {
                                counts.reply(&out[..len]);
                            }
                        }
                        outcome
                    }
                    None => Outcome::Delegate,
                };
                match outcome {
                    Outcome::Reply(len) => batch.push_reply(i, len),
                    Outcome::Delegate => delegate.delegate(batch.datagram(i).0, src),
                    Outcome::Drop => {}
                }
            }
        });
        debug_assert!(batch.received() == n);
        batch.send(fd);
        counts.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Panics on its first use, then delegates everything.
    struct PanicsOnce(AtomicBool);

    impl IndexSource for PanicsOnce {
        fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R {
            if !self.0.swap(true, Ordering::Relaxed) {
                panic!("a bug while answering");
            }
            f(None)
        }
    }

    #[test]
    fn a_panic_does_not_stop_the_socket() {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let delegate = move |packet: &[u8], _: SocketAddr| {
            let _ = tx.lock().unwrap().send(packet.to_vec());
        };
        let config = FastServerConfig {
            workers: 1,
            ..FastServerConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let before = PANICS.load(Ordering::Relaxed);
        let server = FastServer::start(
            &config,
            Arc::new(PanicsOnce(AtomicBool::new(false))),
            Arc::new(delegate),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The first datagram hits the panic; later ones must still arrive.
        let mut got = None;
        for _ in 0..50 {
            client.send_to(b"query", server.local_addr()).unwrap();
            if let Ok(packet) = rx.recv_timeout(Duration::from_millis(200)) {
                got = Some(packet);
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(&b"query"[..]));
        assert!(PANICS.load(Ordering::Relaxed) > before);
        server.shutdown();
    }
}
