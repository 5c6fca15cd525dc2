// Headless-browser test of the dashboard, run by a Rust test as `node tests/browser/dashboard.mjs`.
//
// Environment: BASE_URL (https://localhost:PORT), EMAIL, PASSWORD, CUSTOMER_ID (an existing customer),
// SCREENSHOT (where to write a PNG). Optional: CHROMIUM (default /usr/bin/chromium), GO_TIMEOUT_MS
// (how long to wait for GO, default 120000).
//
// Protocol with the Rust test: after the first live interaction shows up, this prints the line `RESTART`
// on stdout and waits for a line `GO` on stdin (the server is killed and restarted on the same port in
// between); before the alert step it prints `SEED` and waits for `GO` (the test writes a steady week of
// scored email and chat as the baseline). It ends with the line `OK` (exit 0), or `FAIL: <reason>`
// (exit 1). Progress goes to stderr.
//
// Fails on any console error or uncaught exception in the page, except network errors (failed loads,
// refused WebSocket connections) while the server is down for the restart.

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const STEP_MS = 15_000;
const FEED_MS = 5_000;
const RECONNECT_MS = 30_000;

const log = (...a) => process.stderr.write(`[dashboard] ${a.join(' ')}\n`);

function need(name) {
  const v = process.env[name];
  if (!v) {
    process.stdout.write(`FAIL: environment variable ${name} is not set\n`);
    process.exit(1);
  }
  return v;
}

const BASE_URL = need('BASE_URL').replace(/\/+$/, '');
const EMAIL = need('EMAIL');
const PASSWORD = need('PASSWORD');
const CUSTOMER_ID = need('CUSTOMER_ID');
const SCREENSHOT = need('SCREENSHOT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const GO_TIMEOUT_MS = Number(process.env.GO_TIMEOUT_MS || 120_000);

class Failure extends Error {}

/** Runs a step; a timeout or error becomes a Failure naming the step. */
async function step(name, fn) {
  log(`… ${name}`);
  const t0 = Date.now();
  try {
    const r = await fn();
    log(`✓ ${name} (${Date.now() - t0} ms)`);
    return r;
  } catch (e) {
    if (e instanceof Failure) throw e;
    throw new Failure(`${name}: ${e && e.message ? e.message.split('\n')[0] : e}`);
  }
}

// ------------------------------------------------------------------ the API, from node

let apiToken = null;

async function apiLogin() {
  const res = await fetch(`${BASE_URL}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  });
  if (res.status !== 200) throw new Failure(`API login answered ${res.status}: ${await res.text()}`);
  apiToken = (await res.json()).accessToken;
}

/** POSTs `body` to `path` as the admin; returns the parsed answer, which must have status `expect`. */
async function apiPost(path, body, expect) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    if (!apiToken) await apiLogin();
    const res = await fetch(`${BASE_URL}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiToken}` },
      body: JSON.stringify(body),
    });
    if (res.status === 401 && attempt === 0) {
      apiToken = null;
      continue;
    }
    const text = await res.text();
    if (res.status !== expect) throw new Failure(`POST ${path} answered ${res.status}: ${text}`);
    const parsed = JSON.parse(text);
    if (!parsed.id) throw new Failure(`POST ${path} answered without an id: ${text}`);
    return parsed;
  }
  throw new Failure(`POST ${path}: unauthorized after a fresh login`);
}

/** Ingests one chat message for `customerId` (default CUSTOMER_ID); returns {id, content}. */
async function ingest(label, { customerId = CUSTOMER_ID, content, metadata, channel = 'chat' } = {}) {
  const text = content ?? `browser test ${label} ${randomUUID()}`;
  const { id } = await apiPost('/api/v1/interactions', {
    customerId,
    channel,
    eventType: 'message',
    content: text,
    timestamp: new Date().toISOString(),
    ...(metadata ? { metadata } : {}),
  }, 201);
  return { id, content: text };
}

// Markup and script in every place a user can put text (R9.12): stored as sent, shown as text.
const MARK = randomUUID().slice(0, 8);
const HOSTILE_TEXTS = [
  `<img src=x onerror="window.__xss='img';alert('img')"> ${MARK}-1`,
  `"><script>window.__xss='script';alert('script')</script> ${MARK}-2`,
  `javascript:alert('link') <a href="javascript:alert('a')">click</a> ${MARK}-3`,
  `\u202Egnp.exe\u202C <b>bold</b> &amp; &lt;i&gt; ${MARK}-4`,
];
const HOSTILE_NAME = `<svg onload="window.__xss='svg';alert('svg')"> "><img src=x onerror=alert(1)> \u202Eeman ${MARK}`;

// ------------------------------------------------------------------ stdin

const lines = [];
let lineWaiter = null;
let stdinClosed = false;
const rl = createInterface({ input: process.stdin });
rl.on('line', (l) => {
  lines.push(l.trim());
  if (lineWaiter) lineWaiter();
});
rl.on('close', () => {
  stdinClosed = true;
  if (lineWaiter) lineWaiter();
});

function waitForLine(expected, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      lineWaiter = null;
      reject(new Failure(`no ${expected} on stdin within ${ms} ms`));
    }, ms);
    const check = () => {
      const i = lines.indexOf(expected);
      if (i >= 0) {
        lines.splice(0, i + 1);
        clearTimeout(timer);
        lineWaiter = null;
        resolve();
      } else if (stdinClosed) {
        clearTimeout(timer);
        lineWaiter = null;
        reject(new Failure(`stdin closed before ${expected}`));
      }
    };
    lineWaiter = check;
    check();
  });
}

// ------------------------------------------------------------------ the page

const problems = [];
const tolerated = [];
let tolerateNetwork = false;
const NETWORK_NOISE = [/^Failed to load resource\b/, /^WebSocket connection to .* failed/];

async function waitInFeed(page, { id, content }, ms) {
  await page.waitForFunction(
    ([rowId, text]) => {
      const row = document.querySelector(`#feed [data-id="${CSS.escape(rowId)}"]`);
      return !!row && row.textContent.includes(text);
    },
    [id, content],
    { timeout: ms, polling: 50 },
  );
}

async function pageState(page) {
  try {
    return await page.evaluate(() => ({
      url: location.href,
      view: document.body.dataset.view,
      connection: document.body.dataset.connection,
      kpiToday: document.getElementById('kpi-today')?.textContent,
      feedTop: [...document.querySelectorAll('#feed [data-id]')].slice(0, 3).map((r) => r.textContent.trim().slice(0, 120)),
      errors: [...document.querySelectorAll('#login-error, #table-error, .toast')].filter((n) => !n.hidden).map((n) => n.textContent.trim()),
    }));
  } catch (e) {
    return { unavailable: String(e && e.message) };
  }
}

async function main() {
  const browser = await step('launch chromium', () =>
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
    }));
  let page = null;
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 960 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      if (tolerateNetwork && NETWORK_NOISE.some((re) => re.test(text))) tolerated.push(text);
      else problems.push(`console error: ${text}`);
    });
    page.on('pageerror', (err) => problems.push(`uncaught exception: ${err && err.stack ? err.stack : err}`));
    page.on('dialog', (d) => {
      problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
      d.dismiss().catch(() => {});
    });

    await step('open the page', async () => {
      const res = await page.goto(`${BASE_URL}/`, { waitUntil: 'domcontentloaded' });
      if (!res || res.status() !== 200) throw new Failure(`GET / answered ${res ? res.status() : 'nothing'}`);
      if (!res.headers()['content-security-policy']) log('note: GET / has no Content-Security-Policy header');
    });

    await step('log in', async () => {
      await page.locator('#login-form').waitFor({ state: 'visible' });
      await page.fill('#email', EMAIL);
      await page.fill('#password', PASSWORD);
      await page.locator('#login-form button[type="submit"]').click();
      await page.waitForFunction(() => document.body.dataset.view === 'app' || !document.getElementById('login-error').hidden);
      const err = await page.evaluate(() => (document.body.dataset.view === 'app' ? null : document.getElementById('login-error').textContent));
      if (err) throw new Failure(`the page refused the login: ${err}`);
    });

    await step('KPI "interactions today" shows a number', () =>
      page.waitForFunction(() => {
        const k = document.getElementById('kpi-today');
        return !!k && /^\d[\d,]*$/.test(k.textContent.trim()) && k.dataset.value !== undefined && !Number.isNaN(Number(k.dataset.value));
      }));

    await step('both charts render a uPlot canvas', () =>
      page.waitForFunction(() => ['chart-trend', 'chart-channels'].every((id) => {
        const c = document.querySelector(`#${id} .uplot canvas`);
        return !!c && c.width > 0 && c.height > 0;
      })));

    await step('live connection', () => page.waitForFunction(() => document.body.dataset.connection === 'live'));
    await step('the connection negotiated permessage-deflate', async () => {
      const ext = await page.evaluate(() => document.body.dataset.wsExtensions || '');
      if (!ext.includes('permessage-deflate')) throw new Error(`extensions: "${ext}"`);
    });

    const first = await step('ingest a first interaction through the API', () => ingest('one'));
    await step(`first interaction ${first.id} appears in the feed (≤ ${FEED_MS} ms)`, () => waitInFeed(page, first, FEED_MS));

    // Record every change of the connection state from here on.
    await page.evaluate(() => {
      window.__connStates = [document.body.dataset.connection];
      new MutationObserver(() => window.__connStates.push(document.body.dataset.connection))
        .observe(document.body, { attributes: true, attributeFilter: ['data-connection'] });
    });

    tolerateNetwork = true;
    process.stdout.write('RESTART\n');
    await step('wait for GO', () => waitForLine('GO', GO_TIMEOUT_MS));

    await step(`reconnected: connection "live" again (≤ ${RECONNECT_MS} ms)`, () =>
      page.waitForFunction(
        () => window.__connStates.some((s) => s !== 'live') && document.body.dataset.connection === 'live',
        null,
        { timeout: RECONNECT_MS, polling: 100 },
      ));
    tolerateNetwork = false;
    if (tolerated.length) log(`tolerated ${tolerated.length} network error(s) during the restart`);
    const states = await page.evaluate(() => window.__connStates.join(' → '));
    log(`connection states: ${states}`);

    const second = await step('ingest a second interaction through the API', () => ingest('two'));
    await step(`second interaction ${second.id} appears in the feed (≤ ${FEED_MS * 2} ms)`, () => waitInFeed(page, second, FEED_MS * 2));
    await step('the first interaction is still in the feed', () => waitInFeed(page, first, FEED_MS));

    // The node counts filters the rollups cannot answer only up to its bound (2 in this test): four
    // interactions of the customer show as "2+", the unfiltered listing exactly.
    await step('a total counted up to the bound shows as a lower bound ("2+")', async () => {
      await page.evaluate((id) => { location.hash = `customerId=${id}`; }, CUSTOMER_ID);
      await page.waitForFunction(() => {
        const summary = document.getElementById('table-summary').textContent.trim();
        const info = document.getElementById('page-info').textContent;
        return summary === '2+ matching' && info.includes('of 2+');
      });
    });
    await step('the unfiltered total is exact ("4 matching")', async () => {
      await page.evaluate(() => { location.hash = ''; });
      await page.waitForFunction(() => document.getElementById('table-summary').textContent.trim() === '4 matching');
    });

    // Hostile text through the API: a customer named with markup, attributes with script, and messages
    // with every trick; each must show literally in the live feed, the table and the drill-down, and
    // nothing may run (a dialog, an error, window.__xss, or an element made from the text fails).
    const hostile = await step('create a customer named with markup', () =>
      apiPost('/api/v1/customers', {
        externalId: `\u202Ednammoc-${MARK}`,
        name: HOSTILE_NAME,
        attributes: { '<script>alert(7)</script>': 'javascript:alert(8)', plan: '<b>gold</b>' },
      }, 201));
    const sent = [];
    for (const [i, content] of HOSTILE_TEXTS.entries()) {
      sent.push(await step(`ingest hostile text ${i + 1}`, () =>
        ingest(`hostile-${i}`, { customerId: hostile.id, content, metadata: { page: 'javascript:alert(9)' } })));
    }
    for (const [i, m] of sent.entries()) {
      await step(`hostile text ${i + 1} shows literally in the live feed`, () => waitInFeed(page, m, FEED_MS));
    }
    await step('the table shows the hostile texts literally', async () => {
      await page.evaluate((id) => { location.hash = `customerId=${id}`; }, hostile.id);
      await page.waitForFunction((texts) => {
        const cells = [...document.querySelectorAll('#table tbody tr')].map((r) => r.textContent);
        return texts.every((t) => cells.some((c) => c.includes(t)));
      }, HOSTILE_TEXTS);
    });
    await step('the drill-down shows the name, attributes and history literally', async () => {
      await page.locator(`#table tbody button[data-customer="${hostile.id}"]`).first().click();
      await page.waitForFunction(([name, texts]) => {
        const panel = document.getElementById('customer-panel');
        const history = [...document.querySelectorAll('#cp-history tbody tr')].map((r) => r.textContent);
        return !panel.hidden
          && document.getElementById('cp-title').textContent === name
          && document.getElementById('cp-attrs').textContent.includes('<script>alert(7)</script>')
          && document.getElementById('cp-attrs').textContent.includes('javascript:alert(8)')
          && texts.every((t) => history.some((c) => c.includes(t)));
      }, [HOSTILE_NAME, HOSTILE_TEXTS]);
    });
    await step('nothing of the hostile text became markup or ran', async () => {
      const found = await page.evaluate(() => {
        const made = [];
        for (const root of ['feed', 'table', 'customer-panel']) {
          for (const n of document.getElementById(root).querySelectorAll('img, script, svg, iframe, object, embed, a[href^="javascript"], b, i')) {
            made.push(`${root}: <${n.tagName.toLowerCase()}>`);
          }
          for (const n of document.getElementById(root).querySelectorAll('*')) {
            for (const a of n.getAttributeNames()) if (a.startsWith('on')) made.push(`${root}: ${n.tagName.toLowerCase()}[${a}]`);
          }
        }
        return { made, xss: window.__xss ?? null };
      });
      if (found.xss !== null) throw new Failure(`script from the data ran (window.__xss = ${found.xss})`);
      if (found.made.length) throw new Failure(`the data became elements: ${found.made.join(', ')}`);
    });
    await page.keyboard.press('Escape');

    // Insight alerts: a steady week of email, then a burst of negative emails through the API (scored by
    // the model): the alert appears live in the panel, marks the trend, and one click filters the table
    // to the channel and the window behind it.
    process.stdout.write('SEED\n');
    await step('wait for the baseline week', () => waitForLine('GO', GO_TIMEOUT_MS));
    const burst = [];
    for (let i = 0; i < 25; i += 1) {
      burst.push(await ingest(`angry-${i}`, {
        channel: 'email',
        content: `This is terrible. The invoice is wrong again and nobody answers my emails (${MARK}-${i}).`,
      }));
    }
    await step('the sentiment drop of the email channel appears live in the alerts panel (≤ 60 s)', () =>
      page.waitForFunction(() => !!document.querySelector(
        '#alerts button[data-rule="sentiment_drop"][data-dimension="channel:email"][data-state="firing"]'),
      null, { timeout: 60_000, polling: 250 }));
    await step('the trend shows where the alert fired', () =>
      page.waitForFunction(() => Number(document.getElementById('chart-trend').dataset.markers || 0) >= 1));
    await step('one click filters the table to the email channel and the alert window', async () => {
      await page.locator('#alerts button[data-rule="sentiment_drop"][data-dimension="channel:email"]').first().click();
      await page.waitForFunction((text) => {
        const rows = [...document.querySelectorAll('#table tbody tr')];
        return location.hash.includes('channels=email') && location.hash.includes('from=')
          && rows.length > 0
          && rows.every((r) => r.children[1] && r.children[1].textContent.trim() === 'email')
          && rows.some((r) => r.textContent.includes(text))
          && !!document.querySelector('#filter-chips [data-window="alert"]');
      }, burst[burst.length - 1].content);
    });

    if (problems.length) throw new Failure(`the page reported errors:\n  ${problems.join('\n  ')}`);

    await step('screenshot', () => page.screenshot({ path: SCREENSHOT, fullPage: true }));
    await browser.close();
    process.stdout.write('OK\n');
    return 0;
  } catch (e) {
    const reason = e instanceof Failure ? e.message : `unexpected: ${e && e.stack ? e.stack : e}`;
    // The details on stderr first; the verdict is one line on stdout (the Rust test reads that line).
    log(`FAILED: ${reason}`);
    if (problems.length && !reason.includes('reported errors')) log(`page errors so far:\n  ${problems.join('\n  ')}`);
    let shot = '';
    if (page) {
      log(`page state: ${JSON.stringify(await pageState(page))}`);
      try {
        await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 5000 });
        shot = ` (screenshot: ${SCREENSHOT})`;
      } catch (se) {
        log(`no screenshot: ${se.message}`);
      }
    }
    await browser.close().catch(() => {});
    const extra = problems.length && !reason.includes('reported errors') ? ` [page errors: ${problems.join(' | ')}]` : '';
    process.stdout.write(`FAIL: ${reason.replace(/\s*\n\s*/g, ' | ')}${extra}${shot}\n`);
    return 1;
  }
}

main()
  .then((code) => {
    rl.close();
    process.exit(code);
  })
  .catch((e) => {
    log(`FAILED: ${e && e.stack ? e.stack : e}`);
    process.stdout.write(`FAIL: ${String(e && e.message ? e.message : e).replace(/\s*\n\s*/g, ' | ')}\n`);
    process.exit(1);
  });
