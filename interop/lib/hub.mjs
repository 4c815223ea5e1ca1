// Helpers for end-to-end tests of the Thali device hub (`HUB_BIN`): start/stop hubs on free
// loopback ports with fresh data directories, run its CLI against them, read the files it writes,
// compute certificate pins, and a `fetch` for PouchDB that speaks mutual TLS to a hub and accepts
// exactly one pinned server certificate.
//
// Every hub started here is registered and killed (SIGKILL) when the node process exits, so a
// failing or timed-out test never leaves one behind (the same scheme as harness.mjs).

import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { X509Certificate, createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

import { PouchDB, binFromEnv, freePort, tempDir } from './harness.mjs';

export { freePort, tempDir };

export { PouchDB };

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 20_000;
const CLI_TIMEOUT_MS = 20_000;

/** Hub processes still running, killed on exit whatever happens. */
const live = new Set();

process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(child) {
  live.add(child);
  child.on('exit', () => live.delete(child));
  child.unref();
  for (const s of [child.stdout, child.stderr]) s?.unref?.();
}

function tail(text, n = 2000) {
  return text.length > n ? `…${text.slice(-n)}` : text;
}

/** The device-hub binary from `HUB_BIN`, or a clear error. */
export function hubBin() {
  return binFromEnv(
    'HUB_BIN',
    'build the hub with `cargo build -p device-hub` and run ' +
      '`HUB_BIN=target/debug/device-hub node --test interop/hub-pouchdb.test.mjs ' +
      'interop/status-page.test.mjs` (from the workspace root)',
  );
}

/** Removes a directory, retrying while a dying process may still be closing files in it. */
export async function removeDir(dir) {
  if (dir) await fsp.rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}

/** Waits for `child` to exit; SIGKILL after `ms`. */
async function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  // Tracked children are unref'd: hold the event loop open until the exit is seen.
  child.ref();
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

function hubEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' };
  delete env.THALI_HUB_DATA; // always --data
  return env;
}

/**
 * Runs `device-hub --data DATA ARGS…`. Resolves { code, stdout, stderr } whatever the exit code
 * (a killed/timed-out run has code null).
 */
export function runCli(dataDir, args, { timeout = CLI_TIMEOUT_MS, input } = {}) {
  const bin = hubBin();
  return new Promise((resolve) => {
    const child = execFile(
      bin,
      ['--data', dataDir, ...args],
      { env: hubEnv(), timeout, killSignal: 'SIGKILL', maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Like runCli, but rejects with the output unless the command succeeded. */
export async function cli(dataDir, args, opts) {
  const r = await runCli(dataDir, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `device-hub ${args.join(' ')} failed (exit ${r.code})\nstdout: ${tail(r.stdout)}\nstderr: ${tail(r.stderr)}`,
    );
  }
  return r;
}

/** Parses the hub's ready line. */
export function parseReadyLine(text) {
  const m = /^device-hub ready: (httpkey:\/\/\S+) \((https:\/\/\S+), key id (\S+)\)$/m.exec(text);
  if (!m) return null;
  return { httpkeyUrl: m[1], url: m[2], keyId: m[3] };
}

/** Spawns `serve` and resolves when it printed its ready line (rejects on exit or timeout). */
async function spawnServe(dataDir) {
  const bin = hubBin();
  const child = spawn(bin, ['--data', dataDir, 'serve'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: hubEnv(),
  });
  track(child);
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr = tail(stderr + d, 20_000);
  });
  child.stdout.setEncoding('utf8');
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`device-hub did not print its ready line within ${READY_TIMEOUT_MS} ms\nstdout: ${tail(stdout)}\nstderr: ${tail(stderr)}`));
    }, READY_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      stdout += d;
      const parsed = parseReadyLine(stdout);
      if (parsed) {
        clearTimeout(timer);
        resolve(parsed);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`device-hub exited before it was ready (code ${code}, signal ${signal})\nstderr: ${tail(stderr)}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
  });
  try {
    const info = await ready;
    return { child, info, stderr: () => stderr, stdout: () => stdout };
  } catch (err) {
    child.kill('SIGKILL');
    await waitExit(child, STOP_TIMEOUT_MS).catch(() => {});
    throw err;
  }
}

/**
 * Starts a hub named `name` on a free 127.0.0.1 port with a fresh data dir (hub.toml written
 * first). Returns a handle:
 * { name, dataDir, port, url, httpkeyUrl, keyId, cli(args), runCli(args), appDir(name),
 *   deviceCertPem(), browserCertPem(), browserPin(), stderr(), stop() }.
 */
export async function startHub({ name = 'test hub' } = {}) {
  hubBin(); // fail loudly before making anything
  const dataDir = await tempDir('device-hub-e2e-');
  let proc;
  let port;
  let lastErr;
  for (let attempt = 0; attempt < 5 && !proc; attempt++) {
    port = await freePort();
    await fsp.writeFile(
      path.join(dataDir, 'hub.toml'),
      `name = ${JSON.stringify(name)}\nlisten = "${HOST}:${port}"\n`,
      { mode: 0o600 },
    );
    try {
      proc = await spawnServe(dataDir);
    } catch (err) {
      lastErr = err; // most likely the port was taken in between: try another
    }
  }
  if (!proc) {
    await removeDir(dataDir);
    throw lastErr;
  }
  let stopping = null;
  const hub = {
    name,
    dataDir,
    port,
    ...proc.info,
    get process() {
      return proc.child;
    },
    stderr: () => proc.stderr(),
    /** Runs a CLI command against this hub; rejects unless it succeeded. */
    cli: (args, opts) => cli(dataDir, args, opts),
    /** Runs a CLI command against this hub; resolves { code, stdout, stderr }. */
    runCli: (args, opts) => runCli(dataDir, args, opts),
    /** Where `app add NAME` wrote the app's files. */
    appDir: (app) => path.join(dataDir, 'apps', app),
    deviceCertPem: () => fs.readFileSync(path.join(dataDir, 'keys', 'device.cert.pem'), 'utf8'),
    browserCertPem: () => fs.readFileSync(path.join(dataDir, 'keys', 'browser.cert.pem'), 'utf8'),
    /** Chromium's pin of the P-256 certificate the hub shows browsers. */
    browserPin: () => spkiPin(hub.browserCertPem()),
    /**
     * SIGTERM (SIGKILL after 10 s), then removes the data dir. Safe to call twice. Resolves
     * { ms, signal, code }: how long the hub took to exit and how it ended.
     */
    stop() {
      stopping ??= (async () => {
        const child = proc.child;
        const t0 = Date.now();
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          await waitExit(child, STOP_TIMEOUT_MS);
        }
        const result = { ms: Date.now() - t0, signal: child.signalCode, code: child.exitCode };
        await removeDir(dataDir);
        return result;
      })();
      return stopping;
    },
  };
  return hub;
}

/**
 * `device-hub app add NAME --grant …`; returns the app's files:
 * { dir, keyId, certPem, keyPem, hubCertPem, hubUrl, stdout }.
 */
export async function addApp(hub, name, grants) {
  const args = ['app', 'add', name];
  for (const g of grants) args.push('--grant', g);
  const { stdout } = await hub.cli(args);
  const dir = hub.appDir(name);
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  const m = /key id (\S+)/.exec(stdout);
  return {
    dir,
    keyId: m?.[1],
    certPem: read('app.cert.pem'),
    keyPem: read('app.key.pem'),
    hubCertPem: read('hub.cert.pem'),
    hubUrl: read('hub.url').trim(),
    stdout,
  };
}

/** A one-time login URL for the status page (`device-hub ui`). */
export async function uiLoginUrl(hub) {
  const { stdout } = await hub.cli(['ui']);
  const m = /^(https:\/\/\S+\/_hub\/login\?token=\S+)$/m.exec(stdout);
  if (!m) throw new Error(`device-hub ui printed no login URL:\n${stdout}`);
  return m[1];
}

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo (Chromium's SPKI pin format). */
export function spkiPin(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** The DER bytes of a PEM certificate. */
export function certDer(pem) {
  return new X509Certificate(pem).raw;
}

/**
 * An https.Agent that presents `cert`/`key` (if given) and accepts the server only if its
 * certificate is byte-for-byte `pinPem`. OpenSSL's chain verification cannot say anything
 * about a self-signed key, so it is switched off and replaced by the pin, which is checked
 * after the handshake and BEFORE the socket is handed to the HTTP request: nothing is sent to
 * a server that fails it, and the request fails with a `PIN_MISMATCH` error.
 * TLS session reuse is off so every connection shows its certificate.
 */
export class PinnedAgent extends https.Agent {
  constructor({ cert, key, pinPem, ...rest }) {
    super({ keepAlive: true, maxCachedSessions: 0, ...rest });
    this.pinDer = certDer(pinPem);
    this.clientCert = cert;
    this.clientKey = key;
    /** How many connections were refused for a wrong pin. */
    this.pinFailures = 0;
  }

  createConnection(options, callback) {
    const socket = tls.connect({
      ...options,
      cert: this.clientCert,
      key: this.clientKey,
      rejectUnauthorized: false, // replaced by the pin below
      session: undefined,
    });
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      socket.removeListener('error', finish);
      if (err) {
        socket.destroy();
        callback(err);
      } else {
        callback(null, socket);
      }
    };
    socket.once('error', finish);
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate(false);
      if (!peer?.raw || !peer.raw.equals(this.pinDer)) {
        this.pinFailures++;
        const err = new Error(
          `the server's certificate is not the pinned one (got SHA-256 ${peer?.fingerprint256 ?? 'none'})`,
        );
        err.code = 'PIN_MISMATCH';
        finish(err);
        return;
      }
      finish(null);
    });
    return undefined; // handed over through `callback` once pinned
  }
}

/**
 * A `fetch` for PouchDB's `fetch` option going through `agent`. It wraps PouchDB's own fetch
 * (node-fetch 2 behind fetch-cookie: PouchDB relies on node-fetch's `.buffer()`).
 * `log` records { method, path, status } of every request.
 */
export function agentFetch(agent) {
  const log = [];
  const wrapped = async (url, opts = {}) => {
    const res = await PouchDB.fetch(url, { ...opts, agent });
    const u = new URL(typeof url === 'string' ? url : url.url);
    log.push({ method: (opts.method || 'GET').toUpperCase(), path: decodeURIComponent(u.pathname), status: res.status });
    return res;
  };
  wrapped.log = log;
  return wrapped;
}

/** Raw HTTPS request through `agent`: { status, headers, text, body (JSON when possible) }. */
export function request(agent, method, url, { body, headers = {}, timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, agent, headers: { ...headers }, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, body: json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out after ${timeout} ms`)));
    req.on('error', reject);
    if (body !== undefined) {
      const data = typeof body === 'string' ? body : JSON.stringify(body);
      req.setHeader('Content-Type', 'application/json');
      req.end(data);
    } else {
      req.end();
    }
  });
}

/** Polls `fn` until it returns a truthy value (returned) or `timeout` ms passed (throws). */
export async function waitFor(fn, { timeout = 10_000, interval = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
