//! PostgreSQL: each replica's in-memory mirror of the clients and the revoked access-token ids
//! (`store::mirror`), driven through two replicas of one database, the CLI beside them, and
//! a listener connection killed under a replica.

use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{
    Backend, TestApp, TestClient, TestDb, assert_succeeded, eventually, json_output, run_tessera,
};

/// How long a change may take to reach another replica in these tests: the notification's
/// delay is well under a millisecond here; this is the margin of a loaded CI machine.
const PROPAGATION: Duration = Duration::from_secs(2);

async fn trusted(app: &TestApp) {
    let mirror = app.state.store.mirror().expect("PostgreSQL keeps a mirror");
    assert!(
        eventually(Duration::from_secs(10), || async { mirror.trusted() }).await,
        "the mirror never became current"
    );
}

/// On PostgreSQL (when the suite has one): a fresh database, a server whose mirror is current,
/// and a confidential client for `client_credentials`.
async fn postgres_app() -> Option<(TestDb, TestApp, TestClient)> {
    let db = TestDb::new(&Backend::postgres()?).await;
    let app = TestApp::start(&db).await;
    trusted(&app).await;
    let service = app.client(false, &["client_credentials"], &[]).await;
    Some((db, app, service))
}

async fn service_token(app: &TestApp, service: &TestClient) -> String {
    let (status, body, _) = app
        .token(service, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn active(app: &TestApp, client: &TestClient, token: &str) -> Option<bool> {
    let (status, body) = app
        .backchannel("/introspect", client, &[("token", token)])
        .await;
    (status == 200).then(|| body["active"] == true)
}

fn with_secret(client: &TestClient, secret: &str) -> TestClient {
    TestClient {
        id: client.id.clone(),
        secret: Some(secret.to_owned()),
        redirect_uri: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_client_changes_reach_every_replica() {
    let Some((db, a, service)) = postgres_app().await else {
        return;
    };
    let b = a.replica(&db).await;
    trusted(&b).await;
    let token = service_token(&a, &service).await;

    // Replica B answers from memory: the client once read, the revocation list always.
    assert_eq!(active(&b, &service, &token).await, Some(true));
    let (served_before, _) = b.state.store.mirror().unwrap().counts();
    for _ in 0..5 {
        assert_eq!(active(&b, &service, &token).await, Some(true));
    }
    let (served, _) = b.state.store.mirror().unwrap().counts();
    assert!(
        served >= served_before + 10,
        "five introspections, two answers each from memory: {served_before} → {served}"
    );

    // Revoked on A: A's own next answer knows at once (RFC 7009 §2.2), B's within the
    // notification's delay.
    let (status, _) = a
        .backchannel("/revoke", &service, &[("token", &token)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(active(&a, &service, &token).await, Some(false));
    assert!(
        eventually(PROPAGATION, || async {
            active(&b, &service, &token).await == Some(false)
        })
        .await,
        "replica B still calls a revoked token active"
    );
    let fresh = service_token(&b, &service).await;
    assert_eq!(active(&a, &service, &fresh).await, Some(true));

    // The CLI, another process, rotates the secret: both replicas refuse the old one.
    let dir = tempfile::tempdir().unwrap();
    let env = [("TESSERA_DATABASE_URL", db.url.as_str())];
    let out = run_tessera(
        &["client", "rotate-secret", &service.id, "--json"],
        &env,
        dir.path(),
    )
    .await;
    let rotated = json_output(&out);
    let renewed = with_secret(&service, rotated["client_secret"].as_str().unwrap());
    for app in [&a, &b] {
        assert!(
            eventually(PROPAGATION, || async {
                active(app, &service, &fresh).await.is_none()
            })
            .await,
            "the old secret is still accepted"
        );
        assert_eq!(active(app, &renewed, &fresh).await, Some(true));
    }

    // Deleted by the CLI: no replica knows the client any more.
    let out = run_tessera(&["client", "delete", &service.id], &env, dir.path()).await;
    assert_succeeded(&out);
    for app in [&a, &b] {
        assert!(
            eventually(PROPAGATION, || async {
                active(app, &renewed, &fresh).await.is_none()
            })
            .await,
            "a deleted client is still accepted"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_its_listener_reads_the_database_until_it_has_loaded_again() {
    let Some((db, app, service)) = postgres_app().await else {
        return;
    };
    let mirror = app.state.store.mirror().unwrap();
    assert_eq!(mirror.sessions(), 1);
    let first = service_token(&app, &service).await;
    let second = service_token(&app, &service).await;
    assert_eq!(active(&app, &service, &first).await, Some(true));

    // Kill the listener's connection, as a failover or an idle-connection reaper would.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(tessera::store::mirror::LISTENER_NAME)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "one listener per replica");
    assert!(
        eventually(Duration::from_secs(5), || async { !mirror.trusted() }).await,
        "the replica never noticed its listener was gone"
    );

    // Revoked while nobody listens: the announcement is lost, yet the replica knows, from
    // the database now and from its reload later.
    let (_, database_before) = mirror.counts();
    let (status, _) = app
        .backchannel("/revoke", &service, &[("token", &first)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(active(&app, &service, &first).await, Some(false));
    if mirror.sessions() == 1 {
        // Not loaded again yet, so the answer came from the database.
        let (_, database_after) = mirror.counts();
        assert!(database_after > database_before);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            mirror.sessions() == 2 && mirror.trusted()
        })
        .await,
        "the listener never came back"
    );
    let (served_before, _) = mirror.counts();
    assert_eq!(active(&app, &service, &first).await, Some(false));
    assert_eq!(active(&app, &service, &second).await, Some(true));
    let (served, _) = mirror.counts();
    assert!(served > served_before, "answered from memory again");

    // A revocation written by hand, outside any replica, is heard too.
    let jti = claims(&second)["jti"].as_str().unwrap().to_owned();
    sqlx::query("INSERT INTO revoked_jti (jti, expires_at) VALUES ($1, $2)")
        .bind(&jti)
        .bind(i64::MAX)
        .execute(&mut admin)
        .await
        .unwrap();
    assert!(
        eventually(PROPAGATION, || async {
            active(&app, &service, &second).await == Some(false)
        })
        .await
    );
    admin.close().await.unwrap();
    app.stop().await;
}

fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
