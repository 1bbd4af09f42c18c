// The account pages in headless Chromium, as a person uses them: register, verify the email,
// sign out and in, a wrong password, a password reset, and the pages on a phone. Runs on SQLite
// and, when TESSERA_TEST_POSTGRES_URL is set, on PostgreSQL. Screenshots of every page go to
// test-output/browser/<backend>/. Run with scripts/browser-tests.sh.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  backends, launchBrowser, linkFromOutbox, randomSuffix, screenshotter, startTessera,
} from './tessera.mjs';

const TIMEOUT = { timeout: 90_000 };

for (const backend of backends()) {
  describe(backend.name, () => {
    const suffix = randomSuffix();
    const user = {
      username: `alice_${suffix}`,
      email: `alice.${suffix}@example.test`,
      name: `Alice ${suffix}`,
      password: `first-passphrase-${suffix}`,
      newPassword: `second-passphrase-${suffix}`,
    };
    let tessera, browser, shot, page;
    let started = false;
    let registered = false;

    after(async () => {
      await browser?.close();
      await tessera?.stop();
    });

    async function newPage(options = { viewport: { width: 1280, height: 800 } }) {
      const context = await browser.newContext(options);
      const p = await context.newPage();
      p.setDefaultTimeout(10_000);
      return p;
    }

    /** Screenshots the page, then checks the response it came from and, for HTML, the headers and forms. */
    async function check(p, response, step, statuses = [200]) {
      await shot(p, step);
      const where = `${step} (${p.url()})`;
      assert.ok(response, `${where}: no response`);
      assert.ok(statuses.includes(response.status()), `${where}: HTTP ${response.status()}, expected ${statuses.join(' or ')}`);
      if (!(response.headers()['content-type'] ?? '').startsWith('text/html')) return response;
      const csp = response.headers()['content-security-policy'] ?? '';
      assert.match(csp, /frame-ancestors 'none'/, `${where}: Content-Security-Policy is ${JSON.stringify(csp)}`);
      const forms = await p.locator('form').evaluateAll((forms) => forms.map((f) => ({
        action: f.getAttribute('action'),
        csrf: f.querySelector('input[type=hidden][name=csrf_token]')?.value,
      })));
      for (const form of forms) assert.ok(form.csrf, `${where}: form action=${form.action} has no csrf_token`);
      return response;
    }

    async function visit(p, pathOrUrl, step, statuses) {
      return check(p, await p.goto(new URL(pathOrUrl, tessera.url).href), step, statuses);
    }

    /** Clicks the button and waits for the page the form submission ends on. */
    async function submit(p, button, step, statuses) {
      const [response] = await Promise.all([
        p.waitForNavigation(),
        p.getByRole('button', { name: button, exact: true }).click(),
      ]);
      return check(p, response, step, statuses);
    }

    const path = (p) => new URL(p.url()).pathname;
    const text = (p) => p.locator('body').innerText();

    async function signIn(p, login, password, step, statuses) {
      if (path(p) !== '/login') await visit(p, '/login', `${step}-form`);
      await p.fill('input[name=username]', login);
      await p.fill('input[name=password]', password);
      return submit(p, 'Sign in', step, statuses);
    }

    async function expectAccount(p, { verified }) {
      assert.equal(path(p), '/account');
      const body = await text(p);
      assert.ok(body.includes(user.username), `account page does not show the username:\n${body}`);
      // "verified" or "not verified" stands next to the email, on the same line of text.
      const emailLines = body.split('\n').filter((line) => line.includes(user.email));
      assert.ok(emailLines.length, `account page does not show the email:\n${body}`);
      const status = verified ? /(?<!not )\bverified\b/i : /\bnot verified\b/i;
      assert.ok(emailLines.some((line) => status.test(line)), `the email is not marked ${verified ? '"verified"' : '"not verified"'}:\n${emailLines.join('\n')}`);
      if (verified) assert.doesNotMatch(body, /\bnot verified\b/i, 'the account page still says "not verified"');
    }

    async function signOut(p, step) {
      await submit(p, 'Sign out', step);
      assert.equal(path(p), '/login', 'signing out did not end at /login');
    }

    /** Skips the test, and says why, when an earlier step it builds on failed. */
    function needs(t, done, what) {
      if (!done) t.skip(`needs ${what}`);
      return done;
    }

    test('starts Tessera and Chromium; serves discovery', TIMEOUT, async () => {
      shot = await screenshotter(backend.name);
      tessera = await startTessera(backend);
      browser = await launchBrowser();
      page = await newPage();
      started = true;
      const discovery = await visit(page, '/.well-known/openid-configuration', 'discovery');
      assert.equal((await discovery.json()).issuer, tessera.url);
    });

    test('register, then verify the email from the outbox', TIMEOUT, async (t) => {
      if (!needs(t, started, 'a running Tessera')) return;
      await visit(page, '/register', 'register');
      await page.fill('input[name=username]', user.username);
      await page.fill('input[name=email]', user.email);
      await page.fill('input[name=name]', user.name);
      await page.fill('input[name=password]', user.password);
      await submit(page, 'Create account', 'registered');
      assert.equal(path(page), '/account', 'registration did not end on /account');
      registered = true;
      assert.match(await text(page), /verification link/i);
      await expectAccount(page, { verified: false });

      const link = await linkFromOutbox(tessera.outbox, user.email, '/verify-email');
      assert.ok(link.startsWith(`${tessera.url}/verify-email?token=`), `verification link ${link} is not under the issuer`);
      await visit(page, link, 'verify-email');
      await submit(page, 'Verify email', 'email-verified');
      assert.match(await text(page), /Your email address is verified/);

      await visit(page, '/account', 'account-verified');
      await expectAccount(page, { verified: true });
    });

    test('sign out, sign in with the username, then with the email', TIMEOUT, async (t) => {
      if (!needs(t, registered, 'the account that registration makes')) return;
      await visit(page, '/account', 'account');
      await signOut(page, 'signed-out');
      await signIn(page, user.username, user.password, 'signed-in-username');
      await expectAccount(page, { verified: true });
      await signOut(page, 'signed-out-again');
      await signIn(page, user.email, user.password, 'signed-in-email');
      await expectAccount(page, { verified: true });
    });

    test('a wrong password is refused on the login page', TIMEOUT, async (t) => {
      if (!needs(t, registered, 'the account that registration makes')) return;
      const p = await newPage();
      await signIn(p, user.username, `wrong-${user.password}`, 'wrong-password', [200, 401]);
      assert.equal(path(p), '/login', 'a wrong password left the login page');
      assert.match(await text(p), /Incorrect username or password/);
      assert.equal(await p.locator('input[name=password]').count(), 1, 'the login form is gone');
    });

    test('forgot password, reset it from the outbox link, sign in with the new one', TIMEOUT, async (t) => {
      if (!needs(t, registered, 'the account that registration makes')) return;
      const p = await newPage();
      for (const [email, step] of [[`nobody.${suffix}@example.test`, 'unknown'], [user.email, 'known']]) {
        await visit(p, '/forgot-password', `forgot-password-${step}`);
        await p.fill('input[name=email]', email);
        await submit(p, 'Send reset link', `reset-requested-${step}`);
        assert.match(await text(p), /If an account exists/);
      }

      const link = await linkFromOutbox(tessera.outbox, user.email, '/reset-password');
      assert.ok(link.startsWith(`${tessera.url}/reset-password?token=`), `reset link ${link} is not under the issuer`);
      await visit(p, link, 'reset-password');
      await p.fill('input[name=password]', user.newPassword);
      await submit(p, 'Set new password', 'password-changed');
      assert.equal(path(p), '/login', 'a password reset did not end at /login');
      assert.match(await text(p), /Your password has been changed/);

      await signIn(p, user.username, user.newPassword, 'signed-in-new-password');
      await expectAccount(p, { verified: true });
      await signOut(p, 'signed-out-after-reset');
      await signIn(p, user.username, user.password, 'old-password-refused', [200, 401]);
      assert.equal(path(p), '/login', 'the old password still signs in');
      assert.match(await text(p), /Incorrect username or password/);
    });

    test('login and register pages on a phone', TIMEOUT, async (t) => {
      if (!needs(t, started, 'a running Tessera')) return;
      const p = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
      for (const [where, button] of [['login', 'Sign in'], ['register', 'Create account']]) {
        await visit(p, `/${where}`, `phone-${where}`);
        await p.getByRole('button', { name: button, exact: true }).waitFor();
        const width = await p.evaluate(() => document.documentElement.scrollWidth);
        if (width > 390) t.diagnostic(`/${where} is ${width}px wide on a 390px phone screen (scrolls sideways)`);
      }
    });
  });
}
