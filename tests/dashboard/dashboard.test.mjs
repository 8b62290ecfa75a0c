// Drives the admin dashboard (GET / on the admin listener) in headless
// Chromium against a real `cutover demo`, and a token-protected `cutover run`.
//
//   node dashboard.test.mjs        (tests/dashboard/run.sh installs and builds first)
//
// Environment: CUTOVER_BIN (default target/release/cutover), CHROMIUM
// (default /usr/bin/chromium), DASHBOARD_SCREENSHOT (default docs/dashboard.png),
// DASHBOARD_PIDFILE (child process ids are written there for the runner's trap).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const BIN = process.env.CUTOVER_BIN || path.join(ROOT, 'target/release/cutover');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT || path.join(ROOT, 'docs/dashboard.png');
const PIDFILE = process.env.DASHBOARD_PIDFILE;
const TOKEN = 'dashboard-test-token-4f1c9a';

const children = [];
const scratch = mkdtempSync(path.join(tmpdir(), 'cutover-dashboard-'));

function cleanup() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }
  rmSync(scratch, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => process.exit(1));
}

// ------------------------------------------------------------------ helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts the binary with `--ready-file`; resolves once the file announces
 * its addresses (`{pid, listeners: [{name, addr}], admin}`).
 */
function start(args, label) {
  const readyFile = path.join(mkdtempSync(path.join(tmpdir(), 'cutover-ready-')), 'ready.json');
  const child = spawn(BIN, [...args, '--ready-file', readyFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  if (PIDFILE) appendFileSync(PIDFILE, child.pid + '\n');
  let output = '';
  child.stdout.on('data', (data) => { output += data; });
  child.stderr.on('data', (data) => { output += data; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { clearInterval(poll); reject(new Error(`${label} did not start within 20 s:\n${output}`)); }, 20_000);
    const poll = setInterval(() => {
      let ready;
      try {
        ready = JSON.parse(readFileSync(readyFile, 'utf8'));
      } catch {
        return; // not written yet
      }
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ child, ready, output: () => output });
    }, 50);
    child.on('exit', (code, signal) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`${label} exited (${code ?? signal}):\n${output}`));
    });
  });
}

async function getJSON(url, token) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const resp = await fetch(url, { cache: 'no-store', headers });
  assert.equal(resp.status, 200, `GET ${url}`);
  return resp.json();
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
async function eventually(what, check, ms = 8_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(100);
  }
}

async function weightsAre(admin, route, expected, token) {
  let last;
  await eventually(`${route} weights ${JSON.stringify(expected)} in GET /admin/weights`, async () => {
    last = (await getJSON(`${admin}/admin/weights`, token))[route];
    return isDeepStrictEqual(last, expected);
  }).catch((e) => {
    throw new Error(`${e.message}; last seen: ${JSON.stringify(last)}`);
  });
}

/** Sends `count` requests to /api/users/ with distinct sticky identities. */
async function traffic(proxy, count, prefix = 'user') {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const resp = await fetch(`${proxy}/api/users/`, { headers: { authorization: `Token ${prefix}-${i}` } });
      await resp.arrayBuffer();
      assert.equal(resp.status, 200);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

const steps = [];
const step = (name, fn) => steps.push({ name, fn });

// ------------------------------------------------------------------ setup

let demo, admin, proxy, context, page, second;
const consoleProblems = [];

async function openPage(url) {
  const p = await context.newPage();
  p.on('pageerror', (e) => consoleProblems.push(`page error: ${e.message}`));
  p.on('console', (msg) => {
    // Failed fetches (the 409 of a gated shift, the 401 before the token) are
    // logged by Chromium as resource errors: expected, not page faults.
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) consoleProblems.push(msg.text());
  });
  await p.goto(url);
  return p;
}

const api = (sel = '') => `section[data-route="api"] ${sel}`;
const weightOf = (backend) => api(`.weight[data-backend="${backend}"] [data-role="weight"]`);

async function showsSplit(p, legacy, next) {
  await p.waitForFunction(
    ([a, b, l, n]) => document.querySelector(a)?.textContent === l && document.querySelector(b)?.textContent === n,
    [weightOf('legacy'), weightOf('new'), legacy, next],
    { timeout: 8_000 },
  );
}

// ------------------------------------------------------------------ steps

step('the demo starts on free loopback ports and takes traffic', async () => {
  demo = await start(
    ['demo', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--legacy', '127.0.0.1:0', '--new', '127.0.0.1:0'],
    'cutover demo',
  );
  proxy = `http://${demo.ready.listeners[0].addr}`;
  admin = `http://${demo.ready.admin}`;
  await traffic(proxy, 300);
  await weightsAre(admin, 'api', { legacy: 90, new: 10 });
});

step('GET / is one self-contained page whose CSP allows exactly its inline blocks', async () => {
  const resp = await fetch(`${admin}/`);
  assert.equal(resp.status, 200);
  assert.equal(resp.headers.get('content-type'), 'text/html; charset=utf-8');
  const html = await resp.text();
  const csp = resp.headers.get('content-security-policy') || '';
  assert.match(csp, /default-src 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  for (const tag of ['script', 'style']) {
    const blocks = [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => m[1]);
    assert.equal(blocks.length, 1, `one inline <${tag}>`);
    const hash = `'sha256-${createHash('sha256').update(blocks[0], 'utf8').digest('base64')}'`;
    assert.ok(csp.includes(hash), `the CSP must allow the page's <${tag}>: put ${hash} in DASHBOARD_CSP (src/admin/mod.rs); it has: ${csp}`);
  }
  assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+stylesheet|@import|url\(\s*['"]?(https?:)?\/\//i, 'no outside resources');
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i, 'no outside links');
  const markup = html.replace(/<(script|style)>[\s\S]*?<\/\1>/g, '');
  assert.doesNotMatch(markup, /\son[a-z]+\s*=/i, 'no inline event handlers (the CSP blocks them)');
  assert.doesNotMatch(markup, /\sstyle\s*=/i, 'no style attributes (the CSP blocks them)');

  const head = await fetch(`${admin}/`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal((await head.arrayBuffer()).byteLength, 0);
});

step('Chromium starts headless with a fresh profile', async () => {
  const profile = path.join(scratch, 'profile');
  mkdirSync(profile);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
    colorScheme: 'dark',
    timeout: 60_000,
  });
});

step('the dashboard shows the live 90/10 split of api with rates, health and parity', async () => {
  page = await openPage(`${admin}/`);
  await showsSplit(page, '90%', '10%');
  const widths = await page.$$eval(api('.bar span'), (spans) => spans.map((s) => s.getBoundingClientRect().width));
  assert.equal(widths.length, 2);
  const share = widths[0] / (widths[0] + widths[1]);
  assert.ok(Math.abs(share - 0.9) < 0.02, `bar shows legacy at ${share}`);

  const rps = await page.textContent(api('tr[data-backend="legacy"] [data-role="rps"]'));
  assert.ok(Number(rps) > 0, `legacy req/s on api: ${rps}`);
  const traffic = await page.textContent(api('tr[data-backend="new"] [data-role="share"]'));
  const observed = parseFloat(traffic);
  assert.ok(observed > 2 && observed < 20, `new's observed share of api traffic: ${traffic}`);
  assert.match(await page.textContent(api('tr[data-backend="new"] [data-role="health"]')), /healthy/);
  assert.equal(await page.textContent(api('tr[data-backend="new"] [data-role="errors"]')), '0.0%');

  await page.waitForSelector(api('[data-role="parity"] tr[data-path="/*/date_joined"][data-verdict="differs"]'));
  await page.waitForSelector(api('[data-role="parity"] tr[data-path="/*/id"][data-verdict="accepted"]'));
  const clean = await page.textContent(api('[data-role="clean"]'));
  assert.equal(clean, '0.0%', 'every demo answer differs in shape');
  assert.match(await page.textContent(api('[data-role="parity"] [data-kind="shape"]')), /shape 100\.0%/);
  assert.match(await page.textContent(api('[data-role="parity"]')), /below the bar of 99\.0%/);
  // A single-backend route has no controls.
  assert.equal(await page.isVisible('section[data-route="default"] button[data-action="rollback"]'), false);
});

step('a shift of api is parity-gated (409) and "force" overrides it', async () => {
  await page.fill(api('input[data-role="shift-pct"]'), '50');
  await page.click(api('button[data-action="shift"]'));
  const gate = await page.waitForSelector(api('[data-role="gate"]'));
  assert.match(await gate.textContent(), /parity is .*below the bar of 99\.00% clean/);
  await weightsAre(admin, 'api', { legacy: 90, new: 10 });
  await page.click(api('button[data-action="force"]'));
  await weightsAre(admin, 'api', { legacy: 50, new: 50 });
  await showsSplit(page, '50%', '50%');
  assert.match(await page.textContent('#notice'), /Forced shift of api.*legacy 50% · new 50%/);
});

step('"Roll back" on api sends everything to legacy (100/0)', async () => {
  await page.click(api('button[data-action="rollback"]'));
  await weightsAre(admin, 'api', { legacy: 100, new: 0 });
  await showsSplit(page, '100%', '0%');
  assert.match(await page.textContent('#notice'), /Rolled back api to legacy/);
  assert.equal(await page.isDisabled(api('button[data-action="rollback"]')), true, 'nothing left to roll back');
  const status = await getJSON(`${admin}/admin/status`);
  assert.match(status.last_change.why, /rollback api/);
  assert.match(status.last_change.who, /\(dashboard\)$/);
});

step('"Undo" walks the history back: 50/50, then 90/10', async () => {
  for (const [legacy, next] of [[50, 50], [90, 10]]) {
    await page.click('#undo');
    await page.waitForSelector('#dialog[open]');
    await page.click('#dialog-ok');
    await weightsAre(admin, 'api', { legacy, new: next });
    await showsSplit(page, `${legacy}%`, `${next}%`);
  }
  await page.waitForSelector('#undo:disabled'); // the history is empty again
  await traffic(proxy, 100, 'later');
});

step('screenshot of the dashboard', async () => {
  await sleep(2_500); // one refresh with the last traffic
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
});

step('with a token configured, the page asks for it, refuses a wrong one and keeps it for the tab', async () => {
  const dir = path.join(scratch, 'secured');
  mkdirSync(dir);
  const legacyUrl = demo.output().match(/legacy app\s+(http:\/\/\S+?)\/?\s/)[1];
  const newUrl = demo.output().match(/new app\s+(http:\/\/\S+?)\/?\s/)[1];
  writeFileSync(path.join(dir, 'token'), TOKEN + '\n');
  writeFileSync(path.join(dir, 'weights.yaml'), 'api: { legacy: 80, new: 20 }\n');
  writeFileSync(path.join(dir, 'cutover.yaml'), [
    'listeners:',
    '  - { name: public, addr: "127.0.0.1:0" }',
    'admin: { addr: "127.0.0.1:0", token_file: token }',
    'weights_file: weights.yaml',
    'access_log: { format: combined, path: "off" }',
    'backends:',
    `  legacy: { url: "${legacyUrl}" }`,
    `  new: { url: "${newUrl}" }`,
    'routes:',
    '  - name: api',
    '    match: { path_prefix: /api/ }',
    '    stable: legacy',
    '    backends: { legacy: {}, new: {} }',
    '',
  ].join('\n'));
  second = await start(['run', '-c', path.join(dir, 'cutover.yaml')], 'cutover run');
  const secured = `http://${second.ready.admin}`;
  // Reads need the token too; the page itself does not.
  assert.equal((await fetch(`${secured}/admin/status`)).status, 401);
  const p = await openPage(`${secured}/`);
  await p.waitForSelector('#dialog[open] #dialog-input');
  assert.match(await p.textContent('#dialog-text'), /needs its bearer token/);
  await p.fill('#dialog-input', 'not-the-token');
  await p.click('#dialog-ok');
  await p.waitForFunction(() => /refused/.test(document.getElementById('dialog-text').textContent) && document.getElementById('dialog').open);
  assert.equal(await p.isVisible(api('')), false, 'nothing is shown without the token');
  await p.fill('#dialog-input', TOKEN);
  await p.click('#dialog-ok');
  await showsSplit(p, '80%', '20%');
  assert.equal(await p.evaluate(() => sessionStorage.getItem('cutover-admin-token')), TOKEN);

  // The stored token is sent with changes without asking again.
  await p.click(api('button[data-action="rollback"]'));
  await weightsAre(secured, 'api', { legacy: 100, new: 0 }, TOKEN);
  await showsSplit(p, '100%', '0%');
  await p.click('#undo');
  await p.click('#dialog-ok');
  await weightsAre(secured, 'api', { legacy: 80, new: 20 }, TOKEN);
  assert.equal(await p.isVisible('#dialog-input'), false);
  await p.close();
});

step('no script errors and no Content-Security-Policy violations', async () => {
  assert.deepEqual(consoleProblems, []);
});

// ------------------------------------------------------------------ run

let passed = 0;
let failed = 0;
for (const { name, fn } of steps) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok ${passed + failed} - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`not ok ${passed + failed} - ${name}\n  ${String(e.stack || e).replaceAll('\n', '\n  ')}`);
    if (demo) {
      const log = demo.output().split('\n').filter((l) => !l.startsWith('127.0.0.1 - - ['));
      console.log(`  --- cutover demo output, without the access log:\n${log.slice(-40).join('\n')}`);
    }
    if (page) {
      const shot = path.join(tmpdir(), 'cutover-dashboard-failure.png');
      await page.screenshot({ path: shot, fullPage: true }).then(() => console.log(`  screenshot of the failure: ${shot}`), () => {});
    }
    break;
  }
}
const skipped = steps.length - passed - failed;
if (context) await context.close().catch(() => {});
if (!failed) console.log(`screenshot: ${path.relative(ROOT, SCREENSHOT)}`);
console.log(`dashboard: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
