//! Issue 23, point 2: views from the environment (`SIXPN_DNS_VIEWS`), and a query refused for
//! its source says why: EDE 18 "Prohibited", a counter, and a rate-limited warning.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use crate::support::{Serve, free_port, scrape, total};

/// One EDNS query (as `dig` sends) from `source`, asked up to three times.
fn query_with_edns(source: &str, server: SocketAddr, name: &str) -> Message {
    let sock = UdpSocket::bind((source, 0)).expect("bind client");
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut msg = Message::query();
    msg.metadata.id = 777;
    msg.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::SOA,
    ));
    msg.set_edns(Edns::new());
    let bytes = msg.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&bytes, server).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).unwrap();
        }
    }
    panic!("no answer from {server}");
}

/// The info-code and text of the answer's Extended DNS Error, if it has one.
fn ede(answer: &Message) -> Option<(u16, String)> {
    let edns = answer.edns.as_ref()?;
    match edns.option(EdnsCode::from(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        _ => None,
    }
}

/// DNS on every address (as the container image listens): a source outside every view is
/// refused with EDE 18 and counted; naming its network in `SIXPN_DNS_VIEWS` gets it answered.
#[tokio::test(flavor = "multi_thread")]
async fn issue23_a_source_in_no_view_is_refused_with_ede_18_until_views_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    // Only 127.0.0.1 is mapped: 127.0.0.9 stands for a container bridge's address.
    let mut server = Serve::new(dir.path())
        .env("SIXPN_DNS_LISTEN", &format!("0.0.0.0:{dns_port}"))
        .env("SIXPN_DNS_VIEWS", "127.0.0.1/32=personal")
        .env("RUST_LOG", "warn")
        .capture_stderr()
        .spawn();
    let before = total(
        &scrape(&server.api).await,
        "sixpn_dns_refused_total",
        &["no_view"],
    );
    for _ in 0..3 {
        let answer = tokio::task::block_in_place(|| query_with_edns("127.0.0.9", dns, "internal."));
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        let (code, text) = ede(&answer).expect("an EDE option");
        assert_eq!(code, 18, "Prohibited");
        assert!(text.contains("SIXPN_DNS_VIEWS"), "{text}");
    }
    let ok = tokio::task::block_in_place(|| query_with_edns("127.0.0.1", dns, "internal."));
    assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
    assert!(ede(&ok).is_none());
    let after = total(
        &scrape(&server.api).await,
        "sixpn_dns_refused_total",
        &["no_view"],
    );
    assert_eq!(after - before, 3.0, "each refusal is counted");
    let api = server.api.clone();
    let log = server.stop();
    assert_eq!(
        log.matches("refused: its source is in no view").count(),
        1,
        "logged once a minute per source: {log}"
    );
    drop(api);

    // The same source, once the views name its network.
    server = Serve::new(dir.path())
        .env("SIXPN_DNS_LISTEN", &format!("0.0.0.0:{dns_port}"))
        .env(
            "SIXPN_DNS_VIEWS",
            "127.0.0.1/32=personal,127.0.0.0/24=personal",
        )
        .spawn();
    let answer = tokio::task::block_in_place(|| query_with_edns("127.0.0.9", dns, "internal."));
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.answers.is_empty());
    drop(server);
}
