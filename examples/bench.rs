//! The benchmark driver (run by `bench/run.sh`; see `bench/README.md`).
//!
//! `bench load …` drives one scenario against a server from this separate process with N
//! concurrent connections (one HTTP/1.1 connection per worker), for a bounded time and
//! number of requests, and prints one JSON line: requests/s and p50/p99 latency from an HDR
//! histogram. Scenarios that need two requests (a password sign-in fetches the form first;
//! the browser flow asks `/authorize` for a code, then exchanges it) time the whole operation. `bench limit …` measures the physical limits on this machine:
//! RS256 signatures/s with the signing code Tessera uses, argon2id hashes/s at Tessera's
//! parameters, the latency tail of a fixed CPU job run paced (the machine's own p99), and a
//! bare axum handler serving a static document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

fn usage() -> ! {
    eprintln!(
        "usage:\n  bench load --scenario get|post|bearer|exchange|refresh|flow|login --url URL [--connections N] [--seconds S] [--max-requests N] [--rate R]\n             [--basic ID:SECRET] [--form 'a=1&b=2'] [--token T] [--items FILE] [--login USER:PASSWORD] [--cookie C --token-url URL] [--label L]\n  bench limit rsa|argon2|jitter [--seconds S] [--threads N] [--label L]\n  bench ceiling --port P\n  bench prepare --issuer URL --client ID:SECRET --login USER:PASSWORD --codes N --refresh N --out DIR"
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
    fn num(&self, name: &str, default: u64) -> u64 {
        self.get(name)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| usage()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        usage()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = Args(args);
    match command.as_str() {
        "load" => rt.block_on(load(&a)),
        "limit" => limit(&a),
        "ceiling" => rt.block_on(ceiling(&a)),
        "prepare" => rt.block_on(prepare(&a)),
        _ => usage(),
    }
}

/// Work items consumed once each (codes) or per connection (refresh tokens).
struct Items {
    list: Mutex<Vec<String>>,
}

impl Items {
    async fn take(&self) -> Option<String> {
        self.list.lock().await.pop()
    }
}

async fn load(a: &Args) {
    let scenario = a.get("--scenario").unwrap_or_else(|| usage());
    let url = a.get("--url").unwrap_or_else(|| usage());
    let connections = a.num("--connections", 16);
    let seconds = a.num("--seconds", 10);
    let max_requests = a.num("--max-requests", 5_000_000);
    // --rate R paces the whole load at R requests/s (spread over the connections), for loads
    // measured beside another one (the login storm); without it every connection goes flat out.
    let pace = a.get("--rate").map(|r| {
        let rate: f64 = r.parse().unwrap_or_else(|_| usage());
        Duration::from_secs_f64(connections as f64 / rate)
    });
    let basic = a.get("--basic").map(|b| {
        let (id, secret) = b.split_once(':').unwrap_or_else(|| usage());
        (id.to_owned(), secret.to_owned())
    });
    let form = a.get("--form").unwrap_or_default();
    let token = a.get("--token");
    let login = a.get("--login");
    // The browser flow: the signed-in session's cookies, and where the code is exchanged.
    let cookie = a.get("--cookie").unwrap_or_default();
    let token_url = a.get("--token-url").unwrap_or_default();
    let items: Arc<Items> = Arc::new(Items {
        list: Mutex::new(match a.get("--items") {
            Some(file) => serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap(),
            None => Vec::new(),
        }),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (scenario, url, basic, form, token, login) = (
            scenario.clone(),
            url.clone(),
            basic.clone(),
            form.clone(),
            token.clone(),
            login.clone(),
        );
        let (cookie, token_url) = (cookie.clone(), token_url.clone());
        let (items, stop, issued, errors) =
            (items.clone(), stop.clone(), issued.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            // A refresh chain: this connection's current refresh token.
            let mut chain: Option<String> = None;
            let mut ticker = pace.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
                    break;
                }
                let begin = Instant::now();
                let ok = match scenario.as_str() {
                    "get" => client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    "bearer" => client
                        .get(&url)
                        .bearer_auth(token.as_deref().unwrap_or_default())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    "post" => {
                        let req = form_post(&client, &url, form.clone(), basic.as_ref());
                        req.send().await.is_ok_and(|r| r.status().is_success())
                    }
                    "exchange" => {
                        let Some(code) = items.take().await else {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        };
                        let body = format!("{form}&code={code}");
                        let req = form_post(&client, &url, body, basic.as_ref());
                        req.send().await.is_ok_and(|r| r.status().is_success())
                    }
                    "refresh" => {
                        if chain.is_none() {
                            chain = items.take().await;
                        }
                        let Some(current) = chain.take() else {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        };
                        let req = form_post(
                            &client,
                            &url,
                            format!("grant_type=refresh_token&refresh_token={current}"),
                            basic.as_ref(),
                        );
                        match req.send().await {
                            Ok(r) if r.status().is_success() => {
                                let body: Value = r.json().await.unwrap_or(Value::Null);
                                chain = body["refresh_token"].as_str().map(str::to_owned);
                                chain.is_some()
                            }
                            _ => false,
                        }
                    }
                    "flow" => {
                        // A signed-in browser with remembered consent: /authorize answers
                        // with a redirect carrying a code, which the client exchanges.
                        let code = match client.get(&url).header("cookie", &cookie).send().await {
                            Ok(r) if r.status().is_redirection() => code_in(&r),
                            _ => None,
                        };
                        match code {
                            Some(code) => {
                                let req = form_post(
                                    &client,
                                    &token_url,
                                    format!("{form}&code={code}"),
                                    basic.as_ref(),
                                );
                                req.send().await.is_ok_and(|r| r.status().is_success())
                            }
                            None => false,
                        }
                    }
                    "login" => {
                        // A new visitor each time: GET the form (its CSRF token, and the
                        // cookie that token rides in), then POST the password.
                        let (user, password) = login
                            .as_deref()
                            .and_then(|l| l.split_once(':'))
                            .unwrap_or_else(|| usage());
                        match client.get(&url).send().await {
                            Ok(page) => {
                                let cookie = page
                                    .headers()
                                    .get("set-cookie")
                                    .and_then(|c| c.to_str().ok())
                                    .and_then(|c| c.split(';').next())
                                    .unwrap_or_default()
                                    .to_owned();
                                let html = page.text().await.unwrap_or_default();
                                let csrf = html
                                    .split("name=\"csrf_token\" value=\"")
                                    .nth(1)
                                    .and_then(|s| s.split('"').next())
                                    .unwrap_or_default()
                                    .to_owned();
                                let posted = client
                                    .post(&url)
                                    .header("cookie", cookie)
                                    .form(&[
                                        ("username", user),
                                        ("password", password),
                                        ("csrf_token", &csrf),
                                    ])
                                    .send()
                                    .await;
                                posted.is_ok_and(|r| r.status().as_u16() == 303)
                            }
                            Err(_) => false,
                        }
                    }
                    _ => usage(),
                };
                let micros = u64::try_from(begin.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                if ok {
                    histogram.record(micros).ok();
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            histogram
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for w in workers {
        total.add(w.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = total.len();
    let line = json!({
        "label": a.get("--label").unwrap_or_else(|| scenario.clone()),
        "scenario": scenario,
        "connections": connections,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "ok": ok,
        "errors": errors.load(Ordering::Relaxed),
        "rps": ((ok as f64) / elapsed).round(),
        "p50_ms": total.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_ms": total.value_at_quantile(0.99) as f64 / 1000.0,
    });
    println!("{line}");
}

/// A form POST, with the client's Basic credentials when the load has them.
fn form_post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    basic: Option<&(String, String)>,
) -> reqwest::RequestBuilder {
    let req = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    match basic {
        Some((id, secret)) => req.basic_auth(id, Some(secret)),
        None => req,
    }
}

/// The `code` of an authorization response's redirect.
fn code_in(r: &reqwest::Response) -> Option<String> {
    let location = r.headers().get("location")?.to_str().ok()?;
    let url = url::Url::parse(location).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

/// The physical limits: how many RS256 signatures or argon2id hashes this machine does.
fn limit(a: &Args) {
    let what = a.0.get(1).cloned().unwrap_or_else(|| usage());
    if what == "jitter" {
        return jitter(a);
    }
    let seconds = a.num("--seconds", 5);
    let threads = limit_threads(a);
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let count = count.clone();
        let what = what.clone();
        handles.push(std::thread::spawn(move || match what.as_str() {
            "rsa" => {
                // The same path as Tessera's tokens: an aws-lc-rs key pair parsed once.
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let claims = json!({"iss": "http://127.0.0.1:8080", "sub": "bench", "aud": "x", "exp": 2_000_000_000u64, "iat": 1, "jti": "0123456789abcdef", "client_id": "bench", "scope": "api:read"});
                let mark = CpuMark::now();
                while Instant::now() < deadline {
                    tessera::crypto::jwt::sign_rs256(&pair, "kid", "at+jwt", &claims).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
                mark.since()
            }
            "argon2" => {
                // The hash itself, in memory allocated once, as Tessera's hashing threads do.
                let c = tessera::config::PasswordsConfig::default();
                let params = argon2::Params::new(c.memory_kib, c.iterations, c.parallelism, None).unwrap();
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
                let mut out = [0u8; 32];
                let mark = CpuMark::now();
                while Instant::now() < deadline {
                    hasher
                        .hash_password_into_with_memory(b"correct horse battery staple", b"sixteen byte salt", &mut out, &mut memory[..])
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
                mark.since()
            }
            _ => usage(),
        }));
    }
    // Each thread's CPU time and wall time over its loop (its set-up, a key generation or an
    // allocation, left out).
    let spent: Vec<Option<(u64, Duration)>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let cpu_ns: Option<u64> = spent.iter().map(|s| s.map(|(ns, _)| ns)).sum();
    let wall_ns: f64 = spent
        .iter()
        .flatten()
        .map(|(_, wall)| wall.as_nanos() as f64)
        .sum();
    let elapsed = started.elapsed();
    let done = count.load(Ordering::Relaxed);
    let per_second = done as f64 / elapsed.as_secs_f64();
    let mut line = json!({ "label": a.get("--label").unwrap_or_else(|| format!("limit-{what}")), "threads": threads, "per_second": per_second.round() });
    // What one operation cost in CPU time, and how much of its threads' wall time the machine
    // gave them: a server's rate can then be read as (its cost against this one) × (its share
    // against this one), and a miss told apart as a slower machine or less of it.
    if let Some(ns) = cpu_ns.filter(|_| done > 0) {
        line["cpu_ms_per_op"] = json!((ns as f64 / done as f64 / 1e4).round() / 100.0);
        line["cpu_share"] = json!((ns as f64 / wall_ns * 1000.0).round() / 1000.0);
    }
    println!("{line}");
}

/// `--threads`, by default one per core: the limits are measured on the whole machine.
fn limit_threads(a: &Args) -> u64 {
    a.num(
        "--threads",
        std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
    )
}

/// A point in a thread's life: the wall clock and the thread's CPU time so far.
struct CpuMark(Instant, Option<u64>);

impl CpuMark {
    fn now() -> Self {
        let cpu = thread_cpu_ns();
        Self(Instant::now(), cpu)
    }

    /// The thread's CPU time and the wall time since the mark; none where Linux's
    /// `/proc/thread-self/schedstat` is missing.
    fn since(self) -> Option<(u64, Duration)> {
        let cpu = thread_cpu_ns()?.checked_sub(self.1?)?;
        Some((cpu, self.0.elapsed()))
    }
}

/// The calling thread's CPU time so far, from `/proc/thread-self/schedstat`. A short sleep
/// first ends the running slice, so that the kernel has accounted it.
fn thread_cpu_ns() -> Option<u64> {
    std::thread::sleep(Duration::from_millis(1));
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's own latency tail, the floor under every p99 of a paced load: a fixed CPU job
/// (SHA-256 over 4 KiB, repeated to take about 1 ms on this machine, calibrated first) run
/// every 10 ms on each of N threads, as paced requests arrive. With nothing else running, its
/// wall time's p99 is what the machine itself adds: a virtual machine whose host takes its
/// cores away for milliseconds at a time (time the guest does not see as stolen) shows it here.
fn jitter(a: &Args) {
    let seconds = a.num("--seconds", 5);
    let threads = limit_threads(a);
    let block = [7u8; 4096];
    let job = move |n: u64| {
        for _ in 0..n {
            std::hint::black_box(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                std::hint::black_box(&block),
            ));
        }
    };
    let fastest = |n: u64| {
        (0..20)
            .map(|_| {
                let t = Instant::now();
                job(n);
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let mut n = 16;
    while fastest(n) < Duration::from_micros(500) {
        n *= 2;
    }
    let n = (n as f64 * 1_000.0 / fastest(n).as_micros().max(1) as f64).ceil() as u64;
    let job_ms = fastest(n).as_secs_f64() * 1e3;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                while Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                    let t = Instant::now();
                    job(n);
                    histogram.record(t.elapsed().as_micros() as u64).ok();
                }
                histogram
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for h in handles {
        total.add(h.join().unwrap()).unwrap();
    }
    println!(
        "{}",
        json!({
            "label": a.get("--label").unwrap_or_else(|| "limit-jitter".into()),
            "threads": threads,
            "job_ms": (job_ms * 1000.0).round() / 1000.0,
            "jobs": total.len(),
            "p50_ms": total.value_at_quantile(0.50) as f64 / 1000.0,
            "p99_ms": total.value_at_quantile(0.99) as f64 / 1000.0,
            "max_ms": total.max() as f64 / 1000.0,
        })
    );
}

/// The HTTP ceiling: a bare axum handler serving a static JSON document of the size of a
/// discovery document (~1.4 KB), so the two differ only in what the server does per request.
async fn ceiling(a: &Args) {
    let port = a.num("--port", 9099);
    let doc: &'static str = CEILING_DOCUMENT;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { ([("content-type", "application/json")], doc) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", u16::try_from(port).unwrap()))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

const CEILING_DOCUMENT: &str = r#"{"issuer":"http://127.0.0.1:9099","authorization_endpoint":"http://127.0.0.1:9099/authorize","token_endpoint":"http://127.0.0.1:9099/token","userinfo_endpoint":"http://127.0.0.1:9099/userinfo","jwks_uri":"http://127.0.0.1:9099/.well-known/jwks.json","registration_endpoint":null,"scopes_supported":["openid","profile","email","offline_access"],"response_types_supported":["code"],"response_modes_supported":["query"],"grant_types_supported":["authorization_code","refresh_token","client_credentials"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"],"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","none"],"claims_supported":["sub","iss","aud","exp","iat","auth_time","nonce","name","preferred_username","email","email_verified"],"code_challenge_methods_supported":["S256"],"revocation_endpoint":"http://127.0.0.1:9099/revoke","introspection_endpoint":"http://127.0.0.1:9099/introspect","end_session_endpoint":"http://127.0.0.1:9099/logout","authorization_response_iss_parameter_supported":true,"request_parameter_supported":false,"request_uri_parameter_supported":false,"claims_parameter_supported":false,"frontchannel_logout_supported":false,"backchannel_logout_supported":false,"ui_locales_supported":["en"]}"#;

/// The fixed PKCE verifier of every benchmark code (the exchange sends it).
const VERIFIER: &str = "bench-verifier-bench-verifier-bench-verifier-0123456789";

/// Mints work for the exchange and refresh scenarios through Tessera's real pages: signs in
/// once, approves the client once, then makes one authorization request per code with that
/// signed-in browser (remembered consent: each answers straight away with a code).
async fn prepare(a: &Args) {
    let issuer = a.get("--issuer").unwrap_or_else(|| usage());
    let (client_id, secret) = a
        .get("--client")
        .and_then(|c| c.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned())))
        .unwrap_or_else(|| usage());
    let (user, password) = a
        .get("--login")
        .and_then(|c| c.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned())))
        .unwrap_or_else(|| usage());
    let codes = a.num("--codes", 1000);
    let refresh = a.num("--refresh", 200);
    let out = std::path::PathBuf::from(a.get("--out").unwrap_or_else(|| usage()));
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let csrf_of = |html: &str| {
        html.split("name=\"csrf_token\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let page = browser
        .get(format!("{issuer}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let signed = browser
        .post(format!("{issuer}/login"))
        .form(&[
            ("username", user.as_str()),
            ("password", password.as_str()),
            ("csrf_token", &csrf_of(&page)),
        ])
        .send()
        .await
        .unwrap();
    if signed.status().as_u16() != 303 {
        let status = signed.status();
        let body: String = signed
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(400)
            .collect();
        panic!("prepare: sign-in answered {status}: {body}");
    }
    let challenge = tessera::crypto::b64url(tessera::crypto::sha256(VERIFIER.as_bytes()));
    let redirect_uri = "http://127.0.0.1:1/cb";
    let authorize = |scope: &'static str| {
        let mut url = url::Url::parse(&format!("{issuer}/authorize")).unwrap();
        url.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        url.to_string()
    };
    // Approve once (the consent page), after which consent is remembered.
    let first = browser
        .get(authorize("openid profile email offline_access"))
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
        browser
            .post(format!("{issuer}/authorize/consent"))
            .form(&[
                ("csrf_token", csrf_of(&html).as_str()),
                ("request", &request),
                ("decision", "allow"),
            ])
            .send()
            .await
            .unwrap();
    }
    let code_of = |r: reqwest::Response| code_in(&r);
    let mut minted = Vec::new();
    for _ in 0..codes {
        let r = browser
            .get(authorize("openid offline_access"))
            .send()
            .await
            .unwrap();
        minted.push(code_of(r).expect("a code"));
    }
    // Refresh tokens: exchange a few more codes.
    let http = reqwest::Client::new();
    let mut refresh_tokens = Vec::new();
    let mut access = String::new();
    for _ in 0..refresh {
        let code = code_of(
            browser
                .get(authorize("openid profile email offline_access"))
                .send()
                .await
                .unwrap(),
        )
        .unwrap();
        let body: Value = http
            .post(format!("{issuer}/token"))
            .basic_auth(&client_id, Some(&secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        refresh_tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
        access = body["access_token"].as_str().unwrap().to_owned();
    }
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("codes.json"),
        serde_json::to_string(&minted).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("refresh.json"),
        serde_json::to_string(&refresh_tokens).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("access_token"), &access).unwrap();
    // For the browser flow: the signed-in session's cookies and the authorization request.
    let cookies = reqwest::cookie::CookieStore::cookies(&*jar, &issuer.parse().unwrap())
        .expect("the signed-in session's cookie");
    std::fs::write(out.join("session_cookie"), cookies.to_str().unwrap()).unwrap();
    std::fs::write(
        out.join("authorize_url"),
        authorize("openid offline_access"),
    )
    .unwrap();
    println!(
        "{}",
        json!({ "codes": minted.len(), "refresh_tokens": refresh_tokens.len(), "verifier": VERIFIER, "redirect_uri": redirect_uri })
    );
}
