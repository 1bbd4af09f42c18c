//! The soak driver (run by `bench/soak.sh`; see `bench/README.md`).
//!
//! Drives a mixed, realistic load against a running Tessera: discovery, JWKS, password
//! sign-ins, full authorization-code flows (authorize with a signed-in browser, then the code
//! exchange with PKCE), refreshes, userinfo, introspection and client credentials. First it
//! measures what the mix sustains flat out (`--probe-seconds`), then it paces the mix at
//! `--load` (default 0.7) of that for `--seconds`, and prints one JSON line per minute:
//! operations, p50/p99 latency, 5xx answers, other failures and the server's resident memory.
//! Exits non-zero if any answer was a 5xx or a request failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

const VERIFIER: &str = "soak-verifier-soak-verifier-soak-verifier-0123456789abcdef";
const REDIRECT_URI: &str = "http://127.0.0.1:1/cb";

/// The mix, in operations per hundred: mostly cheap reads and token traffic, a few
/// sign-ins (each an argon2 hash, the most expensive thing Tessera does).
const MIX: &[(Op, u32)] = &[
    (Op::Discovery, 14),
    (Op::Jwks, 20),
    (Op::Userinfo, 16),
    (Op::Introspect, 12),
    (Op::Refresh, 14),
    (Op::CodeFlow, 12),
    (Op::ClientCredentials, 11),
    (Op::SignIn, 1),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Discovery,
    Jwks,
    Userinfo,
    Introspect,
    Refresh,
    CodeFlow,
    ClientCredentials,
    SignIn,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Discovery => "discovery",
            Op::Jwks => "jwks",
            Op::Userinfo => "userinfo",
            Op::Introspect => "introspect",
            Op::Refresh => "refresh",
            Op::CodeFlow => "code_flow",
            Op::ClientCredentials => "client_credentials",
            Op::SignIn => "sign_in",
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: soak --issuer URL --client ID:SECRET --login USER:PASSWORD --pid PID\n            [--seconds S] [--probe-seconds S] [--load F] [--connections N] [--minute S]"
    );
    std::process::exit(2)
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }
    fn num(&self, name: &str, default: f64) -> f64 {
        self.get(name)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| usage()))
    }
}

#[derive(Clone)]
struct Target {
    issuer: String,
    client_id: String,
    secret: String,
    user: String,
    password: String,
}

/// What one window (a minute) saw.
struct Window {
    histogram: Histogram<u64>,
    /// The same, per operation.
    by_op: std::collections::BTreeMap<&'static str, Histogram<u64>>,
    server_errors: u64,
    failures: u64,
    first_failure: Option<String>,
}

impl Window {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 120_000_000, 3).unwrap(),
            by_op: std::collections::BTreeMap::new(),
            server_errors: 0,
            failures: 0,
            first_failure: None,
        }
    }
}

struct Shared {
    windows: std::sync::Mutex<Vec<Window>>,
    started: Instant,
    window: Duration,
    /// How many windows the run has; an operation that ends after the deadline counts in
    /// the last one.
    last_window: usize,
    stop: AtomicBool,
    next_op: AtomicU64,
}

impl Shared {
    fn record(&self, op: Op, outcome: Result<(), (bool, String)>, took: Duration) {
        let index = ((self.started.elapsed().as_secs_f64() / self.window.as_secs_f64()) as usize)
            .min(self.last_window);
        let mut windows = self.windows.lock().unwrap();
        while windows.len() <= index {
            windows.push(Window::new());
        }
        let w = &mut windows[index];
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                w.histogram.record(micros).ok();
                w.by_op
                    .entry(op.name())
                    .or_insert_with(|| Histogram::new_with_bounds(1, 120_000_000, 3).unwrap())
                    .record(micros)
                    .ok();
            }
            Err((server_error, what)) => {
                if server_error {
                    w.server_errors += 1;
                } else {
                    w.failures += 1;
                }
                w.first_failure.get_or_insert(what);
            }
        }
    }

    /// The next operation of the mix: a fixed interleaving, so every window sees the same mix.
    fn next(&self) -> Op {
        static SCHEDULE: std::sync::OnceLock<Vec<Op>> = std::sync::OnceLock::new();
        let schedule = SCHEDULE.get_or_init(|| {
            // Each op's share spread evenly over the cycle, not one run of 20 JWKS fetches.
            let total: u32 = MIX.iter().map(|(_, w)| w).sum();
            let mut slots: Vec<(f64, Op)> = MIX
                .iter()
                .flat_map(|(op, weight)| {
                    let step = f64::from(total) / f64::from(*weight);
                    (0..*weight).map(move |i| ((f64::from(i) + 0.5) * step, *op))
                })
                .collect();
            slots.sort_by(|a, b| a.0.total_cmp(&b.0));
            slots.into_iter().map(|(_, op)| op).collect()
        });
        let n = self.next_op.fetch_add(1, Ordering::Relaxed) as usize;
        schedule[n % schedule.len()]
    }
}

/// One simulated relying party and its user: a signed-in browser for the authorization
/// endpoint, the latest access token and a refresh chain.
struct Worker {
    target: Target,
    browser: reqwest::Client,
    api: reqwest::Client,
    access_token: String,
    refresh_token: String,
}

type Outcome = Result<(), (bool, String)>;

fn check(what: &str, status: reqwest::StatusCode, expected: u16) -> Outcome {
    if status.as_u16() == expected {
        Ok(())
    } else {
        Err((status.is_server_error(), format!("{what}: {status}")))
    }
}

fn transport(what: &str, e: &reqwest::Error) -> (bool, String) {
    (false, format!("{what}: {e}"))
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

impl Worker {
    async fn new(target: Target) -> Self {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let api = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut worker = Self {
            target,
            browser,
            api,
            access_token: String::new(),
            refresh_token: String::new(),
        };
        // Sign the browser in and approve the client once (consent is then remembered).
        let iss = worker.target.issuer.clone();
        let page = worker
            .browser
            .get(format!("{iss}/login"))
            .send()
            .await
            .unwrap();
        let csrf = csrf_of(&page.text().await.unwrap());
        let signed = worker
            .browser
            .post(format!("{iss}/login"))
            .form(&[
                ("username", worker.target.user.as_str()),
                ("password", worker.target.password.as_str()),
                ("csrf_token", &csrf),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            signed.status().as_u16(),
            303,
            "soak: the set-up sign-in failed"
        );
        let first = worker
            .browser
            .get(worker.authorize_url())
            .send()
            .await
            .unwrap();
        if first.status().as_u16() == 200 {
            let html = first.text().await.unwrap();
            let request = html
                .split("name=\"request\" value=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_owned();
            worker
                .browser
                .post(format!("{iss}/authorize/consent"))
                .form(&[
                    ("csrf_token", csrf_of(&html).as_str()),
                    ("request", &request),
                    ("decision", "allow"),
                ])
                .send()
                .await
                .unwrap();
        }
        worker
            .code_flow()
            .await
            .unwrap_or_else(|(_, e)| panic!("soak: the set-up code flow failed: {e}"));
        worker
    }

    fn authorize_url(&self) -> String {
        let challenge = tessera::crypto::b64url(tessera::crypto::sha256(VERIFIER.as_bytes()));
        let mut url = url::Url::parse(&format!("{}/authorize", self.target.issuer)).unwrap();
        url.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", self.target.client_id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid profile email offline_access"),
            ("state", "soak"),
            ("nonce", "soak"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        url.to_string()
    }

    fn token_request(&self) -> reqwest::RequestBuilder {
        self.api
            .post(format!("{}/token", self.target.issuer))
            .basic_auth(&self.target.client_id, Some(&self.target.secret))
    }

    /// Takes the tokens of a token response.
    async fn keep_tokens(&mut self, what: &str, response: reqwest::Response) -> Outcome {
        check(what, response.status(), 200)?;
        let body: Value = response.json().await.map_err(|e| transport(what, &e))?;
        match (
            body["access_token"].as_str(),
            body["refresh_token"].as_str(),
        ) {
            (Some(at), Some(rt)) => {
                self.access_token = at.to_owned();
                self.refresh_token = rt.to_owned();
                Ok(())
            }
            _ => Err((false, format!("{what}: no tokens in {body}"))),
        }
    }

    /// The authorization request with the signed-in browser, then the code exchange.
    async fn code_flow(&mut self) -> Outcome {
        let answer = self
            .browser
            .get(self.authorize_url())
            .send()
            .await
            .map_err(|e| transport("authorize", &e))?;
        check("authorize", answer.status(), 303)?;
        let location = answer
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let code = url::Url::parse(&location)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| (false, format!("authorize: no code in {location}")))?;
        let response = self
            .token_request()
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .map_err(|e| transport("exchange", &e))?;
        self.keep_tokens("exchange", response).await
    }

    async fn run(&mut self, op: Op) -> Outcome {
        let iss = self.target.issuer.clone();
        match op {
            Op::Discovery | Op::Jwks => {
                let path = if op == Op::Discovery {
                    "/.well-known/openid-configuration"
                } else {
                    "/.well-known/jwks.json"
                };
                let r = self
                    .api
                    .get(format!("{iss}{path}"))
                    .send()
                    .await
                    .map_err(|e| transport(path, &e))?;
                check(path, r.status(), 200)?;
                r.bytes().await.map_err(|e| transport(path, &e))?;
                Ok(())
            }
            Op::Userinfo => {
                let r = self
                    .api
                    .get(format!("{iss}/userinfo"))
                    .bearer_auth(&self.access_token)
                    .send()
                    .await
                    .map_err(|e| transport("userinfo", &e))?;
                check("userinfo", r.status(), 200)?;
                r.bytes().await.map_err(|e| transport("userinfo", &e))?;
                Ok(())
            }
            Op::Introspect => {
                let r = self
                    .api
                    .post(format!("{iss}/introspect"))
                    .basic_auth(&self.target.client_id, Some(&self.target.secret))
                    .form(&[("token", self.access_token.as_str())])
                    .send()
                    .await
                    .map_err(|e| transport("introspect", &e))?;
                check("introspect", r.status(), 200)?;
                let body: Value = r.json().await.map_err(|e| transport("introspect", &e))?;
                if body["active"] == true {
                    Ok(())
                } else {
                    Err((false, format!("introspect: {body}")))
                }
            }
            Op::Refresh => {
                let response = self
                    .token_request()
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", self.refresh_token.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(|e| transport("refresh", &e))?;
                self.keep_tokens("refresh", response).await
            }
            Op::CodeFlow => self.code_flow().await,
            Op::ClientCredentials => {
                let r = self
                    .token_request()
                    .form(&[("grant_type", "client_credentials"), ("scope", "api:read")])
                    .send()
                    .await
                    .map_err(|e| transport("client_credentials", &e))?;
                check("client_credentials", r.status(), 200)?;
                r.bytes()
                    .await
                    .map_err(|e| transport("client_credentials", &e))?;
                Ok(())
            }
            Op::SignIn => {
                // A new visitor: no cookies of its own yet.
                let page = self
                    .api
                    .get(format!("{iss}/login"))
                    .send()
                    .await
                    .map_err(|e| transport("login form", &e))?;
                check("login form", page.status(), 200)?;
                let cookie = page
                    .headers()
                    .get("set-cookie")
                    .and_then(|c| c.to_str().ok())
                    .and_then(|c| c.split(';').next())
                    .unwrap_or_default()
                    .to_owned();
                let html = page.text().await.map_err(|e| transport("login form", &e))?;
                let r = self
                    .api
                    .post(format!("{iss}/login"))
                    .header("cookie", cookie)
                    .form(&[
                        ("username", self.target.user.as_str()),
                        ("password", self.target.password.as_str()),
                        ("csrf_token", &csrf_of(&html)),
                    ])
                    .send()
                    .await
                    .map_err(|e| transport("sign-in", &e))?;
                check("sign-in", r.status(), 303)
            }
        }
    }
}

/// Runs the mix with `connections` workers for `duration`, paced at `rate` operations/s in
/// all (flat out when `None`). Returns the windows.
async fn drive(
    workers: Vec<Worker>,
    duration: Duration,
    window: Duration,
    rate: Option<f64>,
) -> (Vec<Worker>, Vec<Window>) {
    let shared = Arc::new(Shared {
        windows: std::sync::Mutex::new(Vec::new()),
        started: Instant::now(),
        window,
        last_window: ((duration.as_secs_f64() / window.as_secs_f64()).ceil() as usize).max(1) - 1,
        stop: AtomicBool::new(false),
        next_op: AtomicU64::new(0),
    });
    let n = workers.len();
    let mut tasks = Vec::new();
    for mut worker in workers {
        let shared = shared.clone();
        let pace = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut ticker = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let deadline = shared.started + duration;
            while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let op = shared.next();
                let begin = Instant::now();
                let outcome = worker.run(op).await;
                shared.record(op, outcome, begin.elapsed());
            }
            worker
        }));
    }
    let mut back = Vec::new();
    for t in tasks {
        back.push(t.await.unwrap());
    }
    let windows = std::mem::take(&mut *shared.windows.lock().unwrap());
    (back, windows)
}

fn rss_mb(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 102.4).round() / 10.0)
}

fn main() {
    let a = Args(std::env::args().skip(1).collect());
    let split = |name: &str| {
        a.get(name)
            .and_then(|v| v.split_once(':').map(|(x, y)| (x.to_owned(), y.to_owned())))
            .unwrap_or_else(|| usage())
    };
    let (client_id, secret) = split("--client");
    let (user, password) = split("--login");
    let target = Target {
        issuer: a.get("--issuer").unwrap_or_else(|| usage()),
        client_id,
        secret,
        user,
        password,
    };
    let pid = a.get("--pid").unwrap_or_else(|| usage());
    let seconds = a.num("--seconds", 600.0);
    let probe_seconds = a.num("--probe-seconds", 20.0);
    let load = a.num("--load", 0.7);
    let connections = a.num("--connections", 16.0) as usize;
    let minute = Duration::from_secs_f64(a.num("--minute", 60.0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut workers = Vec::new();
        for _ in 0..connections {
            workers.push(Worker::new(target.clone()).await);
        }
        // What the mix sustains flat out.
        let probe = Duration::from_secs_f64(probe_seconds);
        let (workers, windows) = drive(workers, probe, probe, None).await;
        let done: u64 = windows.iter().map(|w| w.histogram.len()).sum();
        let capacity = done as f64 / probe_seconds;
        let rate = capacity * load;
        println!(
            "{}",
            json!({"phase": "probe", "ops_per_s": capacity.round(), "soak_rate": rate.round(),
                   "connections": connections, "rss_mb": rss_mb(&pid)})
        );
        // The soak, reported per minute. Memory is sampled at each minute's end.
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sampler = {
            let samples = samples.clone();
            let pid = pid.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(minute);
                t.tick().await;
                loop {
                    t.tick().await;
                    samples.lock().unwrap().push(rss_mb(&pid));
                }
            })
        };
        let (_, windows) = drive(
            workers,
            Duration::from_secs_f64(seconds),
            minute,
            Some(rate),
        )
        .await;
        sampler.abort();
        let samples = samples.lock().unwrap().clone();
        let mut bad = 0;
        for (i, w) in windows.iter().enumerate() {
            bad += w.server_errors + w.failures;
            let p99_by_op: serde_json::Map<String, Value> = w
                .by_op
                .iter()
                .map(|(op, h)| {
                    (
                        (*op).to_owned(),
                        json!(h.value_at_quantile(0.99) as f64 / 1000.0),
                    )
                })
                .collect();
            println!(
                "{}",
                json!({
                    "phase": "soak", "minute": i + 1,
                    "ops": w.histogram.len(),
                    "ops_per_s": (w.histogram.len() as f64 / minute.as_secs_f64()).round(),
                    "p50_ms": w.histogram.value_at_quantile(0.50) as f64 / 1000.0,
                    "p99_ms": w.histogram.value_at_quantile(0.99) as f64 / 1000.0,
                    "max_ms": w.histogram.max() as f64 / 1000.0,
                    "p99_ms_by_op": p99_by_op,
                    "5xx": w.server_errors,
                    "failures": w.failures,
                    "first_failure": w.first_failure,
                    "rss_mb": samples.get(i).copied().unwrap_or_else(|| rss_mb(&pid)),
                })
            );
        }
        if bad > 0 {
            eprintln!("soak: {bad} requests failed");
            std::process::exit(1);
        }
    });
}
