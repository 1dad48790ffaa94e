//! `fastpath::answer` on arbitrary bytes, over the snapshot of `sixpn_fuzz::dump()`.
//!
//! Input: one byte choosing the source address (see `sixpn_fuzz::source`; 0xF0.. take 4 or 16
//! more bytes for any IPv4/IPv6 address), one byte choosing the output buffer (below 0xE0: 4,096
//! bytes; else `(b & 0x1F) * 32` bytes, to exercise a caller buffer smaller than the reply), then
//! the datagram.
//!
//! Fails when `answer` panics, or when it replies with something that is not a DNS response to
//! the query: larger than the buffer or than the UDP size it may use (512 without OPT, 4,096 at
//! most), not parseable by hickory, another id, QR clear, or a question not echoed byte for byte.
//! `Drop` must mean exactly "the query has QR set".

#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sixpn::fastpath::{self, Outcome};

fuzz_target!(|data: &[u8]| {
    let (src, rest) = sixpn_fuzz::source(data);
    let Some((&size, query)) = rest.split_first() else {
        return;
    };
    let out_len = if size < 0xE0 {
        4096
    } else {
        usize::from(size & 0x1F) * 32
    };
    let mut out = vec![0u8; out_len];
    let snapshot = sixpn_fuzz::handle().load();
    let index = snapshot.fast();
    match fastpath::answer(index, src, query, &mut out) {
        Outcome::Delegate => {
            assert!(
                query.len() < 12 || query[2] & 0x80 == 0,
                "a response was delegated"
            );
        }
        Outcome::Drop => assert!(
            query.len() >= 12 && query[2] & 0x80 != 0,
            "a query was dropped"
        ),
        Outcome::Reply(n) => {
            assert!(
                n <= out.len(),
                "reply of {n} bytes in a buffer of {}",
                out.len()
            );
            assert!(n >= 12, "reply shorter than a header");
            let arcount = u16::from_be_bytes([query[10], query[11]]);
            let max = if arcount == 0 { 512 } else { 4096 };
            assert!(n <= max, "reply of {n} bytes > {max}");
            let reply = &out[..n];
            let message = Message::from_vec(reply)
                .unwrap_or_else(|e| panic!("reply does not parse: {e}: {reply:02x?}"));
            assert_eq!(
                message.metadata.id,
                u16::from_be_bytes([query[0], query[1]])
            );
            assert!(reply[2] & 0x80 != 0, "QR clear in a reply");
            let qend = sixpn_fuzz::question_end(query).expect("answered query has a question");
            assert_eq!(
                &reply[12..qend],
                &query[12..qend],
                "question not echoed as asked"
            );
            assert_eq!(message.queries.len(), 1);
        }
    }
});
