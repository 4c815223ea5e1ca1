// The hub's status page in a real headless Chromium (Debian's, driven by playwright-core): the
// one-time login link from `device-hub ui`, what the page shows, pairing two hubs through it, and
// what a browser without the session gets. Chromium trusts the hub only through the pin of the
// hub's browser (P-256) key: `--ignore-certificate-errors-spki-list`, no `ignoreHTTPSErrors`.
//
// Needs /usr/bin/chromium (`apt-get install -y chromium`), or CHROMIUM=/path/to/chromium.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { addApp, startHub, uiLoginUrl, waitFor } from './lib/hub.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Where the screenshot goes: $ARTIFACTS (relative to the workspace root, as in .ci/run), else
// <workspace>/ci-artifacts.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || 'ci-artifacts');
const T = { timeout: 30_000 };

/** A promise that is awaited later: no unhandled rejection if the test fails before that. */
function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

function chromiumFlags(pins) {
  return [
    '--no-sandbox', // root in CI
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--ignore-certificate-errors-spki-list=${pins.join(',')}`,
  ];
}

describe('status page in headless Chromium', { timeout: 85_000 }, () => {
  let A;
  let B;
  let browser;
  let context; // the owner's browser session
  let page;
  let loginUrl;

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM`);
    }
    [A, B] = await Promise.all([startHub({ name: 'hub A (laptop)' }), startHub({ name: 'hub B (phone)' })]);
    loginUrl = await uiLoginUrl(A);
    // playwright's launch() gives Chromium a fresh --user-data-dir under os.tmpdir() and removes it
    // on close. Only A's browser key is pinned: B is used to show an unpinned hub is refused.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: chromiumFlags([A.browserPin()]),
      timeout: 30_000,
    });
    context = await browser.newContext();
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.setDefaultNavigationTimeout(15_000);
  }, { timeout: 45_000 });

  after(async () => {
    await browser?.close().catch(() => {});
    await Promise.all([A?.stop(), B?.stop()]);
  }, T);

  test('the one-time link logs the browser in and redirects to /_hub/', T, async () => {
    assert.match(loginUrl, new RegExp(`^https://127\\.0\\.0\\.1:${A.port}/_hub/login\\?token=[0-9a-f]+$`));
    const response = await page.goto(loginUrl);
    assert.equal(response.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/_hub/');
    const redirect = response.request().redirectedFrom();
    assert.ok(redirect, 'the login URL answered a redirect');
    assert.equal((await redirect.response()).status(), 303);

    const cookies = await context.cookies(A.url);
    const session = cookies.find((c) => c.name === 'hub_session');
    assert.ok(session, JSON.stringify(cookies));
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await page.evaluate(() => document.cookie), '', 'HttpOnly: scripts cannot read it');
  });

  test('the page shows identity, QR code and databases', T, async () => {
    assert.equal((await page.textContent('#key-id')).trim(), A.keyId);
    assert.equal((await page.textContent('#hub-name')).trim(), A.name);
    assert.equal((await page.textContent('#httpkey-url')).trim(), A.httpkeyUrl);
    assert.match(await page.title(), /hub A/);
    const qr = page.locator('.qr svg');
    assert.equal(await qr.count(), 1);
    assert.ok(await qr.isVisible());
    const box = await qr.boundingBox();
    assert.ok(box.width > 100 && box.height > 100, JSON.stringify(box));
    assert.ok((await page.locator('.qr svg *').count()) > 0, 'the QR svg has content');
    const dbs = await page.locator('#databases tr td:first-child').allTextContents();
    assert.ok(dbs.includes('hub-policy'), dbs.join(', '));
    assert.ok(dbs.includes('hub-directory'), dbs.join(', '));
    assert.equal(await page.locator('#peers tr td').count(), 0, 'no peers yet');
  });

  test('pairing A with B through the page', { timeout: 40_000 }, async () => {
    await page.fill('#pair-url', B.httpkeyUrl);
    await page.selectOption('#pair-kind', 'me');
    // The page reloads itself 1.5 s after it shows the code.
    const reloaded = quiet(page.waitForEvent('load', { timeout: 20_000 }));
    const started = quiet(page.waitForResponse((r) => r.url().endsWith('/_hub/api/pair/start')));
    await page.click('#pair-start');
    const startResponse = await started;
    assert.equal(startResponse.status(), 200, `pair/start answered ${startResponse.status()}`);
    const code = (await page.textContent('#pair-code')).trim();
    assert.match(code, /^\d{6}$/);
    assert.match(await page.textContent('#pair-result'), /hub B \(phone\)/);

    // B's owner confirms the same code with the CLI.
    const confirmB = await B.cli(['pair', '--confirm', code]);
    assert.match(confirmB.stdout, new RegExp(`confirmed: hub A \\(laptop\\) \\(${A.keyId}\\) is now one of your devices`));

    // A's owner confirms in the page.
    await reloaded;
    const row = page.locator('#pairings tr', { hasText: B.keyId });
    assert.equal((await row.locator('td.code').textContent()).trim(), code);
    const confirmed = quiet(page.waitForResponse((r) => r.url().endsWith('/_hub/api/pair/confirm')));
    const reloadedAgain = quiet(page.waitForEvent('load', { timeout: 15_000 }));
    await row.locator('button.confirm').click();
    const confirmResponse = await confirmed;
    assert.equal(confirmResponse.status(), 200, `pair/confirm answered ${confirmResponse.status()}`);
    await reloadedAgain;

    await waitFor(
      async () => {
        const peers = await page.locator('#peers').textContent();
        if (peers.includes(B.keyId)) return true;
        await page.reload();
        return false;
      },
      { timeout: 15_000, interval: 500, what: `B's key id in A's #peers` },
    );
    const cells = (await page.locator('#peers tr', { hasText: B.keyId }).locator('td').allTextContents()).map((t) => t.trim());
    assert.deepEqual(cells, ['hub B (phone)', 'me', B.keyId]);
    assert.equal(await page.locator('#pairings').count(), 0, 'no pairing left pending');

    const status = await B.cli(['status']);
    const peerLine = status.stdout.split('\n').find((l) => l.startsWith('peer') && l.includes(A.keyId));
    assert.ok(peerLine, `B's status lists A as a peer:\n${status.stdout}`);
    assert.match(peerLine, /^peer\s+me\s+hub A \(laptop\)\s+/);
  });

  test('after pairing, the page shows replication with B both ways', T, async () => {
    // The replication manager reconciles every 3 s; poll the page.
    const rows = await waitFor(
      async () => {
        await page.reload();
        const found = [];
        for (const tr of await page.locator('#replication tr:has(td)').all()) {
          found.push((await tr.locator('td').allTextContents()).map((t) => t.trim()));
        }
        const policy = found.filter((r) => r[0] === 'hub B (phone)' && r[1] === 'hub-policy');
        return policy.length === 2 ? found : null;
      },
      { timeout: 20_000, interval: 1_000, what: 'hub-policy push and pull rows with B in #replication' },
    );
    const dirs = rows.filter((r) => r[1] === 'hub-policy').map((r) => r[2]).sort();
    assert.deepEqual(dirs, ['pull', 'push']);
    assert.ok(rows.some((r) => r[1] === 'hub-directory'), JSON.stringify(rows));
  });

  test('a full-page screenshot is saved', T, async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'status-page.png');
    fs.rmSync(file, { force: true });
    await page.screenshot({ path: file, fullPage: true });
    const size = fs.statSync(file).size;
    assert.ok(size > 10 * 1024, `${file} is ${size} bytes`);
  });

  test('a key is revoked through the page, and the page lists it', T, async () => {
    // A key A knows: an app's (revoking B would stop the replication the SIGTERM test needs).
    const app = await addApp(A, 'lost-tablet-app', ['notes:read']);
    assert.match(app.keyId ?? '', /^[a-z2-7]{52}$/, app.stdout);
    await page.reload();
    assert.equal(await page.locator('#revoked tr td code').count(), 0, 'nothing revoked yet');
    const dialogs = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      d.accept();
    });
    try {
      // Its own key: refused, with the reason on the page.
      await page.fill('#revoke-key', A.keyId);
      const refused = quiet(page.waitForResponse((r) => r.url().endsWith('/_hub/api/revoke-key')));
      await page.click('#revoke-start');
      assert.equal((await refused).status(), 400);
      await page.waitForFunction(() => document.getElementById('revoke-result').textContent.includes('own key'));

      await page.fill('#revoke-key', app.keyId);
      const reloaded = quiet(page.waitForEvent('load', { timeout: 15_000 }));
      const revoked = quiet(page.waitForResponse((r) => r.url().endsWith('/_hub/api/revoke-key')));
      await page.click('#revoke-start');
      assert.equal((await revoked).status(), 200);
      await reloaded;
    } finally {
      page.removeAllListeners('dialog');
    }
    assert.ok(dialogs.every((m) => /for good/.test(m)) && dialogs.length === 2, JSON.stringify(dialogs));
    const row = page.locator('#revoked tr', { hasText: app.keyId });
    const cells = (await row.locator('td').allTextContents()).map((t) => t.trim());
    assert.equal(cells[1], app.keyId);
    assert.equal(cells[2], A.name, 'revoked by this hub');
    assert.notEqual(cells[3], '', 'when');
  });

  test('a browser without the session gets the login prompt, not the page', T, async () => {
    const fresh = await browser.newContext();
    try {
      const p = await fresh.newPage();
      const r = await p.goto(`${A.url}/_hub/`);
      assert.equal(r.status(), 401);
      const html = await p.content();
      assert.match(html, /device-hub ui/);
      assert.ok(!html.includes(A.keyId), 'the key id is not shown');
      assert.equal(await p.locator('#key-id').count(), 0);
      assert.equal(await p.locator('#pair-url').count(), 0);

      const api = await p.goto(`${A.url}/_hub/api/status`);
      assert.equal(api.status(), 401);
      assert.ok(!(await api.text()).includes(A.keyId));
    } finally {
      await fresh.close();
    }
  });

  test('a used login token and a made-up one get 401', T, async () => {
    const fresh = await browser.newContext();
    try {
      const p = await fresh.newPage();
      const reused = await p.goto(loginUrl);
      assert.equal(reused.status(), 401);
      assert.equal(new URL(p.url()).pathname, '/_hub/login', 'no redirect');
      assert.equal((await fresh.cookies(A.url)).length, 0, 'no session cookie');

      const madeUp = await p.goto(`${A.url}/_hub/login?token=${'0'.repeat(32)}`);
      assert.equal(madeUp.status(), 401);
      const none = await p.goto(`${A.url}/_hub/login`);
      assert.equal(none.status(), 401);
      assert.equal((await fresh.cookies(A.url)).length, 0, 'no session cookie');

      const r = await p.goto(`${A.url}/_hub/`);
      assert.equal(r.status(), 401);
    } finally {
      await fresh.close();
    }
  });

  test('a hub whose browser key is not pinned is refused by Chromium', T, async () => {
    const p = await context.newPage();
    try {
      await assert.rejects(p.goto(`${B.url}/_hub/`), /net::ERR_CERT_/);
    } finally {
      await p.close();
    }
  });

  // Last: it stops A. The README promises SIGTERM stops the hub cleanly, requests in flight
  // finishing; a hub paired with a running device should not sit out its whole drain timeout.
  test('a paired hub stops promptly on SIGTERM', T, async () => {
    await browser.close(); // no browser connection of ours is left open
    const { ms, code, signal } = await A.stop();
    assert.equal(signal, null, 'exited by itself (not SIGKILLed)');
    assert.equal(code, 0);
    const warning = A.stderr().split('\n').find((l) => /did not finish in time/.test(l));
    assert.ok(
      ms < 5_000 && !warning,
      `hub A took ${ms} ms to stop after SIGTERM while paired with running hub B` +
        (warning ? ` and logged: ${warning.replace(/\x1b\[[0-9;]*m/g, '')}` : ''),
    );
  });
});
