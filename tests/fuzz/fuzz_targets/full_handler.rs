//! The full hickory handler (`dns::udp::full_answer` over `dns::Handler`, exactly what the server
//! runs for a delegated UDP datagram or a TCP message) on arbitrary bytes, over the snapshot of
//! `sixpn_fuzz::dump()`, on one current-thread tokio runtime per process.
//!
//! Input: one byte choosing the source address (see `sixpn_fuzz::source`), one byte whose low bit
//! chooses TCP (1) or UDP (0), then the message.
//!
//! Fails when the handler panics, or when what it sends is not a DNS response to the message:
//! nothing for a query of at least a header with QR clear, more than a bare FORMERR header to a
//! message with QR set (hickory's server answers a malformed one with FORMERR), another id, QR
//! clear, an answer that hickory cannot parse (unless a question name uses a compression pointer,
//! see `question_has_pointer`), or a UDP answer over 4,096 bytes (512 when the query
//! had no OPT record).

#![no_main]

use std::net::SocketAddr;

use hickory_proto::op::Message;
use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (src, rest) = sixpn_fuzz::source(data);
    let Some((&mode, packet)) = rest.split_first() else {
        return;
    };
    let protocol = if mode & 1 == 1 {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let src = SocketAddr::new(src, 5353);
    let answer = sixpn_fuzz::runtime().block_on(sixpn::dns::udp::full_answer(
        sixpn_fuzz::handler(),
        packet.to_vec(),
        src,
        protocol,
    ));
    if packet.len() < 12 {
        assert!(answer.is_none(), "answered a runt");
        return;
    }
    if packet[2] & 0x80 != 0 {
        // A response is not answered, but one that does not parse gets FORMERR, as hickory's
        // own server does (it reads the message before it looks at QR). Never more than that:
        // a header with no records.
        if let Some(answer) = answer {
            assert_eq!(
                answer.len(),
                12,
                "a response got more than a FORMERR header"
            );
            assert_eq!(
                answer[3] & 0x0F,
                1,
                "a response got an answer other than FORMERR"
            );
        }
        return;
    }
    let answer = answer.expect("a query gets an answer (FORMERR at worst)");
    assert!(answer.len() >= 12, "answer shorter than a header");
    assert_eq!(answer[..2], packet[..2], "id");
    assert!(answer[2] & 0x80 != 0, "QR clear in an answer");
    if question_has_pointer(packet) {
        // hickory echoes the question's raw bytes (`Queries::as_bytes`) at the same offset, so
        // a pointer into the query's header points into the answer's header, whose bytes
        // differ: the echoed name no longer decodes. hickory's own server does the same; the
        // fast path never answers such a query (it delegates any pointer). Not ours to check.
        return;
    }
    let message = Message::from_vec(&answer)
        .unwrap_or_else(|e| panic!("answer does not parse: {e}: {answer:02x?}"));
    if protocol == Protocol::Udp {
        let max = if message.edns.is_some() { 4096 } else { 512 };
        assert!(
            answer.len() <= max,
            "UDP answer of {} bytes > {max}",
            answer.len()
        );
    }
});

/// Whether a name in the question section (QDCOUNT questions, as far as the bytes go) holds a
/// compression pointer.
fn question_has_pointer(packet: &[u8]) -> bool {
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    let mut at = 12;
    for _ in 0..qdcount {
        loop {
            match packet.get(at) {
                None => return false,
                Some(0) => break,
                Some(&len @ 1..=63) => at += 1 + usize::from(len),
                Some(_) => return true,
            }
        }
        at += 1 + 4;
    }
    false
}
