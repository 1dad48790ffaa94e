//! UDP through the fast path: [`crate::fastpath`] answers the hot queries from the snapshot's
//! prebuilt bytes on its own threads, and hands every other datagram to our hickory [`Handler`]
//! through [`full_answer`], which does what hickory's server does with a raw datagram.
//!
//! TCP stays on hickory's server (see [`super::serve`]).
//!
//! # The delegated queue
//! Delegated datagrams wait in a [`FairQueue`]: one queue per source (an IPv4 address, an IPv6
//! /64, or one address inside the tunnel network), served round-robin one datagram at a time, so
//! a source that floods the full handler with junk waits behind itself while every other source
//! gets its turn. The queue holds at most [`DELEGATE_QUEUE`] datagrams in [`FLOWS`] fixed flows;
//! when it is full, the oldest datagram of the longest flow is dropped to make room (the
//! flooding source loses, not the newcomer). Nothing grows with the number of sources.
//!
//! The handler's negative answers pass the same response-rate limit as the fast path's
//! ([`crate::fastpath::rrl`]). A panic while answering (a bug) is logged as an error and the
//! task answering the queue is started again; the socket keeps being served.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::sync::Notify;

use super::Handler;
use crate::fastpath::rrl::{self, Rrl, Verdict};
use crate::fastpath::{Delegate, IndexSource};
use crate::snapshot::{Index, SnapshotHandle};

/// Delegated datagrams waiting for the full handler, in all; beyond, the longest flow's oldest
/// datagram is dropped (the client retries).
pub const DELEGATE_QUEUE: usize = 1024;

/// Flows (per-source queues) of the delegated queue.
pub const FLOWS: usize = 256;

/// Flows a source may try (from its hash on) before it shares a busy one.
const PROBES: usize = 4;

/// Panics caught while answering delegated queries since the process started.
pub static PANICS: AtomicU64 = AtomicU64::new(0);

impl IndexSource for SnapshotHandle {
    fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R {
        let snapshot = self.load();
        f(Some(snapshot.fast()))
    }
}

/// A delegated datagram and its sender.
type Datagram = (Vec<u8>, SocketAddr);

/// The delegated queue: fair per source, bounded (see the module docs).
#[derive(Debug)]
pub struct FairQueue {
    state: Mutex<FairState>,
    ready: Notify,
    hasher: foldhash::fast::RandomState,
    per_address: Option<(u128, u128)>,
}

#[derive(Debug)]
struct FairState {
    flows: Vec<Flow>,
    /// Flows with datagrams, in round-robin order.
    active: VecDeque<usize>,
    queued: usize,
    closed: bool,
}

#[derive(Debug, Default)]
struct Flow {
    /// The source that owns the flow while it is not empty.
    key: u128,
    datagrams: VecDeque<Datagram>,
}

impl FairQueue {
    /// An empty queue; sources inside `per_address` (the tunnel network) are told apart by their
    /// whole address, other IPv6 sources by their /64.
    pub fn new(per_address: Option<ipnet::Ipv6Net>) -> FairQueue {
        FairQueue {
            state: Mutex::new(FairState {
                flows: (0..FLOWS).map(|_| Flow::default()).collect(),
                active: VecDeque::with_capacity(FLOWS),
                queued: 0,
                closed: false,
            }),
            ready: Notify::new(),
            hasher: foldhash::fast::RandomState::default(),
            per_address: per_address.map(rrl::net_bits),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FairState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `packet` from `src` (never blocks); returns whether a datagram was dropped for it.
    pub fn push(&self, packet: Vec<u8>, src: SocketAddr) -> bool {
        use std::hash::BuildHasher as _;
        let key = rrl::source_key(src.ip(), 32, 64, self.per_address);
        let first = self.hasher.hash_one(key) as usize % FLOWS;
        let mut state = self.lock();
        if state.closed {
            return true;
        }
        // The source's own flow, else a free one near its hash, else its hash's (shared).
        let probe = (0..PROBES).map(|i| (first + i) % FLOWS);
        let flow = probe
            .clone()
            .find(|&f| state.flows[f].key == key && !state.flows[f].datagrams.is_empty())
            .or_else(|| probe.clone().find(|&f| state.flows[f].datagrams.is_empty()))
            .unwrap_or(first);
        let mut dropped = false;
        if state.queued >= DELEGATE_QUEUE {
            // Full: the longest flow gives up its oldest datagram.
            let longest = (0..FLOWS)
                .max_by_key(|&f| state.flows[f].datagrams.len())
                .unwrap_or(flow);
            if state.flows[longest].datagrams.pop_front().is_some() {
                state.queued -= 1;
                dropped = true;
            }
            if state.flows[longest].datagrams.is_empty() {
                state.active.retain(|&f| f != longest);
            }
        }
        let entry = &mut state.flows[flow];
        let was_empty = entry.datagrams.is_empty();
        if was_empty {
            entry.key = key;
        }
        entry.datagrams.push_back((packet, src));
        state.queued += 1;
        if was_empty {
            state.active.push_back(flow);
        }
        drop(state);
        self.ready.notify_one();
        dropped
    }

    /// The next datagram, round-robin over the sources; `None` once the queue is closed and
    /// empty.
    pub async fn pop(&self) -> Option<Datagram> {
        loop {
            {
                let mut state = self.lock();
                if let Some(flow) = state.active.pop_front() {
                    let datagram = state.flows[flow].datagrams.pop_front();
                    if !state.flows[flow].datagrams.is_empty() {
                        state.active.push_back(flow);
                    }
                    if datagram.is_some() {
                        state.queued -= 1;
                        return datagram;
                    }
                    continue;
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// No more datagrams will come: [`FairQueue::pop`] returns `None` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// Queues delegated datagrams for [`run_delegated`]; never blocks the fast-path thread. Closes
/// the queue when dropped (when the fast path's threads are gone).
#[derive(Debug)]
pub(super) struct ToHandler(pub(super) Arc<FairQueue>);

impl Delegate for ToHandler {
    fn delegate(&self, packet: &[u8], src: SocketAddr) {
        if self.0.push(packet.to_vec(), src) {
            tracing::debug!(%src, "DNS: delegated-query queue full, dropped the oldest query of the busiest source");
        }
    }
}

impl Drop for ToHandler {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs the task `make` returns until it ends without panicking: a panic is logged as an error,
/// counted in [`PANICS`], and a new task is made.
pub(super) async fn supervise<F, Fut>(what: &'static str, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(make()).await {
            Err(error) if error.is_panic() => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, task = what, "DNS: a task panicked; starting it again");
            }
            // Done, or cancelled because the runtime is shutting down.
            _ => return,
        }
    }
}

/// Answers the delegated datagrams of `queue` with `handler`, one after another, sending each
/// answer from `reply` (a socket bound to the server's address; sent with `MSG_DONTWAIT`, so a
/// full send buffer drops the answer instead of blocking), negative answers through `rrl`.
/// Returns when the queue is closed and empty.
pub(super) async fn run_delegated(
    handler: Handler,
    reply: Arc<socket2::Socket>,
    queue: Arc<FairQueue>,
    rrl: Option<Arc<Rrl>>,
) {
    while let Some((packet, src)) = queue.pop().await {
        let Some(mut answer) = full_answer(&handler, packet, src, Protocol::Udp).await else {
            continue;
        };
        if let Some(rrl) = &rrl
            && answer.len() >= 12
            && rrl::is_negative(answer[3])
        {
            match rrl.check(src.ip(), rrl.now()) {
                Verdict::Send => {}
                Verdict::Slip => {
                    let len = rrl::truncate(&mut answer);
                    answer.truncate(len);
                }
                Verdict::Drop => {
                    crate::metrics::count_full_rrl_drop();
                    continue;
                }
            }
        }
        if let Err(error) = reply.send_to_with_flags(&answer, &src.into(), libc::MSG_DONTWAIT) {
            tracing::debug!(%error, %src, "DNS: sending a delegated answer failed");
        }
    }
}

/// The full handler's answer to the raw query `packet` from `src`, exactly as hickory's server
/// would send it (`None`: it would send nothing): shorter than a header → nothing; unparsable →
/// FORMERR with an empty question; a response → nothing; else the handler's answer, encoded
/// within the UDP size of the answer's OPT (512 without one) or 65,535 over TCP.
pub async fn full_answer(
    handler: &Handler,
    packet: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(&packet)).ok()?;
    let mut capture = Capture {
        protocol,
        question: Vec::new(),
        out: Arc::default(),
    };
    match Request::from_bytes(packet, src, protocol) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return None;
            }
            capture.question = request.queries.as_bytes().to_vec();
            handler
                .handle_request::<_, TokioTime>(&request, capture.clone())
                .await;
        }
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return None;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = capture.clone().send_response(response).await;
        }
    }
    let mut out = capture.out.lock().unwrap_or_else(|e| e.into_inner());
    out.take()
}

/// A response handler that keeps the encoded answer, its names compressed against the question
/// ([`super::fit::compress_against_question`]).
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    /// The question section as received (empty when the query did not parse).
    question: Vec<u8>,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // As hickory's `MessageResponse::encode`.
        let id = response.metadata().id;
        let max = match self.protocol {
            Protocol::Udp => response.edns().map_or(512, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        super::fit::compress_against_question(&mut encoder, &self.question);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "DNS: encoding an answer failed");
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                encoder.set_max_size(512);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn from(a: u8, b: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, a, b)), 5353)
    }

    #[tokio::test]
    async fn a_flooding_source_waits_behind_itself() {
        let queue = FairQueue::new(None);
        for i in 0..500u16 {
            queue.push(i.to_be_bytes().to_vec(), from(2, 1));
        }
        queue.push(b"real".to_vec(), from(2, 2));
        let first_two = [queue.pop().await.unwrap(), queue.pop().await.unwrap()];
        assert!(
            first_two
                .iter()
                .any(|(p, src)| p == b"real" && *src == from(2, 2)),
            "{first_two:?}"
        );
        // The flood keeps its order.
        let (p, _) = queue.pop().await.unwrap();
        assert!(p == [0, 1] || p == [0, 2], "{p:?}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_from_the_longest_flow() {
        let queue = FairQueue::new(None);
        for i in 0..DELEGATE_QUEUE {
            assert!(!queue.push(vec![1], from(2, (i % 2) as u8 + 1)));
        }
        for i in 0..100 {
            queue.push(vec![2], from(3, i));
        }
        assert!(queue.push(b"real".to_vec(), from(4, 4)));
        let mut seen = Vec::new();
        queue.close();
        while let Some((p, src)) = queue.pop().await {
            seen.push((p, src));
        }
        assert_eq!(seen.len(), DELEGATE_QUEUE);
        assert!(seen.iter().any(|(p, _)| p == b"real"));
        assert_eq!(seen.iter().filter(|(p, _)| p == &[2]).count(), 100);
        // Closed: nothing more is taken.
        assert!(queue.push(vec![3], from(5, 5)));
        assert!(queue.pop().await.is_none());
    }

    #[tokio::test]
    async fn spoofed_sources_stay_bounded() {
        let queue = FairQueue::new(None);
        for i in 0..20_000u32 {
            queue.push(vec![0; 64], SocketAddr::new(IpAddr::V4(i.into()), 1));
        }
        let state = queue.lock();
        assert_eq!(state.queued, DELEGATE_QUEUE);
        assert_eq!(
            state.flows.iter().map(|f| f.datagrams.len()).sum::<usize>(),
            DELEGATE_QUEUE
        );
        assert_eq!(state.flows.len(), FLOWS);
    }

    #[tokio::test]
    async fn a_panicking_task_is_started_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let before = PANICS.load(Ordering::Relaxed);
        supervise("test", || {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                    panic!("first run");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        assert!(PANICS.load(Ordering::Relaxed) > before);
    }
}
