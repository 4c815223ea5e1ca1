// Test harness: starts couch-sync's example server (`SERVE_BIN`) and pouchdb-server on free
// loopback ports with fresh temporary data directories, and provides PouchDB handles.
//
// Every process started here is registered and killed (SIGKILL) when the node process exits,
// so a failing or timed-out test never leaves a server behind.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';

import PouchDB from 'pouchdb';
import memoryAdapter from 'pouchdb-adapter-memory';

PouchDB.plugin(memoryAdapter);

export { PouchDB };

const require = createRequire(import.meta.url);
const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

/** Children still running, killed on exit whatever happens. */
const live = new Set();

/**
 * Registers a child: it is killed when node exits, and it does not by itself keep node alive
 * (so a test file whose teardown never ran still ends, and the exit handler kills the child).
 */
function track(child) {
  live.add(child);
  child.on('exit', () => live.delete(child));
  child.unref();
  for (const s of [child.stdout, child.stderr]) s?.unref?.();
}

/** Removes a directory, retrying while a dying process may still be closing files in it. */
async function removeDir(dir) {
  await fsp.rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * The executable named by environment variable `name`, or a clear error saying how to build it
 * (`hint`).
 */
export function binFromEnv(name, hint) {
  const bin = process.env[name];
  if (!bin) {
    throw new Error(`${name} is not set: ${hint}`);
  }
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`${name}=${bin} does not exist or is not executable`);
  }
  return path.resolve(bin);
}

/** The couch-sync binary from `SERVE_BIN`, or a clear error. */
export function serveBin() {
  return binFromEnv(
    'SERVE_BIN',
    'build the server with `cargo build -p couch-sync --example serve` and run ' +
      '`SERVE_BIN=target/debug/examples/serve node --test interop/` (from the workspace root)',
  );
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, HOST);
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

export async function tempDir(prefix) {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Unique names, so tests never share a database. */
export function uniqueName(prefix = 'db') {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** A fresh in-memory local PouchDB. */
export function memoryDb(prefix = 'local') {
  return new PouchDB(uniqueName(prefix), { adapter: 'memory' });
}

function tail(text, n = 2000) {
  return text.length > n ? `…${text.slice(-n)}` : text;
}

/** Waits for `child` to exit; SIGKILL after `ms`. */
async function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Spawns couch-sync on `port` with `dataDir` and resolves when it printed its ready line.
 * Rejects (after killing it) on early exit or after READY_TIMEOUT_MS.
 */
async function spawnServe(bin, port, dataDir) {
  const child = spawn(bin, ['--listen', `${HOST}:${port}`, '--data', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
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
      reject(new Error(`couch-sync did not print its ready line within ${READY_TIMEOUT_MS} ms\nstderr: ${tail(stderr)}`));
    }, READY_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /^couch-sync listening on (http:\/\/\S+) /m.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`couch-sync exited before it was ready (code ${code}, signal ${signal})\nstderr: ${tail(stderr)}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
  });
  try {
    const url = await ready;
    return { child, url, stderr: () => stderr };
  } catch (err) {
    child.kill('SIGKILL');
    await waitExit(child, STOP_TIMEOUT_MS).catch(() => {});
    throw err;
  }
}

/**
 * Starts couch-sync on a free port with a fresh data dir.
 * Returns { url, port, dataDir, db(name), stop(), kill(), restart() }.
 */
export async function startServer() {
  const bin = serveBin();
  const dataDir = await tempDir('couch-sync-interop-');
  let proc;
  let port;
  let lastErr;
  for (let attempt = 0; attempt < 5 && !proc; attempt++) {
    port = await freePort();
    try {
      proc = await spawnServe(bin, port, dataDir);
    } catch (err) {
      lastErr = err; // most likely the port was taken in between: try another
    }
  }
  if (!proc) {
    await removeDir(dataDir);
    throw lastErr;
  }
  let stopped = false;
  const server = {
    port,
    dataDir,
    url: `http://${HOST}:${port}`,
    get process() {
      return proc.child;
    },
    stderr: () => proc.stderr(),
    /** A PouchDB handle on database `name` of this server (created on first use). */
    db(name, opts = {}) {
      return new PouchDB(`${server.url}/${name}`, opts);
    },
    /** Kills the server without warning (SIGKILL), keeping its data. */
    async kill() {
      proc.child.kill('SIGKILL');
      await waitExit(proc.child, STOP_TIMEOUT_MS);
    },
    /** Starts it again on the same port and data dir (after kill()). */
    async restart() {
      if (stopped) throw new Error('restart() after stop()');
      let err;
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          const next = await spawnServe(bin, port, dataDir);
          if (stopped) {
            next.child.kill('SIGKILL');
            throw new Error('stopped while restarting');
          }
          proc = next;
          return;
        } catch (e) {
          if (stopped) throw e;
          err = e; // the port may linger briefly
          await sleep(250);
        }
      }
      throw err;
    },
    /** SIGTERM (SIGKILL after 10 s), then removes the data dir. */
    async stop() {
      stopped = true;
      const child = proc.child;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await waitExit(child, STOP_TIMEOUT_MS);
      }
      await removeDir(dataDir);
    },
  };
  return server;
}

/**
 * Starts pouchdb-server 4.2.0 (LevelDB in a fresh temp dir) on a free port and waits until
 * `GET /` answers. Returns { url, port, db(name), stop() }.
 */
export async function startPouchServer() {
  const bin = path.join(path.dirname(require.resolve('pouchdb-server/package.json')), 'bin', 'pouchdb-server');
  const dir = await tempDir('pouchdb-server-interop-');
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--unhandled-rejections=warn', bin, '-o', HOST, '-p', String(port), '-d', dir, '-c', path.join(dir, 'config.json'), '-n', '--no-color'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  track(child);
  let output = '';
  const collect = (d) => {
    output = tail(output + d, 20_000);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const url = `http://${HOST}:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await waitExit(child, STOP_TIMEOUT_MS);
    }
    await removeDir(dir);
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(`pouchdb-server exited before it was ready\n${tail(output)}`);
    }
    try {
      const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) {
        await res.arrayBuffer();
        break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`pouchdb-server did not answer GET / within ${READY_TIMEOUT_MS} ms\n${tail(output)}`);
    }
    await sleep(100);
  }
  return {
    url,
    port,
    dataDir: dir,
    output: () => output,
    db(name, opts = {}) {
      return new PouchDB(`${url}/${name}`, opts);
    },
    stop,
  };
}

/** Raw HTTP helper: returns { status, headers, body (parsed JSON when possible), text }. */
export async function http(method, url, { body, headers = {}, timeout = 10_000 } = {}) {
  const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(timeout) };
  if (body !== undefined) {
    if (typeof body === 'string' || body instanceof Uint8Array) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] ??= 'application/json';
    }
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, body: json, text };
}

/**
 * One couch-sync server for a `describe` block: call it inside the block with node:test's
 * `before`/`after`; the server is `fixture.server` once the `before` hook ran, and is stopped
 * (its data dir removed) by the `after` hook, whatever the tests did.
 */
export function serverFixture({ before, after }) {
  const fixture = { server: null };
  before(async () => {
    fixture.server = await startServer();
  }, { timeout: 30_000 });
  after(async () => {
    if (fixture.server) await fixture.server.stop();
  }, { timeout: 30_000 });
  return fixture;
}

/** CouchDB's winning-revision rule, for cross-checking: non-deleted, longest, highest rev. */
export function couchWinner(leaves) {
  const sorted = [...leaves].sort((a, b) => {
    if (!!a.deleted !== !!b.deleted) return a.deleted ? 1 : -1;
    const [ga, ha] = splitRev(a.rev);
    const [gb, hb] = splitRev(b.rev);
    if (ga !== gb) return gb - ga;
    return ha < hb ? 1 : ha > hb ? -1 : 0;
  });
  return sorted[0].rev;
}

export function splitRev(rev) {
  const i = rev.indexOf('-');
  return [Number(rev.slice(0, i)), rev.slice(i + 1)];
}

/**
 * A `fetch` for PouchDB's `fetch` option that records every request: { method, url, path,
 * query, status, changesRows } (changesRows: how many rows a `_changes` answer carried).
 */
export function recordingFetch() {
  const log = [];
  const wrapped = async (url, opts = {}) => {
    // PouchDB's own fetch (node-fetch: its responses have .buffer(), which PouchDB relies on).
    const res = await PouchDB.fetch(url, opts);
    const u = new URL(typeof url === 'string' ? url : url.url);
    const entry = {
      method: (opts.method || 'GET').toUpperCase(),
      url: u.href,
      path: decodeURIComponent(u.pathname),
      query: Object.fromEntries(u.searchParams),
      status: res.status,
    };
    log.push(entry);
    if (u.pathname.endsWith('/_changes') && res.ok) {
      try {
        const body = await res.clone().json();
        entry.changesRows = Array.isArray(body.results) ? body.results.length : 0;
        entry.lastSeq = body.last_seq;
      } catch {
        entry.changesRows = 0;
      }
    }
    return res;
  };
  return { fetch: wrapped, log };
}
