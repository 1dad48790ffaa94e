//! Caps on DNS over TCP (issue 22): a flood of connections from one source holds at most its
//! per-source cap, other sources still get answers, the API keeps answering, a full server
//! refuses newcomers rather than evict young connections, and closes idle ones sooner.
//!
//! The servers run in process on 127.0.0.1; clients bind 127.0.0.x to be other sources (no
//! root needed). The org resolvers (`<org>::3`) serve through the same `dns::serve_with` and
//! the same gate as `[dns] listen`, but reaching those addresses needs them on an interface
//! (root and a gateway): here a server with two listeners shows that one gate spans every
//! listener, and `dns::tcp`'s unit tests cover the admission rules.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::support::{eventually_async, scrape, server_config};

/// One query frame (`internal. SOA`, always answered), id `id`.
fn frame(id: u16) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.add_query(Query::query(
        Name::from_ascii("internal.").unwrap(),
        RecordType::SOA,
    ));
    let body = msg.to_vec().unwrap();
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// A TCP connection to `server` from `source`, with a read timeout.
fn connect(server: SocketAddr, source: &str) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(stream)
}

/// The answer on `stream`, or `None` when the server closed or reset it (or said nothing).
fn read_answer(stream: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).ok()?;
    Message::from_vec(&body).ok()
}

/// Opens `n` connections from `source`, sends a query on each, and keeps those answered.
fn flood(server: SocketAddr, source: &str, n: usize) -> Vec<TcpStream> {
    let mut opened = Vec::with_capacity(n);
    for i in 0..n {
        if let Ok(mut stream) = connect(server, source) {
            // A refused connection may already be reset: its write fails, and that is fine.
            let _ = stream.write_all(&frame(i as u16));
            opened.push(stream);
        }
    }
    opened
        .into_iter()
        .filter_map(|mut stream| {
            let answer = read_answer(&mut stream)?;
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            Some(stream)
        })
        .collect()
}

/// One query over a new TCP connection from `source`; retried as a client would (three tries).
fn tcp_query(server: SocketAddr, source: &str) -> Option<Message> {
    for attempt in 0..3u16 {
        if let Ok(mut stream) = connect(server, source)
            && stream.write_all(&frame(7000 + attempt)).is_ok()
            && let Some(answer) = read_answer(&mut stream)
        {
            return Some(answer);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// Polls `GET /healthz` on new connections until `stop`; returns the slowest answer and the
/// probes that got none within a second. Each probe may connect twice (a client retries a
/// failed connect), every attempt timed on its own.
async fn watch_health(base: String, stop: Arc<AtomicBool>) -> (Duration, Vec<String>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    let mut failed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut last_error = String::new();
        let mut ok = false;
        for _ in 0..2 {
            let start = Instant::now();
            match client.get(format!("{base}/healthz")).send().await {
                Ok(res) if res.status() == 200 => {
                    slowest = slowest.max(start.elapsed());
                    ok = true;
                    break;
                }
                Ok(res) => last_error = format!("status {}", res.status()),
                Err(error) => last_error = format!("{error} after {:?}", start.elapsed()),
            }
        }
        if !ok {
            failed.push(last_error);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (slowest, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_holds_its_cap_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.dns.tcp_max_connections = 64;
    let per_source = config.dns.tcp_max_connections_per_source;
    assert_eq!(per_source, 32);
    let server = sixpn::serve::start(config).await.expect("server starts");
    let dns = server.dns_addrs[0];
    let base = format!("http://{}", server.api_addr);

    let stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(watch_health(base.clone(), stop.clone()));

    // 300 connections from 127.0.0.1: at most the per-source cap stay open and are answered.
    let held = tokio::task::spawn_blocking(move || flood(dns, "127.0.0.1", 300))
        .await
        .unwrap();
    assert!(
        !held.is_empty() && held.len() <= per_source,
        "{} of 300 connections from one source were answered; the cap is {per_source}",
        held.len()
    );

    // While they are held: another source gets its answer over TCP, and one more from the
    // flooding source does not.
    let (other, more) = tokio::task::spawn_blocking(move || {
        let other = tcp_query(dns, "127.0.0.2");
        let more = connect(dns, "127.0.0.1").ok().and_then(|mut s| {
            s.write_all(&frame(1)).ok()?;
            read_answer(&mut s)
        });
        (other, more)
    })
    .await
    .unwrap();
    let other = other.expect("a query from 127.0.0.2 is answered over TCP during the flood");
    assert_eq!(other.metadata.response_code, ResponseCode::NoError);
    assert!(!other.answers.is_empty());
    if held.len() == per_source {
        assert!(
            more.is_none(),
            "a 33rd connection from one source was answered"
        );
    }

    let metrics = scrape(&base).await;
    let refused = crate::support::total(
        &metrics,
        "sixpn_dns_tcp_refused_total",
        &["reason=\"per_source\""],
    );
    assert!(refused >= (300 - per_source) as f64, "refused {refused}");

    // Closed connections give their places back.
    drop(held);
    eventually_async(
        Duration::from_secs(10),
        "a place again for 127.0.0.1",
        || async move {
            let answered = tokio::task::spawn_blocking(move || tcp_query(dns, "127.0.0.1"))
                .await
                .unwrap();
            answered.map(drop).ok_or_else(|| "no answer yet".to_owned())
        },
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    let (slowest, failed) = health.await.unwrap();
    assert!(
        failed.is_empty(),
        "/healthz did not answer within 1 s during the flood: {failed:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest /healthz {slowest:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_newcomers_while_its_connections_are_young() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.dns.tcp_max_connections = 16;
    config.dns.tcp_max_connections_per_source = 8;
    let server = sixpn::serve::start(config).await.expect("server starts");
    let dns = server.dns_addrs[0];

    let (held, newcomer, elapsed) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut held = flood(dns, "127.0.0.3", 8);
        held.extend(flood(dns, "127.0.0.4", 8));
        // The server is full of connections younger than 3 s: a newcomer is refused.
        let newcomer = connect(dns, "127.0.0.5").ok().and_then(|mut s| {
            s.write_all(&frame(1)).ok()?;
            read_answer(&mut s)
        });
        (held, newcomer, start.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(held.len(), 16);
    // On a machine so slow that the connections were no longer young, eviction was allowed.
    if elapsed < Duration::from_millis(2500) {
        assert!(newcomer.is_none(), "a newcomer evicted a young connection");
        let metrics = scrape(&format!("http://{}", server.api_addr)).await;
        assert!(
            crate::support::total(
                &metrics,
                "sixpn_dns_tcp_refused_total",
                &["reason=\"total\""]
            ) >= 1.0
        );
    }

    // Full, hence near the cap: idle connections are closed once 3 s old (until half the cap
    // is free again), long before the normal 10 s idle limit.
    let closed = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + Duration::from_secs(7);
        held.into_iter()
            .filter(|stream| {
                let left = until.saturating_duration_since(Instant::now());
                stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let mut byte = [0u8; 1];
                match (&*stream).read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count()
    })
    .await
    .unwrap();
    assert!(
        closed >= 4,
        "only {closed} of 16 idle connections of a full server closed within 7 s"
    );
    // And the server takes newcomers again.
    let answer = tokio::task::spawn_blocking(move || tcp_query(dns, "127.0.0.5"))
        .await
        .unwrap();
    assert!(
        answer.is_some(),
        "no answer once the idle connections were closed"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gate_caps_a_source_over_every_listener() {
    // The org resolvers share the gate of `[dns] listen` the same way two listeners do.
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.dns.listen = vec![
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.2:0".parse().unwrap(),
    ];
    config.dns.tcp_max_connections = 64;
    config.dns.tcp_max_connections_per_source = 8;
    let server = sixpn::serve::start(config).await.expect("server starts");
    let (a, b) = (server.dns_addrs[0], server.dns_addrs[1]);
    let (on_a, on_b) = tokio::task::spawn_blocking(move || {
        let on_a = flood(a, "127.0.0.6", 6);
        let on_b = flood(b, "127.0.0.6", 6);
        (on_a, on_b)
    })
    .await
    .unwrap();
    assert_eq!(on_a.len(), 6);
    assert_eq!(on_b.len(), 2, "the source's cap of 8 spans both listeners");
    server.shutdown().await.unwrap();
}
