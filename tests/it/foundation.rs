//! The foundation: discovery, JWKS, durable and rotating keys, operations endpoints, the CLI.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Proxy, TestApp, TestDb, eventually, json_output, run_tessera, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    discovery_names_the_issuer_and_the_jwks_verifies_tessera_tokens,
    metadata_documents_support_conditional_requests,
    a_restart_keeps_the_signing_key,
    rotation_prepublishes_then_signs_and_retires_after_tokens_expire,
    cli_rotation_reaches_the_running_server,
    two_instances_converge_on_one_signing_key,
    replicas_starting_together_create_one_key,
    scheduled_rotation_happens_once_across_replicas,
    readyz_follows_the_database,
    sweep_deletes_expired_rows_in_batches_and_keeps_live_ones,
    clients_that_hang_up_mid_request_never_wedge_the_database,
    a_failing_grant_fails_alone_in_its_batch,
    lone_audit_rows_are_all_written_and_each_hears_of_a_failure,
    private_keys_are_encrypted_at_rest_with_the_master_key,
    rotation_under_load_never_breaks_a_fresh_token,
);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// Verifies `token` with `jsonwebtoken` using only the `n`/`e` of the JWKS entry named by its
/// `kid` header — as a relying party would, without Tessera's own key objects.
fn verify_with_jwks(token: &str, jwks: &Value, issuer: &str) -> Value {
    verify_for(token, jwks, issuer, "test-audience")
}

/// As [`verify_with_jwks`], for a token meant for `audience`.
fn verify_for(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid header");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

fn claims(issuer: &str) -> Value {
    json!({ "iss": issuer, "sub": "user-1", "aud": "test-audience", "iat": now(), "exp": now() + 300 })
}

async fn discovery_names_the_issuer_and_the_jwks_verifies_tessera_tokens(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;

    let discovery = app.discovery().await;
    assert_eq!(discovery["issuer"], app.issuer.as_str());
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    // Everything advertised as a URI exists.
    for (name, value) in discovery.as_object().unwrap() {
        if name.ends_with("_uri") || name.ends_with("_endpoint") {
            let status = app
                .client
                .get(value.as_str().unwrap())
                .send()
                .await
                .unwrap()
                .status();
            assert_ne!(status, 404, "{name} is advertised but not served");
        }
    }

    let jwks = app.jwks().await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let mut members: Vec<&str> = keys[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["alg", "e", "kid", "kty", "n", "use"],
        "public parts only"
    );
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["use"], "sig");
    // 2048-bit modulus: 256 bytes, 342 base64url characters.
    assert_eq!(keys[0]["n"].as_str().unwrap().len(), 342);
    // The kid is the RFC 7638 thumbprint of (e, kty, n).
    let expected_kid = tessera::crypto::keys::thumbprint(
        keys[0]["n"].as_str().unwrap(),
        keys[0]["e"].as_str().unwrap(),
    );
    assert_eq!(keys[0]["kid"], expected_kid.as_str());

    let token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    let verified = verify_with_jwks(&token, &jwks, &app.issuer);
    assert_eq!(verified["sub"], "user-1");

    // A token whose signature was tampered with does not verify.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = tessera::crypto::b64url(serde_json::to_vec(&json!({"sub": "admin"})).unwrap());
    let forged = parts.join(".");
    let jwk = &keys[0];
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    assert!(
        jsonwebtoken::decode::<Value>(&forged, &key, &Validation::new(Algorithm::RS256)).is_err()
    );
    app.stop().await;
}

async fn metadata_documents_support_conditional_requests(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let cache = response.headers()["cache-control"].to_str().unwrap();
        assert!(cache.starts_with("public, max-age="), "{path}: {cache}");
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"'), "strong ETag: {etag}");
        let body = response.bytes().await.unwrap();

        // HEAD: the same headers, no body. A query string does not change the document.
        let head = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["etag"], etag.as_str());
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert!(head.bytes().await.unwrap().is_empty());
        let queried = app.get(&format!("{path}?x=1")).await;
        assert_eq!(queried.bytes().await.unwrap(), body);
        // Other methods are not allowed; neighbouring paths are not the document.
        let post = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "{path}");
        assert_eq!(app.get(&format!("{path}/")).await.status(), 404);
        assert_eq!(app.get(&path.to_uppercase()).await.status(), 404);

        let again = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert_eq!(again.headers()["access-control-allow-origin"], "*");
        assert!(again.bytes().await.unwrap().is_empty());

        let stale = app
            .client
            .get(app.url(path))
            .header("if-none-match", "\"stale\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200);
    }
    app.stop().await;
}

async fn a_restart_keeps_the_signing_key(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let kid = app.signing_kid();
    let jwks = app.jwks().await;
    let token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    app.stop().await;

    let app = TestApp::start(&db).await;
    assert_eq!(app.signing_kid(), kid);
    assert_eq!(app.jwks_kids().await, [kid]);
    // Keys are compared by content, not just kid.
    assert_eq!(app.jwks().await["keys"], jwks["keys"]);
    // A token issued before the restart still verifies. (The issuer changed with the port, so
    // verify against the old one.)
    let old_issuer = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
        .unwrap()
        .claims["iss"]
        .as_str()
        .unwrap()
        .to_owned();
    verify_with_jwks(&token, &app.jwks().await, &old_issuer);
    app.stop().await;
}

async fn rotation_prepublishes_then_signs_and_retires_after_tokens_expire(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.tokens.id_token_ttl = Duration::from_secs(1);
    config.tokens.access_token_ttl = Duration::from_secs(1);
    config.keys.grace = Duration::ZERO;
    config.keys.prepublish = Duration::from_secs(3600);
    let app = TestApp::start_with(config, "").await;
    let first = app.signing_kid();

    // A pre-published key is in the JWKS but does not sign.
    let pending = app.state.keys.rotate().await.unwrap().unwrap();
    assert_eq!(app.jwks_kids().await, [pending.kid.clone(), first.clone()]);
    assert_eq!(app.signing_kid(), first);
    let token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some(first.as_str())
    );
    app.stop().await;

    // With no pre-publication the new key signs at once; the old stays published while tokens
    // it signed can still be valid, and is dropped after. Timestamps are whole seconds, so a
    // 1 s lifetime could end a few milliseconds after the rotation (it did, under CI load);
    // 3 s leaves at least 2 s to look.
    let mut config = test_config(&db.url);
    config.tokens.id_token_ttl = Duration::from_secs(3);
    config.tokens.access_token_ttl = Duration::from_secs(3);
    config.keys.grace = Duration::ZERO;
    config.keys.prepublish = Duration::ZERO;
    let app = TestApp::start_with(config, "").await;
    let old_token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    let active = app.state.keys.rotate().await.unwrap().unwrap();
    assert_eq!(app.signing_kid(), active.kid);
    let kids = app.jwks_kids().await;
    assert!(
        kids.contains(&active.kid) && kids.contains(&first),
        "{kids:?}"
    );
    verify_with_jwks(&old_token, &app.jwks().await, &app.issuer);
    let new_token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .as_deref(),
        Some(active.kid.as_str())
    );
    verify_with_jwks(&new_token, &app.jwks().await, &app.issuer);

    // 3 s token lifetime, no grace: the retired keys leave the JWKS a few seconds later.
    let gone = eventually(Duration::from_secs(10), || async {
        app.jwks_kids().await == [active.kid.clone()]
    })
    .await;
    assert!(
        gone,
        "retired keys still published: {:?}",
        app.jwks_kids().await
    );
    app.stop().await;
}

async fn cli_rotation_reaches_the_running_server(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let first = app.signing_kid();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TESSERA_DATABASE_URL", db.url.as_str()),
        ("TESSERA_KEYS__PREPUBLISH", "0"),
    ];

    let out = run_tessera(&["keys", "rotate", "--json"], &env, dir.path()).await;
    let rotated = json_output(&out);
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, first);
    assert_eq!(rotated["state"], "signing");

    // The server picks it up within keys.refresh (200 ms here).
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.signing_kid() == new_kid
        })
        .await
    );
    assert!(
        app.jwks_kids().await.contains(&first),
        "the old key stays published"
    );

    let out = run_tessera(&["keys", "list", "--json"], &env, dir.path()).await;
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(new_kid.as_str(), "signing"), (first.as_str(), "retired")]
    );

    let text = run_tessera(&["keys", "list"], &env, dir.path()).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains(&new_kid));
    app.stop().await;
}

async fn two_instances_converge_on_one_signing_key(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.keys.prepublish = Duration::ZERO;
    let a = TestApp::start_with(config.clone(), "").await;
    let b = TestApp::start_with(config, "").await;
    assert_eq!(
        a.signing_kid(),
        b.signing_kid(),
        "the second instance uses the existing key"
    );

    let rotated = a.state.keys.rotate().await.unwrap().unwrap();
    assert_eq!(a.signing_kid(), rotated.kid);
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.signing_kid() == rotated.kid
        })
        .await,
        "instance b did not pick up the rotation"
    );
    assert_eq!(a.jwks().await, b.jwks().await);
    // A token from either instance verifies against the other's JWKS.
    let token = b.state.keys.sign("JWT", &claims(&b.issuer)).unwrap();
    verify_with_jwks(&token, &a.jwks().await, &b.issuer);
    a.stop().await;
    b.stop().await;
}

async fn replicas_starting_together_create_one_key(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let config = test_config(&db.url);
    let (a, b, c) = tokio::join!(
        TestApp::start_with(config.clone(), ""),
        TestApp::start_with(config.clone(), ""),
        TestApp::start_with(config, ""),
    );
    assert_eq!(a.signing_kid(), b.signing_kid());
    assert_eq!(b.signing_kid(), c.signing_kid());
    assert_eq!(
        a.jwks_kids().await.len(),
        1,
        "one first key, not one per replica"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

async fn scheduled_rotation_happens_once_across_replicas(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.keys.prepublish = Duration::ZERO;
    config.keys.rotate_after = Duration::from_secs(2);
    config.keys.refresh = Duration::from_millis(100);
    let a = TestApp::start_with(config.clone(), "").await;
    let b = TestApp::start_with(config, "").await;
    let first = a.signing_kid();

    assert!(
        eventually(Duration::from_secs(8), || async {
            a.signing_kid() != first && a.signing_kid() == b.signing_kid()
        })
        .await,
        "no scheduled rotation seen by both replicas"
    );
    a.stop().await;
    b.stop().await;

    // Two replicas checking every 100 ms never add two keys for one rotation: generations are
    // consecutive and each new key was created at least rotate_after after the previous one.
    let store = tessera::store::Store::open(&test_config(&db.url))
        .await
        .unwrap();
    let mut conn = store.reader().acquire().await.unwrap();
    let rows = tessera::store::keys::list(&mut conn).await.unwrap();
    assert!(rows.len() >= 2);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].generation, pair[0].generation + 1);
        assert!(
            pair[1].created_at - pair[0].created_at >= 2,
            "two keys for one rotation: {rows:?}"
        );
    }
}

/// PostgreSQL on this machine's loopback, named with no TLS setting, is reached without TLS
/// (`store::postgres_url`): the pools and the mirror's connections alike. An `sslmode` in the
/// URL is kept: `require` still gets TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_loopback_goes_without_tls_unless_asked() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDb::new(&backend).await;
    let parsed = url::Url::parse(&db.url).unwrap();
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl").fetch_one(&admin).await.unwrap();
    let tls_asked = parsed.query_pairs().any(|(k, _)| k.starts_with("ssl"))
        || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("PGSSL"));
    if !loopback || ssl != "on" || tls_asked {
        eprintln!("needs a loopback PostgreSQL with ssl on, named without TLS settings: skipped");
        return;
    }
    let own_tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    let app = TestApp::start_with(test_config(&db.url), "").await;
    let mut conn = app.state.store.read().await.unwrap();
    let (tls,): (bool,) = sqlx::query_as(own_tls).fetch_one(&mut *conn).await.unwrap();
    assert!(!tls, "a pool connection on loopback uses TLS");
    drop(conn);
    let mirror = "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                  JOIN pg_stat_ssl s USING (pid) \
                  WHERE a.datname = current_database() AND a.application_name LIKE 'tessera mirror%'";
    let count = || async {
        sqlx::query_as::<_, (i64, i64)>(mirror)
            .fetch_one(&admin)
            .await
            .unwrap()
    };
    let listening = eventually(Duration::from_secs(10), || async { count().await.0 >= 2 }).await;
    let counts = count().await;
    assert!(
        listening,
        "the mirror's connections never appeared: {counts:?}"
    );
    assert_eq!(counts.1, 0, "the mirror's connections use TLS");
    app.stop().await;

    let required = format!("{}?sslmode=require", db.url);
    let app = TestApp::start_with(test_config(&required), "").await;
    let mut conn = app.state.store.read().await.unwrap();
    let (tls,): (bool,) = sqlx::query_as(own_tls).fetch_one(&mut *conn).await.unwrap();
    assert!(tls, "sslmode=require was not honoured");
    drop(conn);
    app.stop().await;
}

async fn readyz_follows_the_database(backend: Backend) {
    let Backend::Postgres(server) = &backend else {
        // An embedded SQLite file cannot become unreachable; readiness is still reported.
        let db = TestDb::new(&backend).await;
        let app = TestApp::start(&db).await;
        assert_eq!(app.get("/healthz").await.status(), 200);
        assert_eq!(app.get("/readyz").await.status(), 200);
        app.stop().await;
        return;
    };
    let db = TestDb::new(&backend).await;
    let target = url::Url::parse(server).unwrap();
    let upstream =
        tokio::net::lookup_host((target.host_str().unwrap(), target.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
    let proxy = Proxy::start(upstream).await;
    let mut via_proxy = url::Url::parse(&db.url).unwrap();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let mut config = test_config(via_proxy.as_str());
    config.database.acquire_timeout = Duration::from_secs(1);
    let app = TestApp::start_with(config, "").await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let client = app
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let token = || {
        app.token(
            &client,
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
    };
    // Open several pooled connections, which the cut below breaks.
    futures_util::future::join_all((0..6).map(|_| token())).await;

    proxy.cut();
    let down = app.get("/readyz").await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    // Liveness and the in-memory documents do not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/.well-known/jwks.json").await.status(), 200);

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.get("/readyz").await.status() == 200
        })
        .await,
        "readiness did not recover"
    );
    // Every request after that works, whichever pooled connection it gets: broken ones are
    // found and replaced, not handed out again and again.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        for (status, _, _) in futures_util::future::join_all((0..6).map(|_| token())).await {
            statuses.push(status);
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "after recovery: {statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_under_it() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start_with(test_config(&db.url), "/tenant-a").await;
    let discovery = app.discovery().await;
    assert_eq!(discovery["issuer"], app.issuer.as_str());
    assert!(
        discovery["jwks_uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/", app.issuer))
    );
    assert_eq!(app.jwks().await["keys"].as_array().unwrap().len(), 1);
    // Only under the path: the origin's root is not this issuer.
    let root = app.issuer.trim_end_matches("/tenant-a").to_owned();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ] {
        let outside = app
            .client
            .get(format!("{root}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(outside.status(), 404, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let request_id = health
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!request_id.is_empty());
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");

    let missing = app.get("/no-such-thing").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    app.get("/.well-known/jwks.json").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total{")
                && l.contains("route=\"/.well-known/jwks.json\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket{"),
        "latency histogram"
    );
    app.stop().await;
}

/// Runs the binary with a bad setting and expects exit code 2 and one line naming the key.
#[tokio::test]
async fn bad_configuration_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let cases: &[(&str, &str, &str)] = &[
        ("TESSERA_ISSUER", "not a url", "issuer"),
        (
            "TESSERA_DATABASE_URL",
            "mysql://localhost/x",
            "database_url",
        ),
        ("TESSERA_KEYS__ROTATE_AFTER", "3x", "keys.rotate_after"),
        ("TESSERA_BIND", "nowhere", "bind"),
        ("TESSERA_LOG_FORMAT", "yaml", "log_format"),
    ];
    for (var, value, key) in cases {
        let out = run_tessera(
            &[],
            &[("TESSERA_DATABASE_URL", &db), (var, value)],
            dir.path(),
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{var}={value}: {stderr}"
        );
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // An unknown key in the file is named too.
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[keys]\nrotate_aftr = \"1d\"\n").unwrap();
    let out = run_tessera(
        &["--config", file.to_str().unwrap()],
        &[("TESSERA_DATABASE_URL", &db)],
        dir.path(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate_aftr"));

    // A missing --config file.
    let out = run_tessera(&["--config", "/nonexistent/tessera.toml"], &[], dir.path()).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tessera.toml"));
}

#[tokio::test]
async fn an_unreachable_database_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let out = run_tessera(
        &["serve"],
        &[
            (
                "TESSERA_DATABASE_URL",
                "postgres://postgres:hunter2@127.0.0.1:1/tessera",
            ),
            ("TESSERA_BIND", "127.0.0.1:0"),
        ],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password is redacted: {stderr}"
    );

    // A SQLite file in a folder that cannot be created.
    let out = run_tessera(
        &["migrate"],
        &[("TESSERA_DATABASE_URL", "sqlite:///proc/forbidden/t.db")],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn sqlite_database_and_folder_are_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_tessera(&["migrate", "--json"], &[], dir.path()).await;
    let applied = json_output(&out);
    assert!(applied["applied"].as_u64().unwrap() >= 1);
    let path = dir.path().join("data/tessera.db");
    assert!(path.is_file(), "the default database is data/tessera.db");

    // Migrating again applies nothing.
    let out = run_tessera(&["migrate", "--json"], &[], dir.path()).await;
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["applied"], 0);

    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[cfg(unix)]
#[tokio::test]
async fn serve_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let issuer = format!("http://{bind}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir.path())
        .env("TESSERA_BIND", &bind)
        .env("TESSERA_ISSUER", &issuer)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{issuer}/.well-known/openid-configuration");
    let up = eventually(Duration::from_secs(30), || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "tessera did not come up");
    let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["issuer"], issuer.as_str());

    let status = crate::helpers::terminate(&mut child).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// More expired rows than two sweep batches, beside live ones, and audit events on either
/// side of their retention: `tessera sweep` deletes every expired row (batch after batch) and
/// nothing else. (No server runs here: its own sweep at
/// start would race the CLI's.)
async fn sweep_deletes_expired_rows_in_batches_and_keeps_live_ones(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let store = tessera::store::Store::open(&test_config(&db.url))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let expired = 2 * tessera::housekeeping::BATCH + 7;
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO revoked_jti (jti, expires_at) SELECT 'gone-' || i, $2 FROM n",
    )
    .bind(expired)
    .bind(now() - 10)
    .execute(&mut *tx)
    .await
    .unwrap();
    for i in 0..3 {
        sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2)")
            .bind(format!("live-{i}"))
            .bind(now() + 600)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // Audit events outlive their retention by a minute, or are a minute short of it.
    for (kind, age) in [
        ("old", 86_400 + 60),
        ("old", 86_400 + 60),
        ("recent", 86_400 - 60),
    ] {
        sqlx::query("INSERT INTO audit_events (at, kind, outcome) VALUES ($1, $2, 'ok')")
            .bind(now() - age)
            .bind(kind)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = run_tessera(
        &["sweep", "--json"],
        &[
            ("TESSERA_DATABASE_URL", &db.url),
            ("TESSERA_AUDIT_RETENTION", "1d"),
        ],
        dir.path(),
    )
    .await;
    let report = json_output(&out);
    assert_eq!(report["deleted"], expired + 2, "{report}");
    let left: Vec<String> = sqlx::query_scalar("SELECT jti FROM revoked_jti ORDER BY jti")
        .fetch_all(store.reader())
        .await
        .unwrap();
    assert_eq!(left, ["live-0", "live-1", "live-2"]);
    let kept: Vec<String> = sqlx::query_scalar("SELECT kind FROM audit_events")
        .fetch_all(store.reader())
        .await
        .unwrap();
    assert_eq!(kept, ["recent"]);
    store.close().await;
}

/// Hundreds of token requests whose clients hang up after a fraction of a millisecond to a
/// few milliseconds, so requests are dropped at every point of their write transaction
/// (during `BEGIN`, between statements, during `COMMIT`): afterwards writes still work at once.
/// (A `BEGIN` dropped half-way used to leave SQLite's one writer inside a transaction nothing
/// owned: every later write failed until restart.)
async fn clients_that_hang_up_mid_request_never_wedge_the_database(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let client = app
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let secret = client.secret.clone().unwrap();
    for round in 0..40u64 {
        let mut requests = Vec::new();
        for i in 0..16u64 {
            let impatient = reqwest::Client::builder()
                .timeout(Duration::from_micros(200 + (round * 16 + i) * 37 % 4_000))
                .build()
                .unwrap();
            let request = impatient
                .post(app.url("/token"))
                .basic_auth(&client.id, Some(&secret))
                .form(&[("grant_type", "client_credentials"), ("scope", "api:read")]);
            requests.push(tokio::spawn(async move { request.send().await.is_ok() }));
        }
        for r in requests {
            let _ = r.await;
        }
    }
    // Dropped requests' transactions roll back in the background; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (status, body, _) = app
            .token(
                &client,
                &[("grant_type", "client_credentials"), ("scope", "api:read")],
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut tx = app.state.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ('after', 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.stop().await;
}

/// A grant's work for the batch test: insert `jti`.
fn insert(
    jti: &'static str,
) -> impl for<'c> FnMut(
    &'c mut sqlx::AnyConnection,
    &'c mut tessera::store::batch::Audit,
) -> tessera::store::batch::WorkFuture<'c, &'static str>
+ Send
+ 'static {
    move |conn, _| {
        Box::pin(async move {
            sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2)")
                .bind(jti)
                .bind(now() + 600)
                .execute(conn)
                .await
                .map(|_| jti)
        })
    }
}

/// Grants queued while the writer is busy share one transaction (on SQLite); when one of them
/// fails, the others still commit and only it gets the error.
async fn a_failing_grant_fails_alone_in_its_batch(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let store = app.state.store.clone();
    // Hold the writer so the grants below queue up behind it.
    let mut held = store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ('taken', $1)")
        .bind(now() + 600)
        .execute(&mut *held)
        .await
        .unwrap();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.write_grant(insert("first")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grants: Vec<_> = ["second", "taken", "third"]
        .into_iter()
        .map(|jti| {
            let store = store.clone();
            tokio::spawn(async move { store.write_grant(insert(jti)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.commit().await.unwrap();

    assert_eq!(first.await.unwrap().unwrap(), "first");
    let results: Vec<_> = futures_util::future::join_all(grants)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results[0].as_ref().unwrap(), &"second");
    assert!(
        results[1].is_err(),
        "a duplicate key fails: {:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap(), &"third");
    let stored: Vec<String> = sqlx::query_scalar("SELECT jti FROM revoked_jti ORDER BY jti")
        .fetch_all(store.reader())
        .await
        .unwrap();
    assert_eq!(stored, ["first", "second", "taken", "third"]);
    app.stop().await;
}

/// Audit rows with no grant of their own queue apart and are written without a transaction:
/// every caller's row lands once, and when the write fails every caller hears of it instead
/// of waiting for ever. So for both queues: the rows answered once durable (the account
/// pages') and those answered once written (`client_credentials`).
async fn lone_audit_rows_are_all_written_and_each_hears_of_a_failure(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let store = app.state.store.clone();
    let row = |kind: String| tessera::store::audit::OwnedEvent {
        kind,
        outcome: "success".into(),
        at: now(),
        ..Default::default()
    };
    let append = |kinds: Vec<String>, unflushed: bool| {
        let calls = kinds.into_iter().map(|kind| {
            let (store, event) = (store.clone(), row(kind));
            tokio::spawn(async move {
                match unflushed {
                    true => store.append_audit_unflushed(event).await,
                    false => store.append_audit(event).await,
                }
            })
        });
        let calls: Vec<_> = calls.collect();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                futures_util::future::join_all(calls),
            )
            .await
            .expect("every caller hears back")
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
        }
    };
    let rename = |from: &str, to: &str| {
        let (store, sql) = (store.clone(), format!("ALTER TABLE {from} RENAME TO {to}"));
        async move {
            let mut tx = store.begin_write().await.unwrap();
            sqlx::query(&sql).execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    for (prefix, unflushed) in [("lone", false), ("issued", true)] {
        let kinds: Vec<String> = (0..40).map(|i| format!("{prefix}_{i:02}")).collect();
        for result in append(kinds.clone(), unflushed).await {
            result.unwrap();
        }
        // Answered means written: the rows are there at once, for any reader.
        let stored: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT kind FROM audit_events WHERE kind LIKE '{prefix}_%' ORDER BY kind"
        ))
        .fetch_all(store.reader())
        .await
        .unwrap();
        assert_eq!(stored, kinds, "each row exactly once");

        // The table gone: every queued row fails, and says so.
        rename("audit_events", "audit_events_away").await;
        let failed = append((0..5).map(|i| format!("lost_{i}")).collect(), unflushed).await;
        assert!(failed.iter().all(Result::is_err), "{failed:?}");
        rename("audit_events_away", "audit_events").await;
        for result in append(vec![format!("{prefix}_after")], unflushed).await {
            result.unwrap();
        }
    }

    // On PostgreSQL the rows answered once written go through a connection whose commits do
    // not wait for the server's flush; every other write's do.
    if matches!(backend, Backend::Postgres(_)) {
        let show = "SHOW synchronous_commit";
        let mut conn = store.autocommit_unflushed().await.unwrap();
        let unflushed: String = sqlx::query_scalar(show)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        conn.written().unwrap();
        assert_eq!(unflushed, "off");
        let mut conn = store.autocommit().await.unwrap();
        let durable: String = sqlx::query_scalar(show)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        conn.durable().await.unwrap();
        assert_eq!(durable, "on");
    }
    app.stop().await;
}

/// SQLite's automatic checkpoint is off (it ran on the writer and stalled the writes behind
/// it); the server's own checkpointer must copy the write-ahead log into the database while
/// the server runs (no connection ever closes, which is when SQLite would do it by itself)
/// and keep the log from growing burst after burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_log_is_checkpointed_in_the_background() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    let path = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let burst = |from: usize| {
        let store = app.state.store.clone();
        async move {
            for i in from..from + 1500 {
                let mut tx = store.begin_write().await.unwrap();
                sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2)")
                    .bind(format!("jti-{i:06}-{}", "x".repeat(200)))
                    .bind(now() + 600)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    };
    // 1,500 rows of over 200 bytes: 300 KB that must reach the database file itself.
    let rows = 1500 * 200;
    // Each burst writes about 6,100 log frames; left alone, the log would hold both bursts,
    // and with copying alone it would stay as long as one burst. Started over, it holds what
    // came after the restart. The file keeps its size (see `Store::checkpoint`), within the limit.
    let mut database = size(&path);
    for from in [0, 1500] {
        burst(from).await;
        tokio::time::sleep(tessera::housekeeping::CHECKPOINT_INTERVAL * 3).await;
        let grown = size(&path);
        assert!(
            grown >= database + rows,
            "the rows were not copied into the database: {database} then {grown} bytes"
        );
        database = grown;
        let frames = log_frames(&app.state.store).await;
        assert!(
            frames < tessera::store::WAL_RESET_FRAMES,
            "the log kept growing: {frames} frames after burst {from}"
        );
        let file = size(&wal);
        assert!(
            file <= tessera::store::WAL_SIZE_LIMIT,
            "the log file passed its limit: {file} bytes after burst {from}"
        );
    }
    app.stop().await;
}

/// The frames the SQLite log holds (what a `PASSIVE` checkpoint reports as the log's length),
/// after one small commit: SQLite starts a log over at the first write after a `RESTART`
/// checkpoint, whatever the file's size, and until then still counts the old frames.
///
/// While another connection checkpoints (the server's `RESTART`, waiting for readers), a
/// `PASSIVE` one cannot run and reports `busy = 1` and a length of -1, which must not be read
/// as a short log: it is asked again.
async fn log_frames(store: &tessera::store::Store) -> i64 {
    let mut tx = store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, 0)")
        .bind(format!("log-probe-{}", uuid::Uuid::new_v4()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "a checkpoint held the log for 30 s"
        );
        let mut conn = store.read().await.unwrap();
        let (busy, frames, _copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        if busy == 0 && frames >= 0 {
            return frames;
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Under steady load some reader always uses the log, so SQLite never starts it over by
/// itself: the checkpointer starts it over once it passes `WAL_RESET_FRAMES` (before, a
/// ten-minute soak left an 11 GB log and its index mapped into memory).
#[tokio::test]
async fn the_sqlite_log_stays_short_while_readers_never_stop() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    let wal = std::path::PathBuf::from(format!("{}-wal", db.url.trim_start_matches("sqlite://")));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (store, stop) = (app.state.store.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut conn = store.read().await.unwrap();
                let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_jti")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            }
        }));
    }
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = app.state.store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..1200 {
                let mut tx = store.begin_write().await.unwrap();
                sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2)")
                    .bind(format!("jti-{w}-{i:05}-{}", "x".repeat(3000)))
                    .bind(now() + 600)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    // The log's length, sampled while the writers and readers run: it must fall back (be
    // started over) while they do, not only once they stop.
    let (mut previous, mut resets, mut longest) = (0, 0, 0);
    while writers.iter().any(|w| !w.is_finished()) {
        let frames = log_frames(&app.state.store).await;
        if frames < previous {
            resets += 1;
        }
        previous = frames;
        longest = longest.max(frames);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    // 9,600 rows of 3 KB wrote over 40 MB of log frames.
    let after = eventually(std::time::Duration::from_secs(10), || {
        let store = app.state.store.clone();
        async move { log_frames(&store).await < tessera::store::WAL_RESET_FRAMES }
    })
    .await;
    let file = std::fs::metadata(&wal).map_or(0, |m| m.len());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert!(
        resets >= 1,
        "the log only grew while readers and writers ran (to {longest} frames)"
    );
    assert!(after, "the log was not started over after the load");
    assert!(
        file <= tessera::store::WAL_SIZE_LIMIT,
        "the log file passed its limit: {file} bytes"
    );
    app.stop().await;
}

const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The stored private parts of the signing keys, straight from the table.
async fn stored_private_keys(db_url: &str) -> Vec<Vec<u8>> {
    let store = tessera::store::Store::open(&test_config(db_url))
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = sqlx::query_scalar("SELECT private_key FROM signing_keys")
        .fetch_all(store.reader())
        .await
        .unwrap();
    store.close().await;
    keys
}

/// Why `config` does not start, as the operator would read it.
async fn start_error(config: tessera::Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match tessera::Application::with_listener(config, listener).await {
        Ok(_) => panic!("it started"),
        Err(e) => e.to_string(),
    }
}

/// With a master key, the private signing keys are stored AES-256-GCM-sealed (never the
/// PKCS#8 document), keys stored plain before are sealed at the next start, tokens still
/// verify across restarts, and a start without the key, or with another one, stops with a
/// clear reason instead of failing token requests.
async fn private_keys_are_encrypted_at_rest_with_the_master_key(backend: Backend) {
    let db = TestDb::new(&backend).await;
    // First without a master key: stored plain (a PKCS#8 DER document starts with 0x30).
    let app = TestApp::start(&db).await;
    let kid = app.signing_kid();
    let plain = stored_private_keys(&db.url).await;
    assert!(plain.iter().all(|k| k.first() == Some(&0x30)));
    app.stop().await;

    let with_key = || {
        let mut config = test_config(&db.url);
        config.master_key = MASTER_KEY.into();
        config
    };
    let app = TestApp::start_with(with_key(), "").await;
    assert_eq!(app.signing_kid(), kid, "the same key, now sealed");
    let sealed = stored_private_keys(&db.url).await;
    for (stored, before) in sealed.iter().zip(&plain) {
        assert!(stored.starts_with(b"TSK1"), "sealed form");
        assert!(
            !stored
                .windows(64)
                .any(|w| before.windows(64).any(|p| p == w)),
            "no run of the private key in the stored form"
        );
    }
    let token = app.state.keys.sign("JWT", &claims(&app.issuer)).unwrap();
    verify_with_jwks(&token, &app.jwks().await, &app.issuer);
    // A rotation stores the new key sealed too.
    app.state.keys.rotate().await.unwrap();
    assert!(
        stored_private_keys(&db.url)
            .await
            .iter()
            .all(|k| k.starts_with(b"TSK1"))
    );
    app.stop().await;

    let app = TestApp::start_with(with_key(), "").await;
    assert_eq!(app.signing_kid(), kid, "a restart with the key reads it");
    app.stop().await;

    let without = start_error(test_config(&db.url)).await;
    assert!(without.contains("TESSERA_MASTER_KEY"), "{without}");
    let mut other = test_config(&db.url);
    other.master_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let wrong = start_error(other).await;
    assert!(wrong.contains("cannot be decrypted"), "{wrong}");
}

/// One of two replicas rotates the signing key every quarter second while both issue access
/// tokens as fast as they can: every token verifies against the JWKS fetched from the *other*
/// replica right after it was issued. (A key is published `keys.prepublish` before it signs,
/// and that is longer than the interval at which replicas re-read the key table.)
async fn rotation_under_load_never_breaks_a_fresh_token(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.keys.refresh = Duration::from_millis(100);
    // Key times are whole seconds: the shortest prepublish that means anything is one second
    // (and it must exceed `keys.refresh`, as the README says).
    config.keys.prepublish = Duration::from_secs(2);
    let a = TestApp::start_with(config.clone(), "").await;
    let b = TestApp::start_with(config, "").await;
    let service = a
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let rotations = {
        let keys = a.state.keys.clone();
        tokio::spawn(async move {
            let mut kids = Vec::new();
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(row) = keys.rotate().await.unwrap() {
                    kids.push(row.kid);
                }
            }
            kids
        })
    };
    let mut verified = 0;
    let mut signers = std::collections::HashSet::new();
    // Past the last rotation's activation: keys made in the first 3 s start signing 2 s later.
    let until = std::time::Instant::now() + Duration::from_millis(5_500);
    while std::time::Instant::now() < until {
        for (issuer, other) in [(&a, &b), (&b, &a)] {
            let (status, body, _) = issuer
                .token(
                    &service,
                    &[("grant_type", "client_credentials"), ("scope", "api:read")],
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let token = body["access_token"].as_str().unwrap();
            let jwks = other.jwks().await;
            let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
            let published: Vec<&str> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|k| k["kid"].as_str())
                .collect();
            assert!(
                published.contains(&kid.as_str()),
                "at {} a token signed by {kid} (issued by {}), but the other replica publishes only {published:?}",
                now(),
                issuer.issuer
            );
            verify_for(token, &jwks, &issuer.issuer, &issuer.issuer);
            signers.insert(jsonwebtoken::decode_header(token).unwrap().kid.unwrap());
            verified += 1;
        }
    }
    let rotated = rotations.await.unwrap();
    assert!(rotated.len() >= 10, "rotations: {rotated:?}");
    assert!(verified > 40, "{verified} tokens");
    assert!(
        signers.len() >= 4,
        "tokens were signed by {} keys",
        signers.len()
    );
    a.stop().await;
    b.stop().await;
}
