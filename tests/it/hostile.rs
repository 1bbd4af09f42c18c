//! Hostile input, as tables: each case and the exact outcome it must get.
//!
//! Every table carries positive controls (a genuine token, a valid token, a well-formed
//! request) beside the hostile cases, so a defence that simply refused everything would fail
//! here too. Each table collects every mismatch and reports them together, by case name.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tessera::crypto::b64url;

use crate::helpers::{
    Backend, Browser, Page, TestApp, TestClient, TestDb, pkce, query_of, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    forged_and_malformed_jwts_are_refused_everywhere,
    malformed_client_authentication_is_refused,
    malformed_bearer_requests_get_rfc6750_errors,
    markup_in_rendered_fields_is_inert,
    cross_site_posts_without_the_session_token_change_nothing,
    every_page_forbids_framing,
    sql_metacharacters_get_clean_errors_and_match_nothing,
    nul_bytes_and_invalid_utf8_in_page_forms_get_a_400_page,
);

const PASSWORD: &str = "plum tree at dawn";

/// Markup and script, in the shapes that break out of text, attributes and URLs.
const MARKUP: [&str; 4] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "'-alert(1)-'",
];

/// SQL metacharacters, and the LIKE wildcards and escape.
const SQL: [&str; 5] = ["' OR '1'='1", "\"; DROP TABLE users; --", "%", "_", "\\"];

/// Fails the test with every mismatch of a table, one per line.
fn report(table: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{table}: {} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Tessera with the sign-in, registration and reset limits out of the way (the tables make
/// many attempts from one address; throttling has its own tests).
async fn start(backend: &Backend) -> (TestDb, TestApp) {
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db.url);
    config.throttle.login_failures_per_account = 10_000;
    config.throttle.logins_per_ip = 10_000;
    config.throttle.registrations_per_ip = 10_000;
    config.throttle.resets_per_account = 10_000;
    config.throttle.resets_per_ip = 10_000;
    let app = TestApp::start_with(config, "").await;
    (db, app)
}

/// A browser that registered (and so is signed in as) `username`.
async fn member(app: &TestApp, username: &str) -> Browser {
    let browser = app.browser();
    let done = browser
        .register(username, &format!("{username}@example.com"), PASSWORD)
        .await;
    assert_eq!(done.status, 303, "registering {username}: {}", done.body);
    browser
}

async fn user_id(app: &TestApp, login: &str) -> String {
    let mut conn = app.state.store.read().await.unwrap();
    tessera::store::users::by_login(&mut conn, login)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn count_users(app: &TestApp) -> i64 {
    let mut conn = app.state.store.read().await.unwrap();
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

fn auth_query<'a>(client: &'a TestClient, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", "openid profile offline_access"),
        ("state", "st"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

fn authorize_url(app: &TestApp, query: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    url.to_string()
}

/// A code for `client`, as `browser` (signed in as `login`) gets it; and its PKCE verifier.
async fn code_for(browser: &Browser, client: &TestClient, login: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let back = browser
        .authorize(&auth_query(client, &challenge), Some((login, PASSWORD)))
        .await;
    (query_of(&back)["code"].clone(), verifier)
}

/// A full authorization and code exchange: the token response.
async fn issue(app: &TestApp, browser: &Browser, client: &TestClient, login: &str) -> Value {
    let (code, verifier) = code_for(browser, client, login).await;
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

/// What a JSON endpoint answered.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    async fn of(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
        }
    }

    fn challenge(&self) -> String {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "{} {} (WWW-Authenticate: {:?})",
            self.status,
            self.body.to_string().chars().take(160).collect::<String>(),
            self.challenge()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Forged and malformed JWTs
// ---------------------------------------------------------------------------------------------

/// The keys a forger works with: Tessera's real signing key (read from the database, as an
/// insider or a leaked backup would have it, to prove each claim check on its own), its
/// public key in the encodings HS256 confusion attacks use, and a key of the forger's own.
struct Keys {
    real: KeyPair,
    kid: String,
    foreign: KeyPair,
    spki_der: Vec<u8>,
    pkcs1_der: Vec<u8>,
    spki_pem: String,
    pkcs1_pem: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl Keys {
    async fn load(app: &TestApp) -> Self {
        let kid = app.signing_kid();
        let mut conn = app.state.store.read().await.unwrap();
        let row = tessera::store::keys::list(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.kid == kid)
            .unwrap();
        let pkcs8 = if tessera::crypto::sealed::is_sealed(&row.private_key) {
            app.state
                .config
                .master_key()
                .unwrap()
                .unwrap()
                .open(&row.private_key, &row.kid)
                .unwrap()
        } else {
            row.private_key.clone()
        };
        let real = KeyPair::from_pkcs8(&pkcs8).unwrap();
        let spki_der = real.public_key().as_der().unwrap().as_ref().to_vec();
        let pkcs1_der = real.public_key().as_ref().to_vec();
        Self {
            spki_pem: pem("PUBLIC KEY", &spki_der),
            pkcs1_pem: pem("RSA PUBLIC KEY", &pkcs1_der),
            spki_der,
            pkcs1_der,
            foreign: KeyPair::generate(KeySize::Rsa2048).unwrap(),
            real,
            kid,
        }
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    )
}

/// An RS256 signature by `pair` over exactly this header and these claims.
fn rs256(pair: &KeyPair, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let mut signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", b64url(signature))
}

/// An HS256 MAC keyed with `secret`.
fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// How an endpoint should see a token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    /// Ours, live, of the right kind: accepted.
    Valid,
    /// Refused as a token.
    Invalid,
    /// The empty string: no token at all.
    Empty,
    /// Bytes outside ASCII: in a header, a malformed request.
    NonAscii,
}

struct JwtCase {
    name: String,
    token: String,
    shape: Shape,
}

/// Which kind of token a table forges.
struct Kind<'a> {
    /// The `typ` Tessera puts on this kind.
    typ: &'a str,
    /// A genuine token of this kind.
    genuine: &'a str,
    /// A genuine token of the other kind (an ID token where an access token belongs).
    other: &'a str,
    /// RP-Initiated Logout 1.0 §2: an expired ID token is still a good `id_token_hint`.
    expired_ok: bool,
    /// A token without `typ`: refused for access tokens (RFC 9068 §4), fine for ID tokens.
    untyped_ok: bool,
    issuer: &'a str,
    another_user: &'a str,
}

fn jwt_cases(keys: &Keys, kind: &Kind<'_>) -> Vec<JwtCase> {
    use Shape::{Empty, Invalid, NonAscii, Valid};
    let now = tessera::store::now_unix();
    let base = claims_of(kind.genuine);
    let header = json!({ "alg": "RS256", "typ": kind.typ, "kid": keys.kid });
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let head = |f: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        f(&mut h);
        h
    };
    let ours = |h: &Value, c: &Value| rs256(&keys.real, h, c);
    let hs = |secret: &[u8]| hs256(secret, &head(&|h| h["alg"] = json!("HS256")), &base);
    let parts: Vec<&str> = kind.genuine.split('.').collect();
    let (gen_header, gen_sig) = (parts[0], parts[2]);
    let mut garbled = gen_sig.to_owned();
    let mid = garbled.len() / 2;
    let flip = if &garbled[mid..=mid] == "A" { "B" } else { "A" };
    garbled.replace_range(mid..=mid, flip);
    let expired = if kind.expired_ok { Valid } else { Invalid };
    let untyped = if kind.untyped_ok { Valid } else { Invalid };
    let wrong_typ = if kind.typ == "at+jwt" {
        "JWT"
    } else {
        "at+jwt"
    };
    let foreign_kid =
        tessera::crypto::b64url(tessera::crypto::sha256(keys.foreign.public_key().as_ref()));
    let cases: Vec<(&str, String, Shape)> = vec![
        ("the genuine token", kind.genuine.to_owned(), Valid),
        (
            "control: the genuine claims re-signed by this test with the real key",
            ours(&header, &base),
            Valid,
        ),
        (
            "alg none, no signature",
            format!(
                "{}.",
                signing_input(&head(&|h| h["alg"] = json!("none")), &base)
            ),
            Invalid,
        ),
        (
            "alg none, keeping the genuine signature",
            format!(
                "{}.{}",
                signing_input(&head(&|h| h["alg"] = json!("none")), &base),
                gen_sig
            ),
            Invalid,
        ),
        (
            "alg None (other case), no signature",
            format!(
                "{}.",
                signing_input(&head(&|h| h["alg"] = json!("None")), &base)
            ),
            Invalid,
        ),
        (
            "HS256 keyed with the public key as SPKI PEM",
            hs(keys.spki_pem.as_bytes()),
            Invalid,
        ),
        (
            "HS256 keyed with the SPKI PEM, no final newline",
            hs(keys.spki_pem.trim_end().as_bytes()),
            Invalid,
        ),
        (
            "HS256 keyed with the public key as PKCS#1 PEM",
            hs(keys.pkcs1_pem.as_bytes()),
            Invalid,
        ),
        (
            "HS256 keyed with the public key as SPKI DER",
            hs(&keys.spki_der),
            Invalid,
        ),
        (
            "HS256 keyed with the public key as PKCS#1 DER",
            hs(&keys.pkcs1_der),
            Invalid,
        ),
        (
            "RS256 by a key not in the JWKS, claiming the real kid",
            rs256(&keys.foreign, &header, &base),
            Invalid,
        ),
        (
            "RS256 by a key not in the JWKS, under its own kid",
            rs256(
                &keys.foreign,
                &head(&|h| h["kid"] = json!(foreign_kid)),
                &base,
            ),
            Invalid,
        ),
        (
            "real key, unknown kid",
            ours(&head(&|h| h["kid"] = json!("no-such-key")), &base),
            Invalid,
        ),
        (
            "real key, no kid",
            ours(
                &head(&|h| {
                    h.as_object_mut().unwrap().remove("kid");
                }),
                &base,
            ),
            Invalid,
        ),
        (
            "real key, header says RS512",
            ours(&head(&|h| h["alg"] = json!("RS512")), &base),
            Invalid,
        ),
        (
            "expired an hour ago",
            ours(
                &header,
                &edit(&|c| {
                    c["exp"] = json!(now - 3600);
                    c["iat"] = json!(now - 4000);
                }),
            ),
            expired,
        ),
        (
            "expired 5 s ago (no leeway)",
            ours(&header, &edit(&|c| c["exp"] = json!(now - 5))),
            expired,
        ),
        (
            "not valid for another hour (nbf in the future)",
            ours(&header, &edit(&|c| c["nbf"] = json!(now + 3600))),
            Invalid,
        ),
        (
            "nbf not a number",
            ours(&header, &edit(&|c| c["nbf"] = json!("tomorrow"))),
            Invalid,
        ),
        (
            "exp not a number",
            ours(&header, &edit(&|c| c["exp"] = json!("never"))),
            Invalid,
        ),
        (
            "wrong iss",
            ours(
                &header,
                &edit(&|c| c["iss"] = json!("https://evil.example")),
            ),
            Invalid,
        ),
        (
            "iss with a trailing slash",
            ours(
                &header,
                &edit(&|c| c["iss"] = json!(format!("{}/", kind.issuer))),
            ),
            Invalid,
        ),
        (
            "no iss",
            ours(
                &header,
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
            ),
            Invalid,
        ),
        (
            "wrong aud",
            ours(
                &header,
                &edit(&|c| c["aud"] = json!("https://evil.example")),
            ),
            Invalid,
        ),
        (
            "aud a list without the right audience",
            ours(
                &header,
                &edit(&|c| c["aud"] = json!(["https://evil.example"])),
            ),
            Invalid,
        ),
        (
            "no exp",
            ours(
                &header,
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            Invalid,
        ),
        (
            "no sub",
            ours(
                &header,
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            Invalid,
        ),
        (
            "wrong typ",
            ours(&head(&|h| h["typ"] = json!(wrong_typ)), &base),
            Invalid,
        ),
        (
            "no typ",
            ours(
                &head(&|h| {
                    h.as_object_mut().unwrap().remove("typ");
                }),
                &base,
            ),
            untyped,
        ),
        (
            "a genuine token of the other kind",
            kind.other.to_owned(),
            Invalid,
        ),
        (
            "truncated",
            kind.genuine[..kind.genuine.len() - 10].to_owned(),
            Invalid,
        ),
        (
            "signature removed",
            format!("{}.{}.", parts[0], parts[1]),
            Invalid,
        ),
        (
            "garbled signature",
            format!("{}.{}.{garbled}", parts[0], parts[1]),
            Invalid,
        ),
        (
            "tampered payload under the original signature",
            format!(
                "{gen_header}.{}.{gen_sig}",
                b64url(
                    edit(&|c| c["sub"] = json!(kind.another_user))
                        .to_string()
                        .as_bytes()
                )
            ),
            Invalid,
        ),
        ("a fourth segment", format!("{}.e30", kind.genuine), Invalid),
        (
            "9 KB, signed with the real key",
            ours(&header, &edit(&|c| c["pad"] = json!("x".repeat(9 * 1024)))),
            Invalid,
        ),
        ("not a JWT", "not-a-jwt".to_owned(), Invalid),
        ("three empty segments", "..".to_owned(), Invalid),
        ("a.b.c", "a.b.c".to_owned(), Invalid),
        ("the empty string", String::new(), Empty),
        (
            "non-ASCII",
            "t\u{f6}k\u{e9}n.\u{fc}n\u{ef}.s\u{ef}g".to_owned(),
            NonAscii,
        ),
        (
            "the genuine token with a non-ASCII character appended",
            format!("{}\u{e9}", kind.genuine),
            NonAscii,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, token, shape)| JwtCase {
            name: name.to_owned(),
            token,
            shape,
        })
        .collect()
}

/// Bearer tokens, introspection, revocation and `id_token_hint`: every forged or malformed
/// JWT refused with the exact RFC outcome; the genuine ones accepted; nothing revoked by a
/// forgery.
async fn forged_and_malformed_jwts_are_refused_everywhere(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let browser = member(&app, "alice").await;
    let _bob = member(&app, "bob").await;
    let alice = user_id(&app, "alice").await;
    let bob = user_id(&app, "bob").await;
    let client = app.client(false, &[], &[]).await;
    let issued = issue(&app, &browser, &client, "alice").await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let id_token = issued["id_token"].as_str().unwrap().to_owned();
    let keys = Keys::load(&app).await;

    let access_cases = jwt_cases(
        &keys,
        &Kind {
            typ: "at+jwt",
            genuine: &access,
            other: &id_token,
            expired_ok: false,
            untyped_ok: false,
            issuer: &app.issuer,
            another_user: &bob,
        },
    );
    let mut failures = Vec::new();
    let mut genuine_revoked = false;
    for case in &access_cases {
        let name = &case.name;
        // Userinfo, the token in the Authorization header (RFC 6750 §2.1).
        let header = HeaderValue::from_bytes(format!("Bearer {}", case.token).as_bytes()).unwrap();
        let got = Answer::of(
            app.client
                .get(app.url("/userinfo"))
                .header(AUTHORIZATION, header),
        )
        .await;
        let ok = match case.shape {
            Shape::Valid => got.status == 200 && got.body["sub"] == alice.as_str(),
            Shape::Invalid => {
                got.status == 401
                    && got.challenge().starts_with("Bearer ")
                    && got.challenge().contains("error=\"invalid_token\"")
                    && got.body["error"] == "invalid_token"
            }
            // RFC 6750 §3.1: a malformed header is invalid_request.
            Shape::Empty | Shape::NonAscii => {
                got.status == 400
                    && got.challenge().contains("error=\"invalid_request\"")
                    && got.body["error"] == "invalid_request"
            }
        };
        if !ok {
            failures.push(format!(
                "GET /userinfo, {name} ({:?}): {}",
                case.shape,
                got.summary()
            ));
        }
        // Userinfo, the token as a form parameter (RFC 6750 §2.2).
        let got = Answer::of(
            app.client
                .post(app.url("/userinfo"))
                .form(&[("access_token", &case.token)]),
        )
        .await;
        let ok = match case.shape {
            Shape::Valid => got.status == 200 && got.body["sub"] == alice.as_str(),
            Shape::Invalid | Shape::NonAscii => {
                got.status == 401
                    && got.challenge().contains("error=\"invalid_token\"")
                    && got.body["error"] == "invalid_token"
            }
            // An empty parameter is no parameter (RFC 6749 §3.1): a bare challenge.
            Shape::Empty => got.status == 401 && got.challenge() == "Bearer realm=\"tessera\"",
        };
        if !ok {
            failures.push(format!(
                "POST /userinfo, {name} ({:?}): {}",
                case.shape,
                got.summary()
            ));
        }
        // Introspection (RFC 7662 §2.2: anything not active is just `active: false`).
        let (status, body) = app
            .backchannel("/introspect", &client, &[("token", &case.token)])
            .await;
        let ok = match case.shape {
            Shape::Valid => {
                status == 200 && body["active"] == true && body["sub"] == alice.as_str()
            }
            Shape::Invalid | Shape::NonAscii => status == 200 && body == json!({ "active": false }),
            Shape::Empty => status == 400 && body["error"] == "invalid_request",
        };
        if !ok {
            failures.push(format!(
                "/introspect, {name} ({:?}): {status} {body}",
                case.shape
            ));
        }
        // Revocation (RFC 7009 §2.2: an invalid token is not an error) revokes nothing: the
        // forgeries carry the genuine token's jti, so a forgery accepted here would revoke it.
        if case.shape != Shape::Valid {
            let (status, body) = app
                .backchannel("/revoke", &client, &[("token", &case.token)])
                .await;
            let expected = if case.shape == Shape::Empty { 400 } else { 200 };
            if status != expected
                || (case.shape == Shape::Empty && body["error"] != "invalid_request")
            {
                failures.push(format!(
                    "/revoke, {name} ({:?}): {status} {body}",
                    case.shape
                ));
            }
            let (_, still) = app
                .backchannel("/introspect", &client, &[("token", &access)])
                .await;
            if still["active"] != true && !genuine_revoked {
                genuine_revoked = true;
                failures.push(format!(
                    "/revoke, {name}: the genuine access token was revoked by it"
                ));
            }
        }
    }
    // The genuine token still works at userinfo after all of that, and revoking it for real
    // does take (so the checks above could fail).
    let got = Answer::of(app.client.get(app.url("/userinfo")).bearer_auth(&access)).await;
    if got.status != 200 {
        failures.push(format!(
            "the genuine token after the table: {}",
            got.summary()
        ));
    }
    let (status, _) = app
        .backchannel("/revoke", &client, &[("token", &access)])
        .await;
    assert_eq!(status, 200);
    let got = Answer::of(app.client.get(app.url("/userinfo")).bearer_auth(&access)).await;
    assert_eq!(got.status, 401, "a real revocation takes");

    // The ID token as id_token_hint at the end-session endpoint.
    let end_session = app.discovery().await["end_session_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let id_cases = jwt_cases(
        &keys,
        &Kind {
            typ: "JWT",
            genuine: &id_token,
            other: &access,
            expired_ok: true,
            untyped_ok: true,
            issuer: &app.issuer,
            another_user: &bob,
        },
    );
    for case in &id_cases {
        let name = &case.name;
        let mut url = url::Url::parse(&end_session).unwrap();
        url.query_pairs_mut().extend_pairs([
            ("id_token_hint", case.token.as_str()),
            ("post_logout_redirect_uri", "https://app.example/bye"),
            ("state", "s1"),
        ]);
        let page = browser.get(url.as_str()).await;
        if case.shape == Shape::Valid {
            if page.status != 303 || page.location() != "https://app.example/bye?state=s1" {
                failures.push(format!(
                    "end-session, {name} ({:?}): {} {:?}",
                    case.shape,
                    page.status,
                    page.location()
                ));
            }
            // Signed out by it: sign in again for the next case.
            assert_eq!(browser.sign_in("alice", PASSWORD).await.status, 303);
            continue;
        }
        let friendly = page.status == 400
            && page.headers.get("location").is_none()
            && page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
            && page.has("This sign-out request can");
        if !friendly {
            failures.push(format!(
                "end-session, {name} ({:?}): {} {:?} {}",
                case.shape,
                page.status,
                page.location(),
                page.body.chars().take(300).collect::<String>()
            ));
        }
        if !browser.signed_in().await {
            failures.push(format!("end-session, {name}: signed the person out"));
            browser.sign_in("alice", PASSWORD).await;
        }
    }
    report("forged and malformed JWTs", &failures);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Malformed client authentication and bearer requests
// ---------------------------------------------------------------------------------------------

fn basic(raw: &[u8]) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(raw)).into_bytes()
}

/// What a client-authentication case must get.
#[derive(Clone, Copy)]
struct Expect {
    status: u16,
    error: Option<&'static str>,
    /// `WWW-Authenticate: Basic realm="tessera"` (RFC 6749 §5.2, when Basic was tried).
    basic_challenge: bool,
}

const OK: Expect = Expect {
    status: 200,
    error: None,
    basic_challenge: false,
};
const BAD_CLIENT_BASIC: Expect = Expect {
    status: 401,
    error: Some("invalid_client"),
    basic_challenge: true,
};
const BAD_CLIENT_POST: Expect = Expect {
    status: 401,
    error: Some("invalid_client"),
    basic_challenge: false,
};
const BAD_REQUEST: Expect = Expect {
    status: 400,
    error: Some("invalid_request"),
    basic_challenge: false,
};

/// Client authentication at the token, introspection and revocation endpoints (RFC 6749
/// §2.3, §5.2): malformed Basic headers and mixed methods get `invalid_client` (401 with a
/// Basic challenge) or `invalid_request` (400), exactly as `oidc::client_auth` decides.
async fn malformed_client_authentication_is_refused(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let service = app
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let other = app
        .client(false, &["client_credentials"], &["api:read"])
        .await;
    let id = service.id.clone();
    let secret = service.secret.clone().unwrap();
    let good = basic(format!("{id}:{secret}").as_bytes());
    // (name, Authorization headers, extra form fields, expected)
    type Case = (&'static str, Vec<Vec<u8>>, Vec<(String, String)>, Expect);
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let cases: Vec<Case> = vec![
        ("control: valid Basic", vec![good.clone()], vec![], OK),
        (
            "control: valid client_secret_post",
            vec![],
            vec![s("client_id", &id), s("client_secret", &secret)],
            OK,
        ),
        (
            "Basic, not base64",
            vec![b"Basic !!!not*base64!!!".to_vec()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, base64 with trailing garbage",
            vec![[good.as_slice(), b"=*="].concat()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, base64 without a colon",
            vec![basic(format!("{id}{secret}").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, empty client id",
            vec![basic(format!(":{secret}").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, invalid UTF-8 after decoding",
            vec![basic(b"\xff\xfe:\xc3\x28")],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, percent-encoded LF in the id",
            vec![basic(format!("{id}%0A:{secret}").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, percent-encoded NUL in the id",
            vec![basic(format!("{id}%00:{secret}").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, percent-encoded CR LF after the secret",
            vec![basic(format!("{id}:{secret}%0D%0A").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, unknown client",
            vec![basic(format!("nobody:{secret}").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, wrong secret",
            vec![basic(format!("{id}:wrong").as_bytes())],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic, the other client's secret",
            vec![basic(
                format!("{id}:{}", other.secret.clone().unwrap()).as_bytes(),
            )],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Digest scheme",
            vec![b"Digest username=\"x\", realm=\"tessera\", response=\"0\"".to_vec()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Bearer scheme",
            vec![format!("Bearer {secret}").into_bytes()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic with no value",
            vec![b"Basic".to_vec()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "non-ASCII bytes in the header",
            vec![b"Basic \xe9\xe9\xe9".to_vec()],
            vec![],
            BAD_CLIENT_BASIC,
        ),
        (
            "Basic and client_secret in the body",
            vec![good.clone()],
            vec![s("client_secret", &secret)],
            BAD_REQUEST,
        ),
        (
            "Basic and another client_id in the body",
            vec![good.clone()],
            vec![s("client_id", &other.id)],
            BAD_REQUEST,
        ),
        (
            "client_secret_post, wrong secret",
            vec![],
            vec![s("client_id", &id), s("client_secret", "wrong")],
            BAD_CLIENT_POST,
        ),
        (
            "client_secret_post, repeated client_id",
            vec![],
            vec![
                s("client_id", &id),
                s("client_id", &id),
                s("client_secret", &secret),
            ],
            BAD_REQUEST,
        ),
        // RFC 6749 §5.2 invalid_request: "utilizes more than one mechanism for authenticating
        // the client, or is otherwise malformed"; RFC 9110 §5.3: Authorization is not a list
        // field, so a second one makes the request malformed.
        (
            "two Authorization headers, both valid Basic",
            vec![good.clone(), good.clone()],
            vec![],
            BAD_REQUEST,
        ),
        (
            "two Authorization headers, valid Basic then another client's",
            vec![
                good.clone(),
                basic(format!("{}:{}", other.id, other.secret.clone().unwrap()).as_bytes()),
            ],
            vec![],
            BAD_REQUEST,
        ),
    ];
    let endpoints: [(&str, Vec<(String, String)>); 3] = [
        (
            "/token",
            vec![
                s("grant_type", "client_credentials"),
                s("scope", "api:read"),
            ],
        ),
        ("/introspect", vec![s("token", "not-a-token")]),
        ("/revoke", vec![s("token", "not-a-token")]),
    ];
    let mut failures = Vec::new();
    for (path, body) in &endpoints {
        for (name, headers, extra, expect) in &cases {
            let mut form = body.clone();
            form.extend(extra.iter().cloned());
            let mut request = app.client.post(app.url(path)).form(&form);
            for h in headers {
                request = request.header(AUTHORIZATION, HeaderValue::from_bytes(h).unwrap());
            }
            let got = Answer::of(request).await;
            let challenge_ok = if expect.basic_challenge {
                got.challenge() == "Basic realm=\"tessera\""
            } else {
                got.challenge().is_empty()
            };
            let error_ok = match expect.error {
                Some(e) => got.body["error"] == e,
                None => got.body.get("error").is_none(),
            };
            if got.status != expect.status || !challenge_ok || !error_ok {
                failures.push(format!(
                    "{path}, {name}: got {}; expected {} {:?} (Basic challenge: {})",
                    got.summary(),
                    expect.status,
                    expect.error,
                    expect.basic_challenge
                ));
            }
        }
    }
    report("malformed client authentication", &failures);
    app.stop().await;
}

/// Malformed bearer requests at userinfo get the RFC 6750 §3.1 outcomes of `oidc::bearer`.
async fn malformed_bearer_requests_get_rfc6750_errors(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let browser = member(&app, "alice").await;
    let client = app.client(false, &[], &[]).await;
    let issued = issue(&app, &browser, &client, "alice").await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let alice = user_id(&app, "alice").await;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Want {
        /// 200 with the person's claims.
        Ok,
        /// 401 with a bare `Bearer realm` challenge (§3.1: no error code when no token).
        Bare,
        /// 400 `invalid_request`.
        InvalidRequest,
        /// 401 `invalid_token`.
        InvalidToken,
    }
    // (name, method, Authorization headers, form body, query string, expected)
    type Case<'a> = (
        &'static str,
        &'static str,
        Vec<String>,
        Option<Vec<(&'static str, String)>>,
        &'a str,
        Want,
    );
    let bearer = format!("Bearer {access}");
    let q = format!("access_token={access}");
    let cases: Vec<Case<'_>> = vec![
        (
            "control: GET with the header",
            "GET",
            vec![bearer.clone()],
            None,
            "",
            Want::Ok,
        ),
        (
            "control: scheme in lower case",
            "GET",
            vec![format!("bearer {access}")],
            None,
            "",
            Want::Ok,
        ),
        (
            "control: POST with the form parameter",
            "POST",
            vec![],
            Some(vec![("access_token", access.clone())]),
            "",
            Want::Ok,
        ),
        ("no token at all", "GET", vec![], None, "", Want::Bare),
        (
            "Bearer with no token",
            "GET",
            vec!["Bearer".into()],
            None,
            "",
            Want::InvalidRequest,
        ),
        (
            "Bearer, two tokens separated by a space",
            "GET",
            vec![format!("Bearer {access} {access}")],
            None,
            "",
            Want::InvalidRequest,
        ),
        (
            "Basic scheme at a bearer endpoint",
            "GET",
            vec![format!("Basic {}", STANDARD.encode("alice:pw"))],
            None,
            "",
            Want::InvalidRequest,
        ),
        (
            "the header and the form parameter",
            "POST",
            vec![bearer.clone()],
            Some(vec![("access_token", access.clone())]),
            "",
            Want::InvalidRequest,
        ),
        (
            "the form parameter twice",
            "POST",
            vec![],
            Some(vec![
                ("access_token", access.clone()),
                ("access_token", access.clone()),
            ]),
            "",
            Want::InvalidRequest,
        ),
        // §2.3 is not supported (query strings end up in logs): as if no token were sent.
        (
            "the token in the query string",
            "GET",
            vec![],
            None,
            &q,
            Want::Bare,
        ),
        (
            "the token in a POST query string",
            "POST",
            vec![],
            None,
            &q,
            Want::Bare,
        ),
        (
            "a garbage token",
            "GET",
            vec!["Bearer abc.def.ghi".into()],
            None,
            "",
            Want::InvalidToken,
        ),
        // §3.1 invalid_request: "uses more than one method to include an access token";
        // RFC 9110 §5.3: a second Authorization field makes the request malformed.
        (
            "two Authorization headers, the same valid token",
            "GET",
            vec![bearer.clone(), bearer.clone()],
            None,
            "",
            Want::InvalidRequest,
        ),
        (
            "two Authorization headers, valid then garbage",
            "GET",
            vec![bearer.clone(), "Bearer abc.def.ghi".into()],
            None,
            "",
            Want::InvalidRequest,
        ),
    ];
    let mut failures = Vec::new();
    for (name, method, headers, form, query, want) in &cases {
        let url = if query.is_empty() {
            app.url("/userinfo")
        } else {
            format!("{}?{query}", app.url("/userinfo"))
        };
        let mut request = if *method == "GET" {
            app.client.get(url)
        } else {
            app.client.post(url)
        };
        for h in headers {
            request = request.header(AUTHORIZATION, HeaderValue::from_str(h).unwrap());
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        let got = Answer::of(request).await;
        let ok = match want {
            Want::Ok => got.status == 200 && got.body["sub"] == alice.as_str(),
            Want::Bare => got.status == 401 && got.challenge() == "Bearer realm=\"tessera\"",
            Want::InvalidRequest => {
                got.status == 400
                    && got
                        .challenge()
                        .starts_with("Bearer realm=\"tessera\", error=\"invalid_request\"")
                    && got.body["error"] == "invalid_request"
            }
            Want::InvalidToken => {
                got.status == 401
                    && got
                        .challenge()
                        .starts_with("Bearer realm=\"tessera\", error=\"invalid_token\"")
                    && got.body["error"] == "invalid_token"
            }
        };
        if !ok {
            failures.push(format!("{name}: expected {want:?}, got {}", got.summary()));
        }
    }
    report("malformed bearer requests", &failures);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Script and markup shown inert
// ---------------------------------------------------------------------------------------------

/// Askama's HTML escaping.
fn escaped(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The values of the attributes that navigate or load: href, src, action, formaction.
fn url_attributes(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for attr in [" href=", " src=", " action=", " formaction="] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(attr) {
            let start = from + at + attr.len();
            let rest = &html[start..];
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default(),
                _ => rest
                    .split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or_default(),
            };
            found.push(value.to_owned());
            from = start;
        }
    }
    found
}

/// Checks that `payload` is inert on `page`: never raw (when escaping changes it), escaped
/// where it is `shown`, never the start of a URL attribute, and no script anywhere.
fn inert(failures: &mut Vec<String>, what: &str, page: &Page, payload: &str, shown: bool) {
    let safe = escaped(payload);
    if safe != payload && page.body.contains(payload) {
        failures.push(format!(
            "{what}: the raw payload {payload:?} is on the page"
        ));
    }
    if shown && !page.body.contains(&safe) {
        failures.push(format!(
            "{what}: the escaped payload {safe:?} is not on the page: {}",
            page.body
        ));
    }
    if page.body.to_ascii_lowercase().contains("<script") {
        failures.push(format!("{what}: a <script> element is on the page"));
    }
    for value in url_attributes(&page.body) {
        let v = value
            .trim()
            .replace("&#58;", ":")
            .replace("&colon;", ":")
            .to_ascii_lowercase();
        if v.starts_with("javascript:") || v.starts_with("data:") || v.starts_with("//") {
            failures.push(format!("{what}: a URL attribute holds {value:?}"));
        }
    }
}

/// The check itself catches live markup, so a page that stopped escaping would fail.
#[test]
fn the_inertness_check_catches_live_markup() {
    let page = |body: &str| Page {
        status: 200,
        headers: HeaderMap::new(),
        body: body.to_owned(),
    };
    for (body, payload, shown, caught) in [
        (
            "<p>&#60;script&#62;alert(1)&#60;/script&#62;</p>",
            MARKUP[0],
            true,
            false,
        ),
        ("<p><script>alert(1)</script></p>", MARKUP[0], true, true),
        ("<p>nothing</p>", MARKUP[0], true, true),
        (
            "<input value=\"\"><img src=x onerror=alert(1)>\">",
            MARKUP[1],
            false,
            true,
        ),
        (
            "<input value=\"javascript:alert(1)\">",
            MARKUP[2],
            true,
            false,
        ),
        (
            "<a href=\"javascript:alert(1)\">x</a>",
            MARKUP[2],
            true,
            true,
        ),
        (
            "<form action=' JavaScript&#58;alert(1)'>",
            MARKUP[2],
            false,
            true,
        ),
        ("<a href=//evil.example>x</a>", MARKUP[2], false, true),
        ("<p>&#39;-alert(1)-&#39;</p>", MARKUP[3], true, false),
        ("<p>'-alert(1)-'</p>", MARKUP[3], false, true),
    ] {
        let mut failures = Vec::new();
        inert(&mut failures, "self-test", &page(body), payload, shown);
        assert_eq!(!failures.is_empty(), caught, "{body}: {failures:?}");
    }
}

/// Display names, usernames, emails, client names, `state`, `error_description`,
/// `ui_locales`, `login_hint` and `return_to` carrying markup: inert on every page that shows
/// them (and on every page that might); `return_to` never leads off-site after sign-in.
async fn markup_in_rendered_fields_is_inert(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let end_session = app.discovery().await["end_session_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = app.client(false, &[], &[]).await;
    let mut failures = Vec::new();
    for (i, payload) in MARKUP.iter().enumerate() {
        let p = *payload;
        let what = |w: &str| format!("{w} [payload {p:?}]");

        // Registration with the payload as the display name: the account page shows it.
        let username = format!("markup{i}");
        let browser = app.browser();
        let done = browser
            .submit(
                "/register",
                "/register",
                &[
                    ("username", &username),
                    ("email", &format!("{username}@example.com")),
                    ("name", p),
                    ("password", PASSWORD),
                ],
            )
            .await;
        if done.status != 303 {
            failures.push(format!(
                "{}: registration refused: {}",
                what("display name"),
                done.status
            ));
            continue;
        }
        let account = browser.get("/account").await;
        inert(
            &mut failures,
            &what("account page, display name"),
            &account,
            p,
            true,
        );

        // The payload as the username and as the email: refused, echoed escaped in the form.
        for field in ["username", "email"] {
            let mut fields = vec![
                ("username", "someone-new".to_owned()),
                ("email", "someone-new@example.com".to_owned()),
                ("name", "x".to_owned()),
                ("password", PASSWORD.to_owned()),
            ];
            for f in &mut fields {
                if f.0 == field {
                    f.1 = p.to_owned();
                }
            }
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = app
                .browser()
                .submit("/register", "/register", &fields)
                .await;
            if page.status != 400 {
                failures.push(format!(
                    "{}: expected 400, got {}",
                    what(&format!("register, {field}")),
                    page.status
                ));
            }
            inert(
                &mut failures,
                &what(&format!("register page, {field}")),
                &page,
                p,
                true,
            );
        }

        // A client whose name is the payload: consent page, account page, sign-out page.
        let spec = tessera::oidc::clients::Spec {
            name: p.to_owned(),
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec!["https://app.example/bye".into()],
            ..Default::default()
        };
        let (registered, secret) = tessera::oidc::clients::register(&app.state.store, spec)
            .await
            .unwrap();
        let client = TestClient {
            id: registered.id.clone(),
            secret,
            redirect_uri: "https://app.example/cb".into(),
        };
        let (_, challenge) = pkce();
        let mut query = auth_query(&client, &challenge);
        query.retain(|(k, _)| *k != "state");
        query.extend([("state", p), ("ui_locales", p), ("login_hint", p)]);
        let consent = browser.get(&authorize_url(&app, &query)).await;
        if consent.status != 200 || !consent.has("Allow") {
            failures.push(format!(
                "{}: expected the consent page, got {}",
                what("consent"),
                consent.status
            ));
        }
        inert(
            &mut failures,
            &what("consent page, client name"),
            &consent,
            p,
            true,
        );
        let back = browser
            .authorize(
                &auth_query(&client, &challenge),
                Some((&username, PASSWORD)),
            )
            .await;
        assert!(back.starts_with("https://app.example/cb?code="), "{back}");
        let account = browser.get("/account").await;
        inert(
            &mut failures,
            &what("account page, approved app"),
            &account,
            p,
            true,
        );
        let mut url = url::Url::parse(&end_session).unwrap();
        url.query_pairs_mut().extend_pairs([
            ("client_id", client.id.as_str()),
            ("state", p),
            ("ui_locales", p),
        ]);
        let confirm = browser.get(url.as_str()).await;
        if confirm.status != 200 || !confirm.has("Sign out?") {
            failures.push(format!(
                "{}: expected the confirmation page, got {}",
                what("end-session"),
                confirm.status
            ));
        }
        inert(
            &mut failures,
            &what("sign-out page, client name"),
            &confirm,
            p,
            true,
        );

        // Authorization requests: error pages never echo the parameters.
        let anon = app.browser();
        for (name, query) in [
            (
                "unknown client",
                vec![
                    ("client_id", p),
                    ("state", p),
                    ("error_description", p),
                    ("ui_locales", p),
                    ("login_hint", p),
                ],
            ),
            (
                "unregistered redirect_uri",
                vec![
                    ("client_id", plain.id.as_str()),
                    ("redirect_uri", p),
                    ("state", p),
                    ("error_description", p),
                ],
            ),
        ] {
            let page = anon.get(&authorize_url(&app, &query)).await;
            if page.status != 400 || page.headers.get("location").is_some() {
                failures.push(format!(
                    "{}: expected the error page, got {} {:?}",
                    what(name),
                    page.status,
                    page.location()
                ));
            }
            inert(
                &mut failures,
                &what(&format!("authorize error page, {name}")),
                &page,
                p,
                false,
            );
        }
        // A valid request carrying the payloads goes to sign-in, which shows login_hint.
        let (_, challenge) = pkce();
        let mut query = auth_query(&plain, &challenge);
        query.retain(|(k, _)| *k != "state");
        query.extend([
            ("state", p),
            ("ui_locales", p),
            ("login_hint", p),
            ("error_description", p),
        ]);
        let to_login = anon.get(&authorize_url(&app, &query)).await;
        if to_login.status != 303 || !to_login.location().starts_with("/login?return_to=") {
            failures.push(format!(
                "{}: expected a redirect to sign-in, got {} {:?}",
                what("authorize"),
                to_login.status,
                to_login.location()
            ));
        } else {
            let login = anon.get(&to_login.location()).await;
            inert(
                &mut failures,
                &what("sign-in page after authorize, login_hint"),
                &login,
                p,
                true,
            );
        }
        // The sign-in page with the payload as login_hint and as return_to.
        let mut url = url::Url::parse(&app.url("/login")).unwrap();
        url.query_pairs_mut()
            .extend_pairs([("login_hint", p), ("return_to", p)]);
        let login = anon.get(url.as_str()).await;
        inert(
            &mut failures,
            &what("sign-in page, login_hint and return_to"),
            &login,
            p,
            true,
        );
        let local = format!("/{p}");
        let mut url = url::Url::parse(&app.url("/login")).unwrap();
        url.query_pairs_mut().extend_pairs([("return_to", &local)]);
        let login = anon.get(url.as_str()).await;
        inert(
            &mut failures,
            &what("sign-in page, local return_to"),
            &login,
            &local,
            true,
        );
        // Link pages and the not-found page: nothing echoed.
        for path in ["/verify-email", "/reset-password", "/upstream/confirm"] {
            let mut url = url::Url::parse(&app.url(path)).unwrap();
            url.query_pairs_mut().extend_pairs([("token", p)]);
            let page = anon.get(url.as_str()).await;
            if page.status != 400 {
                failures.push(format!("{}: expected 400, got {}", what(path), page.status));
            }
            inert(
                &mut failures,
                &what(&format!("{path} error page")),
                &page,
                p,
                false,
            );
        }
        let response = anon
            .client
            .get(format!("{}/{}", app.issuer, p))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        inert(&mut failures, &what("not-found page"), &page, p, false);
    }

    // return_to after sign-in: only ever a local path.
    let _alice = member(&app, "alice").await;
    for hostile in [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example",
        "///evil.example",
        " //evil.example",
        "https://evil.example/",
        "http:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "%2F%2Fevil.example",
    ] {
        let browser = app.browser();
        let done = browser
            .submit(
                "/login",
                "/login",
                &[
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("return_to", hostile),
                ],
            )
            .await;
        // A control character (the tab) makes the whole form a 400 page; anything else
        // signs in and lands on the account page. Neither leaves the site.
        let refused = hostile.contains(char::is_control);
        let ok = if refused {
            done.status == 400 && done.headers.get("location").is_none()
        } else {
            done.status == 303 && done.location() == "/account"
        };
        if !ok {
            failures.push(format!(
                "sign-in with return_to {hostile:?}: {} {:?}",
                done.status,
                done.location()
            ));
        }
        // Signed in already: the sign-in page redirects at once, and also only locally.
        let mut url = url::Url::parse(&app.url("/login")).unwrap();
        url.query_pairs_mut().extend_pairs([("return_to", hostile)]);
        let again = browser.get(url.as_str()).await;
        let ok = if refused {
            again.status == 400 && again.headers.get("location").is_none()
        } else {
            again.status == 303 && again.location() == "/account"
        };
        if !ok {
            failures.push(format!(
                "signed-in GET /login with return_to {hostile:?}: {} {:?}",
                again.status,
                again.location()
            ));
        }
    }
    // Control: a local return_to is followed.
    let done = app
        .browser()
        .submit(
            "/login",
            "/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("return_to", "/account?tab=apps"),
            ],
        )
        .await;
    assert_eq!(done.location(), "/account?tab=apps");
    report("markup in rendered fields", &failures);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. CSRF and framing
// ---------------------------------------------------------------------------------------------

fn framing_ok(headers: &HeaderMap) -> bool {
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let xfo = headers
        .get("x-frame-options")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'") && xfo == "DENY"
}

/// Every state-changing form of the hosted pages, posted cross-site without this session's
/// CSRF token (none, forged, another browser's, the same person's other session's): 403 with
/// the "Please try again" page, and nothing changed.
async fn cross_site_posts_without_the_session_token_change_nothing(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let victim = member(&app, "alice").await;
    let alice = user_id(&app, "alice").await;
    let evil = member(&app, "mallory").await;
    let second = app.browser();
    assert_eq!(second.sign_in("alice", PASSWORD).await.status, 303);

    // The state the forms would change.
    let verify_link = app
        .link_in_email("alice@example.com", "/verify-email?token=")
        .await;
    let verify_token = verify_link.split("token=").nth(1).unwrap().to_owned();
    let sent = victim
        .submit(
            "/forgot-password",
            "/forgot-password",
            &[("email", "alice@example.com")],
        )
        .await;
    assert_eq!(sent.status, 200);
    let reset_link = app
        .link_in_email("alice@example.com", "/reset-password?token=")
        .await;
    let reset_token = reset_link.split("token=").nth(1).unwrap().to_owned();
    issue(&app, &victim, &client, "alice").await;
    {
        let mut tx = app.state.store.begin_write().await.unwrap();
        tessera::store::identities::link(
            &mut tx,
            "github",
            "gh-1",
            &alice,
            "alice@example.com",
            true,
            tessera::store::now_unix(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let (_, challenge) = pkce();
    let mut query = auth_query(&client, &challenge);
    query.push(("prompt", "consent"));
    let consent = victim.get(&authorize_url(&app, &query)).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    let request = consent.field("request");
    let confirm = victim
        .get(&format!("/end-session?client_id={}", client.id))
        .await;
    assert_eq!(confirm.status, 200);
    let account = victim.get("/account").await;
    let victim_csrf = account.csrf();
    let second_session = account.other_session();
    let users_before = count_users(&app).await;
    let emails_before = app.emails_to("alice@example.com");

    let evil_csrf = evil.get("/account").await.csrf();
    let second_csrf = second.get("/account").await.csrf();
    assert_ne!(evil_csrf, victim_csrf);
    assert_ne!(second_csrf, victim_csrf);

    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/register",
            vec![
                ("username", "eve"),
                ("email", "eve@example.com"),
                ("name", "Eve"),
                ("password", PASSWORD),
            ],
        ),
        (
            "/login",
            vec![("username", "mallory"), ("password", PASSWORD)],
        ),
        ("/logout", vec![]),
        (
            "/authorize/consent",
            vec![("request", &request), ("decision", "allow")],
        ),
        (
            "/account/profile",
            vec![("name", "Hacked"), ("email", "evil@evil.example")],
        ),
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", "owned by mallory now"),
            ],
        ),
        ("/account/sessions/end", vec![("session", &second_session)]),
        ("/account/sessions/end-all", vec![]),
        ("/account/apps/revoke", vec![("client_id", &client.id)]),
        ("/account/verify-email", vec![]),
        (
            "/account/identities/unlink",
            vec![("provider", "github"), ("subject", "gh-1")],
        ),
        ("/forgot-password", vec![("email", "alice@example.com")]),
        (
            "/reset-password",
            vec![
                ("token", &reset_token),
                ("password", "owned by mallory now"),
            ],
        ),
        ("/verify-email", vec![("token", &verify_token)]),
        ("/end-session/confirm", vec![]),
        ("/upstream/github/link", vec![]),
        ("/upstream/link", vec![("password", PASSWORD)]),
        ("/upstream/link/email", vec![]),
        ("/upstream/confirm", vec![("token", "x")]),
    ];
    let attacks: [(&str, Option<&str>); 5] = [
        ("no csrf_token", None),
        ("an empty csrf_token", Some("")),
        ("a forged csrf_token", Some("forged-0123456789abcdef")),
        ("another browser's csrf_token", Some(&evil_csrf)),
        (
            "the same person's other session's csrf_token",
            Some(&second_csrf),
        ),
    ];
    let mut failures = Vec::new();
    for (path, fields) in &forms {
        for (attack, token) in &attacks {
            let mut form = fields.clone();
            if let Some(t) = token {
                form.push(("csrf_token", t));
            }
            let response = victim
                .client
                .post(app.url(path))
                .header("origin", "https://evil.example")
                .header("referer", "https://evil.example/attack.html")
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            if status != 403 || !body.contains("Please try again") || !framing_ok(&headers) {
                failures.push(format!(
                    "POST {path} with {attack}: {status} {}",
                    body.chars().take(200).collect::<String>()
                ));
            }
        }
    }

    // Nothing changed.
    let account = victim.get("/account").await;
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failures.push(format!("after the attacks: {what}"));
        }
    };
    check(account.status == 200, "the victim is still signed in");
    check(
        account.has("<dd>alice</dd>"),
        "the victim is still alice (no login CSRF)",
    );
    check(
        account.has("value=\"Test Person\""),
        "the display name is unchanged",
    );
    check(!account.has("evil@evil.example"), "the email is unchanged");
    check(account.has("not verified"), "the email is still unverified");
    check(
        account.csrf() == victim_csrf,
        "the victim's session is the same",
    );
    check(second.signed_in().await, "the other session lives");
    check(
        count_users(&app).await == users_before,
        "no account was created",
    );
    check(
        app.emails_to("alice@example.com") == emails_before,
        "no email was sent",
    );
    check(
        app.browser().sign_in("alice", PASSWORD).await.status == 303,
        "the password is unchanged",
    );
    check(
        victim
            .get(&format!("/reset-password?token={reset_token}"))
            .await
            .status
            == 200,
        "the reset link is unspent",
    );
    {
        let mut conn = app.state.store.read().await.unwrap();
        check(
            tessera::store::grants::consent(&mut conn, &alice, &client.id)
                .await
                .unwrap()
                .is_some(),
            "the app's approval stands",
        );
        check(
            tessera::store::identities::of_user(&mut conn, &alice)
                .await
                .unwrap()
                .len()
                == 1,
            "the linked sign-in stands",
        );
    }
    // Controls: the same forms with the session's own token go through. The consent request
    // the attacks targeted is still pending, unspent.
    let allowed = victim
        .post(
            "/authorize/consent",
            &[
                ("csrf_token", &victim_csrf),
                ("request", &request),
                ("decision", "allow"),
            ],
        )
        .await;
    check(
        allowed.status == 303
            && allowed
                .location()
                .starts_with("https://app.example/cb?code="),
        "the pending consent request still completes with the right token",
    );
    let verified = victim
        .post(
            "/verify-email",
            &[("token", &verify_token), ("csrf_token", &victim_csrf)],
        )
        .await;
    check(
        verified.status == 200,
        "the verification link still works with the right token",
    );
    // DESIGN.md's rule is "forms carry a CSRF token" (plus SameSite=Lax cookies); it does not
    // ask for Origin checks, and Tessera makes none: a post carrying this session's token is
    // accepted whatever its Origin (a cross-site page cannot read the token).
    let response = victim
        .client
        .post(app.url("/account/profile"))
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf_token", victim_csrf.as_str()),
            ("name", "Alice A."),
            ("email", "alice@example.com"),
        ])
        .send()
        .await
        .unwrap();
    check(
        response.status() == 303,
        "a valid token with Origin: https://evil.example is accepted (no Origin rule in the design)",
    );
    check(
        victim.get("/account").await.has("value=\"Alice A.\""),
        "and the change applied",
    );
    report("cross-site form posts", &failures);
    app.stop().await;
}

/// Every HTML page route (and the error pages) forbids framing: CSP `frame-ancestors
/// 'none'` and `X-Frame-Options: DENY`.
async fn every_page_forbids_framing(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let client = app.client(false, &[], &[]).await;
    let signed_in = member(&app, "alice").await;
    let anon = app.browser();
    let (_, challenge) = pkce();
    let consent = authorize_url(&app, &auth_query(&client, &challenge));
    let unknown = authorize_url(&app, &[("client_id", "nope")]);
    let end_session = format!("/end-session?client_id={}", client.id);
    // (route, signed in?, expected status)
    let pages: Vec<(&str, bool, u16)> = vec![
        ("/", false, 303),
        ("/", true, 303),
        ("/login", false, 200),
        ("/register", false, 200),
        ("/forgot-password", false, 200),
        ("/reset-password?token=x", false, 400),
        ("/verify-email?token=x", false, 400),
        ("/account", false, 303),
        ("/account", true, 200),
        (&unknown, false, 400),
        (&consent, true, 200),
        (&consent, false, 303),
        ("/authorize/continue?request=x", true, 400),
        ("/end-session", true, 200),
        (&end_session, true, 200),
        ("/end-session?id_token_hint=x", true, 400),
        ("/upstream/link", true, 400),
        ("/upstream/confirm?token=x", false, 400),
        ("/upstream/github/start", false, 404),
        ("/upstream/github/callback?state=x&code=y", false, 404),
        ("/no-such-page", false, 404),
    ];
    let mut failures = Vec::new();
    for (path, signed, status) in &pages {
        let browser = if *signed { &signed_in } else { &anon };
        let url = if path.starts_with("http") {
            (*path).to_owned()
        } else {
            app.url(path)
        };
        let response = browser
            .client
            .get(&url)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let html = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html"));
        let framing = framing_ok(response.headers());
        let what = format!("GET {path} (signed in: {signed})");
        if got != *status {
            failures.push(format!("{what}: status {got}, expected {status}"));
        }
        if got != 303 && !html {
            failures.push(format!("{what}: not an HTML page"));
        }
        if !framing {
            failures.push(format!(
                "{what}: no CSP frame-ancestors 'none' / X-Frame-Options DENY: {:?}",
                response.headers()
            ));
        }
    }
    report("framing", &failures);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. SQL metacharacters
// ---------------------------------------------------------------------------------------------

/// SQL metacharacters and LIKE wildcards in every field of the pages and protocol endpoints:
/// the exact 4xx (or, where the value is legitimate, success with the value stored verbatim),
/// never a 500; the users table intact; a wildcard matches no one.
async fn sql_metacharacters_get_clean_errors_and_match_nothing(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let alice_browser = member(&app, "alice").await;
    let client = app
        .client(
            false,
            &["authorization_code", "refresh_token", "client_credentials"],
            &["openid", "profile", "email", "offline_access", "api:read"],
        )
        .await;
    let issued = issue(&app, &alice_browser, &client, "alice").await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let mut users = count_users(&app).await;
    let mut failures = Vec::new();

    for (i, p) in SQL.iter().enumerate() {
        let p = *p;
        // Registration: each field in turn.
        for field in ["username", "email", "name", "password"] {
            let username = format!("sql{i}{}", &field[..2]);
            let email = format!("{username}@example.com");
            let mut form = vec![
                ("username", username.as_str()),
                ("email", email.as_str()),
                ("name", "Plain Name"),
                ("password", PASSWORD),
            ];
            for f in &mut form {
                if f.0 == field {
                    f.1 = p;
                }
            }
            let page = app.browser().submit("/register", "/register", &form).await;
            let (status, text) = match field {
                "username" => (400, "Choose a username of 3 to 32"),
                "email" => (400, "Enter a valid email address"),
                "password" if p.chars().count() < 8 => (400, "at least 8 characters"),
                _ => (303, ""),
            };
            if page.status != status || !page.has(text) {
                failures.push(format!(
                    "register, {field} = {p:?}: {} (expected {status} {text:?})",
                    page.status
                ));
                continue;
            }
            if status != 303 {
                continue;
            }
            users += 1;
            let mut conn = app.state.store.read().await.unwrap();
            let row = tessera::store::users::by_login(&mut conn, &username)
                .await
                .unwrap();
            drop(conn);
            match (field, row) {
                ("name", Some(row)) if row.display_name == p => {}
                ("password", Some(_)) => {
                    let signed = app.browser().sign_in(&username, p).await;
                    if signed.status != 303 {
                        failures.push(format!(
                            "register, password = {p:?}: cannot sign in with it ({})",
                            signed.status
                        ));
                    }
                }
                (_, row) => failures.push(format!(
                    "register, {field} = {p:?}: stored as {:?}",
                    row.map(|r| r.display_name)
                )),
            }
        }

        // Sign-in: the payload as the login and as the password.
        for (login, password) in [(p, PASSWORD), ("alice", p)] {
            let page = app.browser().sign_in(login, password).await;
            if page.status != 401 || !page.has("Incorrect username or password.") {
                failures.push(format!(
                    "sign-in as {login:?} / {password:?}: {}",
                    page.status
                ));
            }
        }

        // Forgotten password: the same answer, and no email to anyone.
        let before = app.emails_to("alice@example.com");
        let page = app
            .browser()
            .submit("/forgot-password", "/forgot-password", &[("email", p)])
            .await;
        if page.status != 200 || !page.has("If an account exists") {
            failures.push(format!("forgot-password, email = {p:?}: {}", page.status));
        }
        if app.emails_to("alice@example.com") != before {
            failures.push(format!("forgot-password, email = {p:?}: mailed alice"));
        }

        // Authorization request parameters.
        let anon = app.browser();
        let (_, challenge) = pkce();
        let with = |name: &'static str| {
            let mut q = auth_query(&client, &challenge);
            q.retain(|(k, _)| *k != name);
            q.push((name, p));
            authorize_url(&app, &q)
        };
        let page = anon.get(&with("client_id")).await;
        if page.status != 400
            || !page.has("not registered here")
            || page.headers.get("location").is_some()
        {
            failures.push(format!("authorize, client_id = {p:?}: {}", page.status));
        }
        let page = anon.get(&with("scope")).await;
        let back = page.location();
        if page.status != 303
            || !back.starts_with("https://app.example/cb?")
            || query_of(&back).get("error").map(String::as_str) != Some("invalid_scope")
            || query_of(&back).get("state").map(String::as_str) != Some("st")
        {
            failures.push(format!(
                "authorize, scope = {p:?}: {} {back:?}",
                page.status
            ));
        }
        for name in ["login_hint", "nonce", "state"] {
            let page = anon.get(&with(name)).await;
            if page.status != 303 || !page.location().starts_with("/login?return_to=") {
                failures.push(format!(
                    "authorize, {name} = {p:?}: {} {:?}",
                    page.status,
                    page.location()
                ));
            }
        }
        // The state comes back byte for byte with an error.
        let mut q = auth_query(&client, &challenge);
        q.retain(|(k, _)| *k != "state" && *k != "response_type");
        q.extend([("state", p), ("response_type", "token")]);
        let page = anon.get(&authorize_url(&app, &q)).await;
        let back = page.location();
        if page.status != 303
            || query_of(&back).get("state").map(String::as_str) != Some(p)
            || query_of(&back).get("error").map(String::as_str) != Some("unsupported_response_type")
        {
            failures.push(format!(
                "authorize error, state = {p:?}: {} {back:?}",
                page.status
            ));
        }

        // Token endpoint fields.
        let (code, _) = code_for(&alice_browser, &client, "alice").await;
        // (field, form, status, OAuth error)
        type TokenCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
        let token_cases: Vec<TokenCase<'_>> = vec![
            (
                "code",
                vec![
                    ("grant_type", "authorization_code"),
                    ("code", p),
                    ("redirect_uri", &client.redirect_uri),
                ],
                400,
                "invalid_grant",
            ),
            (
                "code_verifier (with a real code)",
                vec![
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &client.redirect_uri),
                    ("code_verifier", p),
                ],
                400,
                "invalid_grant",
            ),
            (
                "refresh_token",
                vec![("grant_type", "refresh_token"), ("refresh_token", p)],
                400,
                "invalid_grant",
            ),
            (
                "scope",
                vec![("grant_type", "client_credentials"), ("scope", p)],
                400,
                "invalid_scope",
            ),
        ];
        for (name, form, status, error) in &token_cases {
            let (got, body, _) = app.token(&client, form).await;
            if got != *status || body["error"] != *error {
                failures.push(format!("token, {name} = {p:?}: {got} {body}"));
            }
        }
        // client_id in the body, and in Basic.
        let got = Answer::of(app.client.post(app.url("/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", p),
            ("client_secret", "x"),
        ]))
        .await;
        if got.status != 401 || got.body["error"] != "invalid_client" || !got.challenge().is_empty()
        {
            failures.push(format!("token, client_id = {p:?}: {}", got.summary()));
        }
        let got = Answer::of(
            app.client
                .post(app.url("/token"))
                .basic_auth(p, Some("x"))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
        if got.status != 401
            || got.body["error"] != "invalid_client"
            || got.challenge() != "Basic realm=\"tessera\""
        {
            failures.push(format!("token, Basic client id = {p:?}: {}", got.summary()));
        }
        // Introspection and revocation.
        let (status, body) = app
            .backchannel("/introspect", &client, &[("token", p)])
            .await;
        if status != 200 || body != json!({ "active": false }) {
            failures.push(format!("introspect, token = {p:?}: {status} {body}"));
        }
        let (status, body) = app.backchannel("/revoke", &client, &[("token", p)]).await;
        if status != 200 {
            failures.push(format!("revoke, token = {p:?}: {status} {body}"));
        }
    }

    // LIKE wildcards and quoting as the sign-in name, with alice's real password.
    for login in [
        "%",
        "%%",
        "a%",
        "%e",
        "%lice",
        "_____",
        "al_ce",
        "ALIC_",
        "%@example.com",
        "alice@%",
        "alice%",
        "alice' --",
        "alice'--",
        "alice\" --",
        "' OR username_key LIKE '%",
        "alice\\",
        "*",
    ] {
        let page = app.browser().sign_in(login, PASSWORD).await;
        if page.status != 401 {
            failures.push(format!(
                "sign-in as {login:?} with alice's password: {} (matched someone)",
                page.status
            ));
        }
    }

    // The users table is intact, alice still signs in, and her tokens still work.
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failures.push(format!("afterwards: {what}"));
        }
    };
    check(
        count_users(&app).await == users,
        "the users table holds exactly the accounts created",
    );
    check(
        app.browser().sign_in("alice", PASSWORD).await.status == 303,
        "alice signs in",
    );
    let got = Answer::of(app.client.get(app.url("/userinfo")).bearer_auth(&access)).await;
    check(got.status == 200, "alice's access token works");
    report("SQL metacharacters", &failures);
    app.stop().await;
}

/// NUL, other control characters and invalid UTF-8 (raw and percent-encoded) in each field of
/// each page form, and in the query strings of the pages: a 400 page saying so, before the form is acted on (nothing registered, no
/// sign-in counted, no email sent). The same forms with clean values still work.
async fn nul_bytes_and_invalid_utf8_in_page_forms_get_a_400_page(backend: Backend) {
    let (_db, app) = start(&backend).await;
    let users_before = count_users(&app).await;
    // (page, action, fields with clean values)
    type Form<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let forms: [Form<'_>; 3] = [
        (
            "/register",
            "/register",
            &[
                ("username", "nul_probe"),
                ("email", "nul_probe@example.com"),
                ("password", PASSWORD),
            ],
        ),
        (
            "/login",
            "/login",
            &[("username", "nul_probe"), ("password", PASSWORD)],
        ),
        (
            "/forgot-password",
            "/forgot-password",
            &[("email", "nul_probe@example.com")],
        ),
    ];
    // What replaces one field's value, as bytes of the body (already form-encoded).
    let poisons: [(&str, &[u8]); 5] = [
        ("a percent-encoded NUL", b"ab%00cd"),
        ("a raw NUL", b"ab\x00cd"),
        ("a percent-encoded BEL", b"ab%07cd"),
        ("percent-encoded invalid UTF-8", b"ab%FF%FEcd"),
        ("raw invalid UTF-8", b"ab\xff\xfecd"),
    ];
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut failures = Vec::new();
    for (page, action, fields) in forms {
        for (target, _) in fields.iter() {
            for (what, poison) in poisons {
                let browser = app.browser();
                let csrf = browser.get(page).await.csrf();
                let mut body: Vec<u8> = Vec::new();
                for (name, value) in fields.iter() {
                    body.extend_from_slice(name.as_bytes());
                    body.push(b'=');
                    if name == target {
                        body.extend_from_slice(poison);
                    } else {
                        body.extend_from_slice(encode(value).as_bytes());
                    }
                    body.push(b'&');
                }
                body.extend_from_slice(format!("csrf_token={}", encode(&csrf)).as_bytes());
                let answer = browser
                    .client
                    .post(app.url(action))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                let html = answer.text().await.unwrap_or_default();
                if status != 400 || !html.contains("not allowed") {
                    failures.push(format!("{action} {target} with {what}: {status}"));
                }
            }
        }
    }
    // The same in the query strings of the pages (raw NUL and invalid bytes cannot be sent in
    // a URL, so percent-encoded).
    for path in [
        "/login?return_to=%2Faccount%00",
        "/login?return_to=%FF",
        "/reset-password?token=ab%00cd",
        "/verify-email?token=%FF%FE",
        "/authorize/continue?request=%07",
        "/upstream/google/start?return_to=%00",
        "/upstream/google/callback?code=%FF&state=x",
    ] {
        let page = app.browser().get(path).await;
        if page.status != 400 || page.headers.get("location").is_some() {
            failures.push(format!("GET {path}: {}", page.status));
        }
    }
    for path in ["/login?return_to=%2Faccount", "/login"] {
        let page = app.browser().get(path).await;
        if page.status != 200 {
            failures.push(format!("clean GET {path}: {}", page.status));
        }
    }
    if count_users(&app).await != users_before {
        failures.push("an account was created from a poisoned form".into());
    }
    assert_eq!(
        app.emails_to("nul_probe@example.com"),
        0,
        "no email was sent"
    );
    // Controls: the same forms, clean, still work.
    let browser = app.browser();
    let registered = browser
        .register("nul_probe", "nul_probe@example.com", PASSWORD)
        .await;
    if registered.status != 303 {
        failures.push(format!("clean registration: {}", registered.status));
    }
    if app.browser().sign_in("nul_probe", PASSWORD).await.status != 303 {
        failures.push("clean sign-in failed".into());
    }
    report("NUL and invalid UTF-8 in page forms", &failures);
    app.stop().await;
}
