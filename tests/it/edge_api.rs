//! issue 22, the HTTP edge: no request can grow a metric label set (random and 4,000-letter
//! methods against a real `sixpn serve`, whose RSS is read from `/proc`), connection churn from
//! many addresses cannot cut off a young connection, a server full of young connections refuses
//! the newcomer instead, and a global failed-admin-auth budget stops guessing from many
//! addresses while the right admin token still gets through.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sixpn::api::RateLimits;
use sixpn::api::server::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::api_support::{ADMIN, Served, TestApi, router_with_limits};
use crate::support::{Serve, scrape};

/// A connection to `addr` from `source` (any address on 127/8: loopback takes them all).
pub(crate) async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(addr).await
}

/// Reads one answer from a keep-alive connection: status and body (none for `HEAD`). `None`
/// when the server closed the connection first.
pub(crate) async fn read_answer(stream: &mut TcpStream, head_only: bool) -> Option<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; if head_only { 0 } else { length }];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, body))
}

/// Sends `bytes` from `source` on a new connection and reads until the server closes it: the
/// status, the head and the JSON body; `None` when nothing came back.
async fn exchange_from(
    source: &str,
    addr: SocketAddr,
    bytes: &[u8],
) -> Option<(u16, String, Value)> {
    let mut stream = connect_from(source, addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server closes the connection in time");
    if out.is_empty() {
        return None;
    }
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{status} {e}: {text:?}"));
    Some((status, head.to_ascii_lowercase(), json))
}

/// A small random source for the tests (xorshift over an OS seed).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        Rng(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` random capital letters: a valid HTTP method token hyper accepts.
    fn letters(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }
}

/// The methods HTTP defines that a client sends here (CONNECT and TRACE are counted under
/// their names too, but hyper treats CONNECT apart).
const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Every value the `method` label may take.
const LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other",
];

/// Paths that need no credential (an answer's status then never depends on a rate limit).
const PATHS: [&str; 2] = ["/healthz", "/nope"];

/// Sends `requests` (method, path) in order on one keep-alive connection (reconnecting if the
/// server closes it) and checks each answer: a method HTTP does not define is `405` with a JSON
/// `error` that does not echo it.
async fn send_all(addr: SocketAddr, requests: Vec<(String, &'static str)>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for (method, path) in requests {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let mut answer = None;
        for _ in 0..3 {
            if stream.write_all(request.as_bytes()).await.is_ok() {
                answer = read_answer(&mut stream, method == "HEAD").await;
            }
            if answer.is_some() {
                break;
            }
            stream = TcpStream::connect(addr).await.unwrap();
        }
        let (status, body) = answer.expect("an answer within 3 connections");
        if !KNOWN.contains(&method.as_str()) {
            assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
            let json: Value = serde_json::from_slice(&body).unwrap();
            let error = json["error"].as_str().unwrap();
            assert!(error.contains("unknown HTTP method"), "{error}");
            if method.len() > 40 {
                assert!(!error.contains(&method), "the method is echoed: {error}");
            }
        }
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// `n` random requests over [`PATHS`]: a third with a method HTTP defines, a third with 1 to 40
/// random letters, a third with 4,000.
fn random_requests(rng: &mut Rng, n: usize) -> Vec<(String, &'static str)> {
    (0..n)
        .map(|_| {
            let method = match rng.below(3) {
                0 => KNOWN[rng.below(KNOWN.len())].to_owned(),
                1 => {
                    let len = 1 + rng.below(40);
                    rng.letters(len)
                }
                _ => rng.letters(4_000),
            };
            (method, PATHS[rng.below(PATHS.len())])
        })
        .collect()
}

/// Sends `requests` spread over `connections` keep-alive connections at once.
async fn send_spread(addr: SocketAddr, requests: Vec<(String, &'static str)>, connections: usize) {
    let mut lanes: Vec<Vec<_>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, request) in requests.into_iter().enumerate() {
        lanes[i % connections].push(request);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| tokio::spawn(send_all(addr, lane)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// issue 22 (acceptance): 10,000 requests with random methods, short and 4,000 letters long, on
/// a few keep-alive connections: `/metrics` grows by less than 10 KB and the server's RSS by
/// less than 10 MB; every method label is one of a fixed set.
#[tokio::test(flavor = "multi_thread")]
async fn issue22_random_methods_grow_neither_metrics_nor_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::new(dir.path()).spawn();
    let pid = server.child.id();
    let addr: SocketAddr = server.api.strip_prefix("http://").unwrap().parse().unwrap();
    let mut rng = Rng::new();

    // Warm up: every (method kind, path) once, then random traffic like the measured one, so
    // every series that may ever exist exists, and buffers and allocator arenas are in use.
    let mut warm = Vec::new();
    for path in PATHS {
        for method in KNOWN {
            warm.push((method.to_owned(), path));
        }
        warm.push(("BREW".to_owned(), path));
        warm.push((rng.letters(4_000), path));
    }
    send_all(addr, warm).await;
    send_spread(addr, random_requests(&mut rng, 1_000), 4).await;
    scrape(&server.api).await;
    let before = scrape(&server.api).await;
    let rss_before = rss(pid);

    send_spread(addr, random_requests(&mut rng, 10_000), 4).await;

    let after = scrape(&server.api).await;
    let rss_after = rss(pid);
    let grown = after.len().saturating_sub(before.len());
    eprintln!(
        "/metrics {} -> {} bytes, RSS {} -> {} KiB",
        before.len(),
        after.len(),
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        grown < 10 * 1024,
        "/metrics grew by {grown} bytes ({} to {})",
        before.len(),
        after.len()
    );
    let rss_grown = rss_after.saturating_sub(rss_before);
    assert!(
        rss_grown < 10 * 1024 * 1024,
        "RSS grew by {rss_grown} bytes ({rss_before} to {rss_after})"
    );
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, rest)) = line.split_once("method=\"") {
            let value = rest.split('"').next().unwrap();
            assert!(LABELS.contains(&value), "a free-text method label: {line}");
        }
    }
    let other = crate::support::total(
        &after,
        "sixpn_api_requests_total",
        &["method=\"other\"", "status=\"405\""],
    );
    assert!(other >= 3_000.0, "{other} requests counted as other");
    server.stop();
}

/// issue 22 (scaled down from the churn bench): with silent connections churning in from 32
/// addresses far faster than the cap turns over, a client that connects and sends its request
/// only a second later is still answered, because a connection younger than the eviction floor
/// is never evicted, and the last quarter of the cap is kept for addresses holding none.
#[tokio::test(flavor = "multi_thread")]
async fn issue22_churn_from_many_addresses_cannot_cut_off_a_young_connection() {
    sixpn::fastpath::raise_open_file_limit();
    let api = TestApi::new().await;
    let limits = ServerLimits {
        max_connections: 64,
        max_connections_per_ip: 64,
        ..ServerLimits::default()
    };
    let served = Served::start(api.router.clone(), limits).await;
    let addr = served.addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let churn = {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut i = 0usize;
            // 500 connections a second at most, held open: before issue 22 each evicted the
            // connection idle longest, so a connection lived about 64 / 500 s.
            while !stop.is_cancelled() && held.len() < 3_000 {
                let source = format!("127.1.0.{}", 1 + i % 32);
                if let Ok(stream) = connect_from(&source, addr).await {
                    held.push(stream);
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            held.len()
        })
    };
    // The cap is reached before the first slow client connects.
    crate::support::eventually_async(Duration::from_secs(30), "the churn fills the cap", || {
        let opened = opened.load(std::sync::atomic::Ordering::Relaxed);
        async move {
            if opened > 2 * limits.max_connections {
                Ok(())
            } else {
                Err(format!("{opened} opened"))
            }
        }
    })
    .await;
    // Slow clients one after another, until the churn has turned the cap over many times while
    // they waited (at least three clients; how many depends on the machine's speed, not the
    // guarantee): every one of them is answered.
    let mut clients = 0;
    let churned = |o: &std::sync::atomic::AtomicUsize| o.load(std::sync::atomic::Ordering::Relaxed);
    let first = churned(&opened);
    while clients < 3 || churned(&opened) - first < 500 {
        assert!(clients < 60, "the churn stalled at {}", churned(&opened));
        clients += 1;
        let mut stream = connect_from("127.0.0.1", addr).await.unwrap();
        // A slow client: the request head comes a second after the connection.
        tokio::time::sleep(Duration::from_secs(1)).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("the connection is still open");
        let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut stream, false))
            .await
            .expect("an answer in time");
        let (status, body) = answer.expect("the young connection was not evicted");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    stop.cancel();
    let held = churn.await.unwrap();
    eprintln!(
        "{clients} slow clients answered while {} connections churned in",
        held - first.min(held)
    );
    served.stop().await;
}

/// issue 22: when every connection is younger than the eviction floor, a new one is refused
/// (a JSON 503 at once) and none of them is cut off; a source opening connections faster than
/// its accept rate is refused too, without touching other sources.
#[tokio::test]
async fn issue22_a_full_server_of_young_connections_refuses_the_newcomer() {
    let api = TestApi::new().await;
    let limits = ServerLimits {
        max_connections: 8,
        max_connections_per_ip: 8,
        accept_rate: 0.01,
        accept_burst: 4,
        ..ServerLimits::default()
    };
    let served = Served::start(api.router.clone(), limits).await;
    let mut silent = Vec::new();
    for i in 1..=8 {
        silent.push(
            connect_from(&format!("127.2.0.{i}"), served.addr)
                .await
                .unwrap(),
        );
    }
    // The server accepts in the order connections completed: the ninth comes after all eight.
    let (status, head, json) = exchange_from(
        "127.2.0.9",
        served.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a refusal");
    assert_eq!(status, 503, "{json}");
    assert!(head.contains("retry-after"), "{head}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("too many open connections")
    );
    // None of the silent ones was closed to make room.
    for stream in &mut silent {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        assert!(read.is_err(), "a young connection was closed: {read:?}");
    }
    drop(silent);
    served.stop().await;

    // Over its accept rate (a burst of 4 here), a source is refused at once.
    let served = Served::start(api.router.clone(), limits).await;
    let mut refused = 0;
    for _ in 0..8 {
        let answer = exchange_from(
            "127.2.1.1",
            served.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        match answer {
            Some((200, _, _)) => {}
            // The cheap refusal: a 503, or a reset when the request was already in.
            Some((503, _, json)) => {
                assert!(json["error"].as_str().unwrap().contains("new connections"));
                refused += 1;
            }
            None => refused += 1,
            Some(other) => panic!("{other:?}"),
        }
    }
    assert!(refused >= 4, "{refused} refused");
    let (status, _, _) = exchange_from(
        "127.2.1.2",
        served.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    served.stop().await;
}

/// issue 22: wrong admin tokens from many addresses, each within its own budget, spend one
/// global budget; past it every wrong admin token is `429`, from any address, while the right
/// one still gets through, and a request without a token is not charged.
#[tokio::test]
async fn issue22_a_global_budget_stops_admin_guessing_from_many_addresses() {
    let api = TestApi::new().await;
    let router = router_with_limits(
        &api,
        RateLimits {
            failed_auth_rate: 1.0,
            failed_auth_burst: 20,
            failed_admin_auth_rate: 0.001,
            failed_admin_auth_burst: 10,
            ..RateLimits::off()
        },
    );
    let served = Served::start(router, ServerLimits::default()).await;
    let orgs = |token: &str| {
        format!(
            "GET /api/v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    for i in 1..=10 {
        let source = format!("127.5.0.{i}");
        let (status, _, json) = exchange_from(&source, served.addr, orgs("guess").as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 401, "{json}");
    }
    for source in ["127.5.0.11", "127.5.0.12", "127.5.0.1"] {
        let (status, head, json) = exchange_from(source, served.addr, orgs("guess").as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 429, "{json}");
        assert!(head.contains("retry-after"), "{head}");
        assert!(
            json["error"].as_str().unwrap().contains("all addresses"),
            "{json}"
        );
    }
    // The admin, from a guessing address and from a fresh one.
    for source in ["127.5.0.1", "127.5.0.99"] {
        let (status, _, json) = exchange_from(source, served.addr, orgs(ADMIN).as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 200, "{json}");
    }
    // No token at all is no guess: 401, not charged to the global budget.
    let (status, _, json) = exchange_from(
        "127.5.0.98",
        served.addr,
        b"GET /api/v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{json}");
    served.stop().await;
}
