//! The `sixpn` binary driven as a user would: a real `sixpn serve` child process, the CLI run as
//! another process with only environment variables and arguments, and the results checked against
//! the server's admin API, its DNS, the files on disk and `wg-quick strip` (issue 4).

use std::io::{Read, Write};
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;
use sixpn::wireguard::{PrivateKey, PublicKey, WgQuickConfig};

use crate::support::{Api, ServerProcess, dns_query, eventually, free_port, sixpn_cli};

/// Variables that would leak the developer's own setup into a test.
/// One finished CLI run.
struct Run {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert!(
            self.output.status.success(),
            "sixpn failed: {:?}\nstdout: {}\nstderr: {}",
            self.output.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a failure reported as exactly one `error: …` line, and returns that line.
    fn fails(self) -> String {
        assert!(
            !self.output.status.success(),
            "expected a failure, got success\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{:?}", self.stderr);
        lines[0].to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `sixpn args…` in `dir` with a clean environment plus `env`.
fn sixpn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = sixpn_cli(dir, args, env);
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        output,
    }
}

/// A running server and a scratch directory to run the CLI in.
struct Setup {
    server: ServerProcess,
    work: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let data = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::spawn(data.path(), &[]);
        Setup {
            server,
            work: tempfile::tempdir().expect("tempdir"),
            _data: data,
        }
    }

    fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// An admin command.
    fn admin(&self, args: &[&str]) -> Run {
        sixpn(
            self.work.path(),
            args,
            &[
                ("SIXPN_API_URL", self.server.api.as_str()),
                ("SIXPN_ADMIN_TOKEN", self.server.admin_token.as_str()),
            ],
        )
    }

    /// A node command holding `token`.
    fn node(&self, token: &str, args: &[&str]) -> Run {
        sixpn(
            self.work.path(),
            args,
            &[
                ("SIXPN_API_URL", self.server.api.as_str()),
                ("SIXPN_WIREGUARD_TOKEN", token),
            ],
        )
    }

    /// `token create …`, returning the secret from the `SIXPN_WIREGUARD_TOKEN=` line.
    fn mint(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let run = self.admin(&full).ok();
        let line = run.stdout.trim_end();
        assert_eq!(run.stdout.lines().count(), 1, "{:?}", run.stdout);
        let secret = line
            .strip_prefix("SIXPN_WIREGUARD_TOKEN=")
            .unwrap_or_else(|| panic!("no SIXPN_WIREGUARD_TOKEN= line: {line:?}"));
        assert!(secret.starts_with("sixpn_wg_"), "{secret}");
        secret.to_string()
    }

    fn read_config(&self, file: &str) -> WgQuickConfig {
        let path = self.work.path().join(file);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {mode:o}");
        let text = std::fs::read_to_string(&path).expect("read config");
        WgQuickConfig::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"))
    }

    fn peers(&self, org: &str) -> Vec<Value> {
        let run = self.admin(&["peer", "list", "--org", org, "--json"]).ok();
        run.json()
            .as_array()
            .expect("peer list --json is an array")
            .clone()
    }

    fn peer(&self, org: &str, name: &str) -> Option<Value> {
        self.peers(org).into_iter().find(|p| p["name"] == name)
    }

    fn org(&self, slug: &str) -> Value {
        let run = self.admin(&["org", "list", "--json"]).ok();
        run.json()
            .as_array()
            .expect("org list --json is an array")
            .iter()
            .find(|o| o["slug"] == slug)
            .unwrap_or_else(|| panic!("no org {slug} in {}", run.stdout))
            .clone()
    }
}

/// `wg-quick strip` must accept the file without a warning, and must recognise its wg-quick-only
/// keys (Address, DNS, MTU) by removing them, leaving what `wg setconf` reads.
fn wg_quick_strip(dir: &Path, file: &str) {
    let out = match Command::new("wg-quick")
        .args(["strip", &format!("./{file}")])
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("note: wg-quick not runnable ({e}); skipping the `wg-quick strip` check");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wg-quick strip rejected {file}: {stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "wg-quick strip warned about {file}: {stderr}"
    );
    for kept in [
        "PrivateKey = ",
        "[Peer]",
        "PublicKey = ",
        "AllowedIPs = ",
        "Endpoint = ",
        "PersistentKeepalive = 15",
    ] {
        assert!(
            stdout.contains(kept),
            "{kept} missing after strip:\n{stdout}"
        );
    }
    for removed in ["Address", "DNS", "MTU"] {
        assert!(
            !stdout.contains(removed),
            "wg-quick did not take {removed} as its own:\n{stdout}"
        );
    }
}

#[test]
fn token_start_writes_a_config_that_matches_the_server() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);

    let run = s.node(&token, &["token", "start", "node-1", "web"]).ok();
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(run.stderr.contains("node-1.conf"), "{}", run.stderr);
    let config = s.read_config("node-1.conf");

    // The server's view: the peer, its org and the gateway's key.
    let peer = s.peer("personal", "node-1").expect("node-1 registered");
    let org = s.org("personal");
    assert_eq!(peer["group"], "web");
    assert_eq!(
        peer["address"]
            .as_str()
            .unwrap()
            .parse::<Ipv6Addr>()
            .unwrap(),
        config.address
    );
    assert_eq!(
        peer["pubkey"].as_str().unwrap(),
        config.private_key.public_key().to_base64(),
        "the private key in the file matches the public key the server stored"
    );
    assert_eq!(
        config.allowed_ips.to_string(),
        org["prefix"].as_str().unwrap()
    );
    assert_eq!(
        config.dns.unwrap().to_string(),
        org["dns"].as_str().unwrap()
    );
    let prefix: ipnet::Ipv6Net = org["prefix"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        config.dns.unwrap(),
        sixpn::model::prefix_host(prefix, 3),
        "DNS is the org's ::3"
    );
    assert!(prefix.contains(&config.address));
    assert_eq!(
        config.endpoint.to_string(),
        "127.0.0.1:51820",
        "the local region's gateway"
    );
    let gateway_key = std::fs::read_to_string(s.data_dir().join("gateway.key"))
        .expect("the local region's key pair is kept in <data_dir>/gateway.key");
    assert_eq!(
        config.gateway_key,
        PrivateKey::parse(&gateway_key).unwrap().public_key(),
        "PublicKey is the gateway's key"
    );
    assert_eq!(config.persistent_keepalive, Some(15));
    wg_quick_strip(s.work.path(), "node-1.conf");

    // The name resolves as soon as the command returns.
    let answer = dns_query(s.server.dns, "node-1._peer.internal.", RecordType::AAAA);
    let addresses: Vec<Ipv6Addr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, vec![config.address]);

    // --json prints the server's answer, and the file still gets written.
    let run = s
        .node(
            &token,
            &[
                "token",
                "start",
                "node-2",
                "",
                "",
                "node-2.conf",
                "--json",
                "--no-dns",
                "--mtu",
                "1380",
            ],
        )
        .ok();
    let answer = run.json();
    let config2 = s.read_config("node-2.conf");
    assert_eq!(
        answer["us"].as_str().unwrap().parse::<Ipv6Addr>().unwrap(),
        config2.address
    );
    assert_eq!(answer["group"], "web", "the token's group is the default");
    assert_eq!(config2.dns, None);
    assert_eq!(config2.mtu, Some(1380));
    wg_quick_strip(s.work.path(), "node-2.conf");
    assert_ne!(config2.address, config.address);

    // `-` prints the config instead of writing a file.
    let run = s
        .node(&token, &["token", "start", "node-3", "web", "local", "-"])
        .ok();
    let printed = WgQuickConfig::parse(&run.stdout).expect("stdout holds a wg-quick config");
    let peer3 = s.peer("personal", "node-3").expect("node-3 registered");
    assert_eq!(
        peer3["pubkey"],
        printed.private_key.public_key().to_base64()
    );
    assert!(!s.work.path().join("node-3.conf").exists());
    assert!(!s.work.path().join("-").exists());
}

#[test]
fn token_update_rekeys_and_keeps_the_address() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    s.node(&token, &["token", "start", "node-1", "web"]).ok();
    let before = s.read_config("node-1.conf");

    // The file is there: refuse, and leave the server's key alone.
    let line = s.node(&token, &["token", "update", "node-1"]).fails();
    assert!(line.contains("node-1.conf already exists"), "{line}");
    assert!(line.contains("--force"), "{line}");
    let peer = s.peer("personal", "node-1").unwrap();
    assert_eq!(peer["pubkey"], before.private_key.public_key().to_base64());

    s.node(&token, &["token", "update", "node-1", "--force"])
        .ok();
    let after = s.read_config("node-1.conf");
    assert_eq!(after.address, before.address, "re-keying keeps the address");
    assert_ne!(
        after.private_key.public_key(),
        before.private_key.public_key()
    );
    let peer = s.peer("personal", "node-1").unwrap();
    assert_eq!(
        peer["pubkey"].as_str().unwrap(),
        after.private_key.public_key().to_base64(),
        "the server holds the new key"
    );
    assert_eq!(
        peer["address"]
            .as_str()
            .unwrap()
            .parse::<Ipv6Addr>()
            .unwrap(),
        before.address
    );
    wg_quick_strip(s.work.path(), "node-1.conf");

    // A replacement machine with no file reclaims the name into a new file.
    s.node(&token, &["token", "update", "node-1", "wg0.conf"])
        .ok();
    let third = s.read_config("wg0.conf");
    assert_eq!(third.address, before.address);
    assert_eq!(
        s.peer("personal", "node-1").unwrap()["pubkey"]
            .as_str()
            .unwrap(),
        third.private_key.public_key().to_base64()
    );
}

#[test]
fn token_list_and_delete() {
    let s = Setup::new();
    let token = s.mint(&[
        "--name",
        "k8s",
        "--group",
        "web",
        "--expires",
        "30d",
        "--max-peers",
        "5",
    ]);
    let other = s.mint(&["--name", "laptop"]);
    s.node(&token, &["token", "start", "node-1", "web"]).ok();
    s.node(&token, &["token", "start", "node-2", "web"]).ok();
    s.node(&other, &["token", "start", "laptop-1"]).ok();

    let run = s.admin(&["token", "list"]).ok();
    let table = run.stdout;
    for header in [
        "NAME",
        "GROUP",
        "EXPIRES",
        "CREATED",
        "LAST USED",
        "LIVE PEERS",
    ] {
        assert!(table.contains(header), "{header} missing:\n{table}");
    }
    let k8s_row = table
        .lines()
        .find(|l| l.starts_with("k8s "))
        .expect("k8s row");
    let cells: Vec<&str> = k8s_row.split_whitespace().collect();
    assert_eq!(cells[1], "web", "{k8s_row}");
    assert!(cells[2].starts_with("20"), "expiry is a date: {k8s_row}");
    assert!(!k8s_row.contains("never"), "k8s was used: {k8s_row}");
    // LIVE PEERS, then MAX PEERS, KEY EXPIRY and STATUS.
    assert_eq!(cells[cells.len() - 4], "2", "live peers: {k8s_row}");
    assert_eq!(cells[cells.len() - 1], "active", "{k8s_row}");
    assert!(
        !table.contains(&token) && !table.contains(&other),
        "the secret never shows"
    );
    assert!(!table.contains("sixpn_wg_"), "{table}");

    let run = s.admin(&["token", "list", "--json"]).ok();
    assert!(!run.stdout.contains(&token) && !run.stdout.contains("sixpn_wg_"));
    let tokens = run.json();
    let tokens = tokens.as_array().expect("token list --json is an array");
    let k8s = tokens.iter().find(|t| t["name"] == "k8s").expect("k8s");
    assert_eq!(k8s["live_peers"], 2);
    assert_eq!(k8s["group"], "web");
    assert_eq!(k8s["max_peers"], 5);
    assert!(k8s["expires_at"].is_string() && k8s["last_used_at"].is_string());

    let run = s.admin(&["token", "delete", "k8s"]).ok();
    assert!(run.stdout.contains("2 peer"), "{}", run.stdout);
    let names: Vec<Value> = s
        .peers("personal")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![Value::from("laptop-1")],
        "the token's peers went with it"
    );
    let run = s.admin(&["token", "list", "--json"]).ok();
    assert!(
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "k8s")
    );

    // The deleted token can no longer register peers; the server says why.
    let line = s
        .node(&token, &["token", "start", "node-9", "web", "", "-"])
        .fails();
    assert!(
        line.contains("(HTTP 401)") || line.contains("(HTTP 403)"),
        "{line}"
    );
}

#[test]
fn peer_and_org_commands() {
    let s = Setup::new();
    let run = s.admin(&["org", "create", "acme", "--json"]).ok();
    let acme = run.json();
    assert_eq!(acme["slug"], "acme");
    let token = s.mint(&["--org", "acme", "--name", "ci"]);
    s.node(&token, &["token", "start", "runner-1"]).ok();
    let config = s.read_config("runner-1.conf");
    assert_eq!(
        config.allowed_ips.to_string(),
        acme["prefix"].as_str().unwrap()
    );

    let run = s.admin(&["org", "list"]).ok();
    assert!(
        run.stdout.contains("acme") && run.stdout.contains("personal"),
        "{}",
        run.stdout
    );

    assert!(s.peers("personal").is_empty());
    let run = s.admin(&["peer", "list", "--org", "acme"]).ok();
    assert!(run.stdout.contains("runner-1"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&config.address.to_string()),
        "{}",
        run.stdout
    );

    let run = s.admin(&["peer", "show", "--org", "acme", "runner-1"]).ok();
    assert!(
        run.stdout.contains(&config.address.to_string()),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&config.private_key.public_key().to_base64())
    );
    let run = s
        .admin(&["peer", "show", "--org", "acme", "runner-1", "--json"])
        .ok();
    assert_eq!(run.json()["name"], "runner-1");

    let line = s.admin(&["peer", "show", "runner-1"]).fails();
    assert!(
        line.contains("(HTTP 404)"),
        "other orgs' peers are not found: {line}"
    );

    s.admin(&["peer", "delete", "--org", "acme", "runner-1"])
        .ok();
    assert!(s.peers("acme").is_empty());
}

#[tokio::test]
async fn errors_are_one_line_and_say_what_to_do() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);

    // No token in the environment.
    let line = sixpn(
        s.work.path(),
        &["token", "start", "node-1", "web"],
        &[("SIXPN_API_URL", s.server.api.as_str())],
    )
    .fails();
    assert_eq!(
        line,
        "error: no WireGuard token: set SIXPN_WIREGUARD_TOKEN to a token from `sixpn token create`"
    );
    assert!(!s.work.path().join("node-1.conf").exists());

    // FLY_WIREGUARD_TOKEN works too.
    sixpn(
        s.work.path(),
        &["token", "start", "fly-1", "web", "", "-"],
        &[
            ("SIXPN_API_URL", s.server.api.as_str()),
            ("FLY_WIREGUARD_TOKEN", &token),
        ],
    )
    .ok();

    // The server is unreachable: the message names the URL, and no file is left behind.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let line = sixpn(
        s.work.path(),
        &["token", "start", "node-1", "web"],
        &[
            ("SIXPN_API_URL", nowhere.as_str()),
            ("SIXPN_WIREGUARD_TOKEN", &token),
        ],
    )
    .fails();
    assert!(line.contains(&nowhere), "{line}");
    assert!(line.contains("SIXPN_API_URL"), "{line}");
    assert!(
        !s.work.path().join("node-1.conf").exists(),
        "no file left behind"
    );
    let line = sixpn(
        s.work.path(),
        &["token", "list"],
        &[
            ("SIXPN_API_URL", nowhere.as_str()),
            ("SIXPN_ADMIN_TOKEN", "x"),
        ],
    )
    .fails();
    assert!(line.contains(&nowhere), "{line}");

    // An API error carries the server's own `error` text and the status.
    let (status, body) = Api::new(&s.server.api, &s.server.admin_token)
        .register("sixpn_wg_not-a-real-token", "node-1", "web")
        .await;
    let server_says = body["error"].as_str().expect("error text").to_string();
    let line = s
        .node(
            "sixpn_wg_not-a-real-token",
            &["token", "start", "node-1", "web"],
        )
        .fails();
    assert!(line.contains(&server_says), "{line} vs {server_says}");
    assert!(line.contains(&format!("(HTTP {status})")), "{line}");
    assert!(
        !s.work.path().join("node-1.conf").exists(),
        "no file left behind"
    );

    s.node(&token, &["token", "start", "node-1", "web"]).ok();
    let line = s
        .node(
            &token,
            &["token", "start", "node-1", "web", "", "other.conf"],
        )
        .fails();
    assert!(line.contains("(HTTP 409)"), "{line}");
    assert!(
        !s.work.path().join("other.conf").exists(),
        "no file left behind"
    );
    let line = s.admin(&["org", "create", "personal"]).fails();
    assert!(line.contains("(HTTP 409)"), "{line}");
    let line = sixpn(
        s.work.path(),
        &["token", "list"],
        &[
            ("SIXPN_API_URL", s.server.api.as_str()),
            ("SIXPN_ADMIN_TOKEN", "wrong"),
        ],
    )
    .fails();
    assert!(
        line.contains("(HTTP 401)") && line.contains("$SIXPN_ADMIN_TOKEN"),
        "{line}"
    );

    // The file exists: nothing is registered.
    std::fs::write(s.work.path().join("node-9.conf"), "mine\n").unwrap();
    let line = s.node(&token, &["token", "start", "node-9", "web"]).fails();
    assert!(line.contains("node-9.conf already exists"), "{line}");
    assert!(line.contains("--force"), "{line}");
    assert_eq!(
        std::fs::read_to_string(s.work.path().join("node-9.conf")).unwrap(),
        "mine\n"
    );
    assert!(s.peer("personal", "node-9").is_none(), "nothing registered");

    // No admin credential at all.
    let empty = tempfile::tempdir().unwrap();
    let line = sixpn(
        s.work.path(),
        &[
            "token",
            "list",
            "--data-dir",
            &empty.path().display().to_string(),
        ],
        &[("SIXPN_API_URL", s.server.api.as_str())],
    )
    .fails();
    assert!(line.contains("set SIXPN_ADMIN_TOKEN"), "{line}");
}

#[test]
fn admin_commands_find_the_generated_admin_token() {
    let data = tempfile::tempdir().unwrap();
    // An empty SIXPN_ADMIN_TOKEN counts as unset: the server generates one into its data dir.
    let server = ServerProcess::spawn(data.path(), &[("SIXPN_ADMIN_TOKEN", "")]);
    let work = tempfile::tempdir().unwrap();
    let run = sixpn(
        work.path(),
        &["org", "list", "--json"],
        &[
            ("SIXPN_API_URL", server.api.as_str()),
            ("SIXPN_DATA_DIR", &data.path().display().to_string()),
        ],
    )
    .ok();
    assert!(
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["slug"] == "personal")
    );
    let run = sixpn(
        work.path(),
        &[
            "token",
            "list",
            "--json",
            "--data-dir",
            &data.path().display().to_string(),
        ],
        &[("SIXPN_API_URL", server.api.as_str())],
    )
    .ok();
    assert!(run.json().is_array());
}

#[test]
fn help_explains_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["org"],
        &["org", "create"],
        &["org", "list"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "delete"],
        &["token", "start"],
        &["token", "update"],
        &["token", "ensure"],
        &["peer"],
        &["peer", "list"],
        &["peer", "show"],
        &["peer", "delete"],
        &["keygen"],
        &["completions"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let run = sixpn(dir.path(), &args, &[]).ok();
        let usage = format!("Usage: sixpn {}", command.join(" "));
        assert!(
            run.stdout.contains(usage.trim_end()),
            "{args:?}:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.lines().count() > 5,
            "{args:?} explains little:\n{}",
            run.stdout
        );
    }
    let run = sixpn(dir.path(), &["token", "start", "--help"], &[]).ok();
    for needle in [
        "SIXPN_WIREGUARD_TOKEN",
        "0600",
        "--force",
        "--no-dns",
        "--cacert",
        "SIXPN_CA_CERT",
        "Examples:",
    ] {
        assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
    }
    for command in [["token", "delete"], ["peer", "delete"]] {
        let run = sixpn(dir.path(), &[command[0], command[1], "--help"], &[]).ok();
        assert!(
            run.stdout.contains("--yes") && run.stdout.contains("terminal"),
            "{command:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn keygen_prints_a_matching_pair() {
    let dir = tempfile::tempdir().unwrap();
    let run = sixpn(dir.path(), &["keygen", "--json"], &[]).ok();
    let keys = run.json();
    let private = PrivateKey::parse(keys["private_key"].as_str().unwrap()).unwrap();
    let public = PublicKey::parse(keys["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(private.public_key(), public);

    let run = sixpn(dir.path(), &["keygen"], &[]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    let private = PrivateKey::parse(lines[0].strip_prefix("private key: ").unwrap()).unwrap();
    let public = PublicKey::parse(lines[1].strip_prefix("public key:").unwrap().trim()).unwrap();
    assert_eq!(private.public_key(), public);
    let again = sixpn(dir.path(), &["keygen"], &[]).ok();
    assert_ne!(again.stdout, run.stdout, "every run makes a new key");
}

/// A fake peer API on 127.0.0.1 that answers every request with `status` and `body`, over plain
/// HTTP, or over TLS when `tls` is given. It runs on a detached thread until the test process ends.
fn fake_server(status: u16, body: &str, tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let response = format!(
        "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = match &tls {
                None => answer_once(stream, &response),
                Some(config) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(conn) => {
                        let mut tls = rustls::StreamOwned::new(conn, stream);
                        let res = answer_once(&mut tls, &response);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                        res
                    }
                    Err(e) => Err(std::io::Error::other(e)),
                },
            };
        }
    });
    format!("{scheme}://127.0.0.1:{port}")
}

/// Reads one request (headers, then Content-Length bytes of body) and writes `response`.
fn answer_once(mut stream: impl Read + Write, response: &str) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        request.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The exit code of a finished run.
fn code(run: &Run) -> i32 {
    run.output.status.code().expect("exited, not killed")
}

const GATEWAY_KEY: &str = "s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=";

/// Issue 11: a hostile (or hijacked) server answers with a newline in `them`, which wg-quick
/// would run as `PostUp` as root. The CLI refuses, exits non-zero and writes no file.
#[test]
fn issue_11_hostile_answer_writes_no_file() {
    let work = tempfile::tempdir().unwrap();
    let hostile = [
        serde_json::json!({
            "us": "fdaa:1:2::5", "key": GATEWAY_KEY,
            "them": "1.2.3.4:51820\n[Interface]\nPostUp = touch /tmp/pwned",
        }),
        serde_json::json!({
            "us": "fdaa:1:2::5", "key": GATEWAY_KEY, "them": "1.2.3.4",
            "endpoint": "1.2.3.4:51820\nPostUp = touch /tmp/pwned",
        }),
        serde_json::json!({"us": "fdaa:1:2::5", "key": GATEWAY_KEY, "them": "1.2.3.4", "allowed_ips": "::/0"}),
        serde_json::json!({"us": "fdaa:1:2::5", "key": GATEWAY_KEY, "them": "1.2.3.4", "dns": "2001:db8::53"}),
        serde_json::json!({"us": "fdaa:1:2::5", "key": "x\ny", "them": "1.2.3.4"}),
        serde_json::json!({"us": "fdaa:1:2::5", "key": GATEWAY_KEY, "them": "1.2.3.4 PostUp"}),
    ];
    for answer in hostile {
        let url = fake_server(200, &answer.to_string(), None);
        for args in [
            &["token", "start", "node-1", "", "", "wg0.conf"][..],
            &["token", "update", "node-1", "wg0.conf"][..],
            &["token", "ensure", "node-1", "", "", "wg0.conf"][..],
            &["token", "start", "node-1", "", "", "-"][..],
        ] {
            let run = sixpn(
                work.path(),
                args,
                &[
                    ("SIXPN_API_URL", url.as_str()),
                    ("SIXPN_WIREGUARD_TOKEN", "sixpn_wg_x"),
                ],
            );
            assert_eq!(code(&run), 1, "{args:?} {answer}: {}", run.stderr);
            assert!(run.stdout.is_empty(), "nothing printed: {}", run.stdout);
            let line = run.fails();
            assert!(line.contains("bad \""), "{line}");
            assert!(line.contains("refusing to write a config"), "{line}");
            let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
            assert!(left.is_empty(), "{args:?} {answer}: left {left:?}");
        }
    }

    // `token ensure` with a config in place reads the server's answer first (GET): a hostile one
    // leaves the file exactly as it was, and no temporary file beside it.
    let existing = WgQuickConfig {
        private_key: PrivateKey::generate().unwrap(),
        address: "fdaa:1:2::5".parse().unwrap(),
        dns: None,
        mtu: None,
        gateway_key: PublicKey::parse(GATEWAY_KEY).unwrap(),
        allowed_ips: "fdaa:1:2::/48".parse().unwrap(),
        endpoint: "1.2.3.4:51820".parse().unwrap(),
        persistent_keepalive: Some(15),
    }
    .render()
    .unwrap();
    std::fs::write(work.path().join("wg0.conf"), &existing).unwrap();
    let hostile = serde_json::json!({
        "us": "fdaa:1:2::5", "key": GATEWAY_KEY,
        "them": "1.2.3.4:51820\n[Interface]\nPostUp = touch /tmp/pwned",
    });
    let url = fake_server(200, &hostile.to_string(), None);
    let run = sixpn(
        work.path(),
        &["token", "ensure", "node-1", "", "", "wg0.conf", "--no-dns"],
        &[
            ("SIXPN_API_URL", url.as_str()),
            ("SIXPN_WIREGUARD_TOKEN", "sixpn_wg_x"),
        ],
    );
    assert_eq!(code(&run), 1, "{}", run.stderr);
    assert!(run.fails().contains("bad \"them\" field"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("wg0.conf")).unwrap(),
        existing
    );
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
}

#[test]
fn exit_codes_tell_the_kind_of_failure() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    s.node(&token, &["token", "start", "node-1", "web"]).ok();

    let check = |run: Run, expect: i32, what: &str| {
        assert_eq!(code(&run), expect, "{what}: {}", run.stderr);
        run.fails();
    };
    // 2: usage, by clap or by the server.
    check(s.admin(&["token", "create"]), 2, "missing --name");
    check(
        s.node(&token, &["token", "start", "node-2", "web", "nowhere", "-"]),
        2,
        "unknown region (HTTP 4xx)",
    );
    check(
        s.node(&token, &["token", "start", "node-2", "a b"]),
        2,
        "bad GROUP",
    );
    // 3: not found.
    check(s.admin(&["peer", "show", "nobody"]), 3, "peer show");
    check(
        s.admin(&["peer", "delete", "nobody", "-y"]),
        3,
        "peer delete",
    );
    check(
        s.admin(&["token", "delete", "nobody", "--yes"]),
        3,
        "token delete",
    );
    // 4: conflict, on the server or on disk.
    check(s.admin(&["org", "create", "personal"]), 4, "org exists");
    check(
        s.node(&token, &["token", "start", "node-1", "web", "", "-"]),
        4,
        "peer name taken",
    );
    check(
        s.node(
            &token,
            &["token", "start", "node-4", "web", "", "node-1.conf"],
        ),
        4,
        "file exists",
    );
    // 5: authentication.
    let run = sixpn(
        s.work.path(),
        &["token", "list"],
        &[
            ("SIXPN_API_URL", s.server.api.as_str()),
            ("SIXPN_ADMIN_TOKEN", "wrong"),
        ],
    );
    check(run, 5, "wrong admin token");
    check(
        s.node(
            "sixpn_wg_nope",
            &["token", "start", "node-5", "web", "", "-"],
        ),
        5,
        "unknown WireGuard token",
    );
    let run = sixpn(
        s.work.path(),
        &["token", "start", "node-5", "web", "", "-"],
        &[("SIXPN_API_URL", s.server.api.as_str())],
    );
    check(run, 5, "no WireGuard token");
    // 6: unavailable: nothing listening, or the server failing.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = sixpn(
        s.work.path(),
        &["token", "list"],
        &[
            ("SIXPN_API_URL", nowhere.as_str()),
            ("SIXPN_ADMIN_TOKEN", "x"),
        ],
    );
    check(run, 6, "connection refused");
    for status in [500, 503] {
        let failing = fake_server(status, r#"{"error":"the store is unavailable"}"#, None);
        let run = sixpn(
            s.work.path(),
            &["token", "start", "node-6", "web", "", "-"],
            &[
                ("SIXPN_API_URL", failing.as_str()),
                ("SIXPN_WIREGUARD_TOKEN", "sixpn_wg_x"),
            ],
        );
        let stderr = run.stderr.clone();
        check(run, 6, &format!("HTTP {status}"));
        assert!(stderr.contains("the store is unavailable"), "{stderr}");
    }

    // The codes are documented where a user looks.
    let run = s.admin(&["--help"]).ok();
    for line in ["Exit codes:", "3  not found", "6  unavailable"] {
        assert!(run.stdout.contains(line), "{line}:\n{}", run.stdout);
    }
}

#[test]
fn completions_load_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "source <({:?} completions bash) && complete -p sixpn",
        env!("CARGO_BIN_EXE_sixpn")
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sixpn"), "{stdout}");
    for shell in ["zsh", "fish"] {
        let run = sixpn(dir.path(), &["completions", shell], &[]).ok();
        assert!(run.stdout.contains("ensure"), "{shell}: {}", run.stdout);
    }
    let run = sixpn(dir.path(), &["completions", "tcsh"], &[]);
    assert_eq!(code(&run), 2);
}

#[test]
fn token_ensure_converges_and_re_registers() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    let ensure = |args: &[&str]| {
        let mut full = vec!["token", "ensure"];
        full.extend_from_slice(args);
        s.node(&token, &full)
    };
    let file = s.work.path().join("sixpn0.conf");
    let args = [
        "--normalize-name",
        "Node-1.EU-West.compute.internal",
        "web",
        "",
        "sixpn0.conf",
        "--no-dns",
    ];

    // First run: registers, under the normalised name.
    ensure(&args).ok();
    let first = s.read_config("sixpn0.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    let peer = s
        .peer("personal", "node-1-eu-west-compute-internal")
        .expect("registered under the normalised name");
    assert_eq!(peer["pubkey"], first.private_key.public_key().to_base64());

    // Again: nothing changes, neither the file nor the server's key.
    let run = ensure(&args).ok();
    assert!(run.stderr.contains("nothing to do"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let peer = s
        .peer("personal", "node-1-eu-west-compute-internal")
        .unwrap();
    assert_eq!(peer["pubkey"], first.private_key.public_key().to_base64());

    // An admin deletes the peer: the next run registers it again.
    s.admin(&["peer", "delete", "node-1-eu-west-compute-internal"])
        .ok();
    ensure(&args).ok();
    let second = s.read_config("sixpn0.conf");
    assert_ne!(
        second.private_key.public_key(),
        first.private_key.public_key()
    );
    let peer = s
        .peer("personal", "node-1-eu-west-compute-internal")
        .expect("registered again");
    assert_eq!(peer["pubkey"], second.private_key.public_key().to_base64());

    // The file is lost (a new pod): the name exists, so it is re-keyed and keeps its address.
    std::fs::remove_file(&file).unwrap();
    ensure(&args).ok();
    let third = s.read_config("sixpn0.conf");
    assert_eq!(third.address, second.address);
    let peer = s
        .peer("personal", "node-1-eu-west-compute-internal")
        .unwrap();
    assert_eq!(peer["pubkey"], third.private_key.public_key().to_base64());

    // A file that is not a config is replaced, not trusted.
    std::fs::write(&file, "junk\n").unwrap();
    ensure(&args).ok();
    let fourth = s.read_config("sixpn0.conf");
    assert_eq!(fourth.address, second.address);

    // Without --normalize-name, NAME must already be a DNS label.
    let run = ensure(&["Node-1.example", "web"]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(run.fails().contains("--normalize-name"));
}

/// A destructive command on a terminal asks, and does nothing unless told yes.
#[test]
fn deletes_ask_on_a_terminal() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    s.node(&token, &["token", "start", "node-1", "web", "", "-"])
        .ok();
    // util-linux `script` runs the command on a pseudo-terminal, fed from our stdin.
    let on_terminal = |command: &str, input: &str| {
        let mut child = match Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .env("SIXPN_API_URL", s.server.api.as_str())
            .env("SIXPN_ADMIN_TOKEN", s.server.admin_token.as_str())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("note: `script` not runnable ({e}); skipping the terminal check");
                return None;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Some((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let bin = env!("CARGO_BIN_EXE_sixpn");
    let Some((status, shown)) = on_terminal(&format!("{bin} peer delete node-1"), "n\n") else {
        return;
    };
    assert!(
        shown.contains("delete peer node-1 of org personal? [y/N]"),
        "{shown}"
    );
    assert_eq!(status, Some(1), "{shown}");
    assert!(s.peer("personal", "node-1").is_some(), "kept after no");

    let (status, shown) = on_terminal(&format!("{bin} token delete k8s"), "y\n").unwrap();
    assert!(shown.contains("and its 1 live peer(s)"), "{shown}");
    assert_eq!(status, Some(0), "{shown}");
    assert!(s.peer("personal", "node-1").is_none(), "deleted after yes");
}

/// `--cacert` / `SIXPN_CA_CERT`: a server whose certificate a private CA signed is trusted with
/// the CA file, and refused without it with a line that says what to do.
#[test]
fn private_ca_is_trusted_with_cacert() {
    let pki = crate::support::pki::Pki::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key.serialize_der().into()),
        )
        .unwrap();
    let answer = serde_json::json!({
        "us": "fdaa:1:2::5", "them": "203.0.113.7", "key": GATEWAY_KEY,
        "endpoint": "203.0.113.7:51820", "dns": "fdaa:1:2::3", "allowed_ips": "fdaa:1:2::/48",
        "name": "node-1", "group": "web", "region": "local",
    });
    let url = fake_server(200, &answer.to_string(), Some(Arc::new(config)));
    let work = tempfile::tempdir().unwrap();
    let ca_path = pki.path("ca.pem").display().to_string();
    let env = [
        ("SIXPN_API_URL", url.as_str()),
        ("SIXPN_WIREGUARD_TOKEN", "sixpn_wg_x"),
    ];

    let run = sixpn(
        work.path(),
        &["token", "start", "node-1", "web", "", "-"],
        &env,
    );
    assert_eq!(code(&run), 1, "{}", run.stderr);
    let line = run.fails();
    assert!(
        line.contains("not trusted") && line.contains("--cacert"),
        "{line}"
    );

    let run = sixpn(
        work.path(),
        &[
            "token", "start", "node-1", "web", "", "-", "--cacert", &ca_path,
        ],
        &env,
    )
    .ok();
    let config = WgQuickConfig::parse(&run.stdout).expect("a config");
    assert_eq!(config.endpoint.to_string(), "203.0.113.7:51820");

    let mut with_env = env.to_vec();
    with_env.push(("SIXPN_CA_CERT", &ca_path));
    sixpn(
        work.path(),
        &["token", "start", "node-1", "web", "", "wg0.conf"],
        &with_env,
    )
    .ok();
    assert!(work.path().join("wg0.conf").exists());

    // A CA file that is not one: a usage error naming the file.
    let run = sixpn(
        work.path(),
        &[
            "token", "start", "node-1", "web", "", "-", "--cacert", "wg0.conf",
        ],
        &env,
    );
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(run.fails().contains("wg0.conf"));
}

/// The deploy scripts and `--normalize-name` turn machine names into the same peer names.
#[test]
fn shell_and_cli_normalise_names_alike() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/node/sixpn-node.sh");
    let long = format!("{}-b", "a".repeat(62));
    for raw in [
        "node-1",
        "Node-1.EU-West.compute.internal",
        "ip_10_0_0_1",
        "..a..",
        "nœud",
        "UPPER",
        " spaced name ",
        long.as_str(),
        &"x".repeat(100),
        "...",
    ] {
        let out = Command::new("sh")
            .arg(&script)
            .args(["--normalize", raw])
            .output()
            .expect("run sh");
        assert!(out.status.success(), "{raw:?}");
        let shell = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        let cli = sixpn::cli::normalize_name(raw)
            .map(|n| n.to_string())
            .unwrap_or_default();
        assert_eq!(shell, cli, "{raw:?}");
    }
}

/// Kills a child process on drop, so a failing test leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `deploy/node/sixpn-node.sh NAME web ""` running against the test server with wireguard-go, wg
/// and sixpn-wg-up stubbed (no root, no interface): wireguard-go makes its socket, `wg` prints
/// `wg_show` as the latest handshake, sixpn-wg-up logs each config it applies.
struct NodeScript {
    root: tempfile::TempDir,
    node: KillOnDrop,
}

impl NodeScript {
    fn spawn(s: &Setup, token: &str, raw_name: &str, wg_show: &str, env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let stubs = root.path().join("bin");
        std::fs::create_dir_all(&stubs).unwrap();
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        let stub = |name: &str, body: &str| {
            let path = stubs.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // wireguard-go -f IFACE: a UAPI socket that exists while it runs (at most two minutes).
        stub(
            "wireguard-go",
            r#"exec python3 -c 'import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); time.sleep(120)' "$SIXPN_WG_RUN_DIR/$2.sock""#,
        );
        stub("wg", &format!("printf 'key\\t%s\\n' \"{wg_show}\""));
        let applied = root.path().join("applied.log");
        stub(
            "sixpn-wg-up",
            &format!(r#"echo "$*" >> {:?}"#, applied.display().to_string()),
        );
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_sixpn")).parent().unwrap();
        let path = format!(
            "{}:{}:{}",
            stubs.display(),
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/node/sixpn-node.sh");
        let mut command = Command::new("sh");
        command
            .arg(&script)
            .args([raw_name, "web", ""])
            .env_clear()
            .env("PATH", &path)
            .env("SIXPN_API_URL", &s.server.api)
            .env("SIXPN_WIREGUARD_TOKEN", token)
            .env("SIXPN_CONF_DIR", root.path().join("conf"))
            .env("SIXPN_WG_RUN_DIR", root.path().join("run"))
            .env("SIXPN_CHECK_EVERY", "1")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.path().join("node.log")).unwrap());
        let node = KillOnDrop(command.spawn().expect("run sixpn-node"));
        NodeScript { root, node }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("node.log")).unwrap_or_default()
    }

    /// How many configs sixpn-wg-up applied.
    fn n_applied(&self) -> usize {
        std::fs::read_to_string(self.root.path().join("applied.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn config(&self) -> WgQuickConfig {
        let text = std::fs::read_to_string(self.root.path().join("conf/sixpn0.conf")).unwrap();
        WgQuickConfig::parse(&text).unwrap()
    }
}

/// The node loop of the DaemonSet and the Nomad job (deploy/node/sixpn-node.sh): it registers
/// under the normalised name, registers again after an admin deleted the peer, applies each new
/// config and nothing else, and deletes its peer on SIGTERM.
#[test]
fn node_script_re_registers_a_deleted_peer() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    // A handshake just now: the tunnel is never stale here.
    let mut script = NodeScript::spawn(&s, &token, "Node-7.Example.internal", "$(date +%s)", &[]);
    let n_in_step = || script.log().matches("nothing to do").count();
    let name = "node-7-example-internal";
    let n_applied = || script.n_applied();

    eventually(Duration::from_secs(20), "registered and applied", || {
        s.peer("personal", name).is_some() && n_applied() == 1
    });
    let first = s.peer("personal", name).unwrap();
    assert_eq!(first["group"], "web");

    s.admin(&["peer", "delete", name]).ok();
    eventually(
        Duration::from_secs(20),
        "registered again and applied",
        || s.peer("personal", name).is_some() && n_applied() == 2,
    );
    let second = s.peer("personal", name).unwrap();
    assert_ne!(second["pubkey"], first["pubkey"], "a fresh key");
    let config = script.config();
    assert_eq!(
        second["pubkey"].as_str().unwrap(),
        config.private_key.public_key().to_base64()
    );

    // In step: the next rounds find nothing to do and apply nothing.
    let seen = n_in_step();
    eventually(Duration::from_secs(20), "two rounds in step", || {
        n_in_step() >= seen + 2
    });
    assert_eq!(n_applied(), 2);

    // SIGTERM: the node deletes its own peer and exits cleanly.
    let pid = script.node.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = script.node.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(s.peer("personal", name).is_none(), "deregistered");
}

/// The WireGuard token in the environment of a child of `pid` (sixpn-node's `sleep` or
/// `sixpn token ensure`: what the running node uses), if one has it.
fn child_token(pid: u32) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(pid) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if let Some(token) = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("SIXPN_WIREGUARD_TOKEN="))
        {
            return Some(token.to_owned());
        }
    }
    None
}

/// issue 23: the node loop narrows the fleet token (the one every node's Secret holds) to its own
/// name at start. With the token it actually runs with, another node's peer cannot be re-keyed
/// (403) and keeps its key; the fleet token itself could.
#[test]
fn issue23_node_script_runs_with_a_token_narrowed_to_its_name() {
    let s = Setup::new();
    let fleet = s.mint(&["--name", "k8s", "--group", "web"]);
    s.node(&fleet, &["token", "start", "node-b", "web", "", "-"])
        .ok();
    let b = s.peer("personal", "node-b").unwrap();
    let script = NodeScript::spawn(&s, &fleet, "Node-A", "$(date +%s)", &[]);
    eventually(Duration::from_secs(20), "registered and applied", || {
        s.peer("personal", "node-a").is_some() && script.n_applied() == 1
    });
    let pid = script.node.0.id();
    let mut token = None;
    eventually(
        Duration::from_secs(20),
        "a child of sixpn-node with a token",
        || {
            token = child_token(pid);
            token.is_some()
        },
    );
    let token = token.unwrap();
    assert!(token.starts_with("sixpn_dt_"), "not narrowed: {token}");
    assert_ne!(token, fleet);

    let run = s.node(&token, &["token", "update", "node-b", "-"]);
    assert!(!run.output.status.success(), "{}", run.stdout);
    assert!(
        run.stderr.contains("limited to peer node-a"),
        "{}",
        run.stderr
    );
    assert_eq!(s.peer("personal", "node-b").unwrap()["pubkey"], b["pubkey"]);
    // Its own peer it may re-key; the fleet token may re-key node-b (what the docs warn about).
    s.node(&token, &["token", "update", "node-a", "-"]).ok();
    s.node(&fleet, &["token", "update", "node-b", "-"]).ok();
    assert_ne!(s.peer("personal", "node-b").unwrap()["pubkey"], b["pubkey"]);
}

/// No handshake with the gateway for SIXPN_STALE_AFTER seconds: the node re-keys (same address)
/// and applies the new config.
#[test]
fn node_script_re_keys_a_stale_tunnel() {
    let s = Setup::new();
    let token = s.mint(&["--name", "k8s", "--group", "web"]);
    // `wg` reports no handshake ever (0).
    let script = NodeScript::spawn(&s, &token, "node-8", "0", &[("SIXPN_STALE_AFTER", "2")]);
    eventually(Duration::from_secs(20), "registered and applied", || {
        s.peer("personal", "node-8").is_some() && script.n_applied() >= 1
    });
    let first = s.peer("personal", "node-8").unwrap();
    eventually(Duration::from_secs(20), "re-keyed and applied", || {
        script.n_applied() >= 2
    });
    assert!(
        script.log().contains("no handshake for"),
        "{}",
        script.log()
    );
    let now = s.peer("personal", "node-8").unwrap();
    assert_eq!(
        now["address"], first["address"],
        "re-keying keeps the address"
    );
    assert_ne!(now["pubkey"], first["pubkey"]);
}

/// issue 10: `token create --ephemeral` mints a token whose peers are all ephemeral, and
/// `token start --ephemeral` asks for one with a plain token; the audit log (`sixpn audit`)
/// shows both creations as ephemeral, by their tokens.
#[test]
fn issue10_ephemeral_tokens_and_peers_from_the_cli() {
    let s = Setup::new();
    let eph = s.mint(&["--name", "ci", "--ephemeral"]);
    let plain = s.mint(&["--name", "k8s"]);
    let tokens = s.admin(&["token", "list", "--json"]).ok().json();
    let flag = |name: &str| {
        tokens
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["ephemeral"]
            .clone()
    };
    assert_eq!(flag("ci"), true);
    assert_eq!(flag("k8s"), false);
    s.node(&eph, &["token", "start", "job-1", "ci", "local", "-"])
        .ok();
    s.node(
        &plain,
        &[
            "token",
            "start",
            "job-2",
            "web",
            "local",
            "-",
            "--ephemeral",
        ],
    )
    .ok();
    s.node(&plain, &["token", "start", "svc-1", "web", "local", "-"])
        .ok();
    let audit = s.admin(&["audit", "--json"]).ok().json();
    let created: Vec<(String, String, bool)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "peer_created")
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().contains("ephemeral"),
            )
        })
        .collect();
    assert_eq!(
        created,
        [
            ("svc-1".to_owned(), "k8s".to_owned(), false),
            ("job-2".to_owned(), "k8s".to_owned(), true),
            ("job-1".to_owned(), "ci".to_owned(), true),
        ]
    );
}
