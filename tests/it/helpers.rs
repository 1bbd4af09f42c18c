//! The test harness: fresh databases, the app on a random port, the binary, a TCP proxy.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Connection;
use tessera::state::AppState;
use tessera::{Application, Config};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The environment variable that turns on the PostgreSQL half of the suite.
pub const POSTGRES_ENV: &str = "TESSERA_TEST_POSTGRES_URL";

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server URL from `TESSERA_TEST_POSTGRES_URL`; each test makes its own database.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend when `TESSERA_TEST_POSTGRES_URL` is set.
    pub fn postgres() -> Option<Self> {
        match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => Some(Self::Postgres(url)),
            _ => {
                eprintln!("{POSTGRES_ENV} is not set: PostgreSQL case skipped");
                None
            }
        }
    }
}

/// Runs each named `async fn name(backend: Backend)` once on SQLite and once on PostgreSQL
/// (when `TESSERA_TEST_POSTGRES_URL` is set), as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::helpers::Backend::postgres() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

/// A database that lives as long as the test: a temporary SQLite file, or a PostgreSQL
/// database with a random name, dropped afterwards.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres(server) => {
                let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let mut url = url::Url::parse(server).unwrap();
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    _dir: None,
                    postgres: Some((server.clone(), name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.postgres.take() {
            // Drop runs outside any runtime guarantee; use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The configuration tests start from: the given database, keys refreshed quickly.
pub fn test_config(db_url: &str) -> Config {
    let mut config = Config::load_with_env(None, [("TESSERA_DATABASE_URL", db_url)]).unwrap();
    config.keys.refresh = Duration::from_millis(200);
    config.database.max_connections = 4;
    config
}

/// Tessera running in this process on a random port.
pub struct TestApp {
    pub issuer: String,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts Tessera on `config` (its issuer is set to the bound address, plus `issuer_path`).
    pub async fn start_with(mut config: Config, issuer_path: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.issuer = format!("http://{addr}{issuer_path}");
        config.bind = addr.to_string();
        let issuer = config.issuer.clone();
        if std::env::var_os("TEST_LOG").is_some() {
            tessera::telemetry::init_logging(tessera::config::LogFormat::Text, "debug");
        }
        let app = Application::with_listener(config, listener).await.unwrap();
        let state = app.state().clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(app.run_until(async move { token.cancelled().await }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            issuer,
            state,
            client,
            stop,
            task: Some(task),
        }
    }

    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(test_config(&db.url), "").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Fetches the discovery document.
    pub async fn discovery(&self) -> serde_json::Value {
        let response = self.get("/.well-known/openid-configuration").await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Fetches the JWKS through `jwks_uri` from discovery.
    pub async fn jwks(&self) -> serde_json::Value {
        let uri = self.discovery().await["jwks_uri"]
            .as_str()
            .unwrap()
            .to_owned();
        let response = self.client.get(uri).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The kids in the JWKS, in the order served.
    pub async fn jwks_kids(&self) -> Vec<String> {
        self.jwks().await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The kid this instance signs with now.
    pub fn signing_kid(&self) -> String {
        self.state.keys.signer().unwrap().kid.clone()
    }

    /// Stops the server (graceful shutdown) and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until `check` holds, polling every 50 ms, for at most `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the `tessera` binary with `args` and `env` (the process environment's `TESSERA_*`
/// variables are removed first, so only what the test sets applies).
pub async fn run_tessera(args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command.args(args).current_dir(cwd).kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("tessera did not finish within 60 s")
        .unwrap()
}

/// A TCP proxy the test can cut and restore, standing between Tessera and PostgreSQL.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the connection closes at once
                    continue;
                }
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            cut,
            task,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
