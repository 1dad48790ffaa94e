//! UDP through the fast path: [`crate::fastpath`] answers the hot queries from the snapshot's
//! prebuilt bytes on its own threads, and hands every other datagram to our hickory [`Handler`]
//! through [`full_answer`], which does what hickory's server does with a raw datagram.
//!
//! TCP stays on hickory's server (see [`super::serve`]).

use std::net::SocketAddr;
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
use tokio::sync::mpsc;

use super::Handler;
use crate::fastpath::{Delegate, Index, IndexSource};
use crate::snapshot::SnapshotHandle;

/// Delegated datagrams waiting for the full handler; more are dropped (the client retries).
pub const DELEGATE_QUEUE: usize = 1024;

impl IndexSource for SnapshotHandle {
    fn with_index<R>(&self, f: impl FnOnce(Option<&Index>) -> R) -> R {
        let snapshot = self.load();
        f(Some(snapshot.fast()))
    }
}

/// Queues delegated datagrams for [`run_delegated`]; never blocks the fast-path thread.
#[derive(Debug)]
pub(super) struct ToHandler(pub(super) mpsc::Sender<(Vec<u8>, SocketAddr)>);

impl Delegate for ToHandler {
    fn delegate(&self, packet: &[u8], src: SocketAddr) {
        if self.0.try_send((packet.to_vec(), src)).is_err() {
            tracing::debug!(%src, "DNS: delegated-query queue full, dropping a query");
        }
    }
}

/// Answers the delegated datagrams with `handler`, one after another, sending each answer from
/// `reply` (a socket bound to the server's address; sent with `MSG_DONTWAIT`, so a full send
/// buffer drops the answer instead of blocking). Returns when the queue's senders are gone.
pub(super) async fn run_delegated(
    handler: Handler,
    reply: socket2::Socket,
    mut queue: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
) {
    while let Some((packet, src)) = queue.recv().await {
        if let Some(answer) = full_answer(&handler, packet, src, Protocol::Udp).await
            && let Err(error) = reply.send_to_with_flags(&answer, &src.into(), libc::MSG_DONTWAIT)
        {
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
    let capture = Capture {
        protocol,
        out: Arc::default(),
    };
    match Request::from_bytes(packet, src, protocol) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return None;
            }
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

/// A response handler that keeps the encoded answer.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
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
