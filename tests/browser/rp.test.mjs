// Tessera as a real relying party sees it: openid-client (a certified OpenID Connect RP library)
// finds every endpoint by discovery and drives the authorization code flow with PKCE through
// headless Chromium — sign-in, consent, the code grant with its ID-token checks, userinfo,
// refresh-token rotation and reuse detection, introspection, revocation, RP-initiated logout —
// and a "backend service" verifies access tokens with jose from the JWKS alone. A public client
// and a denied consent get their own tests. Runs on SQLite and, when TESSERA_TEST_POSTGRES_URL
// is set, on PostgreSQL. Screenshots go to test-output/browser/<backend>/rp-NN-<step>.png.
// Run with scripts/browser-tests.sh.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { after, describe, test } from 'node:test';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import * as client from 'openid-client';
import { backends, launchBrowser, randomSuffix, screenshotter, startTessera } from './tessera.mjs';

const TIMEOUT = { timeout: 90_000 };
const SCOPE = 'openid profile email offline_access';
const INSECURE = { execute: [client.allowInsecureRequests] }; // Tessera runs on http://127.0.0.1

// ---- The relying party's own web server: where Chromium is sent back to ----

/** An HTTP server on 127.0.0.1 that answers 200 "ok" on every path and remembers what it got. */
async function startRelyingParty() {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push(req.url);
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end('ok');
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((ok) => {
      server.closeAllConnections();
      server.close(ok);
    }),
  };
}

// ---- Errors that say what went wrong ----

/** One line about an error and its causes: openid-client's own messages are generic, the cause is not. */
function describeError(err) {
  const parts = [];
  for (let e = err, depth = 0; e != null && depth < 4; e = e.cause, depth += 1) {
    if (e instanceof Error) {
      let part = `${e.name}${e.code ? ` [${e.code}]` : ''}: ${e.message}`;
      if (typeof e.error === 'string') part += `; error=${e.error}`;
      if (e.error_description) part += ` (${e.error_description})`;
      if (e.status) part += `; HTTP ${e.status}`;
      parts.push(part);
    } else if (e instanceof URLSearchParams) {
      parts.push(`parameters: ${e}`);
    } else if (e instanceof Response) {
      parts.push(`HTTP ${e.status} from ${e.url}`);
      break;
    } else if (Array.isArray(e)) {
      parts.push(`challenges: ${JSON.stringify(e)}`);
      break;
    } else {
      parts.push(JSON.stringify(e, (k, v) => (v instanceof URLSearchParams ? `${v}` : v)).slice(0, 800));
      break;
    }
  }
  return parts.join(' <- ');
}

/** Runs `fn`; if it throws, throws again saying which step it was and why. */
async function step(what, fn) {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    throw new Error(`${what} failed: ${describeError(err)}`, { cause: err });
  }
}

/** The OAuth error code an openid-client error carries: from a JSON body, a redirect or a WWW-Authenticate challenge. */
function oauthError(err) {
  if (typeof err?.error === 'string') return err.error;
  if (Array.isArray(err?.cause)) return err.cause.find((c) => c?.parameters?.error)?.parameters.error;
  return undefined;
}

/** Awaits a call that must fail with the OAuth error `code`; returns the error. */
async function expectOAuthError(promise, code, what) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${what}: it succeeded; expected the error ${code}`);
  assert.equal(oauthError(err), code, `${what}: expected the error ${code}, got ${describeError(err)}`);
  return err;
}

/** The at_hash of an access token for an RS256 ID token (OpenID Connect Core §3.1.3.6). */
const atHash = (accessToken) => createHash('sha256').update(accessToken).digest().subarray(0, 16).toString('base64url');

const scopesOf = (scope) => new Set((scope ?? '').split(' ').filter(Boolean));

function assertScopes(scope, what) {
  const got = scopesOf(scope);
  for (const s of SCOPE.split(' ')) assert.ok(got.has(s), `${what}: scope ${JSON.stringify(scope)} lacks ${s}`);
}

for (const backend of backends()) {
  describe(backend.name, () => {
    const suffix = randomSuffix();
    const user = {
      username: `rp_user_${suffix}`,
      email: `rp.user.${suffix}@example.test`,
      name: `RP User ${suffix}`,
      password: `rp-passphrase-${suffix}`,
    };
    const apps = {
      confidential: { name: `Photo Album ${suffix}` },
      public: { name: `Pocket App ${suffix}` },
      denied: { name: `Unwanted App ${suffix}` },
    };
    let tessera, browser, shot, rp, issuer, metadata;
    let started = false;
    let discovered = false;
    let userCreated = false;
    let clientsCreated = false;

    // What the confidential client's flow hands on from test to test.
    let mainPage; // the browser tab signed in to Tessera
    let first; // { tokens, claims } from the first authorization
    let refreshed; // the response to refreshing first's refresh token

    after(async () => {
      await browser?.close();
      await rp?.close();
      await tessera?.stop();
    });

    /** Skips the test, and says why, when an earlier step it builds on failed. */
    function needs(t, done, what) {
      if (!done) t.skip(`needs ${what}`);
      return done;
    }

    /** A fresh browser profile: no Tessera session. */
    async function newPage() {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const p = await context.newPage();
      p.setDefaultTimeout(10_000);
      return p;
    }

    /** An openid-client Configuration for one of the clients, from discovery alone. */
    function configure(app, auth) {
      return step(`discovery for ${app.name}`, () => client.discovery(
        new URL(issuer), app.client_id, app.client_secret ? { client_secret: app.client_secret } : undefined,
        auth ?? (app.client_secret ? client.ClientSecretBasic(app.client_secret) : client.None()), INSECURE,
      ));
    }

    /** A fresh authorization request: PKCE S256, state and nonce. */
    async function authorizationRequest(app) {
      const codeVerifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      const url = client.buildAuthorizationUrl(app.config, {
        redirect_uri: app.redirectUri,
        scope: SCOPE,
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      });
      return { url, codeVerifier, state, nonce };
    }

    async function pageReport(p, response) {
      const body = (await p.locator('body').innerText().catch(() => '')).trim().replace(/\s+/g, ' ');
      return `${p.url()}${response ? ` (HTTP ${response.status()})` : ''}: ${JSON.stringify(body.slice(0, 400))}`;
    }

    /**
     * Opens the authorization URL in `p` and goes through whatever Tessera shows — its login page
     * (signing in as the user) and its consent page (clicking `consent`, "Allow" or "Deny") — until
     * the browser is back at the relying party. `expect` lists the pages that must be shown, in
     * order ('login', 'consent'); any other page fails the test. Returns the URL the relying party
     * got.
     */
    async function authorizeInBrowser(p, app, url, { label: name, expect, consent = 'Allow' }) {
      const seen = [];
      let response = await p.goto(url.href);
      for (let hops = 0; hops < 5; hops += 1) {
        if (p.url().startsWith(`${rp.url}/`)) {
          await shot(p, `${name}-back-at-rp`);
          assert.deepEqual(seen, expect, `${name}: Tessera showed [${seen}] on the way back to the relying party, expected [${expect}]`);
          return new URL(p.url());
        }
        if (await p.locator('input[name=password]').count()) {
          seen.push('login');
          await shot(p, `${name}-login`);
          assert.ok(expect.includes('login'), `${name}: Tessera asked to sign in although the browser is signed in: ${await pageReport(p, response)}`);
          await p.fill('input[name=username]', user.username);
          await p.fill('input[name=password]', user.password);
          [response] = await Promise.all([
            p.waitForNavigation(),
            p.getByRole('button', { name: 'Sign in', exact: true }).click(),
          ]);
          continue;
        }
        if (await p.getByRole('button', { name: 'Allow', exact: true }).count()) {
          seen.push('consent');
          await shot(p, `${name}-consent`);
          assert.ok(expect.includes('consent'), `${name}: Tessera showed its consent page although this client was already allowed these scopes: ${await pageReport(p, response)}`);
          const text = await p.locator('body').innerText();
          assert.ok(text.includes(app.name), `${name}: the consent page does not name the application ${JSON.stringify(app.name)}: ${await pageReport(p, response)}`);
          assert.equal(await p.getByRole('button', { name: 'Deny', exact: true }).count(), 1, `${name}: the consent page has no "Deny" button`);
          [response] = await Promise.all([
            p.waitForNavigation(),
            p.getByRole('button', { name: consent, exact: true }).click(),
          ]);
          continue;
        }
        await shot(p, `${name}-unexpected`);
        assert.fail(`${name}: after [${seen}] the browser is on a page that is neither Tessera's login or consent page nor the relying party: ${await pageReport(p, response)}`);
      }
      assert.fail(`${name}: still not back at the relying party after [${seen}]: ${await pageReport(p, response)}`);
    }

    /** The code grant for a callback URL, with openid-client's checks of iss, state, nonce, PKCE and the ID token. */
    function codeGrant(app, callback, request) {
      return step(`the code grant for ${app.name}`, () => client.authorizationCodeGrant(app.config, callback, {
        pkceCodeVerifier: request.codeVerifier,
        expectedState: request.state,
        expectedNonce: request.nonce,
        idTokenExpected: true,
      }));
    }

    /** Checks a token endpoint response and its ID token against the contract; returns the ID token claims. */
    function checkTokens(app, tokens, request, { refreshToken = true } = {}) {
      assert.equal(tokens.token_type, 'bearer', `token_type is ${tokens.token_type}`); // openid-client lowercases it
      assert.ok(Number.isInteger(tokens.expires_in) && tokens.expires_in > 0, `expires_in is ${tokens.expires_in}`);
      assertScopes(tokens.scope, 'the token response');
      assert.equal(typeof tokens.access_token, 'string');
      if (refreshToken) assert.ok(tokens.refresh_token, 'no refresh_token although offline_access was granted');

      assert.equal(decodeProtectedHeader(tokens.id_token).alg, 'RS256', 'the ID token is not RS256');
      const claims = tokens.claims();
      const now = Math.floor(Date.now() / 1000);
      assert.equal(claims.iss, issuer);
      assert.equal(claims.sub, user.id, 'the ID token sub is not the user id the CLI printed');
      assert.deepEqual([claims.aud].flat(), [app.client_id], `the ID token aud is ${JSON.stringify(claims.aud)}`);
      if (request) assert.equal(claims.nonce, request.nonce);
      assert.equal(claims.at_hash, atHash(tokens.access_token), 'the ID token at_hash does not match the access token');
      assert.ok(Number.isInteger(claims.auth_time) && Math.abs(claims.auth_time - now) < 600, `auth_time is ${claims.auth_time}`);
      assert.ok(typeof claims.sid === 'string' && claims.sid, `sid is ${JSON.stringify(claims.sid)}`);
      assert.equal(claims.email, user.email);
      assert.equal(claims.email_verified, true);
      assert.equal(claims.preferred_username, user.username);
      assert.equal(claims.name, user.name);
      return claims;
    }

    test('starts Tessera, Chromium and the relying party', TIMEOUT, async () => {
      shot = await screenshotter(backend.name, { prefix: 'rp-' });
      tessera = await startTessera(backend, { logName: 'rp-tessera.log' });
      issuer = tessera.url;
      browser = await launchBrowser();
      rp = await startRelyingParty();
      apps.confidential.redirectUri = `${rp.url}/confidential/callback`;
      apps.confidential.postLogoutRedirectUri = `${rp.url}/confidential/signed-out`;
      apps.public.redirectUri = `${rp.url}/public/callback`;
      apps.denied.redirectUri = `${rp.url}/denied/callback`;
      started = true;
    });

    test('discovery advertises the endpoints and features of the contract', TIMEOUT, async (t) => {
      if (!needs(t, started, 'a running Tessera')) return;
      const config = await step('openid-client discovery', () => client.discovery(new URL(issuer), 'discovery-probe', undefined, client.None(), INSECURE));
      metadata = config.serverMetadata();
      assert.equal(metadata.issuer, issuer);
      const endpoints = ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri',
        'revocation_endpoint', 'introspection_endpoint', 'end_session_endpoint'];
      const missing = endpoints.filter((e) => typeof metadata[e] !== 'string');
      assert.deepEqual(missing, [], `discovery lacks ${missing.join(', ')}`);
      for (const e of endpoints) assert.ok(metadata[e].startsWith(`${issuer}/`), `${e} ${metadata[e]} is not under the issuer`);
      assert.deepEqual(metadata.code_challenge_methods_supported, ['S256'], 'code_challenge_methods_supported');
      assert.equal(metadata.authorization_response_iss_parameter_supported, true, 'authorization_response_iss_parameter_supported');
      // Not in the contract, but required or expected by OpenID Connect Discovery: reported, not failed.
      if (!metadata.response_types_supported?.includes('code')) t.diagnostic(`response_types_supported is ${JSON.stringify(metadata.response_types_supported)} (required by Discovery 1.0 §3, should include "code")`);
      for (const m of ['client_secret_basic', 'client_secret_post', 'none']) {
        if (metadata.token_endpoint_auth_methods_supported && !metadata.token_endpoint_auth_methods_supported.includes(m)) t.diagnostic(`token_endpoint_auth_methods_supported lacks ${m}`);
      }
      discovered = true;
    });

    test('the CLI creates a user with a verified email', TIMEOUT, async (t) => {
      if (!needs(t, started, 'a running Tessera')) return;
      const out = await tessera.cli(
        ['user', 'create', '--username', user.username, '--email', user.email, '--name', user.name, '--email-verified', '--password-stdin', '--json'],
        { input: `${user.password}\n` },
      );
      const created = JSON.parse(out);
      assert.ok(typeof created.id === 'string' && created.id, `no id in ${out}`);
      assert.equal(created.username, user.username);
      assert.equal(created.email, user.email);
      user.id = created.id;
      userCreated = true;
    });

    test('the CLI registers a confidential, a public and a third client', TIMEOUT, async (t) => {
      if (!needs(t, started, 'a running Tessera')) return;
      async function create(app, args) {
        const out = await tessera.cli(['client', 'create', '--name', app.name, '--redirect-uri', app.redirectUri, ...args, '--json']);
        let created;
        try {
          created = JSON.parse(out);
        } catch {
          assert.fail(`\`tessera client create --json\` printed no JSON: ${out}`);
        }
        assert.ok(typeof created.client_id === 'string' && created.client_id, `no client_id in ${out}`);
        app.client_id = created.client_id;
        app.client_secret = created.client_secret ?? undefined;
        return created;
      }
      const confidential = await create(apps.confidential, ['--post-logout-redirect-uri', apps.confidential.postLogoutRedirectUri]);
      assert.ok(typeof confidential.client_secret === 'string' && confidential.client_secret.length >= 16, 'the confidential client has no client_secret');
      const pub = await create(apps.public, ['--public']);
      assert.equal(pub.client_secret ?? null, null, 'a public client got a client_secret');
      await create(apps.denied, []);
      clientsCreated = true;
    });

    const ready = () => discovered && userCreated && clientsCreated;
    const READY = 'discovery, the user and the clients';

    test('confidential client: sign-in and consent in Chromium, then the code grant and its ID token', TIMEOUT, async (t) => {
      if (!needs(t, ready(), READY)) return;
      const app = apps.confidential;
      app.config = await configure(app);
      const request = await authorizationRequest(app);
      mainPage = await newPage();
      const callback = await authorizeInBrowser(mainPage, app, request.url, { label: 'first', expect: ['login', 'consent'] });
      assert.equal(callback.origin + callback.pathname, app.redirectUri);
      assert.ok(callback.searchParams.get('code'), `the callback has no code: ${callback}`);
      assert.equal(callback.searchParams.get('state'), request.state, 'the callback state');
      assert.equal(callback.searchParams.get('iss'), issuer, 'the callback iss (RFC 9207)');
      assert.ok(rp.requests.some((r) => r.startsWith('/confidential/callback?')), 'the relying party never got the callback request');

      const tokens = await codeGrant(app, callback, request);
      const claims = checkTokens(app, tokens, request);
      first = { tokens, claims };
    });

    test('confidential client: userinfo answers GET and POST with the claims of the granted scopes', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first code grant')) return;
      const { config } = apps.confidential;
      const expected = { sub: user.id, email: user.email, email_verified: true, preferred_username: user.username, name: user.name };
      const viaGet = await step('userinfo (GET)', () => client.fetchUserInfo(config, first.tokens.access_token, first.claims.sub));
      for (const [k, v] of Object.entries(expected)) assert.equal(viaGet[k], v, `userinfo (GET) ${k}`);

      // POST as RPs send it: the token in the Authorization header, an empty form body.
      const response = await step('userinfo (POST)', () => client.fetchProtectedResource(
        config, first.tokens.access_token, new URL(metadata.userinfo_endpoint), 'POST', '',
        new Headers({ 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }),
      ));
      assert.equal(response.status, 200, `userinfo (POST): HTTP ${response.status}`);
      const viaPost = await response.json();
      for (const [k, v] of Object.entries(expected)) assert.equal(viaPost[k], v, `userinfo (POST) ${k}`);
    });

    test('confidential client: introspection says a live access token is active, garbage is not', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first code grant')) return;
      const app = apps.confidential;
      for (const [how, config] of [['client_secret_basic', app.config], ['client_secret_post', await configure(app, client.ClientSecretPost(app.client_secret))]]) {
        const info = await step(`introspecting the access token (${how})`, () => client.tokenIntrospection(config, first.tokens.access_token));
        assert.equal(info.active, true, `introspection (${how}) of a live access token: ${JSON.stringify(info)}`);
        assert.equal(info.client_id, app.client_id, 'introspection client_id');
        assert.equal(info.sub, user.id, 'introspection sub');
        assertScopes(info.scope, 'introspection');
        assert.ok(Number.isInteger(info.exp) && info.exp * 1000 > Date.now(), `introspection exp is ${info.exp}`);
        assert.ok(typeof info.token_type === 'string' && info.token_type, `introspection has no token_type: ${JSON.stringify(info)}`);
      }
      const garbage = await step('introspecting garbage', () => client.tokenIntrospection(app.config, `not-a-token-${suffix}`));
      assert.deepEqual(garbage, { active: false }, 'introspection of garbage');
    });

    test('a backend service verifies the access token with jose, knowing only the issuer', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first code grant')) return;
      // No openid-client here: the discovery document, the JWKS and jose.
      const doc = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
      const jwks = createRemoteJWKSet(new URL(doc.jwks_uri));
      const options = { issuer: doc.issuer, audience: doc.issuer, typ: 'at+jwt', algorithms: ['RS256'] };
      const { payload, protectedHeader } = await step('jose jwtVerify of the access token', () => jwtVerify(first.tokens.access_token, jwks, options));
      assert.equal(protectedHeader.alg, 'RS256');
      assert.ok(protectedHeader.kid, 'the access token header has no kid');
      assert.equal(payload.sub, user.id, 'access token sub');
      assert.equal(payload.client_id, apps.confidential.client_id, 'access token client_id');
      assertScopes(payload.scope, 'the access token');
      for (const claim of ['exp', 'iat']) assert.ok(Number.isInteger(payload[claim]), `access token ${claim} is ${payload[claim]}`);
      assert.ok(typeof payload.jti === 'string' && payload.jti, 'the access token has no jti');

      // An ID token is not an access token: other typ, other audience.
      await assert.rejects(jwtVerify(first.tokens.id_token, jwks, options), 'the ID token passed as an access token');
      // Nor is a token whose signature was tampered with.
      const [header, , signature] = first.tokens.access_token.split('.');
      const body = Buffer.from(JSON.stringify({ ...decodeJwt(first.tokens.access_token), scope: 'admin' })).toString('base64url');
      await assert.rejects(jwtVerify(`${header}.${body}.${signature}`, jwks, options), 'a forged access token verified');
    });

    test('confidential client: refresh rotates the refresh token', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first code grant')) return;
      const { config } = apps.confidential;
      refreshed = await step('the refresh token grant', () => client.refreshTokenGrant(config, first.tokens.refresh_token));
      assert.ok(refreshed.access_token, 'no access token from refresh');
      assert.notEqual(refreshed.access_token, first.tokens.access_token, 'refresh returned the same access token');
      assert.ok(refreshed.refresh_token, 'refresh did not return a new refresh token (no rotation)');
      assert.notEqual(refreshed.refresh_token, first.tokens.refresh_token, 'refresh returned the same refresh token (no rotation)');
      assertScopes(refreshed.scope ?? first.tokens.scope, 'the refresh response');
      if (refreshed.id_token) assert.equal(refreshed.claims().sub, user.id, 'the refreshed ID token sub');
      const info = await step('introspecting the new refresh token', () => client.tokenIntrospection(config, refreshed.refresh_token));
      assert.equal(info.active, true, `introspection of a live refresh token: ${JSON.stringify(info)}`);
      assert.equal(info.client_id, apps.confidential.client_id, 'refresh token introspection client_id');
      assert.equal(info.sub, user.id, 'refresh token introspection sub');
    });

    test('confidential client: revoked access and refresh tokens are inactive and refused', TIMEOUT, async (t) => {
      if (!needs(t, refreshed, 'a refreshed grant')) return;
      const { config } = apps.confidential;
      await step('revoking the access token', () => client.tokenRevocation(config, refreshed.access_token, { token_type_hint: 'access_token' }));
      const at = await step('introspecting the revoked access token', () => client.tokenIntrospection(config, refreshed.access_token));
      assert.equal(at.active, false, `a revoked access token introspects as ${JSON.stringify(at)}`);
      let err;
      try {
        await client.fetchUserInfo(config, refreshed.access_token, user.id);
      } catch (e) {
        err = e;
      }
      assert.ok(err, 'userinfo accepted a revoked access token');
      const status = err.status ?? err.cause?.status;
      assert.ok(status === undefined || status === 401, `userinfo refused a revoked access token with HTTP ${status}, expected 401: ${describeError(err)}`);

      await step('revoking the refresh token', () => client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' }));
      const rt = await step('introspecting the revoked refresh token', () => client.tokenIntrospection(config, refreshed.refresh_token));
      assert.equal(rt.active, false, `a revoked refresh token introspects as ${JSON.stringify(rt)}`);
      await expectOAuthError(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant', 'refreshing with a revoked refresh token');
      // RFC 7009 §2.2: revoking an unknown token is not an error.
      await step('revoking garbage', () => client.tokenRevocation(config, `not-a-token-${suffix}`));
    });

    test('confidential client: a second authorization with the same scopes skips consent; reusing a rotated refresh token revokes its family', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first authorization (its browser session and consent)')) return;
      const app = apps.confidential;
      const request = await authorizationRequest(app);
      const callback = await authorizeInBrowser(mainPage, app, request.url, { label: 'second', expect: [] });
      assert.ok(callback.searchParams.get('code'), `the second callback has no code: ${callback}`);
      const second = await codeGrant(app, callback, request);
      checkTokens(app, second, request);
      assert.equal(second.claims().sid, first.claims.sid, 'the same browser session gave a different sid');
      assert.equal(second.claims().auth_time, first.claims.auth_time, 'auth_time changed without a new sign-in');

      const rotated = await step('refreshing the second grant', () => client.refreshTokenGrant(app.config, second.refresh_token));
      assert.ok(rotated.refresh_token && rotated.refresh_token !== second.refresh_token, 'the second grant\'s refresh token did not rotate');
      await expectOAuthError(client.refreshTokenGrant(app.config, second.refresh_token), 'invalid_grant', 'reusing a rotated-out refresh token');
      await expectOAuthError(client.refreshTokenGrant(app.config, rotated.refresh_token), 'invalid_grant', 'the newest refresh token of a family whose old token was reused');
      const info = await step('introspecting the newest refresh token of the revoked family', () => client.tokenIntrospection(app.config, rotated.refresh_token));
      assert.equal(info.active, false, `the newest refresh token of a revoked family introspects as ${JSON.stringify(info)}`);
    });

    test('confidential client: RP-initiated logout returns to the relying party and ends the Tessera session', TIMEOUT, async (t) => {
      if (!needs(t, first, 'the first authorization (its browser session and ID token)')) return;
      const app = apps.confidential;
      const state = client.randomState();
      const url = client.buildEndSessionUrl(app.config, {
        id_token_hint: first.tokens.id_token,
        post_logout_redirect_uri: app.postLogoutRedirectUri,
        state,
      });
      const response = await mainPage.goto(url.href);
      await shot(mainPage, 'logout-back-at-rp');
      const landed = new URL(mainPage.url());
      assert.equal(landed.origin + landed.pathname, app.postLogoutRedirectUri, `logout did not return to the post-logout redirect URI: ${await pageReport(mainPage, response)}`);
      assert.equal(landed.searchParams.get('state'), state, `logout came back without the state: ${landed}`);

      const account = await mainPage.goto(`${issuer}/account`);
      await shot(mainPage, 'logout-account');
      assert.equal(new URL(mainPage.url()).pathname, '/login', `after logout ${issuer}/account did not redirect to /login: ${await pageReport(mainPage, account)}`);
    });

    test('public client: PKCE and no secret, full flow to tokens', TIMEOUT, async (t) => {
      if (!needs(t, ready(), READY)) return;
      const app = apps.public;
      app.config = await configure(app);
      const p = await newPage();
      const request = await authorizationRequest(app);
      const callback = await authorizeInBrowser(p, app, request.url, { label: 'public', expect: ['login', 'consent'] });
      assert.equal(callback.origin + callback.pathname, app.redirectUri);
      const tokens = await codeGrant(app, callback, request);
      checkTokens(app, tokens, request, { refreshToken: false });
      const info = await step('userinfo for the public client', () => client.fetchUserInfo(app.config, tokens.access_token, user.id));
      assert.equal(info.sub, user.id);
      if (tokens.refresh_token) {
        const again = await step('refreshing the public client\'s grant', () => client.refreshTokenGrant(app.config, tokens.refresh_token));
        assert.notEqual(again.refresh_token, tokens.refresh_token, 'the public client\'s refresh token did not rotate');
      } else {
        t.diagnostic('no refresh_token for the public client');
      }

      // A code is good once. (Last: RFC 6749 §4.1.2 lets the server revoke this grant's tokens now.)
      await expectOAuthError(client.authorizationCodeGrant(app.config, callback, {
        pkceCodeVerifier: request.codeVerifier, expectedState: request.state, expectedNonce: request.nonce,
      }), 'invalid_grant', 'redeeming the same code twice');

      // Without PKCE a public client gets no code: an error at the redirect URI, or an error page.
      const { url } = await authorizationRequest(app);
      url.searchParams.delete('code_challenge');
      url.searchParams.delete('code_challenge_method');
      const response = await p.goto(url.href);
      await shot(p, 'public-without-pkce');
      const landed = new URL(p.url());
      assert.equal(landed.searchParams.get('code'), null, `an authorization request without PKCE got a code: ${landed}`);
      if (landed.href.startsWith(`${rp.url}/`)) {
        assert.ok(landed.searchParams.get('error'), `without PKCE the redirect carries no error: ${landed}`);
        t.diagnostic(`without PKCE: error=${landed.searchParams.get('error')}`);
      } else {
        assert.ok(response.status() >= 400, `without PKCE Tessera answered HTTP ${response.status()}: ${await pageReport(p, response)}`);
      }
    });

    test('consent denied: the relying party gets access_denied with its state', TIMEOUT, async (t) => {
      if (!needs(t, ready(), READY)) return;
      const app = apps.denied;
      app.config = await configure(app);
      const p = await newPage();
      const request = await authorizationRequest(app);
      const callback = await authorizeInBrowser(p, app, request.url, { label: 'denied', expect: ['login', 'consent'], consent: 'Deny' });
      assert.equal(callback.origin + callback.pathname, app.redirectUri);
      assert.equal(callback.searchParams.get('error'), 'access_denied', `the callback after "Deny": ${callback}`);
      assert.equal(callback.searchParams.get('state'), request.state, 'the callback state after "Deny"');
      assert.equal(callback.searchParams.get('code'), null, 'a code after "Deny"');
      const err = await expectOAuthError(client.authorizationCodeGrant(app.config, callback, {
        pkceCodeVerifier: request.codeVerifier, expectedState: request.state, expectedNonce: request.nonce,
      }), 'access_denied', 'openid-client processing the denied authorization');
      assert.ok(err instanceof client.AuthorizationResponseError, `expected an AuthorizationResponseError, got ${describeError(err)}`);
    });
  });
}
