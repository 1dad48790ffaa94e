//! Issue 23, point 1: a server whose log reader goes away keeps serving and still stops on
//! `SIGTERM`, and a clean stop leaves a store whose database file alone holds every row.

use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Api, Serve, ServerProcess, dns_query};

/// Sends SIGTERM and waits up to `within` for the process to end; the time it took.
fn terminate(server: &mut ServerProcess, within: Duration) -> Duration {
    let started = Instant::now();
    let _ = Command::new("kill")
        .arg(server.child.id().to_string())
        .status();
    while started.elapsed() < within {
        if server.child.try_wait().unwrap().is_some() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sixpn serve did not stop within {within:?} of SIGTERM");
}

/// Creates `n` peers through the API (each logs a line at info) and checks each resolves.
async fn create_and_resolve(server: &ServerProcess, token_name: &str, n: usize) {
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", token_name, Some("web")).await;
    for i in 0..n {
        let name = format!("{token_name}-{i}");
        let (status, body) = api.register(&token, &name, "web").await;
        assert_eq!(status, 200, "create {name}: {body}");
        let answer = dns_query(
            server.dns,
            &format!("{name}._peer.internal."),
            RecordType::AAAA,
        );
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
}

/// The reader of the server's stderr goes away while it runs (`sixpn serve 2>&1 | head -1`, a
/// log shipper that restarts): it keeps answering, creates still succeed, and SIGTERM stops it.
#[tokio::test(flavor = "multi_thread")]
async fn issue23_a_server_survives_its_log_reader_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path())
        .env("RUST_LOG", "debug")
        .capture_stderr()
        .spawn();
    create_and_resolve(&server, "before", 2).await;
    drop(server.child.stderr.take()); // the reader is gone: every later log line gets EPIPE
    create_and_resolve(&server, "after", 5).await;
    let health = reqwest::get(format!("{}/healthz", server.api))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", server.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped = crate::support::total(&metrics, "sixpn_log_write_errors_total", &[]);
    assert!(dropped > 0.0, "failed log writes are counted: {dropped}");
    let took = tokio::task::block_in_place(|| terminate(&mut server, Duration::from_secs(5)));
    eprintln!("stopped {took:?} after SIGTERM");
}

/// stderr is a pipe nobody reads from the start (`nohup … |` whose reader died): the server
/// starts, serves and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn issue23_a_server_starts_with_its_stderr_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path())
        .env("RUST_LOG", "info")
        .capture_stderr()
        .spawn_with(|child| drop(child.stderr.take()));
    create_and_resolve(&server, "closed", 3).await;
    tokio::task::block_in_place(|| terminate(&mut server, Duration::from_secs(5)));
}

/// After a clean stop, `sixpn.db` copied alone (no `-wal`, no `-shm`) opens with every token and
/// peer: the store was closed and SQLite checkpointed.
#[tokio::test(flavor = "multi_thread")]
async fn issue23_after_a_clean_stop_the_database_file_alone_holds_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path()).spawn();
    create_and_resolve(&server, "kept", 4).await;
    tokio::task::block_in_place(|| terminate(&mut server, Duration::from_secs(5)));

    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("copy.db");
    std::fs::copy(dir.path().join("sixpn.db"), &file).unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let peers: i64 = sqlx::query_scalar("SELECT count(*) FROM peers")
        .fetch_one(&pool)
        .await
        .unwrap();
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((peers, tokens), (4, 1), "every row is in the file alone");
}
