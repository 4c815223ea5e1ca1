// 6. An interrupted replication resumes from its checkpoint: a pull of a few thousand documents
// with a small batch_size is stopped halfway (cancelled, or the server is SIGKILLed and
// restarted on the same data dir and port), and the next run continues where it stopped.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, uniqueName, memoryDb, recordingFetch, http } from './lib/harness.mjs';

const TOTAL = 3000;
const BATCH = 50;
const T = { timeout: 60_000 };

async function fill(db) {
  const expected = new Map();
  for (let start = 0; start < TOTAL; start += 500) {
    const docs = [];
    for (let i = start; i < Math.min(TOTAL, start + 500); i++) docs.push({ _id: `doc-${String(i).padStart(5, '0')}`, i, payload: `value ${i}` });
    const res = await db.bulkDocs(docs);
    for (const r of res) {
      assert.equal(r.ok, true);
      expected.set(r.id, r.rev);
    }
  }
  return expected;
}

/** Runs a pull and stops it once `threshold` docs are written, by calling `stop(rep)`. */
function pullUntil(local, remote, threshold, stop) {
  return new Promise((resolve) => {
    const rep = local.replicate.from(remote, { batch_size: BATCH, batches_limit: 1 });
    let stopped = false;
    let result;
    rep.on('change', (info) => {
      if (!stopped && info.docs_written >= threshold) {
        stopped = true;
        Promise.resolve(stop(rep)).catch(() => {});
      }
    });
    // Without a listener an 'error' event would be thrown as an uncaught exception.
    rep.on('error', () => {});
    rep.on('complete', (info) => {
      result = info;
    });
    rep.then(
      (info) => resolve({ result: info ?? result, error: null }),
      (error) => resolve({ result, error }),
    );
  });
}

async function assertComplete(local, expected) {
  const all = await local.allDocs();
  assert.equal(all.rows.length, TOTAL);
  for (const row of all.rows) assert.equal(row.value.rev, expected.get(row.id), row.id);
  const sample = await local.get('doc-01234');
  assert.equal(sample.payload, 'value 1234');
}

function checkpointId(log) {
  const put = log.find((e) => e.method === 'PUT' && e.path.includes('/_local/'));
  return put && put.path.slice(put.path.indexOf('/_local/') + 1);
}

describe('interrupted replication resumes', { timeout: 150_000 }, () => {
  let server;
  before(async () => {
    server = await startServer();
  }, { timeout: 30_000 });
  after(async () => {
    if (server) await server.stop();
  }, { timeout: 30_000 });

  it('cancelled halfway, the next run resumes from the checkpoint', T, async () => {
    const name = uniqueName('resume-cancel');
    const expected = await fill(server.db(name));
    const local = memoryDb('resume-cancel');
    const rec1 = recordingFetch();
    const { error } = await pullUntil(local, server.db(name, { fetch: rec1.fetch }), TOTAL / 2, (rep) => rep.cancel());
    assert.equal(error, null);
    const have = (await local.info()).doc_count;
    assert.ok(have >= TOTAL / 2 && have < TOTAL, `cancelled with ${have} docs`);
    const cpId = checkpointId(rec1.log);
    assert.ok(cpId, 'a checkpoint was written to the server before the cancel');
    await new Promise((r) => setTimeout(r, 200)); // let a checkpoint write in flight settle
    const localCp = await local.get(cpId);
    const checkpointSeqs = [localCp.last_seq, ...localCp.history.map((h) => h.last_seq)].map(String);

    const rec2 = recordingFetch();
    const second = await local.replicate.from(server.db(name, { fetch: rec2.fetch }), { batch_size: BATCH });
    assert.equal(second.ok, true);
    const changes = rec2.log.filter((e) => e.path.endsWith('/_changes'));
    // PouchDB starts from the newest checkpoint both sides agree on (normally the last one).
    assert.ok(checkpointSeqs.includes(changes[0].query.since), `started from the checkpoint: since=${changes[0].query.since}, checkpoints ${checkpointSeqs}`);
    assert.notEqual(changes[0].query.since, '0');
    const rows = changes.reduce((n, e) => n + e.changesRows, 0);
    assert.ok(rows <= TOTAL - have + 2 * BATCH, `second run read ${rows} changes rows for ${TOTAL - have} missing docs`);
    assert.ok(second.docs_read <= TOTAL - have, `docs_read ${second.docs_read}`);
    assert.equal(second.docs_written, TOTAL - have);
    await assertComplete(local, expected);
    await local.destroy();
  });

  // The crash scenario is split in two tests sharing state, so that a failure to resume is
  // reported apart from data loss.
  const crash = {};
  it('server SIGKILLed halfway and restarted: data and checkpoint survive, the next pull completes', T, async () => {
    const name = uniqueName('resume-kill');
    const expected = await fill(server.db(name));
    crash.uuidBefore = (await http('GET', `${server.url}/`)).body.uuid;
    const local = memoryDb('resume-kill');
    const rec1 = recordingFetch();
    const doomed = server.db(name, { fetch: rec1.fetch });
    // PouchDB's replicator calls src.info() after each batch without handling a rejection; when
    // the server dies that becomes an unhandled rejection, which node:test would pin on this
    // test. Answer it with a harmless value instead.
    const realInfo = doomed.info.bind(doomed);
    doomed.info = (...args) => realInfo(...args).catch(() => ({ update_seq: 0 }));
    const { error } = await pullUntil(local, doomed, TOTAL / 2, () => server.kill());
    assert.ok(error, 'the replication failed when the server died');
    const have = (await local.info()).doc_count;
    assert.ok(have >= TOTAL / 2 && have < TOTAL, `interrupted with ${have} docs`);
    crash.have = have;
    crash.cpId = checkpointId(rec1.log);
    assert.ok(crash.cpId, 'a checkpoint was written before the kill');

    await server.restart();
    // Everything acknowledged before the kill is still there.
    const info = (await http('GET', `${server.url}/${name}`)).body;
    assert.equal(info.doc_count, TOTAL);
    const serverCp = await http('GET', `${server.url}/${name}/${crash.cpId}`);
    assert.equal(serverCp.status, 200, `the server's checkpoint ${crash.cpId} survived the crash`);

    const rec2 = recordingFetch();
    const second = await local.replicate.from(server.db(name, { fetch: rec2.fetch }), { batch_size: BATCH });
    assert.equal(second.ok, true);
    crash.log = rec2.log;
    crash.uuidAfter = (await http('GET', `${server.url}/`)).body.uuid;
    await assertComplete(local, expected);
    await local.destroy();
  });

  it('... and that pull resumed from the checkpoint (the server uuid must survive the restart)', T, async () => {
    assert.ok(crash.log, 'the previous test got as far as the second pull');
    // PouchDB derives the replication id from the server's uuid (GET /): it must be stable
    // across restarts, as CouchDB's is, or every restart forces a replication from scratch.
    assert.equal(crash.uuidAfter, crash.uuidBefore, 'server uuid is stable across restarts');
    assert.equal(checkpointId(crash.log), crash.cpId, 'the same replication id as before the restart');
    const changes = crash.log.filter((e) => e.path.endsWith('/_changes'));
    assert.notEqual(changes[0].query.since, '0', 'resumed, not restarted from 0');
    const rows = changes.reduce((n, e) => n + e.changesRows, 0);
    assert.ok(rows <= TOTAL - crash.have + 2 * BATCH, `second run read ${rows} changes rows for ${TOTAL - crash.have} missing docs`);
  });
});
