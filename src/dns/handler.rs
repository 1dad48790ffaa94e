//! Our hickory `RequestHandler`: one snapshot load and one name lookup per query, answering from
//! prebuilt records.
//!
//! It decides everything hickory's framework leaves to the handler: opcode (NOTIMP), EDNS version
//! (BADVERS), question count (FORMERR), class (REFUSED unless IN), the view (REFUSED for a source
//! in none), the zone (REFUSED outside it), then answer / CNAME / NODATA / NXDOMAIN, each
//! negative answer with the zone's SOA in the authority section. Truncation is decided here too
//! (see [`super::fit`]) so a truncated UDP answer keeps its OPT record.

use std::net::IpAddr;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use super::fit::{OPT_LEN, answers_that_fit};
use crate::snapshot::name::{MAX_WIRE_NAME, wire_lower};
use crate::snapshot::{Entry, RrSet, Snapshot, SnapshotHandle};

/// The largest UDP payload we answer with, whatever the client advertises. Large enough for
/// every realistic group, small enough to stay clear of absurd values.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers queries from the current snapshot.
#[derive(Debug, Clone)]
pub struct Handler {
    snapshot: SnapshotHandle,
}

impl Handler {
    /// A handler reading from `snapshot`.
    pub fn new(snapshot: SnapshotHandle) -> Handler {
        Handler { snapshot }
    }
}

/// The OPT record of a response to a query that carried `request`.
fn response_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    edns.set_version(0);
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    edns
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let handle = &mut response_handle;
        let edns = request.edns.as_ref().map(response_edns);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        if request.metadata.op_code != OpCode::Query {
            let response = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return send(handle, response, request).await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            let response = builder.error_msg(&request.metadata, ResponseCode::BADVERS);
            return send(handle, response, request).await;
        }
        let Ok(info) = request.request_info() else {
            let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(handle, response, request).await;
        };
        let query = info.query;
        let query_type = query.query_type();
        if query_type == RecordType::OPT {
            let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(handle, response, request).await;
        }
        if query.query_class() != DNSClass::IN
            || matches!(query_type, RecordType::AXFR | RecordType::IXFR)
        {
            let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return send(handle, response, request).await;
        }

        let snapshot = self.snapshot.load();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        match lookup(&snapshot, request.src().ip(), query.name(), query_type) {
            Lookup::Refused => {
                let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
                send(handle, response, request).await
            }
            Lookup::NxDomain { soa } => {
                meta.response_code = ResponseCode::NXDomain;
                let response = builder.build(meta, [], [], [soa], []);
                send(handle, response, request).await
            }
            Lookup::NoData { soa } => {
                let response = builder.build(meta, [], [], [soa], []);
                send(handle, response, request).await
            }
            Lookup::Answer {
                entry,
                set,
                owner_len,
            } => {
                let n = set.records().len();
                let start = if n > 1 {
                    entry.next_rotation() as usize % n
                } else {
                    0
                };
                let fit = fit_count(request, edns.as_ref(), owner_len, set, start);
                meta.truncation = fit < n;
                let (head, tail) = set.records().split_at(start);
                let answers = tail.iter().chain(head).take(fit);
                let response = builder.build(meta, answers, [], [], []);
                send(handle, response, request).await
            }
            Lookup::Cname { cname, target } => {
                let answers = cname.records().iter().chain(target);
                let response = builder.build(meta, answers, [], [], []);
                send(handle, response, request).await
            }
            Lookup::Any { entry } => {
                let answers = entry.rrsets().iter().flat_map(|s| s.records().iter());
                let response = builder.build(meta, answers, [], [], []);
                send(handle, response, request).await
            }
        }
    }
}

/// What the snapshot says about one question.
#[derive(Debug)]
pub enum Lookup<'s> {
    /// The source is in no view, or the name is outside every served zone.
    Refused,
    /// The name does not exist in the view; `soa` goes in the authority section.
    NxDomain {
        /// The zone's SOA with the negative TTL.
        soa: &'s Record,
    },
    /// The name exists (maybe as an empty non-terminal) without records of the type.
    NoData {
        /// The zone's SOA with the negative TTL.
        soa: &'s Record,
    },
    /// Records of the asked type.
    Answer {
        /// The name's entry (for the rotation counter).
        entry: &'s Entry,
        /// The records.
        set: &'s RrSet,
        /// The owner name's length in wire format.
        owner_len: usize,
    },
    /// The name is an alias: its CNAME, then the target's records of the asked type when the
    /// target is in the same view.
    Cname {
        /// The CNAME record set.
        cname: &'s RrSet,
        /// The target's records (may be empty).
        target: &'s [Record],
    },
    /// A type ANY question at a name with several record sets: every record of the name.
    Any {
        /// The name's entry.
        entry: &'s Entry,
    },
}

/// Looks one question up: view by source address, zone, then one map lookup. No allocation.
pub fn lookup<'s>(
    snapshot: &'s Snapshot,
    src: IpAddr,
    qname: &Name,
    query_type: RecordType,
) -> Lookup<'s> {
    let mut key_buf = [0u8; MAX_WIRE_NAME];
    let (Some(key), Some(view)) = (wire_lower(qname, &mut key_buf), snapshot.view_for(src)) else {
        return Lookup::Refused;
    };
    let Some((_, zone)) = snapshot.zone_for(key) else {
        return Lookup::Refused;
    };
    let Some(entry) = view.get(key) else {
        return Lookup::NxDomain {
            soa: zone.soa_negative(),
        };
    };
    let soa = snapshot.zones()[usize::from(entry.zone())].soa_negative();
    if query_type == RecordType::ANY {
        return match entry.rrsets() {
            [] => Lookup::NoData { soa },
            // One set (every generated name): answer it like a typed question, so it rotates
            // and truncates cleanly.
            [set] => Lookup::Answer {
                entry,
                set,
                owner_len: key.len(),
            },
            _ => Lookup::Any { entry },
        };
    }
    if let Some(set) = entry.rrset(query_type) {
        return Lookup::Answer {
            entry,
            set,
            owner_len: key.len(),
        };
    }
    if let Some(cname) = entry.rrset(RecordType::CNAME) {
        // Follow one CNAME inside the same view; anything further is the client's job.
        let mut target_buf = [0u8; MAX_WIRE_NAME];
        let target = match &cname.records()[0].data {
            RData::CNAME(target) => wire_lower(&target.0, &mut target_buf)
                .and_then(|t| view.get(t))
                .and_then(|e| e.rrset(query_type))
                .map_or(&[][..], RrSet::records),
            _ => &[],
        };
        return Lookup::Cname { cname, target };
    }
    Lookup::NoData { soa }
}

/// How many of `set`'s records, starting at `start`, fit this response.
fn fit_count(
    request: &Request,
    edns: Option<&Edns>,
    owner_len: usize,
    set: &RrSet,
    start: usize,
) -> usize {
    let limit = match request.protocol() {
        Protocol::Udp => edns.map_or(512, Edns::max_payload),
        _ => u16::MAX,
    };
    let used = 12 + request.queries.as_bytes().len();
    let reserve = if edns.is_some() { OPT_LEN } else { 0 };
    let n = set.records().len();
    match set.uniform_len() {
        0 => {
            let lens = set
                .wire_lens()
                .skip(start)
                .chain(set.wire_lens().take(start));
            answers_that_fit(usize::from(limit), used, owner_len, lens, reserve)
        }
        len => answers_that_fit(
            usize::from(limit),
            used,
            owner_len,
            std::iter::repeat_n(len, n),
            reserve,
        ),
    }
}

/// Sends `response`; on failure logs it and reports SERVFAIL.
async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, src = %request.src(), "sending a DNS response failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}
