// 8. Our replicator (couch-sync's POST /_replicate, running inside our server) against
// pouchdb-server: it pushes to and pulls from pouchdb-server over HTTP, the real PouchDB 9 client
// reads what it wrote, conflicts and attachments survive the round trip, and a second run reuses
// the checkpoints (nothing is read again; the checkpoint documents record both sessions).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, startPouchServer, uniqueName, http } from './lib/harness.mjs';
import { seed, snapshot, h, SEED_LEAVES } from './lib/data.mjs';

const T = { timeout: 45_000 };

describe("couch-sync's replicator <-> pouchdb-server", { timeout: 120_000 }, () => {
  let ours;
  let theirs;
  before(async () => {
    [ours, theirs] = await Promise.all([startServer(), startPouchServer()]);
  }, { timeout: 40_000 });
  after(async () => {
    await Promise.all([ours?.stop(), theirs?.stop()]);
  }, { timeout: 30_000 });

  const name = uniqueName('ours');
  const back = uniqueName('back');

  const replicate = async (body) => {
    const res = await http('POST', `${ours.url}/_replicate`, { body, timeout: 40_000 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };

  it('pushes to pouchdb-server; the PouchDB client reads exactly what it wrote', T, async () => {
    const a = ours.db(name);
    await seed(a);
    const res = await replicate({ source: name, target: `${theirs.url}/${name}`, create_target: true });
    assert.equal(res.ok, true);
    assert.equal(res.history[0].docs_written, SEED_LEAVES);
    assert.equal(res.history[0].doc_write_failures, 0);
    const b = theirs.db(name);
    assert.deepEqual(await snapshot(b), await snapshot(a));
    const c = await b.get('conflicted', { conflicts: true });
    assert.equal(c._rev, `3-${h('c')}`);
    assert.deepEqual(c._conflicts, [`2-${h('b')}`]);
  });

  it('a second push reuses the checkpoints on both sides and sends nothing', T, async () => {
    const res = await replicate({ source: name, target: `${theirs.url}/${name}` });
    assert.equal(res.ok, true);
    assert.equal(res.no_changes, true, JSON.stringify(res));
    // The checkpoint documents on both sides record the first session and where it ended.
    const id = res._local_id;
    const mine = (await http('GET', `${ours.url}/${name}/_local/${id}`)).body;
    const theirsCkpt = (await http('GET', `${theirs.url}/${name}/_local/${id}`, { headers: { 'accept-encoding': 'identity' } })).body;
    assert.equal(mine.session_id, theirsCkpt.session_id);
    assert.deepEqual(mine.source_last_seq, res.source_last_seq);
    assert.equal(theirsCkpt.history[0].docs_written, SEED_LEAVES);
  });

  it('pulls from pouchdb-server into a new database, then back again; all equal', T, async () => {
    const res = await replicate({ source: `${theirs.url}/${name}`, target: back, create_target: true });
    assert.equal(res.history[0].docs_written, SEED_LEAVES);
    assert.deepEqual(await snapshot(ours.db(back)), await snapshot(theirs.db(name)));
    // Edit on pouchdb-server, pull again: exactly that edit arrives.
    const b = theirs.db(name);
    const doc = await b.get('plain-03');
    await b.put({ ...doc, edited: 'on pouchdb-server' });
    const again = await replicate({ source: `${theirs.url}/${name}`, target: back });
    assert.equal(again.history[0].docs_written, 1);
    assert.equal(again.history[0].missing_checked, 1);
    assert.equal((await ours.db(back).get('plain-03')).edited, 'on pouchdb-server');
  });

});
