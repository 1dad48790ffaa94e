//! Issue 22, the start-up half of the edge: weak admin tokens are refused, and static zones come
//! only from a `zones_dir` set on purpose, never from the working directory, and never under the
//! names sixpn generates.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Serve, dns_query};

/// `SIXPN_ADMIN_TOKEN=abc sixpn serve` exits non-zero, and says why and what to do.
#[test]
fn issue22_a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Serve::new(dir.path())
        .env("SIXPN_ADMIN_TOKEN", "abc")
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve must refuse: {stderr}");
    assert!(
        stderr.contains("SIXPN_ADMIN_TOKEN") && stderr.contains("at least 32"),
        "the error names the variable and the rule: {stderr}"
    );
    assert!(
        !stderr.contains("abc"),
        "the token itself is never printed: {stderr}"
    );
}

/// A `zones/` folder in the working directory is not loaded: its records neither add names
/// nor override generated or built-in ones.
#[test]
fn issue22_zones_in_the_working_directory_are_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let zones = cwd.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    std::fs::write(
        zones.join("evil.zone"),
        "$TTL 5\n@ IN SOA ns.evil. hm.evil. 1 2 3 4 5\nwww IN A 192.0.2.66\n",
    )
    .unwrap();
    std::fs::write(
        zones.join("internal.zone"),
        "$TTL 5\n@ IN SOA ns.internal. hm.internal. 1 2 3 4 5\n@ IN NS ns\n\
         planted IN AAAA fdaa::dead\n",
    )
    .unwrap();
    let server = Serve::new(dir.path()).current_dir(cwd.path()).spawn();
    let evil = dns_query(server.dns, "www.evil.", RecordType::A);
    assert_eq!(
        evil.metadata.response_code,
        ResponseCode::Refused,
        "evil. is not served"
    );
    let planted = dns_query(server.dns, "planted.internal.", RecordType::AAAA);
    assert_eq!(planted.metadata.response_code, ResponseCode::NXDomain);
    let soa = dns_query(server.dns, "internal.", RecordType::SOA);
    assert!(
        soa.answers.iter().any(
            |r| matches!(&r.data, RData::SOA(s) if s.rname.to_ascii() == "hostmaster.internal.")
        ),
        "the built-in internal. zone serves: {soa:?}"
    );
}

/// A `zones_dir` holding a record under `_peer.internal` is refused at start, naming the file
/// and line; one holding only ordinary records loads, and the log names the folder and file.
#[test]
fn issue22_a_record_under_generated_names_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let zones = tempfile::tempdir().unwrap();
    let file = zones.path().join("internal.zone");
    std::fs::write(
        &file,
        "$TTL 5\n@ IN SOA ns.internal. hm.internal. 1 2 3 4 5\n@ IN NS ns\n\
         n1._peer IN AAAA fdaa::dead\n",
    )
    .unwrap();
    let zones_dir = zones.path().display().to_string();
    let out = Serve::new(dir.path())
        .env("SIXPN_ZONES_DIR", &zones_dir)
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve must refuse: {stderr}");
    assert!(
        stderr.contains(&format!("{}:4", file.display())) && stderr.contains("_peer.internal"),
        "the error names the file, the line and the subtree: {stderr}"
    );

    std::fs::write(
        &file,
        "$TTL 5\n@ IN SOA ns.internal. hm.internal. 1 2 3 4 5\n@ IN NS ns\n\
         db IN AAAA fdaa::db\n",
    )
    .unwrap();
    let server = Serve::new(dir.path())
        .env("SIXPN_ZONES_DIR", &zones_dir)
        .env("RUST_LOG", "info")
        .capture_stderr()
        .spawn();
    let db = dns_query(server.dns, "db.internal.", RecordType::AAAA);
    assert_eq!(db.metadata.response_code, ResponseCode::NoError);
    assert_eq!(db.answers.len(), 1);
    let log = server.stop();
    assert!(
        log.contains("static zones loaded") && log.contains(&zones_dir),
        "the folder is logged: {log}"
    );
    assert!(
        log.contains(&file.display().to_string()),
        "the file is logged: {log}"
    );
}
