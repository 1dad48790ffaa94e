//! The `sixpn` binary driven as a user would: a real `sixpn serve` child process, the CLI run as
//! another process with only environment variables and arguments, and the results checked against
//! the server's admin API, its DNS, the files on disk and `wg-quick strip` (issue 4).

use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;
use sixpn::wireguard::{PrivateKey, PublicKey, WgQuickConfig};

use crate::support::{Api, ServerProcess, dns_query, free_port};

/// Variables that would leak the developer's own setup into a test.
const CLEARED: [&str; 8] = [
    "SIXPN_API_URL",
    "SIXPN_ADMIN_TOKEN",
    "SIXPN_DATA_DIR",
    "SIXPN_ORG",
    "SIXPN_CONFIG",
    "SIXPN_WIREGUARD_TOKEN",
    "FLY_WIREGUARD_TOKEN",
    "RUST_LOG",
];

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
    let mut command = Command::new(env!("CARGO_BIN_EXE_sixpn"));
    command.args(args).current_dir(dir);
    for var in CLEARED {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run sixpn");
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
    assert_eq!(cells[cells.len() - 2], "2", "live peers: {k8s_row}");
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
        &["peer"],
        &["peer", "list"],
        &["peer", "show"],
        &["peer", "delete"],
        &["keygen"],
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
        "Examples:",
    ] {
        assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
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
