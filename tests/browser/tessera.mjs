// Helpers for the browser tests: a Tessera process per backend, headless Chromium, numbered
// screenshots, the mail outbox, and for relying-party flows a callback server and error reports.
// Used by *.test.mjs; run them with scripts/browser-tests.sh.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const OUTPUT = join(REPO, 'test-output', 'browser');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** The binary under test: $TESSERA_BIN, else ${CARGO_TARGET_DIR:-target}/debug/tessera. */
export function tesseraBin() {
  if (process.env.TESSERA_BIN) return resolve(process.env.TESSERA_BIN);
  return resolve(REPO, process.env.CARGO_TARGET_DIR || 'target', 'debug', 'tessera');
}

/** SQLite always; PostgreSQL too when TESSERA_TEST_POSTGRES_URL is set. */
export function backends() {
  const pg = process.env.TESSERA_TEST_POSTGRES_URL;
  return pg ? [{ name: 'sqlite' }, { name: 'postgres', serverUrl: pg }] : [{ name: 'sqlite' }];
}

/** A short random suffix for names that must be unique per run. */
export const randomSuffix = () => randomBytes(4).toString('hex');

/** A TCP port on 127.0.0.1 that was free a moment ago: pass it to startTessera as `port` to know the URL first. */
export async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

function psql(serverUrl, sql) {
  execFileSync('psql', [serverUrl, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

const running = new Set();
process.on('exit', () => running.forEach((child) => child.kill('SIGKILL')));

/**
 * Starts Tessera in a fresh temporary directory on a free port, with a fresh database of the
 * given backend, and waits until GET /healthz answers 200. Returns { url, outbox, logFile, stop,
 * databaseUrl, dir, cli }: `cli(args, { input })` runs the same binary as a command against the
 * same database (see below). Options: `logName`, the name its log is copied to under
 * test-output/browser/<backend>/ when it stops (default tessera.log); `port`, the port to listen
 * on (default: a free one; see freePort); `env`, more environment variables for the server and
 * its CLI (e.g. TESSERA_SESSIONS__COOKIE_NAME), which may override the ones set here.
 */
export async function startTessera(backend, { logName = 'tessera.log', port: chosenPort, env: extraEnv = {} } = {}) {
  const bin = tesseraBin();
  if (!existsSync(bin)) throw new Error(`Tessera binary not found at ${bin} (build it with cargo test, or set TESSERA_BIN)`);
  const dir = await mkdtemp(join(tmpdir(), `tessera-browser-${backend.name}-`));
  const port = chosenPort ?? await freePort();
  const url = `http://127.0.0.1:${port}`;
  const outbox = join(dir, 'outbox');
  const logFile = join(dir, 'tessera.log');

  let databaseUrl = `sqlite://${join(dir, 'tessera.db')}`;
  let dropDatabase = async () => {};
  if (backend.serverUrl) {
    const name = `tessera_browser_${randomSuffix()}`;
    psql(backend.serverUrl, `CREATE DATABASE "${name}"`);
    const db = new URL(backend.serverUrl);
    db.pathname = `/${name}`;
    databaseUrl = db.toString();
    dropDatabase = async () => psql(backend.serverUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  }

  const env = {
    ...process.env,
    TESSERA_BIND: `127.0.0.1:${port}`,
    TESSERA_ISSUER: url,
    TESSERA_DATABASE_URL: databaseUrl,
    TESSERA_MAIL__OUTBOX: outbox,
    TESSERA_KEYS__PREPUBLISH: '0',
    ...extraEnv,
  };
  const log = openSync(logFile, 'w');
  const child = spawn(bin, [], { cwd: dir, stdio: ['ignore', log, log], env });
  closeSync(log);
  running.add(child);
  const exited = new Promise((ok) => {
    const done = (how) => running.delete(child) && ok(how);
    child.once('exit', (code, signal) => done(signal ?? code));
    child.once('error', (err) => done(err.message));
  });

  const stop = async () => {
    if (running.has(child)) {
      child.kill('SIGTERM');
      const killed = await Promise.race([exited, sleep(15_000, 'timeout', { ref: false })]);
      if (killed === 'timeout') child.kill('SIGKILL');
    }
    await exited;
    await mkdir(join(OUTPUT, backend.name), { recursive: true });
    await copyFile(logFile, join(OUTPUT, backend.name, logName)).catch(() => {});
    await dropDatabase();
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 30_000;
  let status = 'no answer';
  while (Date.now() < deadline) {
    if (!running.has(child)) {
      const tail = await logTail(logFile);
      await stop();
      throw new Error(`Tessera exited during start-up (status ${await exited}); the end of its log:\n${tail}`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      status = `HTTP ${res.status}`;
      if (res.status === 200) {
        const cli = (args, options) => runCli(bin, args, { ...options, cwd: dir, env });
        return { url, outbox, logFile, stop, databaseUrl, dir, cli };
      }
    } catch (err) {
      status = err.cause?.code ?? err.message;
    }
    await sleep(200);
  }
  const tail = await logTail(logFile);
  await stop();
  throw new Error(`Tessera did not answer GET /healthz with 200 within 30 s (last: ${status}); the end of its log:\n${tail}`);
}

/**
 * Runs `tessera <args…>` (cwd and environment those of the server, so the same database) with
 * `input` on standard input, and resolves to its standard output. Rejects, quoting the command
 * and its standard error, when it exits non-zero or takes longer than 30 s.
 */
function runCli(bin, args, { input = '', cwd, env }) {
  return new Promise((ok, fail) => {
    const child = spawn(bin, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', (err) => { clearTimeout(timer); fail(err); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return ok(stdout);
      const shown = ['tessera', ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
      const why = stderr.replace(/\x1b\[[0-9;]*m/g, '').trim() || stdout.trim() || '(no output)';
      fail(new Error(`\`${shown}\` exited with ${signal ?? code}: ${why}`));
    });
    child.stdin.on('error', () => {}); // a command that exits without reading its input
    child.stdin.end(input);
  });
}

async function logTail(file, lines = 20) {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.replace(/\x1b\[[0-9;]*m/g, '').trimEnd().split('\n').slice(-lines).join('\n') || '(empty)';
}

/** Headless Chromium from Debian's package (playwright-core downloads no browser). */
export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/**
 * Full-page screenshots numbered in order, under test-output/browser/<backend>/NN-<step>.png.
 * Starts by emptying that directory; with a `prefix` the files are <prefix>NN-<step>.png and
 * only earlier files with that prefix are removed, so suites can share the directory.
 */
export async function screenshotter(backendName, { prefix = '' } = {}) {
  const dir = join(OUTPUT, backendName);
  if (prefix) {
    await mkdir(dir, { recursive: true });
    const old = (await readdir(dir)).filter((f) => f.startsWith(prefix) && f.endsWith('.png'));
    await Promise.all(old.map((f) => rm(join(dir, f), { force: true })));
  } else {
    await rm(dir, { recursive: true, force: true });
  }
  await mkdir(dir, { recursive: true });
  let n = 0;
  return async (page, step) => {
    n += 1;
    const file = join(dir, `${prefix}${String(n).padStart(2, '0')}-${step}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  };
}

// ---- The outbox: one RFC 5322 message per .eml file ----

function splitMessage(raw) {
  const at = raw.search(/\r?\n\r?\n/);
  const head = at < 0 ? raw : raw.slice(0, at);
  const body = at < 0 ? '' : raw.slice(at).replace(/^\r?\n\r?\n/, '');
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { headers, body };
}

function decodeBody(body, encoding = '') {
  switch (encoding.toLowerCase()) {
    case 'quoted-printable':
      return Buffer.from(
        body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16))),
        'latin1',
      ).toString('utf8');
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    default:
      return body;
  }
}

/** The decoded text of every text/* part of a MIME entity, recursing into multiparts. */
function textParts({ headers, body }) {
  const type = headers['content-type'] ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    const parts = body.split(`--${boundary}`).slice(1);
    return parts
      .filter((part) => !part.startsWith('--'))
      .flatMap((part) => textParts(splitMessage(part.replace(/^\r?\n/, ''))));
  }
  if (!/^text\//i.test(type)) return [];
  return [decodeBody(body, headers['content-transfer-encoding'])];
}

/**
 * Waits (up to 15 s) for an email to `address` in the outbox containing a link whose path is
 * `path`, and returns that link from the newest such email.
 */
export async function linkFromOutbox(outbox, address, path) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const files = existsSync(outbox) ? (await readdir(outbox)).filter((f) => f.endsWith('.eml')) : [];
    const found = [];
    for (const file of files) {
      const full = join(outbox, file);
      const message = splitMessage(await readFile(full, 'utf8'));
      if (!(message.headers.to ?? '').toLowerCase().includes(address.toLowerCase())) continue;
      const links = textParts(message)
        .join('\n')
        .replaceAll('&amp;', '&')
        .match(/https?:\/\/[^\s"'<>]+/g) ?? [];
      const link = links.find((l) => new URL(l).pathname === path);
      if (link) found.push({ link, mtime: (await stat(full)).mtimeMs, file });
    }
    if (found.length) {
      found.sort((a, b) => a.mtime - b.mtime || a.file.localeCompare(b.file));
      return found.at(-1).link;
    }
    if (Date.now() > deadline) {
      throw new Error(`no email to ${address} with a ${path} link in ${outbox} (${files.length} .eml files there)`);
    }
    await sleep(250);
  }
}

// ---- For flows that end at a relying party ----

/**
 * A relying party's web server on 127.0.0.1: answers 200 "ok" on every path and remembers the
 * request URLs it got. Returns { url, requests, close }.
 */
export async function startRelyingParty() {
  const requests = [];
  const server = createHttpServer((req, res) => {
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

/** One line about an error and its causes (openid-client's own messages are generic, the cause is not). */
export function describeError(err) {
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

/** Runs `fn`; if it throws (other than a failed assertion), throws again saying which step it was and why. */
export async function step(what, fn) {
  try {
    return await fn();
  } catch (err) {
    if (err?.code === 'ERR_ASSERTION') throw err;
    throw new Error(`${what} failed: ${describeError(err)}`, { cause: err });
  }
}

/** Where a Playwright page is and what it shows: "<url> (HTTP <status>): "<visible text>"". */
export async function pageReport(page, response, chars = 600) {
  const body = (await page.locator('body').innerText().catch(() => '')).trim().replace(/\s+/g, ' ');
  return `${page.url()}${response ? ` (HTTP ${response.status()})` : ''}: ${JSON.stringify(body.slice(0, chars))}`;
}
