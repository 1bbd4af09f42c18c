//! Social sign-in, against real upstreams on loopback: a second Tessera plays Google (an
//! OpenID Connect provider found through discovery), and a stand-in serves GitHub's OAuth
//! and REST endpoints with the real response shapes. Nothing reaches the internet.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::{Backend, Browser, TestApp, TestDb, pkce, query_of, test_config};
use crate::on_both_databases;

on_both_databases!(
    a_new_google_identity_creates_an_account_found_later_by_subject,
    a_matching_email_links_only_after_the_password_proves_the_account,
    an_emailed_link_can_prove_the_account_instead,
    an_upstream_account_with_an_unverified_copy_of_the_email_gets_nothing,
    auto_and_never_modes,
    upstream_failures_end_on_a_friendly_page,
    unlinking_keeps_a_way_to_sign_in,
    github_uses_only_the_verified_primary_email,
    the_relying_party_sees_the_local_account_and_how_it_signed_in,
);

const PASSWORD: &str = "plum tree at dawn";

/// A Tessera playing Google, with a person signed up on it.
pub(crate) struct Upstream {
    pub(crate) app: TestApp,
    _db: TestDb,
}

impl Upstream {
    pub(crate) async fn start() -> Self {
        let db = TestDb::new(&Backend::Sqlite).await;
        let mut config = test_config(&db.url);
        config.sessions.cookie_name = "upstream_session".into();
        let app = TestApp::start_with(config, "").await;
        Self { app, _db: db }
    }

    /// An upstream account; `verified` marks its email verified (as Google would).
    pub(crate) async fn person(&self, username: &str, email: &str, verified: bool) {
        let store = &self.app.state.store;
        let hash = self.app.state.passwords.hash(PASSWORD).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        tessera::store::users::insert(
            &mut tx,
            &tessera::store::users::NewUser {
                id: &uuid::Uuid::now_v7().to_string(),
                username,
                email,
                email_verified: verified,
                display_name: "Upstream Person",
                password_hash: Some(&hash),
                now: tessera::store::now_unix(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// Registers the downstream Tessera as a first-party client of this upstream.
    pub(crate) async fn client_for(&self, downstream: &str, provider: &str) -> (String, String) {
        let spec = tessera::oidc::clients::Spec {
            name: "Downstream".into(),
            redirect_uris: vec![format!("{downstream}/upstream/{provider}/callback")],
            skip_consent: true,
            ..Default::default()
        };
        let (client, secret) = tessera::oidc::clients::register(&self.app.state.store, spec)
            .await
            .unwrap();
        (client.id, secret.unwrap())
    }
}

/// The Tessera under test, with "Google" pointing at `upstream`.
async fn downstream(db: &TestDb, upstream: &Upstream, mode: &str) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (id, secret) = upstream.client_for(&issuer, "google").await;
    let mut config = test_config(&db.url);
    config.upstream.google.issuer = upstream.app.issuer.clone();
    config.upstream.google.client_id = id;
    config.upstream.google.client_secret = secret;
    config.upstream.google.link_by_email = serde_json::from_value(json!(mode)).unwrap();
    TestApp::start_on(listener, config, "").await
}

/// "Continue with Google" from the sign-in page; returns where the journey ended.
async fn continue_with_google(
    down: &TestApp,
    browser: &Browser,
    up: &Upstream,
    upstream_user: &str,
) -> (String, crate::helpers::Page) {
    let login = browser.get("/login").await;
    assert!(login.has("Continue with Google"), "{}", login.body);
    let start = format!("{}/upstream/google/start", down.issuer);
    let up_origin = up.app.issuer.clone();
    let down_issuer = down.issuer.clone();
    browser
        .walk(
            &start,
            &[(up_origin.as_str(), upstream_user, PASSWORD)],
            move |next| {
                next.starts_with(&down_issuer) && !next.contains("/upstream/google/callback")
            },
        )
        .await
}

async fn account_id(down: &TestApp, email: &str) -> Option<String> {
    let mut conn = down.state.store.read().await.unwrap();
    tessera::store::users::by_email(&mut conn, email)
        .await
        .unwrap()
        .map(|u| u.id)
}

async fn identities(down: &TestApp, user_id: &str) -> Vec<String> {
    let mut conn = down.state.store.read().await.unwrap();
    tessera::store::identities::of_user(&mut conn, user_id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.provider)
        .collect()
}

async fn a_new_google_identity_creates_an_account_found_later_by_subject(backend: Backend) {
    let up = Upstream::start().await;
    up.person("gina", "gina@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let browser = Browser::new(&down.issuer);

    let (end, _) = continue_with_google(&down, &browser, &up, "gina").await;
    assert!(end.ends_with("/account"), "{end}");
    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(
        account.has("gina@example.test") && account.has(">verified<"),
        "{}",
        account.body
    );
    assert!(
        account.has("Google") && account.has("Unlink"),
        "the linked sign-in is listed"
    );
    let id = account_id(&down, "gina@example.test").await.unwrap();
    assert_eq!(identities(&down, &id).await, ["google"]);

    // Later sign-ins find the same account by subject, even after the email changes upstream.
    browser.account_action("/logout", &[]).await;
    let mut conn = up.app.state.store.read().await.unwrap();
    let upstream_user = tessera::store::users::by_login(&mut conn, "gina")
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let mut tx = up.app.state.store.begin_write().await.unwrap();
    tessera::store::users::update_profile(
        &mut tx,
        &upstream_user.id,
        "Gina",
        "gina.new@example.test",
        tessera::store::now_unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (end, _) = continue_with_google(&down, &browser, &up, "gina").await;
    assert!(end.ends_with("/account"), "{end}");
    let account = browser.get("/account").await;
    assert!(
        account.has("gina@example.test"),
        "the same local account: {}",
        account.body
    );
    assert!(
        account_id(&down, "gina.new@example.test").await.is_none(),
        "no second account"
    );

    let events = audit_kinds(&down).await;
    assert!(
        events.contains(&"identity_linked".to_owned())
            && events.contains(&"upstream_sign_in".to_owned()),
        "{events:?}"
    );
}

async fn audit_kinds(app: &TestApp) -> Vec<String> {
    let mut conn = app.state.store.read().await.unwrap();
    tessera::store::audit::tail(&mut conn, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn local_account(down: &TestApp, username: &str, email: &str) -> String {
    let browser = down.browser();
    assert_eq!(
        browser.register(username, email, PASSWORD).await.status,
        303
    );
    let link = down.link_in_email(email, "/verify-email?token=").await;
    let confirm = browser.get(&link).await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    account_id(down, email).await.unwrap()
}

async fn a_matching_email_links_only_after_the_password_proves_the_account(backend: Backend) {
    let up = Upstream::start().await;
    up.person("hank-up", "hank@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let hank = local_account(&down, "hank", "hank@example.test").await;

    let browser = Browser::new(&down.issuer);
    let (end, _) = continue_with_google(&down, &browser, &up, "hank-up").await;
    assert!(
        end.ends_with("/upstream/link"),
        "not signed in directly: {end}"
    );
    let page = browser.get("/upstream/link").await;
    assert!(page.has("already have an account"), "{}", page.body);
    assert!(page.has("Sign in and link") && page.has("Email me a link"));
    assert!(!browser.signed_in().await, "no sign-in before the proof");
    assert!(identities(&down, &hank).await.is_empty());

    let wrong = browser
        .post(
            "/upstream/link",
            &[("password", "not it"), ("csrf_token", &page.csrf())],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(identities(&down, &hank).await.is_empty());
    let page = browser.get("/upstream/link").await;
    let done = browser
        .post(
            "/upstream/link",
            &[("password", PASSWORD), ("csrf_token", &page.csrf())],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(identities(&down, &hank).await, ["google"]);
    let account = browser.get("/account").await;
    assert!(
        account.has("hank@example.test") && account.has("now linked"),
        "{}",
        account.body
    );
    // The owner is told by email that a sign-in method was added.
    assert!(
        down.link_in_email("hank@example.test", "/account")
            .await
            .ends_with("/account")
    );

    // From now on Google signs in directly.
    browser.account_action("/logout", &[]).await;
    let (end, _) = continue_with_google(&down, &browser, &up, "hank-up").await;
    assert!(end.ends_with("/account"), "{end}");
}

async fn an_emailed_link_can_prove_the_account_instead(backend: Backend) {
    let up = Upstream::start().await;
    up.person("ivy-up", "ivy@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let ivy = local_account(&down, "ivy", "ivy@example.test").await;
    let browser = Browser::new(&down.issuer);
    continue_with_google(&down, &browser, &up, "ivy-up").await;
    let sent = browser
        .submit("/upstream/link", "/upstream/link/email", &[])
        .await;
    assert_eq!(sent.status, 200);
    assert!(sent.has("We sent a link"));
    let link = down
        .link_in_email("ivy@example.test", "/upstream/confirm?token=")
        .await;
    assert!(
        identities(&down, &ivy).await.is_empty(),
        "nothing linked before the link is used"
    );

    let other_browser = Browser::new(&down.issuer);
    let confirm = other_browser.get(&link).await;
    assert_eq!(confirm.status, 200);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let done = other_browser
        .post(
            "/upstream/confirm",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(identities(&down, &ivy).await, ["google"]);
    assert!(other_browser.signed_in().await);
    // Single use.
    let again = other_browser
        .post(
            "/upstream/confirm",
            &[
                ("token", &token),
                ("csrf_token", &other_browser.get("/account").await.csrf()),
            ],
        )
        .await;
    assert_eq!(again.status, 400);
}

async fn an_upstream_account_with_an_unverified_copy_of_the_email_gets_nothing(backend: Backend) {
    let up = Upstream::start().await;
    // The attacker controls an upstream account claiming the victim's address, unverified.
    up.person("mallory", "victim@example.test", false).await;
    let db = TestDb::new(&backend).await;
    for mode in ["confirm", "auto", "never"] {
        let down = downstream(&db, &up, mode).await;
        let victim = match account_id(&down, "victim@example.test").await {
            Some(id) => id,
            None => local_account(&down, "victim", "victim@example.test").await,
        };
        let attacker = Browser::new(&down.issuer);
        let (_, page) = continue_with_google(&down, &attacker, &up, "mallory").await;
        assert_eq!(page.status, 403, "{mode}: {}", page.body);
        assert!(page.has("already exists"), "{mode}: {}", page.body);
        assert!(!attacker.signed_in().await, "{mode}: the attacker got in");
        assert!(
            identities(&down, &victim).await.is_empty(),
            "{mode}: linked to the victim"
        );
        down.stop().await;
    }
}

async fn auto_and_never_modes(backend: Backend) {
    let up = Upstream::start().await;
    up.person("jo-up", "jo@example.test", true).await;
    let db = TestDb::new(&backend).await;
    // never: refused, with a way forward.
    let down = downstream(&db, &up, "never").await;
    let jo = local_account(&down, "jojo", "jo@example.test").await;
    let browser = Browser::new(&down.issuer);
    let (_, page) = continue_with_google(&down, &browser, &up, "jo-up").await;
    assert_eq!(page.status, 403);
    assert!(
        page.has("link Google from your account page"),
        "{}",
        page.body
    );
    down.stop().await;
    // auto: both emails verified, linked at once.
    let down = downstream(&db, &up, "auto").await;
    let browser = Browser::new(&down.issuer);
    let (end, _) = continue_with_google(&down, &browser, &up, "jo-up").await;
    assert!(end.ends_with("/account"), "{end}");
    assert_eq!(identities(&down, &jo).await, ["google"]);
    down.stop().await;
}

async fn upstream_failures_end_on_a_friendly_page(backend: Backend) {
    let up = Upstream::start().await;
    up.person("kim", "kim@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let browser = Browser::new(&down.issuer);

    // A callback whose state this browser never issued.
    let page = browser
        .get("/upstream/google/callback?code=x&state=forged")
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("could not be matched"), "{}", page.body);

    // The person cancels upstream.
    let start = browser.get("/upstream/google/start").await;
    let state = query_of(&start.location())["state"].clone();
    let page = browser
        .get(&format!(
            "/upstream/google/callback?error=access_denied&state={state}"
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("cancelled"), "{}", page.body);

    // A code from one flow presented with another flow's state (a code injection): the
    // PKCE verifier and the nonce belong to the other flow, so it is refused.
    let first = browser.get("/upstream/google/start").await;
    let first_state = query_of(&first.location())["state"].clone();
    let up_browser = &browser;
    let (_, _) = up_browser
        .walk(
            &first.location(),
            &[(up.app.issuer.as_str(), "kim", PASSWORD)],
            |next| next.contains("/upstream/google/callback"),
        )
        .await;
    let second = browser.get("/upstream/google/start").await;
    let (callback, _) = up_browser
        .walk(
            &second.location(),
            &[(up.app.issuer.as_str(), "kim", PASSWORD)],
            |next| next.contains("/upstream/google/callback"),
        )
        .await;
    let code = query_of(&callback)["code"].clone();
    let page = browser
        .get(&format!(
            "/upstream/google/callback?code={code}&state={first_state}"
        ))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        account_id(&down, "kim@example.test").await.is_none(),
        "no half-made account"
    );

    // The provider is down.
    up.app.stop().await;
    let broken = Browser::new(&down.issuer);
    let page = broken.get("/upstream/google/start").await;
    if page.status == 303 {
        // Discovery was cached: the failure shows at the token exchange instead.
        let state = query_of(&page.location())["state"].clone();
        let page = broken
            .get(&format!("/upstream/google/callback?code=x&state={state}"))
            .await;
        assert_eq!(page.status, 400);
        assert!(
            page.has("could not be reached") || page.has("could not accept"),
            "{}",
            page.body
        );
    } else {
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.has("could not be reached"), "{}", page.body);
    }
    let events = audit_kinds(&down).await;
    assert!(
        events.iter().filter(|k| *k == "upstream_sign_in").count() >= 3,
        "{events:?}"
    );
}

async fn unlinking_keeps_a_way_to_sign_in(backend: Backend) {
    let up = Upstream::start().await;
    up.person("lee", "lee@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let browser = Browser::new(&down.issuer);
    continue_with_google(&down, &browser, &up, "lee").await;
    let id = account_id(&down, "lee@example.test").await.unwrap();
    let mut conn = down.state.store.read().await.unwrap();
    let identity = tessera::store::identities::of_user(&mut conn, &id)
        .await
        .unwrap()
        .remove(0);
    drop(conn);
    // Created from Google, no password: Google is the only way in, so it stays.
    let refused = browser
        .account_action(
            "/account/identities/unlink",
            &[("provider", "google"), ("subject", &identity.subject)],
        )
        .await;
    assert_eq!(refused.status, 303);
    assert!(browser.get("/account").await.has("only way to sign in"));
    assert_eq!(identities(&down, &id).await, ["google"]);

    // With a password set (through the reset flow), unlinking works.
    browser
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "lee@example.test")],
        )
        .await;
    let link = down
        .link_in_email("lee@example.test", "/reset-password?token=")
        .await;
    let form = browser.get(&link).await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser
        .post(
            "/reset-password",
            &[
                ("token", &token),
                ("password", "violet kite over harbor"),
                ("csrf_token", &form.csrf()),
            ],
        )
        .await;
    browser
        .sign_in("lee@example.test", "violet kite over harbor")
        .await;
    let done = browser
        .account_action(
            "/account/identities/unlink",
            &[("provider", "google"), ("subject", &identity.subject)],
        )
        .await;
    assert_eq!(done.status, 303);
    assert!(identities(&down, &id).await.is_empty());
    assert!(
        audit_kinds(&down)
            .await
            .contains(&"identity_unlinked".to_owned())
    );
}

/// A GitHub stand-in: authorize (auto-approves), token (checks the code and PKCE), /user and
/// /user/emails, in GitHub's response shapes.
#[derive(Clone)]
struct FakeGithub {
    emails: Arc<Mutex<Value>>,
    codes: Arc<Mutex<Vec<(String, String)>>>,
}

async fn github_authorize(
    State(gh): State<FakeGithub>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let code = uuid::Uuid::new_v4().simple().to_string();
    gh.codes.lock().unwrap().push((
        code.clone(),
        q.get("code_challenge").cloned().unwrap_or_default(),
    ));
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn github_token(State(gh): State<FakeGithub>, body: String) -> impl IntoResponse {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let known = gh
        .codes
        .lock()
        .unwrap()
        .iter()
        .find(|(c, _)| Some(c) == form.get("code"))
        .cloned();
    let ok = known.is_some_and(|(_, challenge)| {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        tessera::crypto::b64url(tessera::crypto::sha256(verifier.as_bytes())) == challenge
    });
    if ok {
        Json(json!({ "access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email" })).into_response()
    } else {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": "bad_verification_code" })),
        )
            .into_response()
    }
}

async fn fake_github(emails: Value) -> (String, FakeGithub) {
    let gh = FakeGithub {
        emails: Arc::new(Mutex::new(emails)),
        codes: Arc::default(),
    };
    let app = Router::new()
        .route("/login/oauth/authorize", get(github_authorize))
        .route("/login/oauth/access_token", post(github_token))
        .route("/user", get(|| async { Json(json!({ "id": 583231, "login": "octocat", "name": "The Octocat", "email": null })) }))
        .route("/user/emails", get(|State(gh): State<FakeGithub>| async move { Json(gh.emails.lock().unwrap().clone()) }))
        .with_state(gh.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, gh)
}

async fn github_uses_only_the_verified_primary_email(backend: Backend) {
    // An unverified primary address and a verified secondary that belongs to someone here.
    let (base, gh) = fake_github(json!([
        { "email": "octo@unverified.example", "primary": true, "verified": false, "visibility": "private" },
        { "email": "nina@example.test", "primary": false, "verified": true, "visibility": null },
    ]))
    .await;
    let db = TestDb::new(&backend).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(&db.url);
    config.upstream.github.client_id = "gh-client".into();
    config.upstream.github.client_secret = "gh-secret".into();
    config.upstream.github.authorize_url = format!("{base}/login/oauth/authorize");
    config.upstream.github.token_url = format!("{base}/login/oauth/access_token");
    config.upstream.github.api_url = base.clone();
    let down = TestApp::start_on(listener, config, "").await;
    let nina = local_account(&down, "nina", "nina@example.test").await;

    let browser = Browser::new(&down.issuer);
    assert!(browser.get("/login").await.has("Continue with GitHub"));
    let issuer = down.issuer.clone();
    let (end, _) = browser
        .walk(
            &format!("{}/upstream/github/start", down.issuer),
            &[],
            |n| n.starts_with(&issuer) && !n.contains("/callback"),
        )
        .await;
    assert!(end.ends_with("/account"), "{end}");
    // A new account with the unverified primary address, not a link to nina.
    assert!(identities(&down, &nina).await.is_empty());
    let created = account_id(&down, "octo@unverified.example")
        .await
        .expect("account from the primary email");
    let account = browser.get("/account").await;
    assert!(
        account.has("not verified") && account.has("octocat"),
        "{}",
        account.body
    );
    assert_eq!(identities(&down, &created).await, ["github"]);

    // A verified primary that matches an account asks for proof.
    browser.account_action("/logout", &[]).await;
    *gh.emails.lock().unwrap() = json!([{ "email": "nina@example.test", "primary": true, "verified": true, "visibility": "public" }]);
    let other = Browser::new(&down.issuer);
    let (end, _) = other
        .walk(
            &format!("{}/upstream/github/start", down.issuer),
            &[],
            |n| n.starts_with(&issuer) && !n.contains("/callback"),
        )
        .await;
    // Found by subject: the identity is already linked to the account made above.
    assert!(end.ends_with("/account"), "{end}");
    assert!(
        other.get("/account").await.has("octo@unverified.example"),
        "found by subject, not by the new email"
    );
}

async fn the_relying_party_sees_the_local_account_and_how_it_signed_in(backend: Backend) {
    let up = Upstream::start().await;
    up.person("max", "max@example.test", true).await;
    let db = TestDb::new(&backend).await;
    let down = downstream(&db, &up, "confirm").await;
    let rp = down.client(false, &[], &[]).await;
    let browser = Browser::new(&down.issuer);
    continue_with_google(&down, &browser, &up, "max").await;
    let local = account_id(&down, "max@example.test").await.unwrap();

    let (verifier, challenge) = pkce();
    let back = browser
        .authorize(
            &[
                ("response_type", "code"),
                ("client_id", &rp.id),
                ("redirect_uri", &rp.redirect_uri),
                ("scope", "openid email"),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            None,
        )
        .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens, _) = down
        .token(
            &rp,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &rp.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let claims =
        jsonwebtoken::dangerous::insecure_decode::<Value>(tokens["id_token"].as_str().unwrap())
            .unwrap()
            .claims;
    assert_eq!(
        claims["sub"],
        local.as_str(),
        "the local account's id, never the upstream's"
    );
    assert_eq!(claims["amr"], json!(["fed"]));
    assert_eq!(claims["idp"], "google");
}

/// Linking from the account page needs the page's CSRF token (no link CSRF), links to the
/// signed-in account whatever the upstream email, and never moves an identity linked elsewhere.
#[tokio::test]
async fn linking_from_the_account_page() {
    let up = Upstream::start().await;
    up.person("olga-up", "olga.upstream@example.test", false)
        .await;
    let db = TestDb::new(&Backend::Sqlite).await;
    let down = downstream(&db, &up, "confirm").await;
    let olga = local_account(&down, "olga", "olga@example.test").await;
    let browser = Browser::new(&down.issuer);
    browser.sign_in("olga", PASSWORD).await;

    // Without the token (what another site could send), nothing starts.
    assert_eq!(browser.post("/upstream/google/link", &[]).await.status, 403);
    let forged = browser.get("/upstream/google/start?link=1").await;
    assert!(identities(&down, &olga).await.is_empty());
    drop(forged);

    let start = browser
        .submit("/account", "/upstream/google/link", &[])
        .await;
    assert_eq!(start.status, 303);
    let issuer = down.issuer.clone();
    let (end, _) = browser
        .walk(
            &start.location(),
            &[(up.app.issuer.as_str(), "olga-up", PASSWORD)],
            |n| n.starts_with(&issuer) && !n.contains("/callback"),
        )
        .await;
    assert!(end.ends_with("/account"), "{end}");
    assert_eq!(
        identities(&down, &olga).await,
        ["google"],
        "linked although the upstream email is unverified and different"
    );

    // Another account cannot take that identity over.
    let _pat = local_account(&down, "pat", "pat@example.test").await;
    let other = Browser::new(&down.issuer);
    other.sign_in("pat", PASSWORD).await;
    let start = other.submit("/account", "/upstream/google/link", &[]).await;
    let (_, page) = other
        .walk(
            &start.location(),
            &[(up.app.issuer.as_str(), "olga-up", PASSWORD)],
            |n| n.starts_with(&issuer) && !n.contains("/callback"),
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.has("already linked to a different account"));
    assert_eq!(identities(&down, &olga).await, ["google"]);
}

/// A hostile OpenID provider: a real discovery document and JWKS (those of an upstream
/// Tessera, whose key signs), but ID tokens with one thing wrong each time.
#[derive(Clone)]
struct Hostile {
    base: String,
    upstream: Arc<TestApp>,
    fault: Arc<Mutex<&'static str>>,
    nonces: Arc<Mutex<Vec<String>>>,
}

async fn hostile_discovery(State(h): State<Hostile>) -> Json<Value> {
    Json(json!({
        "issuer": h.base,
        "authorization_endpoint": format!("{}/authorize", h.base),
        "token_endpoint": format!("{}/token", h.base),
        "jwks_uri": format!("{}/.well-known/jwks.json", h.upstream.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn hostile_authorize(
    State(h): State<Hostile>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    h.nonces.lock().unwrap().push(q["nonce"].clone());
    Redirect::to(&format!(
        "{}?code=c0de&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn hostile_token(State(h): State<Hostile>) -> Json<Value> {
    let fault = *h.fault.lock().unwrap();
    let nonce = h.nonces.lock().unwrap().last().cloned().unwrap_or_default();
    let now = tessera::store::now_unix();
    let mut claims = json!({
        "iss": h.base, "sub": "hostile-1", "aud": "downstream", "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "target@example.test", "email_verified": true,
    });
    match fault {
        "nonce" => claims["nonce"] = json!("not-the-nonce"),
        "audience" => claims["aud"] = json!("someone-else"),
        "issuer" => claims["iss"] = json!("https://evil.example"),
        "expired" => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        _ => {}
    }
    let mut id_token = h.upstream.state.keys.sign("JWT", &claims).unwrap();
    if fault == "signature" {
        let mut parts: Vec<String> = id_token.split('.').map(str::to_owned).collect();
        claims["sub"] = json!("someone-else");
        parts[1] = tessera::crypto::b64url(serde_json::to_vec(&claims).unwrap());
        id_token = parts.join(".");
    }
    Json(
        json!({ "access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token }),
    )
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_audience_issuer_expiry_or_signature_are_refused() {
    let up = Upstream::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hostile = Hostile {
        base: base.clone(),
        upstream: Arc::new(up.app),
        fault: Arc::new(Mutex::new("none")),
        nonces: Arc::default(),
    };
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(hostile_discovery))
        .route("/authorize", get(hostile_authorize))
        .route("/token", post(hostile_token))
        .with_state(hostile.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let db = TestDb::new(&Backend::Sqlite).await;
    let mut config = test_config(&db.url);
    config.upstream.google.issuer = base;
    config.upstream.google.client_id = "downstream".into();
    config.upstream.google.client_secret = "secret".into();
    let down = TestApp::start_with(config, "").await;
    let issuer = down.issuer.clone();

    for fault in ["nonce", "audience", "issuer", "expired", "signature"] {
        *hostile.fault.lock().unwrap() = fault;
        let browser = Browser::new(&down.issuer);
        let (_, page) = browser
            .walk(
                &format!("{}/upstream/google/start", down.issuer),
                &[],
                |n| n.starts_with(&issuer) && !n.contains("/callback"),
            )
            .await;
        assert_eq!(page.status, 400, "{fault}: {}", page.body);
        assert!(page.has("could not accept"), "{fault}: {}", page.body);
        assert!(!browser.signed_in().await, "{fault}: signed in");
        assert!(
            account_id(&down, "target@example.test").await.is_none(),
            "{fault}: an account was made"
        );
    }
    // The same provider with nothing wrong works, so the refusals above were for the faults.
    *hostile.fault.lock().unwrap() = "none";
    let browser = Browser::new(&down.issuer);
    let (end, _) = browser
        .walk(
            &format!("{}/upstream/google/start", down.issuer),
            &[],
            |n| n.starts_with(&issuer) && !n.contains("/callback"),
        )
        .await;
    assert!(end.ends_with("/account"), "{end}");
    assert!(account_id(&down, "target@example.test").await.is_some());
}
