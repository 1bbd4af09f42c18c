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
    pub outbox: std::path::PathBuf,
    _outbox_dir: tempfile::TempDir,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts Tessera on `config` (its issuer is set to the bound address, plus `issuer_path`).
    pub async fn start_with(config: Config, issuer_path: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config, issuer_path).await
    }

    /// As [`TestApp::start_with`], on a listener the test bound first (to know the URL).
    pub async fn start_on(listener: TcpListener, mut config: Config, issuer_path: &str) -> Self {
        let addr = listener.local_addr().unwrap();
        config.issuer = format!("http://{addr}{issuer_path}");
        Self::serve(listener, config).await
    }

    /// A second replica of `self` on the same database: the same issuer (as behind a load
    /// balancer), its own port; [`TestApp::url`] reaches this replica.
    pub async fn replica(&self, db: &TestDb) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = test_config(&db.url);
        config.issuer.clone_from(&self.state.config.issuer);
        let mut app = Self::serve(listener, config).await;
        app.issuer = format!("http://{addr}");
        app
    }

    async fn serve(listener: TcpListener, mut config: Config) -> Self {
        let addr = listener.local_addr().unwrap();
        config.bind = addr.to_string();
        let issuer = config.issuer.clone();
        let outbox_dir = tempfile::tempdir().unwrap();
        let outbox = outbox_dir.path().to_owned();
        config.mail.outbox = outbox.display().to_string();
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
            outbox,
            _outbox_dir: outbox_dir,
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

    /// `GET /userinfo` with `token` as the bearer.
    pub async fn userinfo(&self, token: &str) -> reqwest::Response {
        let request = self.client.get(self.url("/userinfo")).bearer_auth(token);
        request.send().await.unwrap()
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

    /// A new browser (its own cookie jar) on this app.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.issuer)
    }

    /// The newest link in an email to `to` that starts with `issuer + path`, waiting up to
    /// 5 s for the message (mail is sent in the background).
    pub async fn link_in_email(&self, to: &str, path: &str) -> String {
        let prefix = format!("{}{path}", self.issuer);
        let mut found = None;
        let arrived = eventually(Duration::from_secs(5), || {
            let hit = newest_link(&self.outbox, to, &prefix);
            let ok = hit.is_some();
            found = hit;
            async move { ok }
        })
        .await;
        assert!(arrived, "no email to {to} with a link to {path}");
        found.unwrap()
    }

    /// How many emails were sent to `to`.
    pub fn emails_to(&self, to: &str) -> usize {
        read_emails(&self.outbox)
            .into_iter()
            .filter(|(_, m)| recipient_is(m, to))
            .count()
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

/// Asserts that a run of the binary succeeded, showing its stderr when it did not.
pub fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JSON a successful run of the binary printed (`--json`); asserts the success first.
pub fn json_output(out: &Output) -> serde_json::Value {
    assert_succeeded(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Stops a `tessera serve` child with SIGTERM; returns its exit status (within 15 s).
pub async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
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

/// A browser: a reqwest client with its own cookie jar and redirects off.
pub struct Browser {
    pub client: reqwest::Client,
    base: String,
}

/// A page as a test sees it.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` of a redirect, without the issuer.
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub fn csrf(&self) -> String {
        csrf_in(&self.body).unwrap_or_else(|| panic!("no csrf_token in page: {}", self.body))
    }

    /// The value of the hidden field `name`; panics when the page has none.
    pub fn field(&self, name: &str) -> String {
        field_in(&self.body, name).unwrap_or_else(|| panic!("no {name} in page: {}", self.body))
    }

    pub fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// The sessions listed on the account page: (stored id, is this device).
    pub fn sessions(&self) -> Vec<(String, bool)> {
        self.body
            .split("<li>")
            .skip(1)
            .filter_map(|item| {
                let marker = "name=\"session\" value=\"";
                let start = item.find(marker)? + marker.len();
                let id = item[start..].split('"').next()?.to_owned();
                Some((id, item.contains("this device")))
            })
            .collect()
    }

    /// The first listed session that is not this browser's.
    pub fn other_session(&self) -> String {
        self.sessions()
            .into_iter()
            .find(|(_, current)| !current)
            .map(|(id, _)| id)
            .expect("another session")
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            client,
            base: base.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        Self::page(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::page(
            self.client
                .post(self.url(path))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Fetches `page` for its CSRF token, then posts `form` (plus the token) to `action`.
    pub async fn submit(&self, page: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let token = self.get(page).await.csrf();
        let mut fields = form.to_vec();
        fields.push(("csrf_token", &token));
        self.post(action, &fields).await
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> Page {
        self.submit(
            "/register",
            "/register",
            &[
                ("username", username),
                ("email", email),
                ("name", "Test Person"),
                ("password", password),
            ],
        )
        .await
    }

    pub async fn sign_in(&self, login: &str, password: &str) -> Page {
        self.submit(
            "/login",
            "/login",
            &[("username", login), ("password", password)],
        )
        .await
    }

    /// Signs in on the sign-in page a redirect sent this browser to (`/login?return_to=…`),
    /// passing its `return_to` on as the form does.
    pub async fn sign_in_at(&self, location: &str, login: &str, password: &str) -> Page {
        let return_to = query_of(&format!("http://x{location}"))
            .get("return_to")
            .cloned()
            .unwrap_or_default();
        let token = self.get(location).await.csrf();
        self.post(
            "/login",
            &[
                ("username", login),
                ("password", password),
                ("return_to", &return_to),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Whether this browser is signed in (the account page answers rather than redirecting).
    pub async fn signed_in(&self) -> bool {
        self.get("/account").await.status == 200
    }

    /// Posts a form from the account page (where the CSRF token comes from).
    pub async fn account_action(&self, action: &str, form: &[(&str, &str)]) -> Page {
        self.submit("/account", action, form).await
    }
}

pub fn csrf_in(html: &str) -> Option<String> {
    field_in(html, "csrf_token")
}

/// The raw `value` of the first form field called `name` (as rendered, not unescaped).
pub fn field_in(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// Every `.eml` in the outbox, oldest first, with quoted-printable soft breaks undone.
fn read_emails(outbox: &std::path::Path) -> Vec<(std::time::SystemTime, String)> {
    let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(outbox)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .filter_map(|e| {
                    let modified = e.metadata().ok()?.modified().ok()?;
                    let raw = std::fs::read_to_string(e.path()).ok()?;
                    Some((
                        modified,
                        raw.replace("=\r\n", "")
                            .replace("=\n", "")
                            .replace("=3D", "="),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    mails.sort_by_key(|(t, _)| *t);
    mails
}

fn recipient_is(mail: &str, to: &str) -> bool {
    mail.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("to:")
            && l.to_ascii_lowercase().contains(&to.to_ascii_lowercase())
    })
}

fn newest_link(outbox: &std::path::Path, to: &str, prefix: &str) -> Option<String> {
    read_emails(outbox)
        .into_iter()
        .rev()
        .filter(|(_, m)| recipient_is(m, to))
        .find_map(|(_, m)| {
            let start = m.find(prefix)?;
            let end = m[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                .map_or(m.len(), |e| e + start);
            Some(m[start..end].to_owned())
        })
}

/// A registered client, for the protocol tests.
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

impl TestApp {
    /// Registers a client directly (the CLI is tested on its own).
    pub async fn client(&self, public: bool, grant_types: &[&str], scopes: &[&str]) -> TestClient {
        let redirect_uri = "https://app.example/cb".to_owned();
        let spec = tessera::oidc::clients::Spec {
            name: "Test App".into(),
            public,
            redirect_uris: vec![redirect_uri.clone()],
            post_logout_redirect_uris: vec!["https://app.example/bye".into()],
            grant_types: grant_types.iter().map(|s| (*s).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        let (client, secret) = tessera::oidc::clients::register(&self.state.store, spec)
            .await
            .unwrap();
        TestClient {
            id: client.id,
            secret,
            redirect_uri,
        }
    }

    /// POSTs a form to the token endpoint with HTTP Basic client authentication.
    pub async fn token(
        &self,
        client: &TestClient,
        form: &[(&str, &str)],
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut request = self.client.post(self.url("/token")).form(form);
        request = match &client.secret {
            Some(secret) => request.basic_auth(&client.id, Some(secret)),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
            headers,
        )
    }

    /// A back-channel POST (revocation, introspection) with Basic authentication.
    pub async fn backchannel(
        &self,
        path: &str,
        client: &TestClient,
        form: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some(secret) = &client.secret {
            request = request.basic_auth(&client.id, Some(secret));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }
}

/// PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = tessera::crypto::b64url(tessera::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameters of a redirect's Location.
pub fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Browser {
    /// Follows an authorization request to its end, signing in and approving as needed;
    /// returns the final redirect to the client.
    pub async fn authorize(&self, query: &[(&str, &str)], login: Option<(&str, &str)>) -> String {
        let mut url = url::Url::parse(&format!("{}/authorize", self.base)).unwrap();
        url.query_pairs_mut().extend_pairs(query);
        let mut page = self.get(url.as_str()).await;
        for _ in 0..6 {
            assert!(
                page.status == 303 || page.status == 200 || page.status == 302,
                "{}: {}",
                page.status,
                page.body
            );
            if page.status == 200 {
                // The consent page.
                assert!(
                    page.has("Allow"),
                    "expected the consent page: {}",
                    page.body
                );
                let request = page.field("request");
                page = self
                    .post(
                        "/authorize/consent",
                        &[
                            ("csrf_token", &page.csrf()),
                            ("request", &request),
                            ("decision", "allow"),
                        ],
                    )
                    .await;
                continue;
            }
            let location = page.location();
            if location.starts_with("https://app.example") {
                return location;
            }
            if location.starts_with("/login") {
                let (user, password) = login.expect("a sign-in was needed");
                page = self.sign_in_at(&location, user, password).await;
                continue;
            }
            page = self.get(&location).await;
        }
        panic!("the authorization did not finish");
    }
}

impl Browser {
    /// Walks a browser journey across any number of apps: follows redirects, signs in on any
    /// sign-in page with the credentials given for its origin, and presses "Allow" on consent
    /// pages, until a URL satisfies `stop` or a page is neither. Returns the last URL and page.
    pub async fn walk(
        &self,
        start: &str,
        logins: &[(&str, &str, &str)],
        stop: impl Fn(&str) -> bool,
    ) -> (String, Page) {
        let mut url = start.to_owned();
        let mut page = self.get(&url).await;
        for _ in 0..20 {
            if (300..400).contains(&page.status) {
                let next = url::Url::parse(&url)
                    .unwrap()
                    .join(&page.location())
                    .unwrap()
                    .to_string();
                if stop(&next) {
                    return (next, page);
                }
                url = next;
                page = self.get(&url).await;
                continue;
            }
            let origin = url::Url::parse(&url)
                .unwrap()
                .origin()
                .ascii_serialization();
            if page.status == 200
                && page.has("action=\"")
                && page.has("/login\"")
                && page.has("name=\"password\"")
            {
                let (_, user, password) = logins
                    .iter()
                    .find(|(o, _, _)| *o == origin)
                    .unwrap_or_else(|| panic!("no login for {origin}"));
                let return_to = page
                    .body
                    .split("name=\"return_to\" value=\"")
                    .nth(1)
                    .map(|r| {
                        r.split('"')
                            .next()
                            .unwrap()
                            .replace("&amp;", "&")
                            .replace("&#x3d;", "=")
                            .replace("&#61;", "=")
                    })
                    .unwrap_or_default();
                let action = page
                    .body
                    .split("<form method=\"post\" action=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned();
                let target = format!("{origin}{action}");
                let csrf = page.csrf();
                page = Self::page(
                    self.client
                        .post(&target)
                        .form(&[
                            ("username", *user),
                            ("password", *password),
                            ("return_to", &return_to),
                            ("csrf_token", &csrf),
                        ])
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                url = target;
                continue;
            }
            if page.status == 200 && page.has("name=\"decision\"") {
                let request = page.field("request");
                let target = format!(
                    "{origin}{}",
                    page.body
                        .split("<form method=\"post\" action=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                );
                let csrf = page.csrf();
                page = Self::page(
                    self.client
                        .post(&target)
                        .form(&[
                            ("csrf_token", csrf.as_str()),
                            ("request", &request),
                            ("decision", "allow"),
                        ])
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                url = target;
                continue;
            }
            return (url, page);
        }
        panic!("the journey did not end: {url}");
    }
}
