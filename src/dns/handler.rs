//! Our hickory `RequestHandler`: one snapshot load and one name lookup per query, in the same answer
//! table the UDP fast path reads; records are built from its entries only for the answer at hand.
//!
//! It decides everything hickory's framework leaves to the handler: opcode (NOTIMP), EDNS version
//! (BADVERS), question count (FORMERR), class (REFUSED unless IN), the view (REFUSED for a source
//! in none, with EDE 18 "Prohibited" saying why, counted and logged; issue 23), the zone (REFUSED outside it), then answer / CNAME / NODATA / NXDOMAIN, each
//! negative answer with the zone's SOA in the authority section. Truncation is decided here too
//! (see [`super::fit`]) so a truncated UDP answer keeps its OPT record and carries no records.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::rdata::{AAAA, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use super::fit::{OPT_LEN, answers_that_fit};
use crate::snapshot::name::{self, MAX_WIRE_NAME, wire_lower};
use crate::snapshot::{Hit, RrSet, Snapshot, SnapshotHandle, StaticEntry};

/// The default largest UDP payload we answer with, whatever the client advertises
/// (`[dns] max_udp_payload`, the same for the fast path).
pub const MAX_UDP_PAYLOAD: u16 = crate::config::DEFAULT_MAX_UDP_PAYLOAD;

/// Answers queries from the current snapshot.
#[derive(Debug, Clone)]
pub struct Handler {
    snapshot: SnapshotHandle,
    /// The largest UDP answer, as the snapshot's answer table (the fast path) has it.
    max_udp_payload: u16,
    /// When each source last had a refusal for want of a view logged.
    refusals: Arc<RefusalLog>,
}

/// The EDNS option code of an Extended DNS Error (RFC 8914).
const EDE_OPTION: u16 = 15;

/// EDE info-code 18, "Prohibited": the server refuses this client by policy.
const EDE_PROHIBITED: u16 = 18;

/// The text of the EDE sent to a source in no view: what to configure.
const NO_VIEW_TEXT: &str = "source address in no view: see [dns] views / SIXPN_DNS_VIEWS";

/// Logs a query refused for want of a view at most once a minute per source, in bounded memory:
/// a source spoofed anew with each packet costs one map slot until the map is full, then
/// nothing (the counter still counts).
#[derive(Debug, Default)]
struct RefusalLog {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

/// How often one source's refusals are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Sources remembered at most; past it, entries older than [`REFUSAL_LOG_EVERY`] are dropped.
const REFUSAL_LOG_SOURCES: usize = 4096;

impl RefusalLog {
    /// Whether a refusal of `src` at `now` should be logged.
    fn should_log(&self, src: IpAddr, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(&src)
            .is_some_and(|at| now.duration_since(*at) < REFUSAL_LOG_EVERY)
        {
            return false;
        }
        if last.len() >= REFUSAL_LOG_SOURCES && !last.contains_key(&src) {
            last.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_EVERY);
            if last.len() >= REFUSAL_LOG_SOURCES {
                return false;
            }
        }
        last.insert(src, now);
        true
    }
}

/// `edns` with an Extended DNS Error `code` and `text` added (RFC 8914 §2).
fn with_ede(mut edns: Edns, code: u16, text: &str) -> Edns {
    let mut data = code.to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    edns.options_mut()
        .insert(EdnsOption::Unknown(EDE_OPTION, data));
    edns
}

impl Handler {
    /// A handler reading from `snapshot`; its largest UDP answer is the snapshot's
    /// (`[dns] max_udp_payload`), fixed for the server's life.
    pub fn new(snapshot: SnapshotHandle) -> Handler {
        let max_udp_payload = snapshot.load().fast().max_udp_payload.max(512);
        Handler {
            snapshot,
            max_udp_payload,
            refusals: Arc::default(),
        }
    }
}

/// The OPT record of a response to a query that carried `request`.
fn response_edns(request: &Edns, max_udp_payload: u16) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().clamp(512, max_udp_payload));
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
        let edns = request
            .edns
            .as_ref()
            .map(|e| response_edns(e, self.max_udp_payload));
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
            Lookup::NoView => {
                let src = request.src().ip();
                crate::metrics::count_refused_no_view();
                if self.refusals.should_log(src, Instant::now()) {
                    tracing::warn!(
                        %src,
                        "DNS query refused: its source is in no view (map it to an org with \
                         [[dns.views]] or SIXPN_DNS_VIEWS; logged once a minute per source)"
                    );
                }
                let edns = edns.map(|e| with_ede(e, EDE_PROHIBITED, NO_VIEW_TEXT));
                let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
                let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
                send(handle, response, request).await
            }
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
            Lookup::Answer(set) => {
                let n = set.len();
                let start = if n > 1 {
                    set.next_rotation() as usize % n
                } else {
                    0
                };
                let mut owner_buf = [0u8; MAX_WIRE_NAME];
                let owner_len = wire_lower(query.name(), &mut owner_buf).map_or(0, <[u8]>::len);
                let fit = fit_count(request, edns.as_ref(), owner_len, &set, start);
                meta.truncation = fit < n;
                // Not all fit: TC with no records, as Knot and BIND answer (see `super::fit`).
                let fit = if fit < n { 0 } else { n };
                let mut records = set.records(snapshot.ttl(), start, fit);
                if let AnswerSet::Static(entry, _) = &set {
                    with_serial(&snapshot, entry, &mut records);
                }
                let response = builder.build(meta, records.iter(), [], [], []);
                send(handle, response, request).await
            }
            Lookup::Cname { cname, target } => {
                let target =
                    target.map_or_else(Vec::new, |t| t.records(snapshot.ttl(), 0, t.len()));
                let answers = cname.records().iter().chain(&target);
                let response = builder.build(meta, answers, [], [], []);
                send(handle, response, request).await
            }
            Lookup::Any { entry, extra } => {
                let apex_soa = snapshot.soa(entry.zone());
                let answers = entry
                    .rrsets()
                    .iter()
                    .flat_map(|s| s.records().iter())
                    .map(|r| match (&r.data, apex_soa) {
                        (RData::SOA(_), Some(soa)) => soa,
                        _ => r,
                    })
                    .chain(extra.as_deref());
                let response = builder.build(meta, answers, [], [], []);
                send(handle, response, request).await
            }
        }
    }
}

/// `records` with the apex SOA among them carrying the snapshot's serial (the zone file has the
/// serial it started from; see `Index::soa_serial`).
fn with_serial(snapshot: &Snapshot, entry: &StaticEntry, records: &mut [Record]) {
    for record in records {
        if matches!(record.data, RData::SOA(_))
            && let Some(soa) = snapshot.soa(entry.zone())
        {
            record.clone_from(soa);
        }
    }
}

/// What the snapshot says about one question.
#[derive(Debug)]
pub enum Lookup<'s> {
    /// The source is in no view.
    NoView,
    /// The name is outside every served zone.
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
    Answer(AnswerSet<'s>),
    /// The name is an alias: its CNAME, then the target's records of the asked type when the
    /// target is in the same view.
    Cname {
        /// The CNAME record set.
        cname: &'s RrSet,
        /// The target's records of the asked type, if any.
        target: Option<AnswerSet<'s>>,
    },
    /// A type ANY question at a static name with several record sets: every record of the name.
    Any {
        /// The name's static records.
        entry: &'s StaticEntry,
        /// The org's own record of the name (`ns`, `gateway`), if any.
        extra: Option<Box<Record>>,
    },
}

/// The records of one answer, as the table holds them; [`AnswerSet::records`] builds the hickory
/// records of the part that is sent.
#[derive(Debug)]
pub enum AnswerSet<'s> {
    /// A peer's address or a group's members (AAAA), rotated per answer.
    Addrs(Hit<'s>),
    /// The `_peer.internal` TXT.
    Txt(Hit<'s>),
    /// Records from a static zone.
    Static(&'s StaticEntry, &'s RrSet),
    /// A record of the querying org's own (`ns.internal`, `gateway.internal`).
    Org(Box<Record>),
}

impl AnswerSet<'_> {
    /// The number of records.
    pub fn len(&self) -> usize {
        match self {
            AnswerSet::Addrs(hit) => hit.addrs().len(),
            AnswerSet::Txt(_) | AnswerSet::Org(_) => 1,
            AnswerSet::Static(_, set) => set.records().len(),
        }
    }

    /// Whether the set is empty (never, for a set a lookup returns).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next round-robin start.
    pub fn next_rotation(&self) -> u32 {
        match self {
            AnswerSet::Addrs(hit) | AnswerSet::Txt(hit) => hit.next_rotation(),
            AnswerSet::Static(entry, _) => entry.next_rotation(),
            AnswerSet::Org(_) => 0,
        }
    }

    /// Each record's length as an answer with a 2-byte owner pointer, in base order.
    fn wire_lens(&self) -> Vec<usize> {
        match self {
            AnswerSet::Addrs(hit) => vec![crate::snapshot::WIRE_RR_HEADER + 16; hit.addrs().len()],
            AnswerSet::Txt(hit) => vec![crate::snapshot::WIRE_RR_HEADER + hit.txt().len()],
            AnswerSet::Static(_, set) => set.wire_lens().collect(),
            AnswerSet::Org(_) => vec![crate::snapshot::WIRE_RR_HEADER + 16],
        }
    }

    /// `n` records starting at `start` (wrapping), as hickory records with TTL `ttl` for the
    /// generated ones.
    pub fn records(&self, ttl: u32, start: usize, n: usize) -> Vec<Record> {
        match self {
            AnswerSet::Addrs(hit) => {
                let Some(owner) = name::from_wire(hit.name()) else {
                    return Vec::new();
                };
                let addrs = hit.addrs();
                let (head, tail) = addrs.split_at(start.min(addrs.len()));
                tail.iter()
                    .chain(head)
                    .take(n)
                    .map(|a| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA((*a).into()))))
                    .collect()
            }
            AnswerSet::Txt(hit) => {
                let Some(owner) = name::from_wire(hit.name()) else {
                    return Vec::new();
                };
                let strings = name::txt_strings(hit.txt());
                let txt = TXT::from_bytes(strings);
                vec![Record::from_rdata(owner, ttl, RData::TXT(txt))]
                    .into_iter()
                    .take(n)
                    .collect()
            }
            AnswerSet::Static(_, set) => {
                let records = set.records();
                let (head, tail) = records.split_at(start.min(records.len()));
                tail.iter().chain(head).take(n).cloned().collect()
            }
            AnswerSet::Org(record) => std::iter::once((**record).clone()).take(n).collect(),
        }
    }
}

/// Looks one question up: view by source address, zone, then one table lookup.
pub fn lookup<'s>(
    snapshot: &'s Snapshot,
    src: IpAddr,
    qname: &Name,
    query_type: RecordType,
) -> Lookup<'s> {
    let Some(view) = snapshot.view_for(src) else {
        return Lookup::NoView;
    };
    let mut key_buf = [0u8; MAX_WIRE_NAME];
    let Some(key) = wire_lower(qname, &mut key_buf) else {
        return Lookup::Refused;
    };
    let Some((zone, _)) = snapshot.zone_for(key) else {
        return Lookup::Refused;
    };
    let negative = |zone: u16| {
        snapshot
            .soa_negative(zone)
            .unwrap_or_else(|| snapshot.zones()[usize::from(zone)].soa_negative())
    };
    let Some(hit) = snapshot.get(view, key) else {
        return Lookup::NxDomain {
            soa: negative(zone),
        };
    };
    let soa = negative(u16::from(hit.zone()));
    if !hit.is_static() {
        let any = query_type == RecordType::ANY;
        return if !hit.addrs().is_empty() && (any || query_type == RecordType::AAAA) {
            Lookup::Answer(AnswerSet::Addrs(hit))
        } else if !hit.txt().is_empty() && (any || query_type == RecordType::TXT) {
            Lookup::Answer(AnswerSet::Txt(hit))
        } else {
            Lookup::NoData { soa }
        };
    }
    let org = snapshot
        .orgs()
        .get(view as usize)
        .and_then(|org| crate::snapshot::org_record(key, org, snapshot.ttl()));
    let Some(entry) = snapshot.static_entry(key) else {
        return match org {
            Some(record) if matches!(query_type, RecordType::AAAA | RecordType::ANY) => {
                Lookup::Answer(AnswerSet::Org(Box::new(record)))
            }
            _ => Lookup::NoData { soa },
        };
    };
    let soa = negative(entry.zone());
    if query_type == RecordType::ANY {
        return match (entry.rrsets(), org) {
            ([], None) => Lookup::NoData { soa },
            ([], Some(record)) => Lookup::Answer(AnswerSet::Org(Box::new(record))),
            // One set (the common case): answer it like a typed question, so it rotates and
            // truncates cleanly.
            ([set], None) => Lookup::Answer(AnswerSet::Static(entry, set)),
            (_, extra) => Lookup::Any {
                entry,
                extra: extra.map(Box::new),
            },
        };
    }
    if let Some(set) = entry.rrset(query_type) {
        // A zone file's own records for `ns`/`gateway` replace the org's.
        return Lookup::Answer(AnswerSet::Static(entry, set));
    }
    if query_type == RecordType::AAAA
        && let Some(record) = org
    {
        return Lookup::Answer(AnswerSet::Org(Box::new(record)));
    }
    if let Some(cname) = entry.rrset(RecordType::CNAME) {
        // Follow one CNAME inside the same view; anything further is the client's job.
        let target = match &cname.records()[0].data {
            RData::CNAME(target) => {
                let mut target_buf = [0u8; MAX_WIRE_NAME];
                wire_lower(&target.0, &mut target_buf).and_then(|t| {
                    match lookup_wire(snapshot, view, t, query_type) {
                        Some(Lookup::Answer(set)) => Some(set),
                        _ => None,
                    }
                })
            }
            _ => None,
        };
        return Lookup::Cname { cname, target };
    }
    Lookup::NoData { soa }
}

/// A CNAME target's records in `view` (no further CNAMEs followed).
fn lookup_wire<'s>(
    snapshot: &'s Snapshot,
    view: u32,
    key: &[u8],
    query_type: RecordType,
) -> Option<Lookup<'s>> {
    let hit = snapshot.get(view, key)?;
    if !hit.is_static() {
        return match query_type {
            RecordType::AAAA if !hit.addrs().is_empty() => {
                Some(Lookup::Answer(AnswerSet::Addrs(hit)))
            }
            RecordType::TXT if !hit.txt().is_empty() => Some(Lookup::Answer(AnswerSet::Txt(hit))),
            _ => None,
        };
    }
    let entry = snapshot.static_entry(key)?;
    let set = entry.rrset(query_type)?;
    Some(Lookup::Answer(AnswerSet::Static(entry, set)))
}

/// How many of `set`'s records, starting at `start`, fit this response.
fn fit_count(
    request: &Request,
    edns: Option<&Edns>,
    owner_len: usize,
    set: &AnswerSet<'_>,
    start: usize,
) -> usize {
    let limit = match request.protocol() {
        Protocol::Udp => edns.map_or(512, Edns::max_payload),
        _ => u16::MAX,
    };
    let used = 12 + request.queries.as_bytes().len();
    let reserve = if edns.is_some() { OPT_LEN } else { 0 };
    let lens = set.wire_lens();
    let (head, tail) = lens.split_at(start.min(lens.len()));
    answers_that_fit(
        usize::from(limit),
        used,
        owner_len,
        tail.iter().chain(head).copied(),
        reserve,
    )
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
        Ok(info) => {
            crate::metrics::count_full_query(u16::from(info.response_code), info.truncation);
            info
        }
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
