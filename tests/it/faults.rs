//! Faults: the real binary killed with SIGKILL in the middle of a write load.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::helpers::{Backend, Browser, TestDb, eventually, pkce, query_of, run_tessera};
use crate::on_both_databases;

on_both_databases!(a_kill_loses_nothing_that_was_acknowledged);

const PASSWORD: &str = "plum tree at dawn";

/// The environment of a `tessera` process on `db` at `base`.
fn environment(db: &TestDb, port: u16, dir: &std::path::Path) -> Vec<(String, String)> {
    [
        ("TESSERA_DATABASE_URL", db.url.clone()),
        ("TESSERA_BIND", format!("127.0.0.1:{port}")),
        ("TESSERA_ISSUER", format!("http://127.0.0.1:{port}")),
        (
            "TESSERA_MAIL__OUTBOX",
            dir.join("outbox").display().to_string(),
        ),
        ("TESSERA_LOG_LEVEL", "warn".into()),
        ("TESSERA_THROTTLE__REGISTRATIONS_PER_IP", "1000000".into()),
        ("TESSERA_THROTTLE__LOGINS_PER_IP", "1000000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn command(env: &[(String, String)], dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command.current_dir(dir).kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

async fn serve(
    env: &[(String, String)],
    dir: &std::path::Path,
    base: &str,
) -> tokio::process::Child {
    let child = command(env, dir)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(20), || async {
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "tessera did not start"
    );
    child
}

/// Registrations and refresh-token rotations run flat out; the process is killed with SIGKILL
/// in the middle. After a restart the database passes its integrity check, every account
/// whose registration was answered exists, and every refresh token that was answered is
/// stored: the newest of each chain still refreshes unless a request in flight at the kill
/// had already spent it (then it is refused as reused, never unknown).
async fn a_kill_loses_nothing_that_was_acknowledged(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let env = environment(&db, port, dir.path());
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let created = run_tessera(
        &[
            "client",
            "create",
            "--name",
            "Kill",
            "--redirect-uri",
            "https://app.example/cb",
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
            "--scope",
            "openid",
            "--scope",
            "offline_access",
            "--json",
        ],
        &vars,
        dir.path(),
    )
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let (client_id, secret) = (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    );
    let mut user = command(&env, dir.path())
        .args([
            "user",
            "create",
            "--username",
            "alice",
            "--email",
            "alice@example.com",
        ])
        .args(["--email-verified", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    user.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .await
        .unwrap();
    assert!(user.wait().await.unwrap().success());

    let mut server = serve(&env, dir.path(), &base).await;
    let http = reqwest::Client::new();
    let token = |form: Vec<(&'static str, String)>| {
        http.post(format!("{base}/token"))
            .basic_auth(&client_id, Some(&secret))
            .form(&form)
            .send()
    };

    // Four refresh chains, each started by a real authorization.
    let browser = Browser::new(&base);
    let mut chains = Vec::new();
    for i in 0..4 {
        let (verifier, challenge) = pkce();
        let state = format!("s{i}");
        let back = browser
            .authorize(
                &[
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", "https://app.example/cb"),
                    ("scope", "openid offline_access"),
                    ("state", state.as_str()),
                    ("code_challenge", challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ],
                Some(("alice", PASSWORD)),
            )
            .await;
        let code = query_of(&back)["code"].clone();
        let answer: Value = token(vec![
            ("grant_type", "authorization_code".into()),
            ("code", code),
            ("redirect_uri", "https://app.example/cb".into()),
            ("code_verifier", verifier),
        ])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        chains.push(Arc::new(Mutex::new(
            answer["refresh_token"].as_str().unwrap().to_owned(),
        )));
    }

    // The load: registrations and rotations, each success recorded as soon as it is answered.
    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..6 {
        let (base, registered) = (base.clone(), registered.clone());
        load.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("k{worker}x{n}");
                match register(&base, &name).await {
                    Some(303) => registered.lock().unwrap().push(name),
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    for chain in &chains {
        let (chain, base, id, secret) = (
            chain.clone(),
            base.clone(),
            client_id.clone(),
            secret.clone(),
        );
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let current = chain.lock().unwrap().clone();
                let answer = http
                    .post(format!("{base}/token"))
                    .basic_auth(&id, Some(&secret))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", current.as_str()),
                    ])
                    .send()
                    .await;
                let Ok(answer) = answer else { break };
                let Ok(body) = answer.json::<Value>().await else {
                    break;
                };
                match body["refresh_token"].as_str() {
                    Some(next) => *chain.lock().unwrap() = next.to_owned(),
                    None => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    for task in load {
        task.await.unwrap();
    }
    let registered = registered.lock().unwrap().clone();
    assert!(
        registered.len() > 5,
        "the load ran: {} registrations",
        registered.len()
    );

    let server = serve(&env, dir.path(), &base).await;
    let store = tessera::store::Store::open(&crate::helpers::test_config(&db.url))
        .await
        .unwrap();
    if matches!(backend, Backend::Sqlite) {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(check, "ok");
    }
    for name in &registered {
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
            .bind(name)
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(found, 1, "{name} was registered, then lost");
    }
    for chain in &chains {
        let newest = chain.lock().unwrap().clone();
        let used: Option<Option<i64>> =
            sqlx::query_scalar("SELECT used_at FROM refresh_tokens WHERE token_hash = $1")
                .bind(tessera::crypto::secrets::token_hash(&newest))
                .fetch_optional(store.reader())
                .await
                .unwrap();
        let used = used.expect("an answered refresh token was lost");
        let answer = token(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", newest.clone()),
        ])
        .await
        .unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match used {
            None => assert_eq!(status, 200, "{body}"),
            // Spent by a request in flight at the kill: refused as reused, not unknown.
            Some(_) => assert_eq!(body["error"], "invalid_grant", "{body}"),
        }
    }
    store.close().await;
    drop(server);
}

/// Registers `name` as a new visitor would (GET the form, POST it); the POST's status, or
/// `None` once the server is gone.
async fn register(base: &str, name: &str) -> Option<u16> {
    let visitor = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    let form = visitor.get(format!("{base}/register")).send().await.ok()?;
    let csrf = crate::helpers::csrf_in(&form.text().await.ok()?)?;
    let email = format!("{name}@example.com");
    let posted = visitor
        .post(format!("{base}/register"))
        .form(&[
            ("username", name),
            ("email", email.as_str()),
            ("name", "Kill Test"),
            ("password", PASSWORD),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .ok()?;
    Some(posted.status().as_u16())
}
