//! Throwaway databases: a SQLite file in a temporary folder, or a fresh PostgreSQL database on
//! the server `SIXPN_TEST_POSTGRES_URL` names, dropped afterwards.

use std::future::Future;

use sixpn::store::Store;

/// A throwaway database: a SQLite file in a temporary folder, or a PostgreSQL database.
pub struct TestDb {
    /// The URL to open.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

/// The PostgreSQL server URL for tests, if configured.
pub fn postgres_base_url() -> Option<String> {
    std::env::var("SIXPN_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

impl TestDb {
    /// A SQLite database in a new temporary folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("sixpn.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database on the configured server.
    pub async fn postgres(base: &str) -> TestDb {
        use sqlx::Connection;
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd).expect("random");
        let name = format!(
            "sixpn_test_{}",
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut conn = sqlx::PgConnection::connect(base)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = match base.rfind('/') {
            Some(i) if base[..i].contains("://") && i > base.find("://").unwrap() + 2 => {
                format!("{}/{name}", &base[..i])
            }
            _ => format!("{}/{name}", base.trim_end_matches('/')),
        };
        TestDb {
            url,
            _dir: None,
            pg: Some((base.to_owned(), name)),
        }
    }

    /// A fresh PostgreSQL database when `SIXPN_TEST_POSTGRES_URL` is set; `None`, with a note
    /// that `what` is skipped, when it is not.
    pub async fn postgres_if_configured(what: &str) -> Option<TestDb> {
        match postgres_base_url() {
            Some(base) => Some(TestDb::postgres(&base).await),
            None => {
                eprintln!("note: SIXPN_TEST_POSTGRES_URL not set; {what} skipped");
                None
            }
        }
    }

    /// On PostgreSQL: the server URL it was created on and the database's name.
    pub fn postgres_server(&self) -> Option<(&str, &str)> {
        self.pg
            .as_ref()
            .map(|(base, name)| (base.as_str(), name.as_str()))
    }

    /// Opens a store on this database.
    pub async fn open(&self) -> Store {
        Store::open(&self.url, "fdaa::/16".parse().unwrap())
            .await
            .expect("open store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = self.pg.take() {
            // Drop runs outside async; use a runtime of its own on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                })
            })
            .join();
        }
    }
}

/// Runs `test` against SQLite, then against PostgreSQL when configured.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    test(TestDb::sqlite()).await;
    match postgres_base_url() {
        Some(base) => test(TestDb::postgres(&base).await).await,
        None => eprintln!("note: SIXPN_TEST_POSTGRES_URL not set; PostgreSQL half skipped"),
    }
}
