//! Local accounts and the hosted pages, driven over HTTP as a browser would.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, Browser, TestApp, TestDb, json_output, run_tessera, test_config};
use crate::on_both_databases;

on_both_databases!(
    register_verify_sign_out_and_sign_in,
    a_signed_in_visit_pushes_the_idle_timeout_back,
    registration_refuses_duplicates_weak_passwords_and_bad_input,
    forms_without_the_right_csrf_token_are_refused,
    a_visitor_gets_forms_without_a_session_being_stored,
    a_sign_in_never_keeps_a_session_id_from_before_it,
    a_session_nobody_is_signed_in_to_is_kept_an_hour,
    unknown_user_and_wrong_password_look_the_same,
    sign_in_throttling_kicks_in_and_lifts,
    password_reset_link_is_single_use_and_ends_every_session,
    expired_links_are_refused,
    account_page_changes_profile_and_password,
    sessions_can_be_ended_one_by_one_or_everywhere,
    a_sign_in_ends_after_the_absolute_timeout,
    security_events_reach_the_audit_log,
    a_sign_in_writes_its_session_and_audit_row_together,
    cli_manages_users,
    fifty_registrations_of_one_username_make_one_account,
);

pub(crate) const PASSWORD: &str = "plum tree at dawn";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn register_verify_sign_out_and_sign_in(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let browser = app.browser();

    let form = browser.get("/register").await;
    assert_eq!(form.status, 200);
    let cookie = form
        .headers
        .get("set-cookie")
        .expect("the CSRF token's cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "not Secure on an http issuer: {cookie}"
    );

    let done = browser
        .register("alice", "Alice@Example.com", PASSWORD)
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/account");
    // Registration signs in: the session starts here, with a cookie of its own.
    let after = done
        .headers
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    assert!(after.starts_with("tessera_session="), "{after}");
    assert!(
        after.contains("HttpOnly") && after.contains("SameSite=Lax"),
        "{after}"
    );

    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(
        account.has("alice") && account.has("Alice@Example.com"),
        "{}",
        account.body
    );
    assert!(account.has("not verified"));
    assert!(
        account.has("verification link"),
        "the flash message: {}",
        account.body
    );

    // The link from the outbox shows a button; pressing it verifies, once.
    let link = app
        .link_in_email("alice@example.com", "/verify-email?token=")
        .await;
    let confirm = browser.get(&link).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.has("Verify email"));
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let verified = browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert!(verified.has("Your email address is verified"));
    let again = browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    assert_eq!(again.status, 400);
    assert!(again.has("already been used"), "{}", again.body);
    assert_eq!(
        browser.get(&link).await.status,
        400,
        "the used link's page says so too"
    );
    let account = browser.get("/account").await;
    assert!(account.has(">verified<"), "{}", account.body);

    // Sign out (POST with CSRF) and the account page is gone.
    let out = browser.account_action("/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/login");
    let gone = browser.get("/account").await;
    assert_eq!(gone.status, 303);
    assert!(gone.location().starts_with("/login"));

    // Sign in by username, and by email in another case.
    let signed_in = browser.sign_in("ALICE", PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location(), "/account");
    let other = app.browser();
    assert_eq!(
        other.sign_in("alice@EXAMPLE.com", PASSWORD).await.status,
        303
    );
    assert!(other.signed_in().await);
    // The lookup a sign-in makes: by either name, in any case; on SQLite a point read on the
    // request's own thread, not a hop to the pool's worker.
    let store = &app.state.store;
    let served = || store.inline().map(|r| r.counts());
    let before = served();
    let by_name = tessera::store::users::find_by_login(store, "ALICE")
        .await
        .unwrap();
    let by_email = tessera::store::users::find_by_login(store, "alice@EXAMPLE.com")
        .await
        .unwrap();
    let (by_name, by_email) = (by_name.unwrap(), by_email.unwrap());
    assert_eq!(
        (by_name.username.as_str(), &by_email.id),
        ("alice", &by_name.id)
    );
    match backend {
        Backend::Sqlite => {
            let ((s0, f0), (s1, f1)) = (before.unwrap(), served().unwrap());
            assert!(
                s1 >= s0 + 2 && f1 == f0,
                "lookups inline: {s0} → {s1}, {f0} → {f1}"
            );
        }
        Backend::Postgres(_) => assert!(before.is_none()),
    }

    // return_to is honoured for local paths only.
    let third = app.browser();
    let token = third.get("/login?return_to=/account").await.csrf();
    let to_local = third
        .post(
            "/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("return_to", "/account"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(to_local.location(), "/account");
    let fourth = app.browser();
    let token = fourth.get("/login").await.csrf();
    let to_evil = fourth
        .post(
            "/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("return_to", "//evil.example/x"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(
        to_evil.location(),
        "/account",
        "an open redirect was followed"
    );
    app.stop().await;
}

async fn registration_refuses_duplicates_weak_passwords_and_bad_input(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    assert_eq!(
        app.browser()
            .register("bob", "bob@example.com", PASSWORD)
            .await
            .status,
        303
    );

    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "BOB",
            "other@example.com",
            PASSWORD,
            409,
            "username is taken",
        ),
        ("bobby", "Bob@Example.COM", PASSWORD, 409, "already exists"),
        (
            "carol",
            "carol@example.com",
            "short",
            400,
            "at least 8 characters",
        ),
        (
            "carol",
            "carol@example.com",
            "password123",
            400,
            "most common",
        ),
        (
            "carolcarol",
            "carol@example.com",
            "carolcarol",
            400,
            "must not be your username",
        ),
        ("ca", "carol@example.com", PASSWORD, 400, "3 to 32"),
        ("<script>", "carol@example.com", PASSWORD, 400, "3 to 32"),
        ("carol", "not-an-email", PASSWORD, 400, "valid email"),
    ];
    for (username, email, password, status, message) in cases {
        let browser = app.browser();
        let page = browser.register(username, email, password).await;
        assert_eq!(page.status, *status, "{username}/{email}: {}", page.body);
        assert!(
            page.has(message),
            "{username}/{email}: expected {message:?} in {}",
            page.body
        );
        // The form comes back filled in (except the password) and escaped.
        assert!(!page.has("<script>\""), "user input rendered raw");
        assert!(!browser.signed_in().await);
    }
    app.stop().await;

    // Registration can be switched off.
    let mut config = test_config(&db.url);
    config.accounts.registration = false;
    let app = TestApp::start_with(config, "").await;
    assert_eq!(app.browser().get("/register").await.status, 403);
    assert!(!app.browser().get("/login").await.has("Create an account"));
    app.stop().await;
}

async fn forms_without_the_right_csrf_token_are_refused(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let browser = app.browser();
    browser.get("/login").await;
    let fields = [
        ("username", "dave"),
        ("email", "dave@example.com"),
        ("password", PASSWORD),
    ];
    let missing = browser.post("/register", &fields).await;
    assert_eq!(missing.status, 403);
    assert!(missing.has("Please try again"));
    let mut wrong = fields.to_vec();
    wrong.push(("csrf_token", "forged"));
    assert_eq!(browser.post("/register", &wrong).await.status, 403);
    // Another browser's valid token is no good either.
    let other = app.browser().get("/register").await.csrf();
    let mut foreign = fields.to_vec();
    foreign.push(("csrf_token", &other));
    assert_eq!(browser.post("/register", &foreign).await.status, 403);
    assert_eq!(browser.post("/logout", &[]).await.status, 403);
    assert_eq!(
        browser
            .post("/login", &[("username", "x"), ("password", "y")])
            .await
            .status,
        403
    );
    // The page's token without the cookie it was set in (a client with no cookies).
    let token = browser.get("/login").await.csrf();
    let bare = reqwest::Client::new()
        .post(app.url("/login"))
        .form(&[("username", "x"), ("password", "y"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    // A cookie of the attacker's choosing, repeated in the form: refused unless it has the
    // shape of a token Tessera makes (and then it is only as good as the attacker's own
    // browser, which could set it only with control of the site's cookies).
    let planted = reqwest::Client::new()
        .post(app.url("/login"))
        .header("cookie", "tessera_session_csrf=x")
        .form(&[("username", "x"), ("password", "y"), ("csrf_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 403);
    assert_eq!(
        browser
            .post("/forgot-password", &[("email", "x@example.com")])
            .await
            .status,
        403
    );

    // A malformed body is a friendly page, not a plain-text rejection.
    let garbage = browser
        .client
        .post(format!("{}/login", app.issuer))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("%ZZ=%%%")
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error());
    assert!(
        garbage.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    app.stop().await;
}

/// Showing a form to a visitor stores nothing: its CSRF token rides in a cookie of its own
/// (double submit) until there is a session to keep it in. Before, every anonymous `GET
/// /login` stored a session row, kept 12 hours: one client could add thousands a second.
async fn a_visitor_gets_forms_without_a_session_being_stored(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let sessions = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions")
            .fetch_one(app.state.store.reader())
            .await
            .unwrap()
    };
    app.browser()
        .register("frank", "frank@example.com", PASSWORD)
        .await;
    let before = sessions().await;
    for path in ["/login", "/register", "/forgot-password"] {
        for _ in 0..20 {
            assert_eq!(app.browser().get(path).await.status, 200);
        }
    }
    assert_eq!(sessions().await, before, "anonymous forms stored sessions");

    let browser = app.browser();
    let form = browser.get("/login").await;
    let set: Vec<&str> = form
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set.len(), 1, "one cookie, the token's: {set:?}");
    let cookie = set[0];
    assert!(
        cookie.starts_with("tessera_session_csrf=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    let token = form.csrf();
    assert!(cookie.starts_with(&format!("tessera_session_csrf={token};")));
    // The same browser keeps its token from page to page.
    assert_eq!(browser.get("/register").await.csrf(), token);
    assert!(
        browser
            .get("/login")
            .await
            .headers
            .get("set-cookie")
            .is_none()
    );

    let signed = browser
        .post(
            "/login",
            &[
                ("username", "frank"),
                ("password", PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert!(
        signed.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("tessera_session=")
    );
    assert_eq!(sessions().await, before + 1);
    // Signed in, forms carry the session's token; the cookie's no longer counts.
    let account = browser.get("/account").await.csrf();
    assert_ne!(account, token);
    assert_eq!(
        browser
            .post("/logout", &[("csrf_token", &token)])
            .await
            .status,
        403
    );
    assert!(browser.signed_in().await);
    assert_eq!(
        browser
            .post("/logout", &[("csrf_token", &account)])
            .await
            .status,
        303
    );
    assert!(!browser.signed_in().await);
    app.stop().await;
}

/// Session fixation: whatever session id a browser had before signing in, planted or real,
/// the signed-in session has another, and the old one signs nobody in.
async fn a_sign_in_never_keeps_a_session_id_from_before_it(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    app.browser()
        .register("heidi", "heidi@example.com", PASSWORD)
        .await;
    let session_of = |page: &crate::helpers::Page| {
        page.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("tessera_session="))
            .and_then(|c| c.split(';').next())
            .map(str::to_owned)
    };
    let account_with = |session: String| {
        let url = app.url("/account");
        async move {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .header("cookie", format!("tessera_session={session}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    // A planted id the store never had: the sign-in makes its own.
    let planted = "AAAAAAAAAAAAAAAAAAAAAA";
    let form = app.browser().get("/login").await;
    let csrf_cookie = form.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let signed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/login"))
        .header(
            "cookie",
            format!("{csrf_cookie}; tessera_session={planted}"),
        )
        .form(&[
            ("username", "heidi"),
            ("password", PASSWORD),
            ("csrf_token", &form.csrf()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let page = crate::helpers::Page {
        status: 303,
        headers: signed.headers().clone(),
        body: String::new(),
    };
    let fresh = session_of(&page).expect("a session cookie");
    assert_ne!(fresh, planted);
    assert_eq!(account_with(fresh).await, 200);
    assert_eq!(account_with(planted.to_owned()).await, 303);

    // A stored session from before (an authorization request waiting for the sign-in): the
    // sign-in moves it to a new id and the old id is gone.
    let browser = app.browser();
    let waiting = wait_in_authorization(&app, &browser).await;
    let before = session_of(&waiting).expect("the waiting request's session");
    let signed = browser
        .sign_in_at(&waiting.location(), "heidi", PASSWORD)
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let after = session_of(&signed).expect("a new session cookie");
    assert_ne!(after, before);
    assert_eq!(account_with(after).await, 200);
    assert_eq!(account_with(before).await, 303);
    app.stop().await;
}

/// Starts an authorization request in `browser`, not signed in: Tessera keeps the request in
/// a session and redirects to the sign-in page (the returned redirect).
async fn wait_in_authorization(app: &TestApp, browser: &Browser) -> crate::helpers::Page {
    let client = app
        .client(false, &["authorization_code"], &["openid"])
        .await;
    let (_verifier, challenge) = crate::helpers::pkce();
    let redirect_uri: String =
        url::form_urlencoded::byte_serialize(client.redirect_uri.as_bytes()).collect();
    let waiting = browser
        .get(&format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={redirect_uri}&scope=openid&state=s&code_challenge={challenge}&code_challenge_method=S256",
            client.id,
        ))
        .await;
    assert!(
        matches!(waiting.status, 302 | 303),
        "{}: {}",
        waiting.status,
        waiting.body
    );
    waiting
}

/// Anyone can make a session by starting an authorization request; one nobody signs in to is
/// kept `sessions.visitor_timeout` (1 h), not the 12 h of `idle_timeout`, and a sign-in gives
/// the session the full idle timeout.
async fn a_session_nobody_is_signed_in_to_is_kept_an_hour(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    app.browser()
        .register("ivan", "ivan@example.com", PASSWORD)
        .await;
    let lifetimes = || async {
        sqlx::query_as::<_, (Option<String>, i64)>("SELECT user_id, expires_at FROM sessions")
            .fetch_all(app.state.store.reader())
            .await
            .unwrap()
            .into_iter()
            .map(|(user, expires)| (user.is_some(), expires - tessera::store::now_unix()))
            .collect::<Vec<_>>()
    };
    let before = lifetimes().await.len();
    let browser = app.browser();
    let waiting = wait_in_authorization(&app, &browser).await;
    let visitor: Vec<_> = lifetimes()
        .await
        .into_iter()
        .filter(|(user, _)| !user)
        .collect();
    assert_eq!(visitor.len(), 1, "{visitor:?}");
    assert!((3590..=3600).contains(&visitor[0].1), "{visitor:?}");

    let signed = browser
        .sign_in_at(&waiting.location(), "ivan", PASSWORD)
        .await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let all = lifetimes().await;
    assert_eq!(
        all.len(),
        before + 1,
        "the waiting session became the signed-in one: {all:?}"
    );
    assert!(all.iter().all(|(user, _)| *user), "{all:?}");
    assert!(all.iter().all(|(_, left)| *left > 11 * 3600), "{all:?}");
    app.stop().await;
}

async fn unknown_user_and_wrong_password_look_the_same(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    app.browser()
        .register("erin", "erin@example.com", PASSWORD)
        .await;
    let wrong = app.browser().sign_in("erin", "not the password").await;
    let unknown = app
        .browser()
        .sign_in("nobody-here", "not the password")
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let message = "Incorrect username or password.";
    assert!(wrong.has(message) && unknown.has(message));
    let strip =
        |p: &crate::helpers::Page| p.body.replace(&p.csrf(), "").replace("nobody-here", "erin");
    assert_eq!(
        strip(&wrong),
        strip(&unknown),
        "the two pages differ beyond the echoed username"
    );
    app.stop().await;
}

async fn sign_in_throttling_kicks_in_and_lifts(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.throttle.login_failures_per_account = 3;
    config.throttle.window = Duration::from_secs(2);
    let app = TestApp::start_with(config, "").await;
    app.browser()
        .register("frank", "frank@example.com", PASSWORD)
        .await;

    let attacker = app.browser();
    for _ in 0..3 {
        assert_eq!(attacker.sign_in("frank", "guess").await.status, 401);
    }
    let blocked = attacker.sign_in("frank", "guess").await;
    assert_eq!(blocked.status, 429);
    assert!(blocked.has("Too many attempts"), "{}", blocked.body);
    assert!(blocked.has("try again in 1 minute"));
    let retry: u64 = blocked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The right password is refused too while the account is throttled, from anywhere.
    assert_eq!(app.browser().sign_in("frank", PASSWORD).await.status, 429);
    // Other accounts are not affected.
    app.browser()
        .register("grace", "grace@example.com", PASSWORD)
        .await;
    assert_eq!(app.browser().sign_in("grace", PASSWORD).await.status, 303);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        app.browser().sign_in("frank", PASSWORD).await.status,
        303,
        "the limit lifted"
    );
    app.stop().await;
}

async fn password_reset_link_is_single_use_and_ends_every_session(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let laptop = app.browser();
    laptop
        .register("heidi", "heidi@example.com", PASSWORD)
        .await;
    assert!(laptop.signed_in().await);

    // The same page for an unknown address, and no email.
    let person = app.browser();
    let unknown = person
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "nobody@example.com")],
        )
        .await;
    assert_eq!(unknown.status, 200);
    assert!(unknown.has("If an account exists"));
    let known = person
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "HEIDI@example.com")],
        )
        .await;
    assert_eq!(known.status, 200);
    assert_eq!(
        unknown.body, known.body,
        "the answer reveals whether the address has an account"
    );
    let link = app
        .link_in_email("heidi@example.com", "/reset-password?token=")
        .await;
    assert_eq!(app.emails_to("nobody@example.com"), 0);

    let form = person.get(&link).await;
    assert_eq!(form.status, 200);
    assert!(form.has("Set new password"));
    let token = link.split("token=").nth(1).unwrap().to_owned();
    // A weak password is refused without spending the link.
    let weak = person
        .post(
            "/reset-password",
            &[
                ("token", &token),
                ("password", "12345678"),
                ("csrf_token", &form.csrf()),
            ],
        )
        .await;
    assert_eq!(weak.status, 400);
    let new_password = "violet kite over harbor";
    let done = person
        .post(
            "/reset-password",
            &[
                ("token", &token),
                ("password", new_password),
                ("csrf_token", &form.csrf()),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/login");
    assert!(
        person
            .get("/login")
            .await
            .has("Your password has been changed")
    );

    assert!(!laptop.signed_in().await, "a reset ends the other sessions");
    assert_eq!(
        app.browser().sign_in("heidi", PASSWORD).await.status,
        401,
        "the old password"
    );
    assert_eq!(
        app.browser().sign_in("heidi", new_password).await.status,
        303,
        "the new password"
    );

    let used_page = person.get(&link).await;
    assert_eq!(used_page.status, 400);
    assert!(used_page.has("already been used"));
    // The reset ended this browser's session too, so take a fresh CSRF token.
    let fresh = person.get("/forgot-password").await.csrf();
    let reused = person
        .post(
            "/reset-password",
            &[
                ("token", &token),
                ("password", "another fine password"),
                ("csrf_token", &fresh),
            ],
        )
        .await;
    assert_eq!(reused.status, 400);
    assert!(reused.has("already been used"));
    app.stop().await;
}

async fn expired_links_are_refused(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.accounts.reset_ttl = Duration::from_secs(1);
    config.accounts.verification_ttl = Duration::from_secs(1);
    let app = TestApp::start_with(config, "").await;
    let browser = app.browser();
    browser.register("ivan", "ivan@example.com", PASSWORD).await;
    let verify = app
        .link_in_email("ivan@example.com", "/verify-email?token=")
        .await;
    browser
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "ivan@example.com")],
        )
        .await;
    let reset = app
        .link_in_email("ivan@example.com", "/reset-password?token=")
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for link in [verify, reset] {
        let page = browser.get(&link).await;
        assert_eq!(page.status, 400, "{link}");
        assert!(page.has("expired"), "{}", page.body);
    }
    let bogus = browser.get("/reset-password?token=not-a-real-token").await;
    assert_eq!(bogus.status, 400);
    assert!(bogus.has("not valid"));
    app.stop().await;
}

async fn account_page_changes_profile_and_password(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let browser = app.browser();
    browser.register("judy", "judy@example.com", PASSWORD).await;
    let link = app
        .link_in_email("judy@example.com", "/verify-email?token=")
        .await;
    let confirm = browser.get(&link).await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    app.browser()
        .register("mallory", "mallory@example.com", PASSWORD)
        .await;

    // A changed email is unverified and gets its own link; a taken one is refused.
    let taken = browser
        .account_action(
            "/account/profile",
            &[("name", "Judy"), ("email", "MALLORY@example.com")],
        )
        .await;
    assert_eq!(taken.status, 409);
    let saved = browser
        .account_action(
            "/account/profile",
            &[("name", "Judy <b>J</b>"), ("email", "judy@new.example")],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let account = browser.get("/account").await;
    assert!(
        account.has("judy@new.example") && account.has("not verified"),
        "{}",
        account.body
    );
    assert!(
        account.has("Judy &lt;b&gt;J&lt;/b&gt;") || account.has("Judy &#60;b&#62;J&#60;/b&#62;"),
        "name escaped: {}",
        account.body
    );
    let new_link = app
        .link_in_email("judy@new.example", "/verify-email?token=")
        .await;
    // The old address's link no longer verifies anything.
    let old = browser.get(&link).await;
    assert_eq!(old.status, 400);
    let confirm = browser.get(&new_link).await;
    let token = new_link.split("token=").nth(1).unwrap().to_owned();
    let ok = browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    assert!(ok.has("Your email address is verified"));

    // Changing the password needs the current one, and signs out other sessions only.
    let phone = app.browser();
    assert_eq!(phone.sign_in("judy", PASSWORD).await.status, 303);
    let wrong = browser
        .account_action(
            "/account/password",
            &[
                ("current_password", "nope"),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.has("current password is not correct"));
    let weak = browser
        .account_action(
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "judy")],
        )
        .await;
    assert_eq!(weak.status, 400);
    let changed = browser
        .account_action(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status, 303);
    assert!(browser.signed_in().await, "this session stays");
    assert!(!phone.signed_in().await, "the other session ended");
    assert_eq!(
        app.browser()
            .sign_in("judy", "a brand new passphrase")
            .await
            .status,
        303
    );
    app.stop().await;
}

async fn sessions_can_be_ended_one_by_one_or_everywhere(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let laptop = app.browser();
    laptop.register("ken", "ken@example.com", PASSWORD).await;
    let phone = app.browser();
    phone.sign_in("ken", PASSWORD).await;
    let tablet = app.browser();
    tablet.sign_in("ken", PASSWORD).await;

    let account = laptop.get("/account").await;
    let sessions = account.sessions();
    assert_eq!(sessions.len(), 3, "three sessions listed");
    assert_eq!(
        sessions.iter().filter(|(_, current)| *current).count(),
        1,
        "one marked as this device"
    );

    let ended = laptop
        .account_action(
            "/account/sessions/end",
            &[("session", &account.other_session())],
        )
        .await;
    assert_eq!(ended.status, 303);
    assert!(laptop.signed_in().await);
    let still = [phone.signed_in().await, tablet.signed_in().await];
    assert_eq!(
        still.iter().filter(|s| **s).count(),
        1,
        "exactly one other session ended: {still:?}"
    );

    // Another person's session id cannot be ended from this account.
    let stranger = app.browser();
    stranger.register("leo", "leo@example.com", PASSWORD).await;
    let foreign = stranger.get("/account").await;
    let foreign_id = foreign.sessions()[0].0.clone();
    let refused = laptop
        .account_action("/account/sessions/end", &[("session", &foreign_id)])
        .await;
    assert_eq!(refused.status, 303);
    assert!(stranger.signed_in().await);

    let everywhere = laptop
        .account_action("/account/sessions/end-all", &[])
        .await;
    assert_eq!(everywhere.status, 303);
    assert_eq!(everywhere.location(), "/login");
    assert!(!laptop.signed_in().await && !phone.signed_in().await && !tablet.signed_in().await);
    assert!(stranger.signed_in().await);
    app.stop().await;
}

async fn a_sign_in_ends_after_the_absolute_timeout(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.sessions.absolute_timeout = Duration::from_secs(1);
    let app = TestApp::start_with(config, "").await;
    let browser = app.browser();
    browser.register("mia", "mia@example.com", PASSWORD).await;
    assert!(browser.signed_in().await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        !browser.signed_in().await,
        "still signed in after the absolute timeout"
    );
    app.stop().await;
}

async fn security_events_reach_the_audit_log(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.throttle.login_failures_per_account = 1;
    let app = TestApp::start_with(config, "").await;
    let browser = app.browser();
    browser.register("nina", "nina@example.com", PASSWORD).await;
    let link = app
        .link_in_email("nina@example.com", "/verify-email?token=")
        .await;
    let confirm = browser.get(&link).await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser
        .post(
            "/verify-email",
            &[("token", &token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    browser.account_action("/logout", &[]).await;
    browser.sign_in("nina", PASSWORD).await;
    let other = app.browser();
    other.sign_in("nina", PASSWORD).await;
    let account = browser.get("/account").await;
    browser
        .account_action(
            "/account/sessions/end",
            &[("session", &account.other_session())],
        )
        .await;
    browser
        .account_action(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    app.browser().sign_in("nina", "wrong").await;
    app.browser().sign_in("nina", "wrong").await;

    let dir = tempfile::tempdir().unwrap();
    let out = run_tessera(
        &["audit", "tail", "-n", "100", "--json"],
        &[("TESSERA_DATABASE_URL", &db.url)],
        dir.path(),
    )
    .await;
    let events = json_output(&out);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "registered",
        "verification_sent",
        "email_verified",
        "signed_out",
        "signed_in",
        "session_revoked",
        "password_changed",
        "sign_in_failed",
        "sign_in_throttled",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let signed_in = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "signed_in")
        .unwrap();
    assert_eq!(signed_in["ip"], "127.0.0.1");
    assert!(signed_in["user_id"].is_string());
    let text = run_tessera(
        &["audit", "tail"],
        &[("TESSERA_DATABASE_URL", &db.url)],
        dir.path(),
    )
    .await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("signed_in"));
    app.stop().await;
}

/// A password sign-in writes its session and its `signed_in` row in one commit: both are
/// there after it, the row does not linger in the stored session, and a write that fails
/// leaves neither.
async fn a_sign_in_writes_its_session_and_audit_row_together(backend: Backend) {
    use tessera::store::audit::OwnedEvent;
    use tessera::store::sessions::{SaveSession, save};

    let db = TestDb::new(&backend).await;
    let app = TestApp::start(&db).await;
    let store = app.state.store.clone();
    let count = |sql: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(store.reader())
                .await
                .unwrap()
        }
    };
    app.browser()
        .register("grace", "grace@example.com", PASSWORD)
        .await;
    let browser = app.browser();
    assert_eq!(browser.sign_in("grace", PASSWORD).await.status, 303);
    assert!(browser.signed_in().await);
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE kind = 'signed_in'").await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sessions WHERE data LIKE '%pending_audit%'").await,
        0,
        "the event is written to its table, not kept in the session"
    );
    let (user_id, session_id): (String, String) = sqlx::query_as(
        "SELECT user_id, id FROM sessions WHERE user_id IS NOT NULL ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(store.reader())
    .await
    .unwrap();

    let event = |kind: &str| OwnedEvent {
        kind: kind.into(),
        outcome: "success".into(),
        user_id: Some(user_id.clone()),
        at: 1,
        ..Default::default()
    };
    fn session<'a>(id: &'a str, user: &'a str) -> SaveSession<'a> {
        SaveSession {
            id,
            user_id: Some(user),
            data: "{}",
            expires_at: i64::MAX / 2,
            user_agent: "",
            ip: "",
            now: 1,
        }
    }
    let (taken, user) = (session_id.as_str(), user_id.as_str());
    let before = store.inline_writer().map(|w| w.counts());
    // A new session under a taken id: nothing written, the caller draws another id.
    assert!(
        !save(
            &store,
            &session(taken, user),
            true,
            Some(&event("test_taken"))
        )
        .await
        .unwrap()
    );
    // An update of a stored session, and a new one: each with its row.
    assert!(
        save(
            &store,
            &session(taken, user),
            false,
            Some(&event("test_update"))
        )
        .await
        .unwrap()
    );
    assert!(
        save(
            &store,
            &session("fresh-id", user),
            true,
            Some(&event("test_new"))
        )
        .await
        .unwrap()
    );
    // A session that cannot be stored (no such account): its row is not written either. (Last:
    // its trip through the pool hands sqlx's writer back in a task of its own, and a save made
    // before that is done goes to the pool too.)
    assert!(
        save(
            &store,
            &session("orphan-id", "no-such-user"),
            true,
            Some(&event("test_orphan"))
        )
        .await
        .is_err()
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM audit_events WHERE kind LIKE 'test_%' ORDER BY id")
            .fetch_all(store.reader())
            .await
            .unwrap();
    assert_eq!(kinds, ["test_update", "test_new"]);
    assert_eq!(
        count("SELECT COUNT(*) FROM sessions WHERE id = 'fresh-id'").await,
        1
    );

    // On SQLite the sign-in's write and these ran on the calling thread; the orphan's failed
    // there and was made (and failed) through the pool. While sqlx's writer is held, a save
    // does not wait for SQLite's lock here: it queues behind the writer in the pool, and is
    // written once the writer is free.
    if let Backend::Postgres(_) = backend {
        assert!(store.inline_writer().is_none());
    } else {
        let writer = store
            .inline_writer()
            .expect("SQLite writes sessions inline");
        let (served, fell_back) = writer.counts();
        let (served_before, fell_back_before) = before.unwrap();
        assert!(
            served_before >= 1,
            "the sign-in's session was written inline"
        );
        assert_eq!(
            served,
            served_before + 3,
            "three of the four saves made inline"
        );
        assert_eq!(
            fell_back,
            fell_back_before + 1,
            "the orphan's went to the pool"
        );
        let held = store.begin_write().await.unwrap();
        let queued = tokio::spawn({
            let store = store.clone();
            let event = event("test_queued");
            let user = user.to_owned();
            async move {
                save(&store, &session("queued-id", &user), true, Some(&event))
                    .await
                    .unwrap()
            }
        });
        for _ in 0..100 {
            if writer.counts().1 > fell_back {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            writer.counts().1,
            fell_back + 1,
            "the held lock sent it to the pool"
        );
        assert!(!queued.is_finished());
        held.rollback().await.unwrap();
        assert!(queued.await.unwrap());
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_events WHERE kind = 'test_queued'").await,
            1
        );
    }
    app.stop().await;
}

async fn cli_manages_users(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("TESSERA_DATABASE_URL", db.url.as_str())];
    let create = |username: &'static str, email: &'static str, password: &'static str| {
        let url = db.url.clone();
        let cwd = dir.path().to_owned();
        async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args([
                    "user",
                    "create",
                    "--username",
                    username,
                    "--email",
                    email,
                    "--email-verified",
                    "--password-stdin",
                    "--json",
                ])
                .env("TESSERA_DATABASE_URL", url)
                .current_dir(cwd)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(format!("{password}\n").as_bytes())
                .await
                .unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };
    let out = create("oscar", "oscar@example.com", PASSWORD).await;
    let created = json_output(&out);
    assert_eq!(created["username"], "oscar");
    assert_eq!(created["email_verified"], true);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));

    let dup = create("OSCAR", "other@example.com", PASSWORD).await;
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&dup.stderr).trim().lines().count(),
        1
    );
    let weak = create("pat", "pat@example.com", "password").await;
    assert_eq!(weak.status.code(), Some(1));

    let list = run_tessera(&["user", "list", "--json"], &env, dir.path()).await;
    let users: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1);
    let show = run_tessera(
        &["user", "show", "Oscar@Example.com", "--json"],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&show.stdout).unwrap()["id"],
        created["id"]
    );

    // The account works on the pages.
    let mut config = test_config(&db.url);
    config.keys.prepublish = Duration::ZERO;
    let app = TestApp::start_with(config, "").await;
    let browser = Browser::new(&app.issuer);
    assert_eq!(browser.sign_in("oscar", PASSWORD).await.status, 303);
    assert!(browser.get("/account").await.has(">verified<"));
    app.stop().await;

    let delete = run_tessera(&["user", "delete", "oscar", "--json"], &env, dir.path()).await;
    assert!(delete.status.success());
    let missing = run_tessera(&["user", "show", "oscar"], &env, dir.path()).await;
    assert_eq!(missing.status.code(), Some(1));
}

/// Pages carry the security headers the design requires.
#[tokio::test]
async fn pages_send_security_headers() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    for path in [
        "/login",
        "/register",
        "/forgot-password",
        "/reset-password?token=x",
    ] {
        let page = app.browser().get(path).await;
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"));
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    let css = app.browser().get("/static/tessera.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    app.stop().await;
}

/// The Redis limiter, against the real Redis: two replicas share their counters.
#[tokio::test]
async fn redis_limiter_shares_counts_between_replicas() {
    let Ok(redis_url) = std::env::var("TESSERA_TEST_REDIS_URL") else {
        eprintln!("TESSERA_TEST_REDIS_URL is not set: Redis case skipped");
        return;
    };
    let db = TestDb::new(&Backend::Sqlite).await;
    let mut config = test_config(&db.url);
    config.redis_url = redis_url;
    config.throttle.login_failures_per_account = 2;
    config.throttle.window = Duration::from_secs(3);
    let a = TestApp::start_with(config.clone(), "").await;
    let b = TestApp::start_with(config, "").await;
    let user = unique("redis");
    a.browser()
        .register(&user, &format!("{user}@example.com"), PASSWORD)
        .await;
    assert_eq!(a.browser().sign_in(&user, "wrong").await.status, 401);
    assert_eq!(b.browser().sign_in(&user, "wrong").await.status, 401);
    assert_eq!(
        a.browser().sign_in(&user, PASSWORD).await.status,
        429,
        "replica a saw b's failure"
    );
    assert_eq!(b.browser().sign_in(&user, PASSWORD).await.status, 429);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(b.browser().sign_in(&user, PASSWORD).await.status, 303);
    a.stop().await;
    b.stop().await;
}

/// With Redis configured but down, throttling falls back to local counters: no outage.
#[tokio::test]
async fn an_unreachable_redis_does_not_stop_sign_in() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let mut config = test_config(&db.url);
    config.redis_url = "redis://127.0.0.1:1/".into();
    config.throttle.login_failures_per_account = 2;
    let app = TestApp::start_with(config, "").await;
    app.browser()
        .register("quinn", "quinn@example.com", PASSWORD)
        .await;
    assert_eq!(app.browser().sign_in("quinn", PASSWORD).await.status, 303);
    app.browser().sign_in("quinn", "wrong").await;
    app.browser().sign_in("quinn", "wrong").await;
    assert_eq!(
        app.browser().sign_in("quinn", PASSWORD).await.status,
        429,
        "local counters still throttle"
    );
    app.stop().await;
}

/// A browser that wanders off gets a page, not JSON; an API client still gets JSON.
#[tokio::test]
async fn unknown_paths_answer_browsers_with_a_page() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    let page = app
        .client
        .get(app.url("/no/such/page"))
        .header("accept", "text/html,*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("Page not found"));
    let api = app
        .client
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    assert_eq!(api.json::<Value>().await.unwrap()["error"], "not_found");
    app.stop().await;
}

/// With an https issuer both cookies, the visitor's CSRF token's and the session's, are
/// Secure (TLS is terminated in front of Tessera).
#[tokio::test]
async fn session_cookies_are_secure_under_an_https_issuer() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(&db.url);
    config.issuer = "https://id.example.test".into();
    let outbox = tempfile::tempdir().unwrap();
    config.mail.outbox = outbox.path().display().to_string();
    let app = tessera::Application::with_listener(config, listener)
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(app.run_until(async move { token.cancelled().await }));
    let response = reqwest::get(format!("http://{addr}/login")).await.unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let token = crate::helpers::csrf_in(&response.text().await.unwrap()).unwrap();
    let registered = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{addr}/register"))
        .header("cookie", cookie.split(';').next().unwrap())
        .form(&[
            ("username", "grace"),
            ("email", "grace@example.com"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 303);
    let session = registered.headers()["set-cookie"].to_str().unwrap();
    assert!(
        session.starts_with("tessera_session=")
            && session.contains("Secure")
            && session.contains("HttpOnly")
            && session.contains("SameSite=Lax"),
        "{session}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Every account flow, run against the real binary with debug logging: the log never holds a
/// password, a link token, a session cookie or a CSRF token.
#[tokio::test]
async fn logs_hold_no_passwords_tokens_or_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("tessera.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .current_dir(dir.path())
        .env("TESSERA_BIND", format!("127.0.0.1:{port}"))
        .env("TESSERA_ISSUER", &issuer)
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .env("TESSERA_MAIL__OUTBOX", dir.path().join("outbox"))
        .env("RUST_LOG", "debug")
        .env_remove("TESSERA_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let browser = Browser::new(&issuer);
    let up = crate::helpers::eventually(Duration::from_secs(30), || async {
        reqwest::get(format!("{issuer}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "tessera did not start");

    let mut secrets: Vec<String> = vec![PASSWORD.into(), "violet kite over harbor".into()];
    let registered = browser.register("rita", "rita@example.com", PASSWORD).await;
    secrets.extend(cookie_values(&registered));
    let account = browser.get("/account").await;
    secrets.push(account.csrf());
    let outbox = dir.path().join("outbox");
    let verify = wait_for_link(&outbox, "/verify-email?token=").await;
    let verify_token = verify.split("token=").nth(1).unwrap().to_owned();
    let confirm = browser.get(&verify).await;
    browser
        .post(
            "/verify-email",
            &[("token", &verify_token), ("csrf_token", &confirm.csrf())],
        )
        .await;
    browser.account_action("/logout", &[]).await;
    browser.sign_in("rita", "wrong password here").await;
    let signed_in = browser.sign_in("rita", PASSWORD).await;
    secrets.extend(cookie_values(&signed_in));
    browser
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "rita@example.com")],
        )
        .await;
    let reset = wait_for_link(&outbox, "/reset-password?token=").await;
    let reset_token = reset.split("token=").nth(1).unwrap().to_owned();
    let form = browser.get(&reset).await;
    let done = browser
        .post(
            "/reset-password",
            &[
                ("token", &reset_token),
                ("password", "violet kite over harbor"),
                ("csrf_token", &form.csrf()),
            ],
        )
        .await;
    assert_eq!(done.status, 303);
    secrets.push(verify_token);
    secrets.push(reset_token);

    crate::helpers::terminate(&mut child).await;
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("DEBUG"), "debug logging was on");
    assert!(logged.contains("/reset-password"), "the flows were logged");
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !logged.contains(secret.as_str()),
            "the log contains a secret: {secret}"
        );
    }
    assert!(
        !logged.contains("token="),
        "a link with its token was logged"
    );
    assert!(!logged.contains("$argon2"), "a password hash was logged");
}

pub(crate) fn cookie_values(page: &crate::helpers::Page) -> Vec<String> {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            c.split(';')
                .next()?
                .split_once('=')
                .map(|(_, v)| v.to_owned())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

async fn wait_for_link(outbox: &std::path::Path, path: &str) -> String {
    for _ in 0..100 {
        let mut newest: Option<(std::time::SystemTime, String)> = None;
        for entry in std::fs::read_dir(outbox).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .replace("=\r\n", "")
                .replace("=3D", "=");
            let modified = entry.metadata().unwrap().modified().unwrap();
            if let Some(start) = text.find(path) {
                let rest = &text[start..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                    .unwrap_or(rest.len());
                if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                    newest = Some((modified, rest[..end].to_owned()));
                }
            }
        }
        if let Some((_, link)) = newest {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no email with {path}");
}

/// Fifty browsers register the same username at once (each with its own address): exactly one
/// account is made, every other attempt gets the form back saying the username is taken, and
/// nothing fails with a 500.
async fn fifty_registrations_of_one_username_make_one_account(backend: Backend) {
    let db = TestDb::new(&backend).await;
    // The per-IP registration limit would answer most of them 429 (all from 127.0.0.1).
    let mut config = test_config(&db.url);
    config.throttle.registrations_per_ip = 1_000;
    let app = TestApp::start_with(config, "").await;
    let username = unique("race");
    let attempts = futures_util::future::join_all((0..50).map(|i| {
        let browser = app.browser();
        let username = username.clone();
        async move {
            browser
                .register(&username, &format!("{username}-{i}@example.com"), PASSWORD)
                .await
        }
    }))
    .await;
    let statuses: Vec<u16> = attempts.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    for page in attempts.iter().filter(|p| p.status != 303) {
        assert_eq!(page.status, 409, "{statuses:?}");
        assert!(page.has("taken"), "{}", page.body);
    }
    let mut conn = app.state.store.read().await.unwrap();
    let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
        .bind(&username)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
    drop(conn);
    app.stop().await;
}

/// `sessions.idle_timeout` counts from the last visit: a signed-in page view pushes the stored
/// expiry (and the cookie's) back, at most once per twelfth of the timeout.
async fn a_signed_in_visit_pushes_the_idle_timeout_back(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let mut config = test_config(&db.url);
    config.sessions.idle_timeout = std::time::Duration::from_secs(24);
    let app = TestApp::start_with(config, "").await;
    let browser = app.browser();
    assert_eq!(
        browser
            .register("judy", "judy@example.com", PASSWORD)
            .await
            .status,
        303
    );
    let expiry = || async {
        sqlx::query_scalar::<_, i64>("SELECT expires_at FROM sessions WHERE user_id IS NOT NULL")
            .fetch_one(app.state.store.reader())
            .await
            .unwrap()
    };
    // The first view takes the registration's flash message, a change of its own.
    assert_eq!(browser.get("/account").await.status, 200);
    let signed_in = expiry().await;
    // Within the interval (2 s): a visit writes nothing.
    let page = browser.get("/account").await;
    assert_eq!(page.status, 200);
    assert_eq!(expiry().await, signed_in);
    assert!(
        !page.headers.contains_key("set-cookie"),
        "{:?}",
        page.headers.get_all("set-cookie")
    );
    // Past it: the visit moves the expiry to a full timeout from now, cookie included.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let page = browser.get("/account").await;
    assert_eq!(page.status, 200);
    let pushed = expiry().await;
    assert!(pushed >= signed_in + 2, "{signed_in} -> {pushed}");
    assert!(
        (22..=24).contains(&(pushed - tessera::store::now_unix())),
        "{pushed}"
    );
    let cookie = page.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("Max-Age=24"), "{cookie}");
    app.stop().await;
}
