//! The server under test: in process (`sixpn::serve::start`) or as a `sixpn serve` child
//! process, on 127.0.0.1 with fresh ports and [`ADMIN_TOKEN`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::free_port;
use super::wait::eventually;

/// The admin token of every server the tests start.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The configuration of an in-process server on `data_dir`: API and DNS on `127.0.0.1:0`,
/// [`ADMIN_TOKEN`], the database at `database_url` (default: SQLite in `data_dir`).
pub fn server_config(data_dir: &Path, database_url: Option<&str>) -> sixpn::config::Config {
    let mut config = sixpn::config::Config {
        data_dir: data_dir.to_owned(),
        database_url: database_url.map(str::to_owned),
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.dns.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config
}

/// Starts an in-process server with [`server_config`]; the error when it does not start.
pub async fn start_server_on(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<sixpn::serve::Running> {
    sixpn::serve::start(server_config(data_dir, database_url)).await
}

/// Starts an in-process server in a new temporary data directory (returned: it lives as long as
/// the server must).
pub async fn start_server(
    database_url: Option<&str>,
) -> (sixpn::serve::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = start_server_on(dir.path(), database_url)
        .await
        .expect("server starts");
    (running, dir)
}

/// How to run `sixpn serve` as a child process: `SIXPN_*` variables for a data directory, fresh
/// ports and [`ADMIN_TOKEN`], plus what a test adds.
#[derive(Clone)]
pub struct Serve {
    env: Vec<(String, String)>,
    removed: Vec<String>,
    args: Vec<String>,
    capture_stderr: bool,
    current_dir: Option<std::path::PathBuf>,
    umask: Option<u32>,
}

impl Serve {
    /// `sixpn serve` on `data_dir`, fresh ports, `RUST_LOG=warn`, stderr inherited.
    pub fn new(data_dir: &Path) -> Serve {
        let env = [
            ("SIXPN_DATA_DIR", data_dir.display().to_string()),
            ("SIXPN_API_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("SIXPN_DNS_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        Serve {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            // Only what a test sets reaches the server.
            removed: vec!["SIXPN_DATABASE_URL".into(), "SIXPN_CONFIG".into()],
            args: Vec::new(),
            capture_stderr: false,
            current_dir: None,
            umask: None,
        }
    }

    /// Runs it with this umask (e.g. 0: every mode bit a file is created with stays).
    pub fn umask(mut self, mask: u32) -> Serve {
        self.umask = Some(mask);
        self
    }

    /// Sets (or overrides) an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets each of `vars`.
    pub fn envs(self, vars: &[(&str, &str)]) -> Serve {
        vars.iter().fold(self, |serve, (k, v)| serve.env(k, v))
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: &str) -> Serve {
        self.removed.push(key.into());
        self
    }

    /// Adds command-line arguments after `serve`.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Serve {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs it in `dir` (default: the test's working directory).
    pub fn current_dir(mut self, dir: &Path) -> Serve {
        self.current_dir = Some(dir.to_owned());
        self
    }

    /// Puts stderr on a pipe, returned by [`ServerProcess::stop`].
    pub fn capture_stderr(mut self) -> Serve {
        self.capture_stderr = true;
        self
    }

    fn get(&self, key: &str) -> String {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .expect("set in Serve::new")
    }

    fn command(&self) -> Command {
        let mut command = match self.umask {
            // The shell sets the mask and becomes the server (same process).
            Some(mask) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_sixpn"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_sixpn")),
        };
        command.arg("serve").args(&self.args);
        for key in &self.removed {
            command.env_remove(key);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts it and waits until its API answers `/healthz`.
    pub fn spawn(self) -> ServerProcess {
        self.spawn_with(|_| {})
    }

    /// Starts it, lets `right_away` see the child before anything else happens (to close a
    /// pipe, say), and waits until its API answers `/healthz`.
    pub fn spawn_with(self, right_away: impl FnOnce(&mut Child)) -> ServerProcess {
        let child = self
            .command()
            .stderr(if self.capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn sixpn serve");
        let mut child = child;
        right_away(&mut child);
        let mut server = ServerProcess {
            child,
            api: format!("http://{}", self.get("SIXPN_API_LISTEN")),
            dns: self.get("SIXPN_DNS_LISTEN").parse().expect("addr"),
            admin_token: self.get("SIXPN_ADMIN_TOKEN"),
            how: self,
        };
        server.wait_ready();
        server
    }

    /// Runs it to its end, for a server that must refuse to start.
    pub fn output(self) -> Output {
        self.command().output().expect("run sixpn serve")
    }
}

/// A `sixpn serve` child process; killed (SIGKILL) on drop.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    /// The DNS address.
    pub dns: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// How it was started, to restart it the same way.
    how: Serve,
}

impl ServerProcess {
    /// Starts the binary with [`Serve::new`] for `data_dir` plus `extra` env, and waits until
    /// its API answers.
    pub fn spawn(data_dir: &Path, extra: &[(&str, &str)]) -> ServerProcess {
        Serve::new(data_dir).envs(extra).spawn()
    }

    /// Starts the binary again the same way (same data, same ports).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = self.how.clone().spawn();
    }

    /// Stops it with SIGTERM (a clean shutdown) and returns what it wrote to stderr (when
    /// captured, else empty).
    pub fn stop(mut self) -> String {
        use std::io::Read as _;
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        self.child.wait().unwrap();
        stderr
    }

    fn wait_ready(&mut self) {
        let url = format!("{}/healthz", self.api);
        let child = &mut self.child;
        eventually(
            Duration::from_secs(30),
            &format!("sixpn serve answers {url}"),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("sixpn serve exited early: {status}");
                }
                matches!(http_probe::get_ok(&url), Ok(true))
            },
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tiny blocking HTTP probe without a runtime (std only), for readiness checks.
mod http_probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// `true` when `url` (plain `http://host:port/path`) answers 200.
    pub fn get_ok(url: &str) -> std::io::Result<bool> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
}
