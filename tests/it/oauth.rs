//! The authorization server, over HTTP, as relying parties and attackers use it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::helpers::{
    Backend, Browser, TestApp, TestClient, TestDb, json_output, pkce, query_of, run_tessera,
    test_config,
};
use crate::on_both_databases;

on_both_databases!(
    code_flow_issues_tokens_a_relying_party_can_verify,
    unknown_clients_and_redirect_uris_get_a_page_never_a_redirect,
    bad_authorization_requests_go_back_with_an_error,
    prompt_none_login_and_consent,
    token_endpoint_refuses_what_it_must,
    a_confidential_client_without_pkce_gets_a_working_refresh_token,
    a_replayed_code_revokes_what_it_issued,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    concurrent_use_of_one_code_or_refresh_token_succeeds_once,
    client_credentials_for_services,
    revocation_and_introspection,
    rp_initiated_logout,
    approved_apps_can_be_revoked,
    cli_manages_clients,
    hostile_input_gets_clean_errors,
    every_code_issued_is_stored_with_its_audit_row,
);

const PASSWORD: &str = "plum tree at dawn";

async fn setup(backend: &Backend) -> (TestDb, TestApp, Browser) {
    let db = TestDb::new(backend).await;
    let app = TestApp::start(&db).await;
    let browser = app.browser();
    assert_eq!(
        browser
            .register("alice", "alice@example.com", PASSWORD)
            .await
            .status,
        303
    );
    (db, app, browser)
}

fn auth_query<'a>(
    client: &'a TestClient,
    challenge: &'a str,
    scope: &'a str,
    state: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", scope),
        ("state", state),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// Runs a full authorization and code exchange; returns the token response.
async fn tokens(app: &TestApp, browser: &Browser, client: &TestClient, scope: &str) -> Value {
    let (verifier, challenge) = pkce();
    let back = browser
        .authorize(
            &auth_query(client, &challenge, scope, "st"),
            Some(("alice", PASSWORD)),
        )
        .await;
    let code = query_of(&back)["code"].clone();
    let (status, body, _) = app
        .token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn verify(app_jwks: &Value, token: &str, audience: &str, issuer: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = app_jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header.kid.clone().unwrap().as_str())
        .unwrap();
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

async fn code_flow_issues_tokens_a_relying_party_can_verify(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let (verifier, challenge) = pkce();

    // Not signed in: the login page, then consent, then back with code, state and iss.
    let fresh = app.browser();
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(auth_query(
        &client,
        &challenge,
        "openid profile email offline_access",
        "xyz",
    ));
    let first = fresh.get(url.as_str()).await;
    assert_eq!(first.status, 303);
    assert!(
        first.location().starts_with("/login?return_to="),
        "{}",
        first.location()
    );
    let back = fresh
        .authorize(
            &auth_query(
                &client,
                &challenge,
                "openid profile email offline_access",
                "xyz",
            ),
            Some(("alice", PASSWORD)),
        )
        .await;
    let params = query_of(&back);
    assert!(back.starts_with("https://app.example/cb?"));
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], app.issuer, "RFC 9207 iss");
    let code = &params["code"];

    let (status, body, headers) = app
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(body["scope"], "openid profile email offline_access");
    let jwks = app.jwks().await;

    let id = verify(
        &jwks,
        body["id_token"].as_str().unwrap(),
        &client.id,
        &app.issuer,
    );
    let user_id = id["sub"].as_str().unwrap().to_owned();
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["azp"], client.id.as_str());
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["email_verified"], false);
    assert_eq!(id["preferred_username"], "alice");
    assert!(id["auth_time"].as_i64().unwrap() > 0);
    assert!(id["sid"].is_string());
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        id["at_hash"],
        tessera::oidc::tokens::at_hash(access).as_str()
    );

    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let at = verify(&jwks, access, &app.issuer, &app.issuer);
    assert_eq!(at["sub"], user_id.as_str());
    assert_eq!(at["client_id"], client.id.as_str());
    assert!(at["jti"].is_string());

    // Userinfo, GET and POST.
    let info: Value = app.userinfo(access).await.json().await.unwrap();
    assert_eq!(info["sub"], user_id.as_str());
    assert_eq!(info["email"], "alice@example.com");
    let info: Value = app
        .client
        .post(app.url("/userinfo"))
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["preferred_username"], "alice");

    // Consent is remembered: the same request goes straight back.
    let (_, challenge) = pkce();
    let mut again = url::Url::parse(&app.url("/authorize")).unwrap();
    again
        .query_pairs_mut()
        .extend_pairs(auth_query(&client, &challenge, "openid email", "s2"));
    let direct = fresh.get(again.as_str()).await;
    assert_eq!(direct.status, 303);
    assert!(
        direct
            .location()
            .starts_with("https://app.example/cb?code="),
        "{}",
        direct.location()
    );

    // Scopes limit claims: no email without the email scope.
    let narrow = tokens(&app, &browser, &client, "openid").await;
    let id = verify(
        &jwks,
        narrow["id_token"].as_str().unwrap(),
        &client.id,
        &app.issuer,
    );
    assert!(id.get("email").is_none() && id.get("preferred_username").is_none());
    assert!(
        narrow.get("refresh_token").is_none(),
        "no refresh token without offline_access"
    );
}

async fn unknown_clients_and_redirect_uris_get_a_page_never_a_redirect(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let (_, challenge) = pkce();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("client_id", "nope"),
            ("redirect_uri", "https://app.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://evil.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/cb/"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://APP.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/cb?x=1"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "http://app.example/cb"),
        ],
        // Registered: https://app.example/cb. Every look-alike below is refused (RFC 9700
        // §4.1.3: exact string matching).
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/%63b"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example@evil.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://user@app.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/cb/extra"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/cb#frag"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example:443/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example./cb"),
        ],
        vec![
            ("client_id", &client.id),
            // IDN look-alike: a Cyrillic "а", and its punycode form.
            ("redirect_uri", "https://\u{430}pp.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://xn--pp-7kc.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example\\@evil.example/cb"),
        ],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", " https://app.example/cb"),
        ],
        vec![("client_id", &client.id)],
        vec![("redirect_uri", "https://app.example/cb")],
        vec![
            ("client_id", &client.id),
            ("redirect_uri", "https://app.example/cb"),
            ("redirect_uri", "https://evil.example/cb"),
        ],
    ];
    for case in cases {
        let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
        url.query_pairs_mut().extend_pairs(&case).extend_pairs([
            ("response_type", "code"),
            ("scope", "openid"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        let page = browser.get(url.as_str()).await;
        assert_eq!(page.status, 400, "{case:?}: {}", page.body);
        assert!(
            page.headers.get("location").is_none(),
            "{case:?} redirected"
        );
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            page.has("This sign-in request can"),
            "{case:?}: {}",
            page.body
        );
    }
}

async fn bad_authorization_requests_go_back_with_an_error(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let public = app.client(true, &[], &[]).await;
    let (_, challenge) = pkce();
    let base = |c: &TestClient| {
        vec![
            ("client_id", c.id.clone()),
            ("redirect_uri", c.redirect_uri.clone()),
            ("state", "s1".to_owned()),
        ]
    };
    type Case<'a> = (&'a TestClient, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            &client,
            vec![("response_type", "token"), ("scope", "openid")],
            "unsupported_response_type",
        ),
        (&client, vec![("scope", "openid")], "invalid_request"),
        (
            &client,
            vec![("response_type", "code"), ("scope", "openid admin")],
            "invalid_scope",
        ),
        (&client, vec![("response_type", "code")], "invalid_scope"),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &challenge),
            ],
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("scope", "email"),
            ],
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("prompt", "none login"),
            ],
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("max_age", "soon"),
            ],
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("response_type", "code"),
                ("scope", "openid"),
                ("request", "eyJ..."),
            ],
            "invalid_request",
        ),
        (
            &public,
            vec![("response_type", "code"), ("scope", "openid")],
            "invalid_request",
        ),
    ];
    for (c, extra, expected) in cases {
        let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .extend_pairs(base(c))
            .extend_pairs(&extra);
        let page = browser.get(url.as_str()).await;
        assert_eq!(page.status, 303, "{extra:?}: {}", page.body);
        let location = page.location();
        assert!(
            location.starts_with(&c.redirect_uri),
            "{extra:?}: {location}"
        );
        let q = query_of(&location);
        assert_eq!(q["error"], expected, "{extra:?}: {location}");
        assert_eq!(q["state"], "s1");
        assert_eq!(q["iss"], app.issuer);
        assert!(!q["error_description"].is_empty());
        assert!(!q.contains_key("code"));
    }
}

async fn prompt_none_login_and_consent(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let (_, challenge) = pkce();
    let with = |extra: Vec<(&'static str, &'static str)>| {
        let mut q = auth_query(&client, &challenge, "openid", "st");
        q.extend(extra);
        let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
        url.query_pairs_mut().extend_pairs(q);
        url.to_string()
    };
    // Nobody signed in: login_required.
    let page = app.browser().get(&with(vec![("prompt", "none")])).await;
    assert_eq!(query_of(&page.location())["error"], "login_required");
    // Signed in but never approved: consent_required.
    let page = browser.get(&with(vec![("prompt", "none")])).await;
    assert_eq!(query_of(&page.location())["error"], "consent_required");
    // Consent denied: access_denied.
    let page = browser.get(&with(vec![])).await;
    assert_eq!(page.status, 200);
    assert!(page.has("Test App") && page.has("Allow") && page.has("Deny"));
    let request = page.field("request");
    let denied = browser
        .post(
            "/authorize/consent",
            &[
                ("csrf_token", &page.csrf()),
                ("request", &request),
                ("decision", "deny"),
            ],
        )
        .await;
    let q = query_of(&denied.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st");
    // The consent form needs its CSRF token.
    let page = browser.get(&with(vec![])).await;
    let request = page.field("request");
    let forged = browser
        .post(
            "/authorize/consent",
            &[
                ("csrf_token", "forged"),
                ("request", &request),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    // Approve once; then prompt=none succeeds silently.
    browser
        .authorize(&auth_query(&client, &challenge, "openid", "st"), None)
        .await;
    let page = browser.get(&with(vec![("prompt", "none")])).await;
    assert!(
        query_of(&page.location()).contains_key("code"),
        "{}",
        page.location()
    );
    // prompt=login and max_age=0 ask for the password again even though signed in.
    for extra in [vec![("prompt", "login")], vec![("max_age", "0")]] {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let page = browser.get(&with(extra.clone())).await;
        assert!(
            page.location().starts_with("/login"),
            "{extra:?}: {}",
            page.location()
        );
        let back = browser
            .authorize(
                &auth_query(&client, &challenge, "openid", "st")
                    .into_iter()
                    .chain(extra.clone())
                    .collect::<Vec<_>>(),
                Some(("alice", PASSWORD)),
            )
            .await;
        assert!(query_of(&back).contains_key("code"), "{extra:?}: {back}");
    }
    // prompt=consent shows the consent page again.
    let page = browser.get(&with(vec![("prompt", "consent")])).await;
    assert_eq!(page.status, 200);
    assert!(page.has("Allow"));
}

async fn token_endpoint_refuses_what_it_must(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let other = app.client(false, &[], &[]).await;
    let only_code = app
        .client(false, &["authorization_code"], &["openid"])
        .await;

    let fresh_code = |verifier_challenge: (String, String)| {
        let browser = &browser;
        let client = &client;
        async move {
            let back = browser
                .authorize(
                    &auth_query(client, &verifier_challenge.1, "openid offline_access", "s"),
                    None,
                )
                .await;
            (query_of(&back)["code"].clone(), verifier_challenge.0)
        }
    };
    // Approve once with sign-in.
    let (_, challenge) = pkce();
    browser
        .authorize(
            &auth_query(&client, &challenge, "openid offline_access", "s"),
            Some(("alice", PASSWORD)),
        )
        .await;

    // Wrong secret: 401 invalid_client with a Basic challenge.
    let (code, verifier) = fresh_code(pkce()).await;
    let wrong = TestClient {
        id: client.id.clone(),
        secret: Some("wrong".into()),
        redirect_uri: client.redirect_uri.clone(),
    };
    let (status, body, headers) = app
        .token(
            &wrong,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    type MakeForm = Box<dyn Fn(&str, &str) -> Vec<(String, String)>>;
    let cases: Vec<(&str, MakeForm, &str)> = vec![
        (
            "wrong verifier",
            Box::new(|code, _| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", "https://app.example/cb"),
                    ("code_verifier", &"x".repeat(43)),
                ])
            }),
            "invalid_grant",
        ),
        (
            "no verifier",
            Box::new(|code, _| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", "https://app.example/cb"),
                ])
            }),
            "invalid_grant",
        ),
        (
            "wrong redirect",
            Box::new(|code, v| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", "https://app.example/other"),
                    ("code_verifier", v),
                ])
            }),
            "invalid_grant",
        ),
        (
            "no redirect",
            Box::new(|code, v| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("code_verifier", v),
                ])
            }),
            "invalid_request",
        ),
        (
            "garbage code",
            Box::new(|_, v| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", "nope"),
                    ("redirect_uri", "https://app.example/cb"),
                    ("code_verifier", v),
                ])
            }),
            "invalid_grant",
        ),
        (
            "no grant type",
            Box::new(|code, _| form(&[("code", code)])),
            "invalid_request",
        ),
        (
            "unknown grant",
            Box::new(|_, _| {
                form(&[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ])
            }),
            "unsupported_grant_type",
        ),
        (
            "repeated code",
            Box::new(|code, v| {
                form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("code", code),
                    ("redirect_uri", "https://app.example/cb"),
                    ("code_verifier", v),
                ])
            }),
            "invalid_request",
        ),
    ];
    for (name, make, expected) in cases {
        let (code, verifier) = fresh_code(pkce()).await;
        let fields = make(&code, &verifier);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body, _) = app.token(&client, &fields).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"], expected, "{name}: {body}");
    }

    // A fresh code, exchanged by `by` as the client it was issued to would.
    let exchange = async |by: &TestClient| {
        let (code, verifier) = fresh_code(pkce()).await;
        app.token(
            by,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await
    };
    // A code issued to one client is useless to another.
    let (status, body, _) = exchange(&other).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Every code above asked for offline_access, and every refusal left no refresh token
    // behind (on PostgreSQL the statement that spends a code may store one: see
    // `grants::Successor`).
    let count_refresh = || async {
        let mut conn = app.state.store.read().await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    };
    assert_eq!(
        count_refresh().await,
        0,
        "a refused exchange stored a refresh token"
    );
    // The one exchange that succeeds stores its refresh token once, and it works.
    let (status, body, _) = exchange(&client).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_refresh().await, 1);
    refreshes(&app, &client, body["refresh_token"].as_str().unwrap()).await;

    // A client may only use its grants.
    let (status, body, _) = app
        .token(
            &only_code,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );
    let (status, body, _) = app
        .token(&client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );

    // Malformed Basic credentials and a wrong content type.
    let response = app
        .client
        .post(app.url("/token"))
        .header("authorization", "Basic !!!")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client.id, client.secret.as_ref())
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Two authentication methods at once.
    let response = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client.id, client.secret.as_ref())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", client.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// A confidential client may go without PKCE (RFC 9700 §2.1.1 requires it of public ones).
/// Its code has no challenge, so on PostgreSQL the statement that spends it never stores the
/// refresh token (`grants::Successor`): the exchange stores it itself.
async fn a_confidential_client_without_pkce_gets_a_working_refresh_token(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let query = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", "openid offline_access"),
        ("state", "s"),
        ("nonce", "n-0S6_WzA2Mj"),
    ];
    let back = browser.authorize(&query, Some(("alice", PASSWORD))).await;
    let code = query_of(&back)["code"].clone();
    let (status, body, _) = app
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"]
        .as_str()
        .expect("offline_access earns a refresh token");
    refreshes(&app, &client, refresh).await;
}

/// Asserts that `refresh` is a live refresh token of `client`: spending it is answered 200.
async fn refreshes(app: &TestApp, client: &TestClient, refresh: &str) {
    let (status, body, _) = app
        .token(
            client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn form(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn a_replayed_code_revokes_what_it_issued(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let (verifier, challenge) = pkce();
    let back = browser
        .authorize(
            &auth_query(&client, &challenge, "openid offline_access", "s"),
            Some(("alice", PASSWORD)),
        )
        .await;
    let code = query_of(&back)["code"].clone();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, first, _) = app.token(&client, &exchange).await;
    assert_eq!(status, 200);
    let (status, second, _) = app.token(&client, &exchange).await;
    assert_eq!(status, 400);
    assert_eq!(second["error"], "invalid_grant");
    // Everything the first exchange issued is revoked.
    let (status, body, _) = app
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let userinfo = app.userinfo(first["access_token"].as_str().unwrap()).await;
    assert_eq!(userinfo.status(), 401);
    let (_, introspected) = app
        .backchannel(
            "/introspect",
            &client,
            &[("token", first["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(introspected["active"], false);
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let first = tokens(&app, &browser, &client, "openid email offline_access").await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    // Narrowing is allowed; widening is not (and does not spend the token).
    let (status, body, _) = app
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r1),
                ("scope", "openid profile"),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    let (status, second, headers) = app
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r1),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(second["scope"], "openid");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    assert!(second["id_token"].is_string());
    // The family keeps its original scope: the next refresh may ask for email again.
    let (status, third, _) = app
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(third["scope"], "openid email offline_access");
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();

    // Another client cannot use it.
    let other = app.client(false, &[], &[]).await;
    let (status, _, _) = app
        .token(
            &other,
            &[("grant_type", "refresh_token"), ("refresh_token", &r3)],
        )
        .await;
    assert_eq!(status, 400);

    // Reusing r1 (already rotated) revokes the whole family: r3 dies too.
    let (status, body, _) = app
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body, _) = app
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", &r3)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family was not revoked"
    );
    let userinfo = app.userinfo(third["access_token"].as_str().unwrap()).await;
    assert_eq!(
        userinfo.status(),
        401,
        "access tokens of the family are revoked too"
    );
}

async fn concurrent_use_of_one_code_or_refresh_token_succeeds_once(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let (verifier, challenge) = pkce();
    let back = browser
        .authorize(
            &auth_query(&client, &challenge, "openid offline_access", "s"),
            Some(("alice", PASSWORD)),
        )
        .await;
    let code = query_of(&back)["code"].clone();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let results = futures_join(50, || app.token(&client, &exchange)).await;
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, b, _)| b)
        .collect();
    assert_eq!(
        ok.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        results
            .iter()
            .all(|(s, b, _)| *s == 200 || b["error"] == "invalid_grant")
    );

    let fresh = tokens(&app, &browser, &client, "openid offline_access").await;
    let refresh = fresh["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    let results = futures_join(50, || app.token(&client, &form)).await;
    let statuses: Vec<String> = results
        .iter()
        .map(|(s, b, _)| format!("{s} {}", b["error"]))
        .collect();
    assert_eq!(
        results.iter().filter(|(s, _, _)| *s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        results
            .iter()
            .all(|(s, b, _)| *s == 200 || b["error"] == "invalid_grant")
    );
}

/// Starts `n` copies of a request at once and waits for all of them.
async fn futures_join<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures_util::future::join_all((0..n).map(|_| make())).await
}

async fn client_credentials_for_services(backend: Backend) {
    let (_db, app, _) = setup(&backend).await;
    let service = app
        .client(false, &["client_credentials"], &["api:read", "api:write"])
        .await;
    let (status, body, _) = app
        .token(
            &service,
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());
    let at = verify(
        &app.jwks().await,
        body["access_token"].as_str().unwrap(),
        &app.issuer,
        &app.issuer,
    );
    assert_eq!(at["sub"], service.id.as_str());
    assert_eq!(at["scope"], "api:read");
    let (status, body, _) = app
        .token(
            &service,
            &[("grant_type", "client_credentials"), ("scope", "api:admin")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, body, _) = app
        .token(
            &service,
            &[("grant_type", "client_credentials"), ("scope", "openid")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // Such a token is not about a person: userinfo refuses it.
    let (_, token, _) = app
        .token(&service, &[("grant_type", "client_credentials")])
        .await;
    let userinfo = app.userinfo(token["access_token"].as_str().unwrap()).await;
    assert_eq!(userinfo.status(), 403);
    // Once revoked, it is refused as revoked (401), before its scope is looked at.
    let (status, _) = app
        .backchannel(
            "/revoke",
            &service,
            &[("token", token["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(status, 200);
    let userinfo = app.userinfo(token["access_token"].as_str().unwrap()).await;
    assert_eq!(userinfo.status(), 401);
    let challenge = userinfo.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

async fn revocation_and_introspection(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let public = app.client(true, &[], &[]).await;
    let issued = tokens(&app, &browser, &client, "openid offline_access").await;
    let access = issued["access_token"].as_str().unwrap();
    let refresh = issued["refresh_token"].as_str().unwrap();

    let (status, body) = app
        .backchannel("/introspect", &client, &[("token", access)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], client.id.as_str());
    assert_eq!(body["token_type"], "Bearer");
    let (_, body) = app
        .backchannel("/introspect", &client, &[("token", refresh)])
        .await;
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    for garbage in ["garbage", "a.b.c", &access[..access.len() - 4]] {
        let (_, body) = app
            .backchannel("/introspect", &client, &[("token", garbage)])
            .await;
        assert_eq!(body, serde_json::json!({ "active": false }), "{garbage}");
    }
    let (status, _) = app
        .backchannel(
            "/introspect",
            &public,
            &[("token", access), ("client_id", &public.id)],
        )
        .await;
    assert_eq!(status, 401, "public clients may not introspect");
    let (status, _) = app
        .backchannel(
            "/introspect",
            &TestClient {
                id: client.id.clone(),
                secret: Some("bad".into()),
                redirect_uri: String::new(),
            },
            &[("token", access)],
        )
        .await;
    assert_eq!(status, 401);
    // An unknown client with a genuine token, and a wrong secret without a token: the client
    // is refused before anything about the token is said.
    let stranger = TestClient {
        id: "no-such-client".into(),
        secret: Some("whatever".into()),
        redirect_uri: String::new(),
    };
    let (status, body) = app
        .backchannel("/introspect", &stranger, &[("token", access)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let wrong = TestClient {
        id: client.id.clone(),
        secret: Some("bad".into()),
        redirect_uri: String::new(),
    };
    let (status, body) = app.backchannel("/introspect", &wrong, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = app.backchannel("/introspect", &client, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Another client cannot revoke these tokens.
    let other = app.client(false, &[], &[]).await;
    let (status, _) = app
        .backchannel("/revoke", &other, &[("token", refresh)])
        .await;
    assert_eq!(status, 400);
    // Revoking the access token: userinfo and introspection refuse it.
    let (status, _) = app
        .backchannel(
            "/revoke",
            &client,
            &[("token", access), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.userinfo(access).await.status(), 401);
    assert_eq!(
        app.backchannel("/introspect", &client, &[("token", access)])
            .await
            .1["active"],
        false
    );
    // Revoking the refresh token.
    let (status, _) = app
        .backchannel("/revoke", &client, &[("token", refresh)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.backchannel("/introspect", &client, &[("token", refresh)])
            .await
            .1["active"],
        false
    );
    let (status, _, _) = app
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(status, 400);
    // Unknown tokens: still 200 (RFC 7009 §2.2).
    assert_eq!(
        app.backchannel("/revoke", &client, &[("token", "nothing")])
            .await
            .0,
        200
    );

    // Userinfo's bearer errors (RFC 6750 §3.1).
    let bare = app.client.get(app.url("/userinfo")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(
        bare.headers()["www-authenticate"],
        "Bearer realm=\"tessera\""
    );
    let bad = app.userinfo("not.a.jwt").await;
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let id_token_as_access = app.userinfo(issued["id_token"].as_str().unwrap()).await;
    assert_eq!(
        id_token_as_access.status(),
        401,
        "an ID token is not an access token"
    );

    // On SQLite the client, account and revocation reads above were made on the request's
    // own thread, none through the pool; on PostgreSQL the clients and the revocations came
    // from the replica's mirror.
    match backend {
        Backend::Sqlite => {
            let (served, fell_back) = app.state.store.inline().unwrap().counts();
            assert!(served >= 10 && fell_back == 0, "{served} / {fell_back}");
            assert!(app.state.store.mirror().is_none());
        }
        Backend::Postgres(_) => {
            assert!(app.state.store.inline().is_none());
            let (served, database) = app.state.store.mirror().unwrap().counts();
            assert!(served >= 10, "{served} / {database}");
        }
    }
}

async fn rp_initiated_logout(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let issued = tokens(&app, &browser, &client, "openid").await;
    let hint = issued["id_token"].as_str().unwrap();

    // An unregistered return address: a page, no redirect, still signed in.
    let mut url = url::Url::parse(&app.url("/end-session")).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("id_token_hint", hint),
        ("post_logout_redirect_uri", "https://evil.example/"),
    ]);
    let page = browser.get(url.as_str()).await;
    assert_eq!(page.status, 400);
    assert!(browser.signed_in().await);

    // Without a hint: a confirmation page; nothing happens until confirmed.
    let page = browser.get(&app.url("/end-session")).await;
    assert_eq!(page.status, 200);
    assert!(page.has("Sign out?"));
    assert!(browser.signed_in().await);

    // With the hint: signed out at once and sent back with the state.
    let mut url = url::Url::parse(&app.url("/end-session")).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("id_token_hint", hint),
        ("post_logout_redirect_uri", "https://app.example/bye"),
        ("state", "bye-1"),
    ]);
    let page = browser.get(url.as_str()).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "https://app.example/bye?state=bye-1");
    assert!(!browser.signed_in().await);

    // Confirming through the page works too.
    browser.sign_in("alice", PASSWORD).await;
    let page = browser
        .get(&format!(
            "{}?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2Fbye",
            app.url("/end-session"),
            client.id
        ))
        .await;
    assert_eq!(page.status, 200);
    let done = browser
        .post("/end-session/confirm", &[("csrf_token", &page.csrf())])
        .await;
    assert_eq!(done.location(), "https://app.example/bye");
    assert!(!browser.signed_in().await);

    // A forged hint is refused.
    let mut url = url::Url::parse(&app.url("/end-session")).unwrap();
    url.query_pairs_mut()
        .extend_pairs([("id_token_hint", &hint[..hint.len() - 3])]);
    assert_eq!(browser.get(url.as_str()).await.status, 400);
}

async fn approved_apps_can_be_revoked(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let issued = tokens(&app, &browser, &client, "openid offline_access").await;
    let account = browser.get("/account").await;
    assert!(account.has("Test App"), "{}", account.body);
    let done = browser
        .account_action("/account/apps/revoke", &[("client_id", &client.id)])
        .await;
    assert_eq!(done.status, 303);
    assert!(!browser.get("/account").await.has("Test App"));
    // The app's refresh tokens are gone, and it must ask for consent again.
    let (status, _, _) = app
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", issued["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, 400);
    let (_, challenge) = pkce();
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .extend_pairs(auth_query(&client, &challenge, "openid", "s"));
    assert_eq!(
        browser.get(url.as_str()).await.status,
        200,
        "the consent page again"
    );
}

async fn cli_manages_clients(backend: Backend) {
    let db = TestDb::new(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("TESSERA_DATABASE_URL", db.url.as_str())];
    let out = run_tessera(
        &[
            "client",
            "create",
            "--name",
            "Web App",
            "--redirect-uri",
            "https://rp.example/cb",
            "--post-logout-redirect-uri",
            "https://rp.example/",
            "--json",
        ],
        &env,
        dir.path(),
    )
    .await;
    let created = json_output(&out);
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43);
    assert_eq!(created["token_endpoint_auth_method"], "client_secret_basic");

    let out = run_tessera(
        &[
            "client",
            "create",
            "--name",
            "SPA",
            "--redirect-uri",
            "https://spa.example/cb",
            "--public",
            "--json",
        ],
        &env,
        dir.path(),
    )
    .await;
    let public: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(public.get("client_secret").is_none());
    assert_eq!(public["token_endpoint_auth_method"], "none");

    for bad in [
        vec![
            "client",
            "create",
            "--name",
            "X",
            "--redirect-uri",
            "https://a.example/cb#frag",
        ],
        vec!["client", "create", "--name", "X"],
        vec![
            "client",
            "create",
            "--name",
            "X",
            "--redirect-uri",
            "https://a/cb",
            "--grant-type",
            "password",
        ],
        vec![
            "client",
            "create",
            "--name",
            "X",
            "--public",
            "--grant-type",
            "client_credentials",
        ],
    ] {
        let out = run_tessera(&bad, &env, dir.path()).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );
    }

    let list: Value = serde_json::from_slice(
        &run_tessera(&["client", "list", "--json"], &env, dir.path())
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("client_secret").is_none()),
        "secrets are never listed"
    );
    let shown: Value = serde_json::from_slice(
        &run_tessera(&["client", "show", &id, "--json"], &env, dir.path())
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(
        shown["redirect_uris"],
        serde_json::json!(["https://rp.example/cb"])
    );

    // The secret works, then rotation replaces it.
    let app = TestApp::start(&db).await;
    let as_client = |secret: &str| TestClient {
        id: id.clone(),
        secret: Some(secret.to_owned()),
        redirect_uri: String::new(),
    };
    assert_eq!(
        app.backchannel("/introspect", &as_client(&secret), &[("token", "x")])
            .await
            .0,
        200
    );
    let rotated: Value = serde_json::from_slice(
        &run_tessera(
            &["client", "rotate-secret", &id, "--json"],
            &env,
            dir.path(),
        )
        .await
        .stdout,
    )
    .unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        app.backchannel("/introspect", &as_client(&secret), &[("token", "x")])
            .await
            .0,
        401
    );
    assert_eq!(
        app.backchannel("/introspect", &as_client(new_secret), &[("token", "x")])
            .await
            .0,
        200
    );
    app.stop().await;

    assert!(
        run_tessera(&["client", "delete", &id], &env, dir.path())
            .await
            .status
            .success()
    );
    assert_eq!(
        run_tessera(&["client", "show", &id], &env, dir.path())
            .await
            .status
            .code(),
        Some(1)
    );
}

/// Clients declared in the configuration file are registered at start.
#[tokio::test]
async fn clients_can_be_declared_in_the_config_file() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(
        &file,
        r#"
[[clients]]
id = "declared-app"
name = "Declared App"
secret = "a-long-enough-client-secret"
redirect_uris = ["https://declared.example/cb"]
skip_consent = true
"#,
    )
    .unwrap();
    let mut config =
        tessera::Config::load_with_env(Some(&file), [("TESSERA_DATABASE_URL", db.url.as_str())])
            .unwrap();
    config.keys.refresh = Duration::from_millis(200);
    let app = TestApp::start_with(config, "").await;
    let client = TestClient {
        id: "declared-app".into(),
        secret: Some("a-long-enough-client-secret".into()),
        redirect_uri: "https://declared.example/cb".into(),
    };
    assert_eq!(
        app.backchannel("/introspect", &client, &[("token", "x")])
            .await
            .0,
        200
    );
    // First-party: no consent page.
    let browser = app.browser();
    browser.register("zoe", "zoe@example.com", PASSWORD).await;
    let (_, challenge) = pkce();
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .extend_pairs(auth_query(&client, &challenge, "openid", "s"));
    let page = browser.get(url.as_str()).await;
    assert!(
        page.location()
            .starts_with("https://declared.example/cb?code="),
        "{}",
        page.location()
    );

    // A bad declaration stops start-up with a line naming it.
    std::fs::write(&file, "[[clients]]\nid = \"x\"\nname = \"X\"\nsecret = \"short\"\nredirect_uris = [\"https://a.example/cb\"]\n").unwrap();
    let out = run_tessera(
        &["--config", file.to_str().unwrap(), "migrate"],
        &[("TESSERA_DATABASE_URL", &db.url)],
        dir.path(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clients[0]"));
    app.stop().await;
}

/// Discovery advertises every endpoint, and each one answers.
#[tokio::test]
async fn discovery_advertises_the_authorization_server() {
    let db = TestDb::new(&Backend::Sqlite).await;
    let app = TestApp::start(&db).await;
    let d = app.discovery().await;
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ] {
        let url = d[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
        assert!(url.starts_with(&app.issuer), "{key}: {url}");
        let status = app.client.get(url).send().await.unwrap().status().as_u16();
        assert_ne!(status, 404, "{key} not served");
    }
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(
            d["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from(scope))
        );
    }
    app.stop().await;
}

/// Oversized, malformed and hostile requests get a clean 4xx with the exact error, never a
/// 500, a panic or a redirect.
async fn hostile_input_gets_clean_errors(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let service = app
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let secret = service.secret.clone().unwrap();
    let post = |path: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url(path))
            .basic_auth(&service.id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // (what, path, body, status, OAuth error)
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a repeated grant_type",
            "/token",
            b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
            400,
            Some("invalid_request"),
        ),
        (
            "a NUL byte in grant_type",
            "/token",
            b"grant_type=client%00_credentials".to_vec(),
            400,
            Some("invalid_request"),
        ),
        (
            "invalid UTF-8, percent-encoded",
            "/token",
            b"grant_type=client_credentials&scope=%FF".to_vec(),
            400,
            Some("invalid_scope"),
        ),
        (
            "invalid UTF-8, raw",
            "/token",
            b"grant_type=client_credentials&scope=\xff\xfe".to_vec(),
            400,
            Some("invalid_scope"),
        ),
        (
            "SQL metacharacters",
            "/token",
            b"grant_type=client_credentials&scope=api%3Aread%27%20OR%20%271%27%3D%271".to_vec(),
            400,
            Some("invalid_scope"),
        ),
        (
            "a NUL byte in the introspected token",
            "/introspect",
            b"token=abc%00def".to_vec(),
            400,
            Some("invalid_request"),
        ),
    ];
    for (name, path, body, status, error) in cases {
        let answer = post(path, body).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{name}");
        if let Some(error) = error {
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["error"], error, "{name}: {body}");
        }
    }
    // A 3 MB body: 413 without reading it whole. The server may answer and close while the
    // body is still being sent, so over a raw connection, whose write errors are expected.
    let addr = app.issuer.trim_start_matches("http://").to_owned();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3000000\r\nConnection: close\r\n\r\n"
    );
    let _ = raw.write_all(head.as_bytes()).await;
    let _ = raw.write_all(&vec![b'a'; 3_000_000]).await;
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    let status_line = String::from_utf8_lossy(&answer);
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "{}",
        status_line.lines().next().unwrap_or_default()
    );
    // NUL and invalid UTF-8 in the authorization request: the error page, not a redirect.
    let page = browser.get("/authorize?client_id=x&state=%FF%00").await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("location").is_none());
    // The service still works.
    let (status, _, _) = app
        .token(
            &service,
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await;
    assert_eq!(status, 200);
}

/// Writes `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close while the request is still being sent.
    let _ = raw.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), raw.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Request heads past the limits are cut off before they are read whole (431, 414), and a
/// client that trickles its headers is disconnected after `http.header_timeout`.
#[tokio::test]
async fn oversized_and_slow_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new(&Backend::Sqlite).await;
    let mut config = test_config(&db.url);
    config.http.header_timeout = Duration::from_secs(1);
    let app = TestApp::start_with(config, "").await;
    let addr = app.issuer.trim_start_matches("http://").to_owned();
    let status = |answer: &str| answer.lines().next().unwrap_or_default().to_owned();

    // (what, request, status line)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a 70 KB query string",
            format!(
                "GET /authorize?state={} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                "a".repeat(70_000)
            ),
            "HTTP/1.1 414 URI Too Long",
        ),
        (
            "a 300 KB query string",
            format!(
                "GET /authorize?state={} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                "a".repeat(300_000)
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "one 100 KB header",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "b".repeat(100_000)
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "a 2 MB cookie",
            format!(
                "GET /login HTTP/1.1\r\nHost: {addr}\r\nCookie: id={}\r\nConnection: close\r\n\r\n",
                "c".repeat(2_000_000)
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "a thousand small headers",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\n\r\n",
                (0..1000)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            "headers just under the limit",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "d".repeat(60_000)
            ),
            "HTTP/1.1 200 OK",
        ),
    ];
    for (what, request, expected) in cases {
        let answer = raw_exchange(&addr, request.as_bytes()).await;
        assert_eq!(status(&answer), expected, "{what}");
    }

    // Slow headers: a head sent a byte every 300 ms never completes within the 1 s limit.
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        if slow.write_all(b"z").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // hyper answers 408 before closing; keep reading until the close.
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a trickled request head kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut off after {:?}",
        started.elapsed()
    );
    // Everyone else is still served.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

/// A request whose body never finishes arriving holds no handler past `http.request_timeout`:
/// it is answered 503 with `Retry-After`, in OAuth's shape for a client and as a page for a
/// browser, and the server goes on serving everyone else.
#[tokio::test]
async fn a_body_that_never_arrives_is_answered_503_after_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new(&Backend::Sqlite).await;
    let mut config = test_config(&db.url);
    config.http.request_timeout = Duration::from_secs(1);
    let app = TestApp::start_with(config, "").await;
    let addr = app.issuer.trim_start_matches("http://").to_owned();
    // (path, Accept, what the answer must hold)
    let cases = [
        (
            "/token",
            "application/json",
            "\"error\":\"temporarily_unavailable\"",
        ),
        ("/login", "text/html,application/xhtml+xml", "took too long"),
    ];
    for (path, accept, says) in cases {
        let started = std::time::Instant::now();
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // The head promises 100 bytes; 11 come, then nothing.
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
             grant_type="
        );
        slow.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
            .await
            .expect("a stalled body is answered")
            .unwrap();
        let waited = started.elapsed();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable"),
            "{path}: {answer}"
        );
        let head = answer.to_lowercase();
        assert!(head.contains("retry-after: 5"), "{path}: {answer}");
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {answer}"
        );
        assert!(answer.contains(says), "{path}: {answer}");
        if accept.starts_with("text/html") {
            assert!(head.contains("content-security-policy"), "{answer}");
        }
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{path} answered after {waited:?}"
        );
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

/// A code is written with its `authorization_granted` audit row in the grant batch: both or
/// neither, for a first approval (the consent page) and for a remembered one, and codes
/// issued at once are each stored.
async fn every_code_issued_is_stored_with_its_audit_row(backend: Backend) {
    let (_db, app, browser) = setup(&backend).await;
    let client = app.client(false, &[], &[]).await;
    tokens(&app, &browser, &client, "openid profile").await;
    let (_, challenge) = pkce();
    let query = auth_query(&client, &challenge, "openid", "st");
    let issued =
        futures_util::future::join_all((0..8).map(|_| browser.authorize(&query, None))).await;
    let codes: std::collections::HashSet<String> = issued
        .iter()
        .map(|back| query_of(back)["code"].clone())
        .collect();
    assert_eq!(codes.len(), 8);

    let mut conn = app.state.store.read().await.unwrap();
    let audited: Vec<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT user_id, client_id, detail FROM audit_events \
         WHERE kind = 'authorization_granted' AND outcome = 'success' ORDER BY detail DESC",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(audited.len(), 9, "{audited:?}");
    assert_eq!(audited[0].2, "openid profile");
    assert!(audited[1..].iter().all(|(_, _, detail)| detail == "openid"));
    assert!(audited.iter().all(|(user, client_id, _)| {
        user.is_some() && client_id.as_deref() == Some(client.id.as_str())
    }));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_codes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(stored, 9);
}
