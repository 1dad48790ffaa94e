//! A throwaway PostgreSQL cluster (initdb in a temporary directory, run as the `postgres` user
//! on 127.0.0.1, never the machine's own server) that a test may stop and start again, with TLS
//! on when given a certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait::{eventually, eventually_async};

/// The cluster; stopped (fast shutdown) on drop.
pub struct Cluster {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    tls: bool,
    dir: tempfile::TempDir,
}

/// A PostgreSQL tool: on `PATH`, else in a Debian `/usr/lib/postgresql/*/bin`.
fn bin(tool: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        let dir = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        dir.filter_map(|e| e.ok())
            .map(|e| e.path().join("bin").join(tool))
            .find(|p| p.is_file())
    })
}

/// Runs `tool` as the `postgres` user.
fn as_postgres(tool: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(tool);
    command
}

impl Cluster {
    /// Creates and starts a cluster; with `tls` (a certificate and its key, PEM) it runs with
    /// `ssl=on`. `None`, with a note naming `what` is skipped, when initdb or the `postgres`
    /// user is missing.
    pub fn start(tls: Option<(&Path, &Path)>, what: &str) -> Option<Cluster> {
        let found = bin("initdb").filter(|_| {
            Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .is_ok_and(|out| out.status.success())
        });
        let Some(initdb) = found else {
            eprintln!("note: initdb/postgres or the postgres user missing; {what} skipped");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        if let Some((cert, key)) = tls {
            std::fs::copy(cert, dir.path().join("server.crt")).unwrap();
            std::fs::copy(key, dir.path().join("server.key")).unwrap();
            std::fs::set_permissions(
                dir.path().join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let out = as_postgres(&initdb)
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cluster = Cluster {
            child: None,
            port: super::free_port(),
            data,
            tls: tls.is_some(),
            dir,
        };
        cluster.start_again();
        Some(cluster)
    }

    /// Starts the server (again, after [`Cluster::stop`]) and waits until it listens.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let postgres = bin("postgres").expect("postgres next to initdb");
        let mut command = as_postgres(&postgres);
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ));
        if self.tls {
            command.args(["-c", "ssl=on"]);
            for (setting, file) in [
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                command.arg("-c").arg(format!(
                    "{setting}={}",
                    self.dir.path().join(file).display()
                ));
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        eventually(Duration::from_secs(30), "PostgreSQL listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Waits until the server accepts connections (it refuses them for a moment after it
    /// starts listening).
    pub async fn ready(&self) {
        use sqlx::Connection as _;
        let url = self.url("");
        eventually_async(Duration::from_secs(30), "PostgreSQL is ready", || {
            let url = url.clone();
            async move {
                let conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.ok();
                Ok(())
            }
        })
        .await;
    }

    /// Stops the server (a fast shutdown of this cluster only, by its data directory) and waits
    /// until it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pg_ctl = bin("pg_ctl").expect("pg_ctl next to initdb");
        let _ = as_postgres(&pg_ctl)
            .args(["stop", "-m", "fast", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A streaming hot standby of this (running) cluster: `pg_basebackup -R` into a new
    /// temporary directory, started on a port of its own. `None` (with a note naming `what`)
    /// when `pg_basebackup` is missing.
    pub fn standby(&self, what: &str) -> Option<Cluster> {
        let Some(basebackup) = bin("pg_basebackup") else {
            eprintln!("note: pg_basebackup missing; {what} skipped");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let out = as_postgres(&basebackup)
            .args(["-R", "-X", "stream", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut standby = Cluster {
            child: None,
            port: super::free_port(),
            data,
            tls: false,
            dir,
        };
        standby.start_again();
        Some(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote`, which waits until it is done).
    pub fn promote(&self) {
        let pg_ctl = bin("pg_ctl").expect("pg_ctl next to initdb");
        let out = as_postgres(&pg_ctl)
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` on this cluster's `postgres` database (e.g. `pg_wal_replay_pause()` on a
    /// standby).
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url("")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.ok();
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` followed by `params` (`?sslmode=…`).
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{params}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
