// 7. Server to server: PouchDB's replicator, run in node with two HTTP endpoints, replicates
// from our server to pouchdb-server 4.2.0 and back; contents are equal afterwards.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startServer, startPouchServer, uniqueName, PouchDB } from './lib/harness.mjs';
import { seed, snapshot, h, SEED_LEAVES } from './lib/data.mjs';

const T = { timeout: 45_000 };

describe('server to server: couch-sync <-> pouchdb-server', { timeout: 120_000 }, () => {
  let ours;
  let theirs;
  before(async () => {
    [ours, theirs] = await Promise.all([startServer(), startPouchServer()]);
  }, { timeout: 40_000 });
  after(async () => {
    await Promise.all([ours?.stop(), theirs?.stop()]);
  }, { timeout: 30_000 });

  const name = uniqueName('s2s');
  let a;
  let b;

  it('couch-sync → pouchdb-server', T, async () => {
    a = ours.db(name);
    b = theirs.db(name);
    await seed(a);
    const res = await PouchDB.replicate(a, b);
    assert.equal(res.ok, true);
    assert.equal(res.doc_write_failures, 0);
    assert.equal(res.docs_written, SEED_LEAVES);
    assert.deepEqual(await snapshot(b), await snapshot(a));
    const c = await b.get('conflicted', { conflicts: true });
    assert.equal(c._rev, `3-${h('c')}`);
    assert.deepEqual(c._conflicts, [`2-${h('b')}`]);
  });

  it('changes made on pouchdb-server come back to couch-sync', T, async () => {
    // Update, add, delete, resolve a conflict, add an attachment, and create a new conflict.
    const upd = await b.get('plain-00');
    await b.put({ ...upd, changed: 'on pouchdb-server' });
    await b.put({ _id: 'born-on-pouchdb-server', v: 1 });
    const del = await b.get('plain-01');
    await b.remove(del);
    await b.remove('conflicted', `2-${h('b')}`);
    const wa = await b.get('with-atts');
    await b.putAttachment('with-atts', 'added.bin', wa._rev, Buffer.from([0, 1, 2, 254, 255]), 'application/octet-stream');
    // A second root revision: a conflict with the existing 1-… leaf.
    await b.bulkDocs([{ _id: 'plain-02', _rev: `1-${h('e')}`, _revisions: { start: 1, ids: [h('e')] }, other: true }], { new_edits: false });

    const res = await PouchDB.replicate(b, a);
    assert.equal(res.ok, true);
    assert.equal(res.doc_write_failures, 0);
    assert.equal(res.docs_written, 6);
    const snapA = await snapshot(a);
    assert.deepEqual(snapA, await snapshot(b));

    assert.equal((await a.get('plain-00')).changed, 'on pouchdb-server');
    await assert.rejects(a.get('plain-01'), (err) => err.status === 404 && err.reason === 'deleted');
    assert.equal((await a.get('conflicted', { conflicts: true }))._conflicts, undefined);
    assert.deepEqual([...(await a.getAttachment('with-atts', 'added.bin'))], [0, 1, 2, 254, 255]);
    assert.equal((await a.get('plain-02', { conflicts: true }))._conflicts.length, 1);
  });

  it('replicating again in either direction writes nothing', T, async () => {
    const ab = await PouchDB.replicate(a, b);
    const ba = await PouchDB.replicate(b, a);
    assert.equal(ab.docs_written, 0);
    assert.equal(ba.docs_written, 0);
    assert.equal(ab.docs_read, 0);
    assert.equal(ba.docs_read, 0);
  });

  it('sync both ways with concurrent edits converges', T, async () => {
    const x = await a.get('plain-03');
    await a.put({ ...x, side: 'couch-sync' });
    await b.put({ ...x, side: 'pouchdb-server' });
    await a.put({ _id: 'only-on-ours' });
    await b.put({ _id: 'only-on-theirs' });
    const res = await PouchDB.sync(a, b);
    assert.equal(res.push.ok, true);
    assert.equal(res.pull.ok, true);
    const snapA = await snapshot(a);
    assert.deepEqual(snapA, await snapshot(b));
    assert.equal(snapA['plain-03'].leaves.length, 2);
    assert.ok(snapA['only-on-ours'] && snapA['only-on-theirs']);
  });
});
