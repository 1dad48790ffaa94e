//! Issue 23, point 8: what a newcomer tripped on. A corrupt SQLite file answers writes `503` with
//! the reason; PostgreSQL down at start says where it connects and why it failed; `token ensure
//! NAME "" "" -` leaves a live peer alone; a CA certificate served as the server's own gets its
//! own hint; `--api-url` is blamed for a bad flag; a missing config file's cause is said once; a
//! second zone file adds names to `internal.`; a public listener with loopback defaults warns.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::wait::state_saved;
use crate::support::{
    ADMIN_TOKEN, Api, Serve, ServerProcess, dns_query, free_port, server_config, sixpn_cli,
    start_server_on,
};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A SQLite file overwritten with something that is not a database: the server starts from its
/// saved DNS state, and a write is `503` with a JSON `error` saying the file is not a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_a_corrupt_sqlite_file_answers_writes_503_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A server process: its store is gone with it when it stops (an in-process one's SQLite
    // connections could outlive it and write the file back).
    let server = ServerProcess::spawn(&data, &[]);
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "k8s", Some("web")).await;
    let (status, body) = api.register(&token, "node-0", "web").await;
    assert_eq!(status, 200, "{body}");
    let db = data.join("sixpn.db");
    let generation: i64 = {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let g = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        g
    };
    state_saved(&data, sixpn::model::Generation(generation as u64)).await;
    server.stop();

    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, "not a database at all, only text ".repeat(500)).unwrap();

    let server = start_server_on(&data, None)
        .await
        .expect("starts from the saved DNS state");
    let api = Api::of(&server);
    let (status, body) = api.register(&token, "node-1", "web").await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not a SQLite database") && error.contains("restore"),
        "the reason is given: {body}"
    );
    server.shutdown().await.unwrap();
}

/// PostgreSQL down at the first start: the log says where the server connects (without the
/// password), and the final error names the cause, not only a pool timeout.
#[test]
fn issue23_postgres_down_at_start_says_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("postgres://sixpn:s3cretpw@127.0.0.1:{port}/sixpn");
    let out = Serve::new(dir.path())
        .env("SIXPN_DATABASE_URL", &url)
        .env("RUST_LOG", "info")
        .output();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("connecting to PostgreSQL") && err.contains(&format!("127.0.0.1:{port}")),
        "the log says where it connects: {err}"
    );
    assert!(
        err.to_lowercase().contains("connection refused"),
        "the error names the cause: {err}"
    );
    assert!(!err.contains("s3cretpw"), "no password in the log: {err}");
}

/// `token ensure NAME "" "" -` twice: the first run registers and prints the config, the second
/// leaves the live peer alone (same key, same record) and prints nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_token_ensure_to_stdout_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path(), &[]);
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "fleet", None).await;
    let work = tempfile::tempdir().unwrap();
    let env = [
        ("SIXPN_API_URL", server.api.as_str()),
        ("SIXPN_WIREGUARD_TOKEN", token.as_str()),
    ];
    let args = ["token", "ensure", "node-1", "", "", "-"];
    let first = sixpn_cli(work.path(), &args, &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let config = String::from_utf8_lossy(&first.stdout);
    assert!(config.contains("[Interface]") && config.contains("PrivateKey"));
    let before = api.peers("personal").await;
    assert_eq!(before.len(), 1);

    for _ in 0..2 {
        let again = sixpn_cli(work.path(), &args, &env);
        assert!(again.status.success(), "{}", stderr(&again));
        assert!(again.stdout.is_empty(), "nothing printed");
        assert!(stderr(&again).contains("left alone"), "{}", stderr(&again));
    }
    assert_eq!(
        api.peers("personal").await,
        before,
        "the live peer was not re-keyed"
    );

    // Deleted meanwhile: ensure registers it again.
    let gone = sixpn_cli(
        work.path(),
        &["peer", "delete", "node-1", "--yes"],
        &[
            ("SIXPN_API_URL", server.api.as_str()),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(gone.status.success(), "{}", stderr(&gone));
    let back = sixpn_cli(work.path(), &args, &env);
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(String::from_utf8_lossy(&back.stdout).contains("[Interface]"));
}

/// A bad `--api-url` blames the flag; a bad `SIXPN_API_URL` the variable. A missing config file
/// says its cause once.
#[test]
fn issue23_errors_blame_what_was_given_and_say_the_cause_once() {
    let work = tempfile::tempdir().unwrap();
    let flag = sixpn_cli(
        work.path(),
        &["token", "list", "--api-url", "notaurl"],
        &[("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(flag.status.code(), Some(2));
    assert!(
        stderr(&flag).contains("--api-url \"notaurl\"") && !stderr(&flag).contains("SIXPN_API_URL"),
        "{}",
        stderr(&flag)
    );
    let var = sixpn_cli(
        work.path(),
        &["token", "list"],
        &[
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SIXPN_API_URL", "notaurl"),
        ],
    );
    assert_eq!(var.status.code(), Some(2));
    assert!(
        stderr(&var).contains("SIXPN_API_URL \"notaurl\""),
        "{}",
        stderr(&var)
    );

    let missing = work.path().join("nope.toml");
    let out = Serve::new(work.path())
        .args(["--config", &missing.display().to_string()])
        .output();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
}

/// A self-signed CA certificate as the server's own: the CLI says so and what to do, without
/// rustls's Debug names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_a_ca_certificate_as_the_server_certificate_gets_its_own_hint() {
    let pki = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (pki.path().join("ca.pem"), pki.path().join("ca.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut config = server_config(data.path(), None);
    config.api.tls_cert = Some(cert_path.clone());
    config.api.tls_key = Some(key_path);
    let server = sixpn::serve::start(config).await.expect("server starts");
    let url = format!("https://127.0.0.1:{}", server.api_addr.port());
    let work = tempfile::tempdir().unwrap();
    let ca = cert_path.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        sixpn_cli(
            work.path(),
            &["token", "list", "--cacert", &ca],
            &[("SIXPN_API_URL", &url), ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN)],
        )
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("CA certificate") && err.contains("tls_cert"),
        "a specific hint: {err}"
    );
    assert!(
        !err.contains("OtherError") && !err.contains("CaUsedAsEndEntity"),
        "no Debug names: {err}"
    );
    server.shutdown().await.unwrap();
}

/// A second zone file adds names to `internal.` without an SOA (the built-in one serves); a
/// second SOA for the zone is refused at start, naming both files.
#[test]
fn issue23_a_second_zone_file_adds_names_to_internal() {
    let dir = tempfile::tempdir().unwrap();
    let zones = tempfile::tempdir().unwrap();
    std::fs::write(
        zones.path().join("services.zone"),
        "$TTL 30\n$ORIGIN internal.\ndb IN AAAA fdaa::db\n",
    )
    .unwrap();
    let zones_dir = zones.path().display().to_string();
    let server = Serve::new(dir.path())
        .env("SIXPN_ZONES_DIR", &zones_dir)
        .spawn();
    let db = dns_query(server.dns, "db.internal.", RecordType::AAAA);
    assert_eq!(db.metadata.response_code, ResponseCode::NoError);
    assert_eq!(db.answers.len(), 1, "{db:?}");
    let soa = dns_query(server.dns, "internal.", RecordType::SOA);
    assert!(
        soa.answers.iter().any(
            |r| matches!(&r.data, RData::SOA(s) if s.rname.to_ascii() == "hostmaster.internal.")
        ),
        "the built-in SOA: {soa:?}"
    );
    drop(server);

    std::fs::write(
        zones.path().join("internal.zone"),
        "$TTL 5\n@ IN SOA ns.internal. hm.internal. 1 2 3 4 5\n@ IN NS ns\n",
    )
    .unwrap();
    std::fs::write(
        zones.path().join("services.zone"),
        "$TTL 30\n$ORIGIN internal.\n@ IN SOA ns hm 1 2 3 4 5\ndb IN AAAA fdaa::db\n",
    )
    .unwrap();
    let out = Serve::new(dir.path())
        .env("SIXPN_ZONES_DIR", &zones_dir)
        .output();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("already has its SOA")
            && err.contains("internal.zone")
            && err.contains("services.zone"),
        "{err}"
    );
}

/// An API on a public address with the loopback default region and plain HTTP: two warnings,
/// each naming the key to set. On loopback: neither.
#[test]
fn issue23_a_public_listener_with_loopback_defaults_warns() {
    let dir = tempfile::tempdir().unwrap();
    // A port free on 127.0.0.1 may be taken on another address by a test running beside this
    // one, and the wildcard then fails to bind: a fresh port, as a person would pick another.
    let server = (0..5)
        .find_map(|_| {
            std::panic::catch_unwind(|| {
                Serve::new(dir.path())
                    .env("SIXPN_API_LISTEN", &format!("0.0.0.0:{}", free_port()))
                    .capture_stderr()
                    .spawn()
            })
            .ok()
        })
        .expect("a server on a wildcard address");
    let log = server.stop();
    assert!(
        log.contains("WARN")
            && log.contains("[[regions]] endpoint")
            && log.contains("127.0.0.1:51820"),
        "{log}"
    );
    assert!(log.contains("[api] tls_cert"), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let log = Serve::new(dir.path()).capture_stderr().spawn().stop();
    assert!(!log.contains("[[regions]] endpoint"), "{log}");
}
