//! How many answer records fit a response of a given size, computed the way hickory's encoder
//! lays the message out, so that a truncated answer keeps its OPT record and stays valid.
//!
//! hickory's encoder, left alone, stops at the first record that overflows and then drops the
//! OPT record as well (see CRATES.md §1.5). We count the records that fit; when that is not all
//! of them, we pass it none and set TC ourselves: a truncated UDP answer is header, question and
//! OPT, as Knot and BIND send it. A partial RRset is of no use to the client: resolvers must not
//! cache one (RFC 2181 §9) and ask again over TCP, and HAProxy's resolvers drop a truncated
//! AAAA answer whole (`RSLV_RESP_TRUNCATED` in its `src/resolvers.c`) without reading its
//! records. It would only make the answer, and a forged query's amplification, bigger. The model below mirrors hickory-proto 0.26's `Name::emit`, once
//! [`compress_against_question`] has told the encoder the question's names:
//! - answers owned by the question point at it (2 bytes: `C0 0C`);
//! - after [`COMPRESSED_NAME_LIMIT`] names, names are written uncompressed;
//! - a name is first written in full and then replaced by a pointer, so the full name has to fit
//!   at that moment.
//!
//! RDATA lengths are those of uncompressed RDATA, which is never shorter than
//! what the encoder writes, so the count errs on the safe side. If it were ever too high the
//! encoder would still truncate on its own: the message stays valid either way.

use hickory_server::proto::serialize::binary::BinEncoder;

/// hickory-proto's `COMPRESSED_NAME_LIMIT`: names after this many are not compressed.
pub const COMPRESSED_NAME_LIMIT: usize = 120;

/// Bytes of an OPT record with no options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;

/// The number of answer records that fit in `limit` bytes.
///
/// `used`: header and question bytes; `owner_len`: the answers' owner name in wire format;
/// `wire_lens`: each record's length as an answer (2-byte owner
/// pointer included), in emission order; `reserve`: bytes needed after the answers (the OPT).
pub fn answers_that_fit(
    limit: usize,
    used: usize,
    owner_len: usize,
    wire_lens: impl Iterator<Item = usize>,
    reserve: usize,
) -> usize {
    let mut offset = used;
    let mut fit = 0;
    for (k, wire_len) in wire_lens.enumerate() {
        let after_owner = wire_len.saturating_sub(2);
        let name_len = if k < COMPRESSED_NAME_LIMIT {
            2
        } else {
            owner_len
        };
        if offset + owner_len > limit {
            break;
        }
        let end = offset + name_len + after_owner;
        if end + reserve > limit {
            break;
        }
        offset = end;
        fit += 1;
    }
    fit
}

/// Tells `encoder`, before a response is emitted into it, where the question's name and each of
/// its suffixes will stand (from offset 12), so that names equal to them are written as pointers:
/// an answer's owner becomes `C0 0C`, a negative answer's SOA owner and names point into the
/// question. `question` is the question section as received (`Queries::as_bytes`).
///
/// hickory copies the question verbatim and records it only as one opaque piece (name, type and
/// class together), which no name ever equals. The names are recorded lowercased (the records
/// sixpn builds have lowercase names; the pointer then reads back in the question's case) and
/// shortest first, so the apex is recorded even when the encoder's table of 64 names fills up.
/// The bytes written here are overwritten by the response (its header is written first).
pub fn compress_against_question(encoder: &mut BinEncoder<'_>, question: &[u8]) {
    const HEADER: usize = 12;
    if encoder.offset() != 0 {
        return;
    }
    let mut starts = Vec::with_capacity(8);
    let mut at = 0;
    loop {
        let Some(&len) = question.get(at) else {
            return;
        };
        if len == 0 {
            break;
        }
        if len > 63 {
            return; // a pointer or an extended label: leave it alone
        }
        starts.push(at);
        at += 1 + usize::from(len);
    }
    let end = at; // the terminating zero, not part of a recorded name
    let Some(name) = question.get(..end) else {
        return;
    };
    let mut bytes = [0u8; HEADER + 256];
    bytes[HEADER..HEADER + end].copy_from_slice(name);
    bytes[HEADER..HEADER + end].make_ascii_lowercase();
    if encoder.emit_vec(&bytes[..HEADER + end]).is_err() {
        encoder.set_offset(0);
        return;
    }
    for &start in starts.iter().rev() {
        encoder.store_label_pointer(HEADER + start, HEADER + end);
    }
    encoder.set_offset(0);
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use hickory_server::proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, Query};
    use hickory_server::proto::rr::rdata::AAAA;
    use hickory_server::proto::rr::{Name, RData, Record, RecordType};
    use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
    use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

    use super::*;

    /// Encodes `n` of `records` through hickory's real encoder with a `limit`-byte buffer and
    /// returns (bytes, header).
    fn encode(
        question: &str,
        records: &[Record],
        n: usize,
        limit: u16,
        edns: bool,
    ) -> (Vec<u8>, Header) {
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii(question).unwrap(),
            RecordType::AAAA,
        ));
        let query = query.to_vec().unwrap();
        let mut decoder = BinDecoder::new(&query);
        let header = Header::read(&mut decoder).unwrap();
        let queries = Queries::read(&mut decoder, usize::from(header.counts.queries)).unwrap();
        let mut opt = Edns::new();
        opt.set_max_payload(limit);
        let builder = MessageResponseBuilder::new(&queries, edns.then_some(&opt));
        let meta = Metadata::new(1, MessageType::Response, OpCode::Query);
        let response = builder.build(meta, records.iter().take(n), [], [], []);
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        compress_against_question(&mut encoder, queries.as_bytes());
        let info = response.destructive_emit(&mut encoder).unwrap();
        let header = Header {
            metadata: *info,
            counts: info.counts(),
        };
        (bytes, header)
    }

    #[test]
    fn model_matches_hickory_encoder() {
        for question in [
            "k8s._g.internal.",
            &format!("{}._g.internal.", "g".repeat(63)),
        ] {
            let owner = Name::from_ascii(question).unwrap();
            let owner_len = owner.len() + 1;
            let records: Vec<Record> = (0..300u128)
                .map(|i| Record::from_rdata(owner.clone(), 5, RData::AAAA(AAAA(Ipv6Addr::from(i)))))
                .collect();
            let question_len = owner_len + 4;
            for edns in [false, true] {
                for limit in [512u16, 600, 1232, 1500, 4096, 8192, u16::MAX] {
                    let reserve = if edns { OPT_LEN } else { 0 };
                    let lens = std::iter::repeat_n(28, records.len());
                    let fit = answers_that_fit(
                        usize::from(limit),
                        12 + question_len,
                        owner_len,
                        lens,
                        reserve,
                    );
                    let (bytes, header) = encode(question, &records, fit, limit, edns);
                    assert!(
                        !header.metadata.truncation,
                        "{limit} {edns}: encoder had to truncate"
                    );
                    assert_eq!(usize::from(header.counts.answers), fit);
                    assert_eq!(usize::from(header.counts.additionals), usize::from(edns));
                    assert!(bytes.len() <= usize::from(limit));
                    if fit < records.len() {
                        // One more would not have fit (the model is tight).
                        let (_, header) = encode(question, &records, fit + 1, limit, edns);
                        assert!(
                            header.metadata.truncation,
                            "{question} {limit} {edns}: {} would fit too",
                            fit + 1
                        );
                    }
                }
            }
        }
    }
}
