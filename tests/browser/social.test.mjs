// Social sign-in ("Continue with Google") in headless Chromium, with two Tessera processes: an
// upstream one that plays Google (an OpenID Connect provider found by discovery) and the
// downstream one under test, configured with [upstream.google]. A relying party (openid-client,
// PKCE) authorizes at downstream, the person continues with "Google", and downstream
//   A. makes a local account for a new person (email verified, since upstream says so) and
//      finishes the relying party's authorization; the ID token has amr ["fed"] and idp "google";
//   B. keeps that link: after signing out at downstream the same person gets the same `sub`;
//   C. never signs anyone in to an existing local account just because the upstream email
//      matches: it asks the person to prove the account — its password (a wrong one gets
//      nothing), or a link emailed to it — then links, and from then on signs in directly.
// Downstream runs on SQLite and, when TESSERA_TEST_POSTGRES_URL is set, on PostgreSQL; upstream
// always on SQLite. Both listen on 127.0.0.1, where cookies do not tell ports apart, so they use
// different session cookie names. Screenshots go to test-output/browser/<backend>/social-NN-<step>.png,
// logs to social-upstream.log and social-downstream.log there. Run with scripts/browser-tests.sh.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import * as client from 'openid-client';
import {
  backends, freePort, launchBrowser, linkFromOutbox, pageReport, randomSuffix, screenshotter, startRelyingParty,
  startTessera, step,
} from './tessera.mjs';

const TIMEOUT = { timeout: 90_000 };
const FLOW_TIMEOUT = { timeout: 150_000 };
const SCOPE = 'openid email profile';
const INSECURE = { execute: [client.allowInsecureRequests] }; // Tessera runs on http://127.0.0.1
const GOOGLE = /Continue with Google/i;
const UPSTREAM_COOKIE = 'upstream_session';
const DOWNSTREAM_COOKIE = 'downstream_session';

/** What each kind of page is called in failure messages. */
const PAGES = {
  login: 'downstream\'s login page',
  'upstream-login': 'upstream\'s ("Google\'s") login page',
  link: 'downstream\'s linking page (an account with this email already exists)',
  consent: 'downstream\'s consent page',
  rp: 'the relying party',
  'upstream-consent': 'upstream\'s consent page (the downstream client was registered with --skip-consent, so upstream should not ask)',
  'upstream-other': 'an upstream page that is neither its login nor its consent page',
  'downstream-other': 'a downstream page that is none of login, linking or consent',
  elsewhere: 'a page of neither Tessera nor the relying party',
};
const pageName = (kind) => PAGES[kind.replace(/\?$/, '')] + (kind.endsWith('?') ? ' (optional)' : '');

for (const backend of backends()) {
  describe(backend.name, () => {
    const suffix = randomSuffix();
    // People at upstream ("Google"): gina is new to downstream; hank's upstream account has the
    // email of a local downstream account, under another username.
    const gina = { username: 'gina', email: 'gina@example.test', password: `gina-upstream-${suffix}` };
    const hankUpstream = { username: 'hank_at_google', email: 'hank@example.test', password: `hank-upstream-${suffix}` };
    // The local downstream account of hank, with its own password.
    const hank = { username: 'hank', email: 'hank@example.test', name: 'Hank Local', password: `hank-downstream-${suffix}` };
    // The same again for the other proof, the emailed link: ivy at upstream and at downstream.
    const ivyUpstream = { username: 'ivy_at_google', email: 'ivy@example.test', password: `ivy-upstream-${suffix}` };
    const ivy = { username: 'ivy', email: 'ivy@example.test', password: `ivy-downstream-${suffix}` };
    const app = { name: `Social Photo Album ${suffix}` };

    let upstream, downstream, browser, shot, rp;
    let upstreamReady = false;
    let upstreamClient; // downstream, as a client of upstream: { client_id, client_secret }
    let downstreamPort;
    let downstreamReady = false;
    let localAccountsCreated = false;
    let flowA; // { page, tokens, claims, sub }
    let hankLinked = false;

    after(async () => {
      await browser?.close();
      await rp?.close();
      await downstream?.stop();
      await upstream?.stop();
    });

    /** Skips the test, and says why, when an earlier step it builds on failed. */
    function needs(t, done, what) {
      if (!done) t.skip(`needs ${what}`);
      return done;
    }

    /** A fresh browser profile: no session at either Tessera. */
    async function newPage() {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const p = await context.newPage();
      p.setDefaultTimeout(10_000);
      p.setDefaultNavigationTimeout(20_000);
      return p;
    }

    const bodyText = async (p) => (await p.locator('body').innerText().catch(() => '')).trim();

    /** The "Continue with Google" link or button of a page. */
    const googleButton = (p) => p.getByRole('link', { name: GOOGLE }).or(p.getByRole('button', { name: GOOGLE }));

    /**
     * Clicks and waits for the page the click ends on (through any redirects); returns its
     * response. When that fails, says where the browser is and what it shows.
     */
    async function clickAndWait(p, locator, what = 'clicking') {
      try {
        const [response] = await Promise.all([p.waitForNavigation(), locator.click()]);
        return response;
      } catch (err) {
        throw new Error(`${what}: ${err.message.split('\n')[0]}; the browser is at ${await pageReport(p)}`, { cause: err });
      }
    }

    async function cliJson(tessera, args, input, what) {
      const out = await tessera.cli([...args, '--json'], { input });
      try {
        return JSON.parse(out);
      } catch {
        return assert.fail(`${what}: \`tessera ${args.join(' ')} --json\` printed no JSON: ${out}`);
      }
    }

    async function createUser(tessera, person, where) {
      const created = await cliJson(tessera, [
        'user', 'create', '--username', person.username, '--email', person.email,
        ...(person.name ? ['--name', person.name] : []), '--email-verified', '--password-stdin',
      ], `${person.password}\n`, `creating ${person.username} at ${where}`);
      assert.ok(typeof created.id === 'string' && created.id, `${where}: no id in ${JSON.stringify(created)}`);
      return created.id;
    }

    /** Downstream's account with this email, as its CLI shows it. */
    async function downstreamAccount(email) {
      return cliJson(downstream, ['user', 'show', email], '', `looking up ${email} at downstream`);
    }

    /** A fresh authorization request at downstream: PKCE S256, state and nonce. */
    async function authorizationRequest() {
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

    /** Which page the browser is on. */
    async function pageKind(p) {
      if (p.url().startsWith(`${rp.url}/`)) return 'rp';
      const url = new URL(p.url());
      const has = async (locator) => (await locator.count()) > 0;
      const password = p.locator('input[name=password]');
      const allow = p.getByRole('button', { name: 'Allow', exact: true });
      if (url.origin === upstream.url) {
        if (await has(password)) return 'upstream-login';
        if (await has(allow)) return 'upstream-consent';
        return 'upstream-other';
      }
      if (url.origin === downstream.url) {
        if (await has(allow)) return 'consent';
        if (/\balready\b/i.test(await bodyText(p)) && (await has(password) || await has(emailLinkButton(p)))) return 'link';
        if (['/login', '/register'].includes(url.pathname)) return 'login';
        return 'downstream-other';
      }
      return 'elsewhere';
    }

    const emailLinkButton = (p) => p.getByRole('button', { name: /e-?mail|send .*link/i })
      .or(p.getByRole('link', { name: /e-?mail me|send me/i }));
    const linkSignInButton = (p) => p.getByRole('button', { name: /sign in/i });

    /** Is the browser signed in at downstream? Asks /account in another tab of the same profile. */
    async function signedInAtDownstream(p) {
      const tab = await p.context().newPage();
      try {
        await tab.goto(`${downstream.url}/account`);
        return new URL(tab.url()).pathname === '/account';
      } finally {
        await tab.close();
      }
    }

    /**
     * Opens `url` (an authorization request at downstream) and goes through the pages until the
     * browser is back at the relying party: at downstream's login page it clicks "Continue with
     * Google"; at upstream's login page it signs in as `upstreamUser`; at downstream's linking page
     * it proves `linkAs` (a wrong password first, then the right one); at the consent page it
     * clicks "Allow". `expect` lists the pages, in order, that must be shown (kinds as in PAGES;
     * a trailing "?" makes one optional); any other page fails at once, saying where the browser
     * is and what it shows. Returns the callback URL the relying party got.
     */
    async function socialFlow(p, url, { label, expect, upstreamUser, linkAs }) {
      const seen = [];
      const pending = [...expect];
      let response = await step(`${label}: opening the authorization request`, () => p.goto(url.href));
      for (let hops = 0; hops < 10; hops += 1) {
        const kind = await pageKind(p);
        await shot(p, `${label}-${kind}`);
        if (kind === 'rp') {
          const missing = pending.filter((e) => !e.endsWith('?'));
          assert.deepEqual(missing, [], `${label}: back at the relying party after [${seen}], without ${missing.map(pageName).join(', ')}: ${await pageReport(p, response)}`);
          return new URL(p.url());
        }
        while (pending.length && pending[0].endsWith('?') && pending[0].slice(0, -1) !== kind) pending.shift();
        const next = pending.shift()?.replace(/\?$/, '');
        if (next !== kind) {
          assert.fail(`${label}: after [${seen.join(' → ')}] expected ${next ? pageName(next) : 'to be back at the relying party'}, but the browser is on ${pageName(kind)}: ${await pageReport(p, response)}`);
        }
        seen.push(kind);
        const where = `${label}, ${pageName(kind)}`;
        switch (kind) {
          case 'login': {
            const google = googleButton(p);
            assert.ok(await google.count(), `${where}: no "Continue with Google" link or button (social sign-in not built yet, or [upstream.google] not taken up?): ${await pageReport(p, response)}`);
            response = await clickAndWait(p, google.first(), `${where}: clicking "Continue with Google"`);
            break;
          }
          case 'upstream-login': {
            assert.ok(upstreamUser, `${where}: upstream asks to sign in although it should remember the browser: ${await pageReport(p, response)}`);
            await p.fill('input[name=username]', upstreamUser.username);
            await p.fill('input[name=password]', upstreamUser.password);
            response = await clickAndWait(p, p.getByRole('button', { name: 'Sign in', exact: true }), `${where}: signing in as ${upstreamUser.username}`);
            break;
          }
          case 'link':
            assert.ok(linkAs, `${where}: downstream asks to link an account in a flow where it should not: ${await pageReport(p, response)}`);
            response = await (linkAs.byEmail ? proveByEmail : proveAccount)(p, response, where, linkAs);
            break;
          case 'consent': {
            const text = await bodyText(p);
            assert.ok(text.includes(app.name), `${where}: the consent page does not name ${JSON.stringify(app.name)}: ${await pageReport(p, response)}`);
            response = await clickAndWait(p, p.getByRole('button', { name: 'Allow', exact: true }), `${where}: clicking "Allow"`);
            break;
          }
          default:
            assert.fail(`${where}: no action for this page`);
        }
      }
      return assert.fail(`${label}: still not back at the relying party after [${seen.join(' → ')}]: ${await pageReport(p, response)}`);
    }

    /**
     * Downstream's linking page: checks what it offers and that nobody is signed in yet, tries a
     * wrong password (which must not link or sign in), then signs in with the right one.
     */
    async function proveAccount(p, response, where, person) {
      const text = await bodyText(p);
      const report = async () => pageReport(p, response);
      assert.match(text, /\balready\b/i, `${where}: the page does not say an account "already" exists: ${await report()}`);
      assert.equal(await p.locator('input[name=password]').count(), 1, `${where}: no password field to prove the existing account: ${await report()}`);
      assert.ok(await linkSignInButton(p).count(), `${where}: no "Sign in and link" button: ${await report()}`);
      assert.ok(await emailLinkButton(p).count(), `${where}: no "Email me a link" option: ${await report()}`);
      assert.equal(await signedInAtDownstream(p), false, `${where}: the browser is already signed in at downstream before proving the account`);

      const fill = async (password) => {
        const username = p.locator('input[name=username]');
        if (await username.count() && await username.isVisible() && await username.isEditable()) await username.fill(person.username);
        await p.fill('input[name=password]', password);
        return clickAndWait(p, linkSignInButton(p).first(), `${where}: signing in to link as ${person.username}`);
      };
      response = await fill(`wrong-${person.password}`);
      await shot(p, 'link-wrong-password');
      const kind = await pageKind(p);
      assert.ok(!['rp', 'consent'].includes(kind), `${where}: a wrong password went on to ${pageName(kind)}: ${await pageReport(p, response)}`);
      assert.equal(await signedInAtDownstream(p), false, `${where}: a wrong password signed the browser in at downstream`);
      assert.equal(kind, 'link', `${where}: after a wrong password the browser is not back on the linking page (expected it again, with an error): ${await pageReport(p, response)}`);
      return fill(person.password);
    }

    /**
     * Downstream's linking page, the other way: "Email me a link", then the link from the outbox
     * opened in the same browser, and its confirmation. Nobody is signed in before that.
     */
    async function proveByEmail(p, response, where, person) {
      const email = emailLinkButton(p);
      assert.ok(await email.count(), `${where}: no "Email me a link" option: ${await pageReport(p, response)}`);
      response = await clickAndWait(p, email.first(), `${where}: clicking "Email me a link"`);
      await shot(p, 'link-email-sent');
      assert.match(await bodyText(p), /\bsent\b/i, `${where}: after "Email me a link" the page does not say a link was sent: ${await pageReport(p, response)}`);
      assert.equal(await signedInAtDownstream(p), false, `${where}: asking for the link signed the browser in at downstream`);
      const link = await linkFromOutbox(downstream.outbox, person.email, '/upstream/confirm');
      assert.ok(link.startsWith(`${downstream.url}/`), `${where}: the emailed link ${link} is not under downstream's issuer`);
      response = await step(`${where}: opening the emailed link`, () => p.goto(link));
      await shot(p, 'link-email-confirm');
      assert.equal(response.status(), 200, `${where}: the emailed link: ${await pageReport(p, response)}`);
      const confirm = p.locator('form button[type=submit], form button:not([type])');
      assert.equal(await confirm.count(), 1, `${where}: the page of the emailed link has not exactly one button to confirm: ${await pageReport(p, response)}`);
      return clickAndWait(p, confirm, `${where}: confirming the emailed link`);
    }

    /** The code grant, with openid-client's checks of iss, state, nonce, PKCE and the ID token. */
    function codeGrant(callback, request, label) {
      assert.equal(callback.origin + callback.pathname, app.redirectUri, `${label}: came back to ${callback}`);
      assert.ok(callback.searchParams.get('code'), `${label}: the callback has no code: ${callback}`);
      return step(`${label}: the code grant`, () => client.authorizationCodeGrant(app.config, callback, {
        pkceCodeVerifier: request.codeVerifier,
        expectedState: request.state,
        expectedNonce: request.nonce,
        idTokenExpected: true,
      }));
    }

    /** The ID token of a social sign-in: the account, its email, amr ["fed"] and idp "google". */
    function checkSocialClaims(tokens, label, { sub, email }) {
      const claims = tokens.claims();
      const shown = JSON.stringify(claims);
      assert.equal(claims.iss, downstream.url, `${label}: iss`);
      if (sub) assert.equal(claims.sub, sub, `${label}: the ID token sub is not the downstream account's id: ${shown}`);
      assert.equal(claims.email, email, `${label}: email: ${shown}`);
      assert.equal(claims.email_verified, true, `${label}: email_verified: ${shown}`);
      assert.ok(Array.isArray(claims.amr) && claims.amr.includes('fed'), `${label}: the ID token amr is not ["fed"]: ${shown}`);
      assert.equal(claims.idp, 'google', `${label}: the ID token idp is not "google": ${shown}`);
      return claims;
    }

    test('upstream ("Google"): starts on its own port and cookie; its CLI creates gina, hank_at_google and ivy_at_google', TIMEOUT, async () => {
      shot = await screenshotter(backend.name, { prefix: 'social-' });
      upstream = await startTessera({ name: backend.name }, {
        logName: 'social-upstream.log',
        env: { TESSERA_SESSIONS__COOKIE_NAME: UPSTREAM_COOKIE },
      });
      const doc = await step('upstream discovery', async () => (await fetch(`${upstream.url}/.well-known/openid-configuration`)).json());
      assert.equal(doc.issuer, upstream.url, 'upstream discovery issuer');
      gina.id = await createUser(upstream, gina, 'upstream');
      hankUpstream.id = await createUser(upstream, hankUpstream, 'upstream');
      ivyUpstream.id = await createUser(upstream, ivyUpstream, 'upstream');
      upstreamReady = true;
    });

    test('upstream: the CLI registers downstream as a first-party client (skips consent)', TIMEOUT, async (t) => {
      if (!needs(t, upstreamReady, 'a running upstream')) return;
      downstreamPort = await freePort();
      const created = await cliJson(upstream, [
        'client', 'create', '--name', 'Tessera downstream',
        '--redirect-uri', `http://127.0.0.1:${downstreamPort}/upstream/google/callback`, '--skip-consent',
      ], '', 'registering downstream at upstream');
      assert.ok(typeof created.client_id === 'string' && created.client_id, `no client_id in ${JSON.stringify(created)}`);
      assert.ok(typeof created.client_secret === 'string' && created.client_secret, `no client_secret in ${JSON.stringify(created)}`);
      upstreamClient = { client_id: created.client_id, client_secret: created.client_secret };
    });

    test('downstream: starts with [upstream.google]; its CLI registers the relying party and creates hank and ivy', TIMEOUT, async (t) => {
      if (!needs(t, upstreamClient, 'downstream registered at upstream')) return;
      downstream = await startTessera(backend, {
        logName: 'social-downstream.log',
        port: downstreamPort,
        env: {
          TESSERA_SESSIONS__COOKIE_NAME: DOWNSTREAM_COOKIE,
          TESSERA_UPSTREAM__GOOGLE__ISSUER: upstream.url,
          TESSERA_UPSTREAM__GOOGLE__CLIENT_ID: upstreamClient.client_id,
          TESSERA_UPSTREAM__GOOGLE__CLIENT_SECRET: upstreamClient.client_secret,
        },
      });
      assert.equal(downstream.url, `http://127.0.0.1:${downstreamPort}`);
      browser = await launchBrowser();
      rp = await startRelyingParty();
      app.redirectUri = `${rp.url}/social/callback`;
      app.postLogoutRedirectUri = `${rp.url}/social/signed-out`;
      const created = await cliJson(downstream, [
        'client', 'create', '--name', app.name, '--redirect-uri', app.redirectUri,
        '--post-logout-redirect-uri', app.postLogoutRedirectUri,
      ], '', 'registering the relying party at downstream');
      assert.ok(created.client_id && created.client_secret, `the relying party got no client_id and secret: ${JSON.stringify(created)}`);
      app.client_id = created.client_id;
      app.client_secret = created.client_secret;
      app.config = await step('discovery at downstream', () => client.discovery(
        new URL(downstream.url), app.client_id, { client_secret: app.client_secret },
        client.ClientSecretBasic(app.client_secret), INSECURE,
      ));
      downstreamReady = true;
      hank.id = await createUser(downstream, hank, 'downstream');
      ivy.id = await createUser(downstream, ivy, 'downstream');
      localAccountsCreated = true;
    });

    test('upstream plays its part: signs gina in, skips consent for downstream, and the client secret redeems the code', TIMEOUT, async (t) => {
      // What downstream will do, done here by openid-client, so that a failure of the flows below
      // is not in the set-up. Chromium is stopped before downstream's callback: this code is ours.
      if (!needs(t, downstreamReady, 'both Tesseras')) return;
      const callbackUrl = `${downstream.url}/upstream/google/callback`;
      const config = await step('discovery at upstream', () => client.discovery(
        new URL(upstream.url), upstreamClient.client_id, { client_secret: upstreamClient.client_secret },
        client.ClientSecretBasic(upstreamClient.client_secret), INSECURE,
      ));
      const codeVerifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: callbackUrl, scope: 'openid email profile', state, nonce, code_challenge_method: 'S256',
        code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      });
      const p = await newPage();
      await p.route(`${callbackUrl}?**`, (route) => route.fulfill({ status: 200, contentType: 'text/plain', body: 'stopped before downstream' }));
      let response = await p.goto(url.href);
      await shot(p, 'upstream-login');
      assert.equal(new URL(p.url()).origin, upstream.url, `not at upstream: ${await pageReport(p, response)}`);
      assert.equal(await p.locator('input[name=password]').count(), 1, `upstream shows no login form: ${await pageReport(p, response)}`);
      await p.fill('input[name=username]', gina.username);
      await p.fill('input[name=password]', gina.password);
      response = await clickAndWait(p, p.getByRole('button', { name: 'Sign in', exact: true }), 'signing in at upstream as gina');
      const landed = new URL(p.url());
      assert.equal(landed.origin + landed.pathname, callbackUrl, `upstream did not return to downstream's callback at once (consent skipped): ${await pageReport(p, response)}`);
      const tokens = await step('the code grant at upstream with downstream\'s client', () => client.authorizationCodeGrant(config, landed, {
        pkceCodeVerifier: codeVerifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
      }));
      const claims = tokens.claims();
      assert.equal(claims.sub, gina.id, 'upstream sub');
      assert.equal(claims.email, gina.email, 'upstream email');
      assert.equal(claims.email_verified, true, 'upstream email_verified');
      const cookies = (await p.context().cookies()).map((c) => c.name);
      assert.ok(cookies.includes(UPSTREAM_COOKIE), `upstream's session cookie is not ${UPSTREAM_COOKIE} (the browser has ${cookies.join(', ')})`);
      await p.context().close();
    });

    test('downstream: the login and register pages offer "Continue with Google"', TIMEOUT, async (t) => {
      if (!needs(t, downstreamReady, 'a running downstream')) return;
      const p = await newPage();
      for (const where of ['login', 'register']) {
        const response = await p.goto(`${downstream.url}/${where}`);
        await shot(p, `${where}-page`);
        assert.equal(response.status(), 200, `GET /${where}: ${await pageReport(p, response)}`);
        assert.ok(await googleButton(p).count(), `/${where} has no "Continue with Google" link or button: ${await pageReport(p, response)}`);
      }
      await p.context().close();
    });

    test('A: a new person continues with Google; downstream makes a verified account and finishes the authorization', FLOW_TIMEOUT, async (t) => {
      if (!needs(t, downstreamReady, 'both Tesseras and the relying party')) return;
      const p = await newPage();
      const request = await authorizationRequest();
      const callback = await socialFlow(p, request.url, {
        label: 'a', expect: ['login', 'upstream-login', 'consent'], upstreamUser: gina,
      });
      const tokens = await codeGrant(callback, request, 'A');

      const account = await downstreamAccount(gina.email);
      assert.equal(account.email, gina.email, 'the downstream account\'s email');
      assert.equal(account.email_verified, true, `the downstream account's email is not verified although upstream says so: ${JSON.stringify(account)}`);
      if (account.username !== gina.username) t.diagnostic(`downstream named the account ${JSON.stringify(account.username)}`);
      const claims = checkSocialClaims(tokens, 'A', { sub: account.id, email: gina.email });
      assert.notEqual(claims.sub, gina.id, 'the downstream sub is upstream\'s user id');

      const cookies = (await p.context().cookies()).map((c) => c.name);
      for (const name of [UPSTREAM_COOKIE, DOWNSTREAM_COOKIE]) assert.ok(cookies.includes(name), `no ${name} cookie in the browser (it has ${cookies.join(', ')})`);
      flowA = { page: p, tokens, claims, sub: account.id };
    });

    test('B: after signing out at downstream, Google (still signed in) brings back the same account', FLOW_TIMEOUT, async (t) => {
      if (!needs(t, flowA, 'flow A')) return;
      const p = flowA.page;
      const state = client.randomState();
      const logout = client.buildEndSessionUrl(app.config, {
        id_token_hint: flowA.tokens.id_token,
        post_logout_redirect_uri: app.postLogoutRedirectUri,
        state,
      });
      const response = await p.goto(logout.href);
      await shot(p, 'b-signed-out');
      const landed = new URL(p.url());
      assert.equal(landed.origin + landed.pathname, app.postLogoutRedirectUri, `RP-initiated logout did not return to the relying party: ${await pageReport(p, response)}`);
      assert.equal(await signedInAtDownstream(p), false, 'still signed in at downstream after RP-initiated logout');

      const request = await authorizationRequest();
      // No upstream login (its session lives on); consent was given in flow A.
      const callback = await socialFlow(p, request.url, { label: 'b', expect: ['login', 'consent?'] });
      const tokens = await codeGrant(callback, request, 'B');
      const claims = checkSocialClaims(tokens, 'B', { sub: flowA.sub, email: gina.email });
      if (claims.sid === flowA.claims.sid) t.diagnostic('the sid did not change after logging out and back in');
    });

    test('C: an upstream email matching a local account asks for proof; the password links it; then Google signs in directly', FLOW_TIMEOUT, async (t) => {
      if (!needs(t, downstreamReady && localAccountsCreated, 'both Tesseras, the relying party and hank')) return;
      const p = await newPage();
      const request = await authorizationRequest();
      const callback = await socialFlow(p, request.url, {
        label: 'c', expect: ['login', 'upstream-login', 'link', 'consent'], upstreamUser: hankUpstream, linkAs: hank,
      });
      const tokens = await codeGrant(callback, request, 'C');
      const claims = checkSocialClaims(tokens, 'C', { sub: hank.id, email: hank.email });
      t.diagnostic(`amr after linking with the password: ${JSON.stringify(claims.amr)}`);
      const account = await downstreamAccount(hank.email);
      assert.equal(account.id, hank.id, 'hank\'s downstream account changed');
      assert.equal(account.username, hank.username, 'hank\'s downstream username changed');
      hankLinked = true;
      await p.context().close();
    });

    test('C: once linked, Google signs hank in to his downstream account without asking again', FLOW_TIMEOUT, async (t) => {
      if (!needs(t, hankLinked, 'the link made in the previous test')) return;
      const p = await newPage(); // signed in nowhere: upstream asks for hank's upstream password again
      const request = await authorizationRequest();
      const callback = await socialFlow(p, request.url, {
        label: 'c-linked', expect: ['login', 'upstream-login', 'consent?'], upstreamUser: hankUpstream,
      });
      const tokens = await codeGrant(callback, request, 'C (linked)');
      checkSocialClaims(tokens, 'C (linked)', { sub: hank.id, email: hank.email });
      await p.context().close();
    });

    test('C: the emailed link proves the account as well, and links it', FLOW_TIMEOUT, async (t) => {
      if (!needs(t, downstreamReady && localAccountsCreated, 'both Tesseras, the relying party and ivy')) return;
      const p = await newPage();
      const request = await authorizationRequest();
      const callback = await socialFlow(p, request.url, {
        label: 'c-email', expect: ['login', 'upstream-login', 'link', 'consent'], upstreamUser: ivyUpstream, linkAs: { ...ivy, byEmail: true },
      });
      const tokens = await codeGrant(callback, request, 'C (emailed link)');
      checkSocialClaims(tokens, 'C (emailed link)', { sub: ivy.id, email: ivy.email });
      await p.context().close();

      const again = await newPage();
      const second = await authorizationRequest();
      const back = await socialFlow(again, second.url, {
        label: 'c-email-linked', expect: ['login', 'upstream-login', 'consent?'], upstreamUser: ivyUpstream,
      });
      checkSocialClaims(await codeGrant(back, second, 'C (emailed link, then linked)'), 'C (emailed link, then linked)', { sub: ivy.id, email: ivy.email });
      await again.context().close();
    });
  });
}
