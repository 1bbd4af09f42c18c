//! Fuzz entry points: one pure, synchronous function per `cargo fuzz` target in `fuzz/`
//! (`bash bench/fuzz.sh` runs them). `tests/it/fuzz_corpus.rs` replays the committed seed
//! corpus `fuzz/seeds/<target>/` through the same functions in the normal test suite.
//!
//! Each function hands the bytes to the production parsers and checkers and asserts what
//! must hold whatever the input, beyond "does not panic": a repeated parameter is always
//! refused, a JWT the verifier accepts was signed by the ring's key and carries our issuer,
//! a configuration loads or fails with a one-line error naming a key.
//!
//! The request-shaped targets ([`token_request`], [`bearer_jwt`]) read their input as a tiny
//! HTTP message: header lines `Name: value` up to the first empty line, then the body. An
//! input without an empty line is all body, with no headers. Header lines that `http` would
//! refuse (bad name, control bytes in the value) are dropped, as hyper would refuse them.

// A fuzz entry point reports a broken invariant the only way libFuzzer (and the replay test)
// notices: by panicking. The crate denies `panic!`, `unwrap` and `expect` in library code;
// here they are the point, so they are allowed in this module only.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use serde_json::{Map, Value};
use url::form_urlencoded;

use crate::config::Config;
use crate::crypto::keys::{KeyPolicy, KeyRing};
use crate::crypto::{b64url, sha256};
use crate::oidc::bearer::{self, BearerError};
use crate::oidc::error::Code;
use crate::oidc::params::{ParamError, Params};
use crate::oidc::tokens::{AccessClaims, IdClaims};
use crate::oidc::{authorize, client_auth, token, verify};
use crate::store::clients::Client;
use crate::store::{self, Store};

/// `Params::parse` and `Params::get` (RFC 6749 §3.1: each parameter at most once).
///
/// Input: an `application/x-www-form-urlencoded` string (a query string or form body).
///
/// Asserts, for every name in the input and every protocol parameter name, that `get` agrees
/// with the values the form decoder yields: absent or empty → `None`, one value → that value,
/// a control character → `Invalid`, two or more → `Repeated`; and `contains`/`require` agree.
pub fn params(data: &[u8]) {
    let params = Params::parse(data);
    let raw = decoded(data);
    let mut names: Vec<&str> = raw.keys().map(String::as_str).collect();
    names.extend_from_slice(PROTOCOL_NAMES);
    for name in names {
        checked_get(&params, &raw, name);
    }
}

/// The authorization request's checks (`oidc::authorize::validate`), for four registered
/// clients: a confidential web app, a public single-page app without refresh tokens, a
/// public native app, and a service that may not use the code flow.
///
/// Input: the authorization request's query string (or POST body), e.g.
/// `response_type=code&client_id=web&redirect_uri=…&scope=openid&code_challenge=…`.
///
/// Asserts: a repeated parameter, a control character in a parameter, or a request object
/// is always refused; a refusal carries one of the codes RFC 6749 §4.1.2.1 allows with a
/// description free of control characters; an accepted request has `response_type=code`,
/// scopes that are non-empty, unique and all registered for the client, `offline_access`
/// only with the refresh grant, an S256 PKCE challenge of 43–128 unreserved characters
/// (always, for a public client), a nonce of at most 512 bytes, a login hint of at most 254
/// characters, and `prompt=none` never with another prompt value.
///
/// The `client_id`/`redirect_uri` lookup runs in the async handler against the database
/// (an exact string comparison with the registered URIs); here only their parsing is fuzzed.
pub fn authorize_request(data: &[u8]) {
    let params = Params::parse(data);
    let raw = decoded(data);
    // What the handler reads before `validate`.
    for name in ["client_id", "redirect_uri", "state"] {
        checked_get(&params, &raw, name);
    }
    for client in clients() {
        check_authorization(client, &raw, authorize::validate(client, &params));
    }
}

/// The token endpoint's pure parts: the form parameters it reads for each grant type,
/// client authentication's `Authorization: Basic` parsing (`client_auth::basic_credentials`),
/// and the PKCE check (`token::pkce_ok`). The database lookups that follow are not fuzzed.
///
/// Input: header lines, an empty line, then the form body, e.g.
///
/// ```text
/// Authorization: Basic d2ViOnNlY3JldA==
/// Content-Type: application/x-www-form-urlencoded
///
/// grant_type=authorization_code&code=…&redirect_uri=…&code_verifier=…
/// ```
///
/// Asserts: every parameter reads as the form decoder says (see [`params`]); `Basic`
/// credentials, when accepted, come from the one `Authorization` header and have a non-empty
/// client id free of control characters; two such headers are `invalid_request`; any other
/// refusal is `invalid_client` with a `WWW-Authenticate: Basic` challenge; a form's
/// `client_id`/`client_secret`, encoded into a Basic header as RFC 6749 §2.3.1 says, decode
/// back to exactly themselves; a `code_verifier` matches its own S256 challenge exactly when
/// it is 43–128 unreserved characters, never matches without a challenge (downgrade), and
/// matches another `code_challenge` only if that is its S256 hash.
pub fn token_request(data: &[u8]) {
    let (headers, body) = split_request(data);
    let params = Params::parse(body);
    let raw = decoded(body);
    for name in [
        "grant_type",
        "client_id",
        "client_secret",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "code_challenge",
    ] {
        checked_get(&params, &raw, name);
    }

    check_basic(&headers);
    if let (Ok(Some(id)), Ok(Some(secret))) = (params.get("client_id"), params.get("client_secret"))
    {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let scheme = ["Basic", "basic", "BASIC"][body.len() % 3];
        let credentials = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("{scheme} {credentials}")).unwrap(),
        );
        match client_auth::basic_credentials(&basic) {
            Ok(Some((i, s))) => assert!(i == id && s == secret, "Basic round trip: {i:?}, {s:?}"),
            Ok(None) => panic!("Basic header not seen"),
            Err(e) => panic!("Basic round trip refused: {}", e.description),
        }
    }

    // The reads of `token::token` for each grant type.
    match params.get("grant_type") {
        Ok(Some("authorization_code")) => {
            for name in ["code", "redirect_uri"] {
                if let Ok(v) = params.require(name) {
                    assert!(!v.is_empty());
                }
            }
        }
        Ok(Some("refresh_token")) => {
            if let Ok(v) = params.require("refresh_token") {
                assert!(!v.is_empty());
            }
        }
        _ => {}
    }

    if let Ok(Some(verifier)) = params.get("code_verifier") {
        let s256 = b64url(sha256(verifier.as_bytes()));
        // RFC 7636 §4.1: code-verifier = 43*128unreserved.
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        assert_eq!(token::pkce_ok(Some(&s256), Some(verifier)), well_formed);
        assert!(
            !token::pkce_ok(None, Some(verifier)),
            "verifier without challenge"
        );
        assert!(
            !token::pkce_ok(Some(&s256), None),
            "challenge without verifier"
        );
        if let Ok(Some(challenge)) = params.get("code_challenge")
            && token::pkce_ok(Some(challenge), Some(verifier))
        {
            assert!(
                challenge == s256 && well_formed,
                "PKCE matched {challenge:?}"
            );
        }
    }
}

/// Bearer token extraction (`oidc::bearer::token`) and JWT verification
/// (`oidc::verify::access_token`, `oidc::verify::id_token_hint`) against a fixed key ring.
///
/// Input: header lines, an empty line, then a body. When the body starts with `{` it is a
/// JSON object of claims: the ring signs it (as an access token, and again with our issuer,
/// audience and a live expiry, as an access token and as an ID token) so the verifiers'
/// accepting paths are fuzzed too. Otherwise the body is a form that may carry
/// `access_token`; the token found (header or form), or else the whole body, is verified.
///
/// Asserts: a token comes from exactly one place (RFC 6750 §2: one `Authorization` header,
/// or the form), is non-empty and, from the header, has no spaces; a JWT either verifier
/// accepts is RS256 under the ring's `kid`, signed by the ring's key (checked independently
/// of `jsonwebtoken`), at most 8 KiB, with our issuer, past its `nbf` (an access token also:
/// `typ` `at+jwt`, our audience, not expired; an ID token hint: never `typ` `at+jwt`); a token
/// the ring signed with valid claims is accepted, and rejected once any byte of it is
/// changed, re-signed with HS256 keyed by the public key, or sent with `alg: none`.
pub fn bearer_jwt(data: &[u8]) {
    let fx = fixture();
    let (headers, body) = split_request(data);
    if body.first() == Some(&b'{') {
        if let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(body) {
            signed_claims(fx, claims, data.len());
        }
        return;
    }
    let params = Params::parse(body);
    let form_token = params.get("access_token");
    let from_header = bearer::token(&headers, None);
    match &from_header {
        Ok(t) => {
            assert_eq!(
                headers.get_all(header::AUTHORIZATION).iter().count(),
                1,
                "a token picked from several Authorization headers"
            );
            let value = headers
                .get(header::AUTHORIZATION)
                .expect("a token without an Authorization header")
                .to_str()
                .expect("a token from a non-text header");
            let (scheme, rest) = value.split_once(' ').expect("a token without a scheme");
            assert!(scheme.eq_ignore_ascii_case("bearer"));
            assert_eq!(t, rest.trim());
            assert!(!t.is_empty() && !t.contains(' '));
        }
        Err(BearerError::Missing) => assert!(headers.get(header::AUTHORIZATION).is_none()),
        Err(BearerError::InvalidRequest(_)) => {
            assert!(headers.get(header::AUTHORIZATION).is_some());
        }
        Err(_) => panic!("unexpected bearer error without a form"),
    }
    let with_form = bearer::token(&headers, Some(&params));
    match (&from_header, &form_token, &with_form) {
        // Both ways at once, or a repeated access_token: refused.
        (Ok(_), Ok(Some(_)), r) | (_, Err(_), r) => {
            assert!(matches!(r, Err(BearerError::InvalidRequest(_))));
        }
        (Ok(h), Ok(None), r) => assert!(matches!(r, Ok(t) if t == h)),
        (Err(BearerError::Missing), Ok(Some(f)), r) => assert!(matches!(r, Ok(t) if t == f)),
        (Err(BearerError::Missing), Ok(None), r) => {
            assert!(matches!(r, Err(BearerError::Missing)));
        }
        (Err(_), _, r) => assert!(r.is_err()),
    }
    if let Err(e) = with_form {
        let status = e.into_response().status();
        assert!(status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE);
    }
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(t) = &from_header {
        candidates.push(t.clone());
    }
    if let Ok(Some(t)) = form_token {
        candidates.push(t.to_owned());
    }
    if candidates.is_empty()
        && let Ok(text) = std::str::from_utf8(body)
    {
        candidates.push(text.to_owned());
    }
    for t in &candidates {
        check_verifiers(fx, t);
        // The ring's kid is random, so a fuzzed token names it only by accident; with the
        // kid put in, the signature and claims checks behind the kid lookup are fuzzed too.
        if let Some(t) = with_ring_kid(fx, t) {
            check_verifiers(fx, &t);
        }
    }
}

/// Configuration loading: defaults, then TOML text, then `TESSERA_*` variables, validated
/// (`Config::from_toml_str_with_env`, the production loader with the file given as text),
/// followed by the pure start-up steps that read it (key policy, discovery document,
/// `prepublish` warning).
///
/// Input: TOML text; optionally a line `#%env` followed by environment lines `NAME=value`.
/// Input that is not UTF-8 is skipped (the loader refuses such a file before parsing it).
/// So is input that could make `master_key_file` name a device (`/dev`, `/proc`, `/sys`, or
/// a `\u` escape): reading `/dev/zero` never ends, which is the operator's to avoid.
///
/// Asserts: loading returns a configuration or an error whose key is non-empty and whose
/// message is one line; a loaded configuration has an http(s) issuer with a host and no query
/// or fragment, a bind address that parses, a known database scheme, an RSA size of 2048,
/// 3072 or 4096, and survives the start-up steps without panicking.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lower = text.to_ascii_lowercase();
    if lower.contains("key_file")
        && ["/dev", "/proc", "/sys", "\\u"]
            .iter()
            .any(|d| lower.contains(d))
    {
        return;
    }
    let (toml, env) = match text.split_once("\n#%env\n") {
        Some((toml, env)) => (toml, env),
        None => (text, ""),
    };
    let vars: Vec<(&str, &str)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    match Config::from_toml_str_with_env(toml, vars) {
        Err(e) => {
            assert!(!e.key.is_empty(), "error without a key: {e}");
            let message = e.to_string();
            assert!(
                !message.contains(LINE_BREAKS),
                "error message on several lines: {message:?}"
            );
        }
        Ok(config) => {
            let issuer = url::Url::parse(&config.issuer).expect("issuer is a URL");
            assert!(matches!(issuer.scheme(), "http" | "https"));
            assert!(issuer.host_str().is_some_and(|h| !h.is_empty()));
            assert!(issuer.query().is_none() && issuer.fragment().is_none());
            assert_eq!(
                Ok(config.bind_addr()),
                config.bind.parse::<std::net::SocketAddr>()
            );
            assert!(
                config.database_url.starts_with("sqlite:")
                    || config.database_url.starts_with("postgres")
            );
            assert!(matches!(config.keys.rsa_bits, 2048 | 3072 | 4096));
            assert!(!config.base_path().ends_with('/'));
            // What `Application::with_listener` does with it before touching the network.
            let _ = config.prepublish_warning();
            let policy = KeyPolicy::from_config(&config).expect("key policy of a valid config");
            assert_eq!(policy.rsa_bits, config.keys.rsa_bits);
            let _ = crate::oidc::discovery::Discovery::build(&config);
            let _ = config.max_jwt_ttl();
        }
    }
}

/// What ends a line, for a one-line message.
const LINE_BREAKS: &[char] = &[
    '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// The protocol parameter names the endpoints read.
const PROTOCOL_NAMES: &[&str] = &[
    "response_type",
    "response_mode",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "login_hint",
    "code_challenge",
    "code_challenge_method",
    "grant_type",
    "code",
    "code_verifier",
    "refresh_token",
    "access_token",
    "token",
    "token_type_hint",
    "id_token_hint",
    "post_logout_redirect_uri",
];

/// Every value of every name, in order, as the form decoder yields them.
fn decoded(raw: &[u8]) -> HashMap<String, Vec<String>> {
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        values
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    values
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `params.get(name)`, checked against the decoder's values.
fn checked_get(params: &Params, raw: &HashMap<String, Vec<String>>, name: &str) {
    let got = params.get(name);
    let values = raw.get(name).map(Vec::as_slice).unwrap_or_default();
    match values {
        [] => assert_eq!(got, Ok(None), "{name}: absent"),
        [one] if has_control(one) => {
            assert_eq!(
                got,
                Err(ParamError::Invalid(name.to_owned())),
                "{name}: control"
            );
        }
        [one] if one.is_empty() => assert_eq!(got, Ok(None), "{name}: empty"),
        [one] => assert_eq!(got, Ok(Some(one.as_str())), "{name}: one value"),
        _ => assert_eq!(
            got,
            Err(ParamError::Repeated(name.to_owned())),
            "{name}: repeated"
        ),
    }
    assert_eq!(
        params.contains(name),
        !values.is_empty(),
        "{name}: contains"
    );
    match (&got, params.require(name)) {
        (Ok(Some(v)), Ok(r)) => assert_eq!(*v, r),
        (Ok(None), Err(ParamError::Invalid(_))) => {}
        (Err(e), Err(r)) => assert_eq!(*e, r),
        (g, r) => panic!("{name}: get {g:?} but require {r:?}"),
    }
}

fn client(id: &str, public: bool, grants: &[&str], scopes: &[&str]) -> Client {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    Client {
        id: id.to_owned(),
        name: id.to_owned(),
        secret_hash: (!public)
            .then(|| crate::crypto::secrets::token_hash("a-secret-of-some-length")),
        public,
        redirect_uris: vec![
            format!("https://{id}.example/cb"),
            "http://127.0.0.1:9000/cb".into(),
        ],
        post_logout_redirect_uris: Vec::new(),
        grant_types: strings(grants),
        scopes: strings(scopes),
        auth_method: if public {
            "none"
        } else {
            "client_secret_basic"
        }
        .to_owned(),
        skip_consent: false,
        created_at: 0,
    }
}

fn clients() -> &'static [Client] {
    static CLIENTS: OnceLock<Vec<Client>> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        vec![
            client(
                "web",
                false,
                &["authorization_code", "refresh_token"],
                &["openid", "profile", "email", "offline_access"],
            ),
            client(
                "spa",
                true,
                &["authorization_code"],
                &["openid", "profile", "offline_access"],
            ),
            client(
                "native",
                true,
                &["authorization_code", "refresh_token"],
                &["openid", "email", "offline_access", "api:read"],
            ),
            client("svc", false, &["client_credentials"], &["api:read"]),
        ]
    })
}

/// The parameters `validate` reads, each of which it must refuse when repeated or malformed.
const AUTHORIZE_READS: &[&str] = &[
    "response_type",
    "response_mode",
    "scope",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
    "ui_locales",
    "display",
    "claims_locales",
    "acr_values",
    "login_hint",
];

fn check_authorization(
    client: &Client,
    raw: &HashMap<String, Vec<String>>,
    result: Result<authorize::Pending, (Code, String)>,
) {
    // The single, non-empty value of `name`, if it has one.
    let one = |name: &str| match raw.get(name).map(Vec::as_slice) {
        Some([v]) if !v.is_empty() => Some(v.as_str()),
        _ => None,
    };
    let malformed = AUTHORIZE_READS.iter().any(|n| {
        raw.get(*n)
            .is_some_and(|v| v.len() > 1 || v.iter().any(|x| has_control(x)))
    });
    let request_object = raw.contains_key("request") || raw.contains_key("request_uri");
    let pending = match result {
        Err((code, description)) => {
            assert!(
                matches!(
                    code,
                    Code::InvalidRequest
                        | Code::UnsupportedResponseType
                        | Code::UnauthorizedClient
                        | Code::InvalidScope
                ),
                "{code:?}"
            );
            assert!(
                !description.is_empty() && !has_control(&description),
                "{description:?}"
            );
            if request_object {
                assert_eq!(code, Code::InvalidRequest);
            }
            return;
        }
        Ok(pending) => pending,
    };
    assert!(!malformed, "a repeated or malformed parameter was accepted");
    assert!(!request_object, "a request object was accepted");
    assert_eq!(one("response_type"), Some("code"));
    assert!(one("response_mode").is_none_or(|m| m == "query"));
    assert!(client.allows_grant("authorization_code"));

    let p = serde_json::to_value(&pending).unwrap();
    let str_of = |k: &str| p[k].as_str().map(str::to_owned);
    assert_eq!(str_of("client_id").as_deref(), Some(client.id.as_str()));
    assert!(str_of("id").is_some_and(|id| !id.is_empty()));
    // Filled in by the handler from the checked redirect_uri and state.
    assert_eq!(str_of("redirect_uri").as_deref(), Some(""));
    assert!(p["state"].is_null());

    let mut expected: Vec<&str> = Vec::new();
    for s in one("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if !expected.contains(&s) {
            expected.push(s);
        }
    }
    let scopes: Vec<&str> = p["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, expected);
    assert!(!scopes.is_empty());
    assert!(scopes.iter().all(|s| client.scopes.iter().any(|c| c == s)));
    if scopes.contains(&"offline_access") {
        assert!(client.allows_grant("refresh_token"));
    }

    match str_of("code_challenge") {
        Some(c) => {
            assert!(
                (43..=128).contains(&c.len()),
                "challenge length {}",
                c.len()
            );
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            );
            assert_eq!(Some(c.as_str()), one("code_challenge"));
            assert_eq!(one("code_challenge_method"), Some("S256"));
        }
        None => {
            assert!(!client.public, "a public client without PKCE");
            assert!(one("code_challenge_method").is_none());
        }
    }
    assert_eq!(str_of("nonce").as_deref(), one("nonce"));
    assert!(str_of("nonce").is_none_or(|n| n.len() <= 512));
    if let Some(hint) = str_of("login_hint") {
        assert!(hint.chars().count() <= 254);
        assert!(one("login_hint").is_some_and(|raw| raw.starts_with(&hint)));
    }
    let flag = |k: &str| p[k].as_bool().unwrap();
    if flag("prompt_none") {
        assert!(!flag("prompt_consent") && !flag("force_login"));
    }
    match one("max_age") {
        Some(v) => assert_eq!(
            p["max_age"].as_i64(),
            Some(i64::from(v.parse::<u32>().unwrap()))
        ),
        None => assert!(p["max_age"].is_null()),
    }
}

fn check_basic(headers: &HeaderMap) {
    let values = headers.get_all(header::AUTHORIZATION).iter().count();
    match client_auth::basic_credentials(headers) {
        Ok(None) => assert_eq!(values, 0),
        Ok(Some((id, _secret))) => {
            assert_eq!(
                values, 1,
                "credentials picked from several Authorization headers"
            );
            let value = headers[header::AUTHORIZATION].to_str().unwrap();
            let (scheme, _) = value.split_once(' ').unwrap();
            assert!(scheme.eq_ignore_ascii_case("basic"));
            assert!(!id.is_empty() && !has_control(&id), "client id {id:?}");
        }
        Err(e) if values > 1 => assert_eq!(e.code, Code::InvalidRequest),
        Err(e) => {
            assert_eq!(values, 1);
            assert_eq!(e.code, Code::InvalidClient);
            assert!(e.basic_challenge);
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }
}

/// Splits a request-shaped input into its headers and body (see the module documentation).
fn split_request(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut start = 0;
    let mut blank = None;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            let line = &data[start..i];
            if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                blank = Some((start, i + 1));
                break;
            }
            start = i + 1;
        }
    }
    let Some((head_end, body_start)) = blank else {
        return (headers, data);
    };
    for line in data[..head_end].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, &data[body_start..])
}

/// A key ring with one RSA key, made once per process through the production path
/// (`KeyRing::load` on a private in-memory SQLite database), and the configuration the
/// verifiers check against.
struct Fixture {
    config: Config,
    ring: KeyRing,
    kid: String,
    public: RsaPublicKeyComponents<Vec<u8>>,
    /// Secrets an attacker could know, for HS256 "signed with the public key" tokens.
    public_secrets: Vec<Vec<u8>>,
    /// Keeps the pools' runtime alive; the ring never touches the database again.
    _runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    // On a thread of its own, so a caller inside a Tokio runtime can build it too.
    FIXTURE.get_or_init(|| {
        std::thread::spawn(build_fixture)
            .join()
            .expect("building the fuzz key ring")
    })
}

fn build_fixture() -> Fixture {
    let config = Config {
        issuer: "https://id.example.test".into(),
        database_url: format!(
            "sqlite:file:tessera-fuzz-{}?mode=memory&cache=shared",
            std::process::id()
        ),
        ..Config::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ring = runtime.block_on(async {
        let store = Store::open(&config).await.expect("in-memory store");
        store.migrate().await.expect("migrations");
        let policy = KeyPolicy {
            rsa_bits: 2048,
            rotate_after: Duration::from_secs(365 * 86_400),
            prepublish: Duration::ZERO,
            retain: Duration::from_secs(86_400),
            max_age: Duration::from_secs(300),
            master: None,
        };
        KeyRing::load(store, policy).await.expect("key ring")
    });
    let kid = ring.signer().expect("a signing key").kid.clone();
    let jwks_body = ring.jwks().body().to_vec();
    let jwks: Value = serde_json::from_slice(&jwks_body).expect("JWKS");
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kid"].as_str(), Some(kid.as_str()));
    let part = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
    let public = RsaPublicKeyComponents {
        n: part("n"),
        e: part("e"),
    };
    let public_secrets = vec![
        jwks_body,
        public.n.clone(),
        serde_json::to_vec(jwk).unwrap(),
    ];
    Fixture {
        config,
        ring,
        kid,
        public,
        public_secrets,
        _runtime: runtime,
    }
}

/// Whether the ring's public key verifies `token`'s RS256 signature, checked with aws-lc-rs
/// directly rather than through `jsonwebtoken`.
fn signed_by_ring(fx: &Fixture, token: &str) -> bool {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD_INDIFFERENT.decode(signature) else {
        return false;
    };
    fx.public
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &signature,
        )
        .is_ok()
}

/// Runs both verifiers on `token` and checks what they accept.
fn check_verifiers(fx: &Fixture, token: &str) {
    let now = store::now_unix();
    let typ_is_access = |h: &jsonwebtoken::Header| {
        h.typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    };
    if let Some(claims) = verify::access_token(&fx.ring, &fx.config, token) {
        assert!(token.len() <= 8192);
        assert!(
            signed_by_ring(fx, token),
            "accepted an access token the ring did not sign"
        );
        let h = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(h.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(h.kid.as_deref(), Some(fx.kid.as_str()));
        assert!(typ_is_access(&h), "typ {:?}", h.typ);
        assert_eq!(claims.iss, fx.config.issuer);
        assert_eq!(claims.aud, fx.config.issuer);
        assert!(claims.exp >= now, "accepted an expired access token");
        assert!(
            not_before_ok(token, 0),
            "accepted an access token before its nbf"
        );
    }
    if let Some(claims) = verify::id_token_hint(&fx.ring, &fx.config, token) {
        assert!(token.len() <= 8192);
        assert!(
            signed_by_ring(fx, token),
            "accepted an ID token the ring did not sign"
        );
        let h = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(h.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(h.kid.as_deref(), Some(fx.kid.as_str()));
        assert!(!typ_is_access(&h), "an access token passed as an ID token");
        assert_eq!(claims.iss, fx.config.issuer);
        assert!(
            not_before_ok(token, 60),
            "accepted an ID token before its nbf"
        );
    }
}

/// Whether `token`'s `nbf`, if it has one, is a time no later than now + `leeway` seconds
/// (the numeric forms `jsonwebtoken` reads: a non-negative integer or float).
fn not_before_ok(token: &str, leeway: i64) -> bool {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD_INDIFFERENT.decode(part).ok())
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .expect("the claims of an accepted token decode");
    let now = store::now_unix();
    match claims.get("nbf") {
        None => true,
        Some(nbf) => nbf.as_f64().is_some_and(|n| {
            #[allow(clippy::cast_possible_truncation)]
            let n = n.round() as i64;
            n >= 0 && n <= now + leeway
        }),
    }
}

/// `token` with its header's `kid` replaced by the ring's, if the header is a JSON object.
fn with_ring_kid(fx: &Fixture, token: &str) -> Option<String> {
    let (header, rest) = token.split_once('.')?;
    let header = URL_SAFE_NO_PAD_INDIFFERENT.decode(header).ok()?;
    let mut header: Map<String, Value> = serde_json::from_slice(&header).ok()?;
    header.insert("kid".into(), Value::from(fx.kid.clone()));
    Some(format!(
        "{}.{rest}",
        b64url(serde_json::to_vec(&header).ok()?)
    ))
}

/// Both verifiers refuse `token`.
fn refused(fx: &Fixture, token: &str, why: &str) {
    assert!(
        verify::access_token(&fx.ring, &fx.config, token).is_none(),
        "access token: {why}"
    );
    assert!(
        verify::id_token_hint(&fx.ring, &fx.config, token).is_none(),
        "ID token: {why}"
    );
}

/// The verifiers' accepting paths: fuzzed claims, signed by the ring.
fn signed_claims(fx: &Fixture, claims: Map<String, Value>, seed: usize) {
    // 1. As they are: whatever is accepted must satisfy the verifiers' invariants.
    let token = fx.ring.sign("at+jwt", &claims).unwrap();
    check_verifiers(fx, &token);
    assert!(
        verify::id_token_hint(&fx.ring, &fx.config, &token).is_none(),
        "an access token passed as an ID token"
    );

    // 2. With our issuer and audience and a live expiry: accepted exactly when the claims
    // make an access token (or an ID token) and the JWT fits the size limit.
    let mut good = claims;
    let now = store::now_unix();
    good.insert("iss".into(), Value::from(fx.config.issuer.clone()));
    good.insert("aud".into(), Value::from(fx.config.issuer.clone()));
    good.insert("exp".into(), Value::from(now + 3600));
    // RFC 7519 §4.1.5, checked by both verifiers: taken out here so acceptance depends on
    // the claims' shape alone; `check_verifiers` checks it on the raw claims.
    good.remove("nbf");
    let good = Value::Object(good);
    let access = fx.ring.sign("at+jwt", &good).unwrap();
    let expected = serde_json::from_value::<AccessClaims>(good.clone()).ok();
    let got = verify::access_token(&fx.ring, &fx.config, &access);
    match (&got, &expected) {
        (Some(got), Some(expected)) => assert_eq!(
            serde_json::to_value(got).unwrap(),
            serde_json::to_value(expected).unwrap()
        ),
        (None, Some(_)) => assert!(access.len() > 8192, "a valid access token was refused"),
        (Some(_), None) => panic!("access token claims that do not parse were accepted"),
        (None, None) => {}
    }
    check_verifiers(fx, &access);
    if got.is_some() {
        tampered(fx, &access, seed);
    }

    let id = fx.ring.sign("JWT", &good).unwrap();
    assert!(
        verify::access_token(&fx.ring, &fx.config, &id).is_none(),
        "an ID token passed as an access token"
    );
    let expected = serde_json::from_value::<IdClaims>(good).is_ok() && id.len() <= 8192;
    assert_eq!(
        verify::id_token_hint(&fx.ring, &fx.config, &id).is_some(),
        expected,
        "ID token hint"
    );
    check_verifiers(fx, &id);
}

/// A valid access token, changed: one character, the algorithm, the signature.
fn tampered(fx: &Fixture, token: &str, seed: usize) {
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let (header, payload) = signing_input.split_once('.').unwrap();

    // One character of the signed part (the signature covers the text itself), and one in
    // the middle of the signature (away from its last character's unused bits).
    let mut at = seed % signing_input.len();
    if signing_input.as_bytes()[at] == b'.' {
        at += 1;
    }
    for at in [at, signing_input.len() + 1 + signature.len() / 2] {
        let mut bytes = token.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        refused(
            fx,
            &String::from_utf8(bytes).unwrap(),
            "one character changed",
        );
    }

    // alg none (RFC 8725 §3.1), with and without the old signature.
    let none_header = b64url(format!(
        r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#,
        fx.kid
    ));
    refused(fx, &format!("{none_header}.{payload}."), "alg none");
    refused(
        fx,
        &format!("{none_header}.{payload}.{signature}"),
        "alg none, old signature",
    );

    // HS256 keyed with something public (RFC 8725 §2.1, algorithm confusion).
    let hs_header = b64url(format!(
        r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
        fx.kid
    ));
    for secret in &fx.public_secrets {
        let input = format!("{hs_header}.{payload}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let mac = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        refused(
            fx,
            &format!("{input}.{}", b64url(mac.as_ref())),
            "HS256 with a public secret",
        );
    }

    // The signature moved to another header, and dropped.
    let other = b64url(format!(
        r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#,
        fx.kid
    ));
    refused(
        fx,
        &format!("{other}.{payload}.{signature}"),
        "header swapped",
    );
    refused(fx, &format!("{header}.{payload}."), "no signature");
    refused(fx, &format!("{header}.{payload}"), "two parts");
}
