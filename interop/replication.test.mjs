// 5. Replication between a local in-memory PouchDB and the server, both directions: content
// (conflicts, deletions, attachments) survives, checkpoints `_local/<replication id>` exist on
// both sides, and a second replication resumes from them and transfers nothing.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { serverFixture, uniqueName, memoryDb, recordingFetch, http } from './lib/harness.mjs';
import { seed, snapshot, h, SEED_LEAVES } from './lib/data.mjs';

const T = { timeout: 30_000 };

/** The replication id a run used: the `_local/…` checkpoint PouchDB PUT on the remote. */
function checkpointIds(log) {
  return [...new Set(log.filter((e) => e.method === 'PUT' && /\/_local\//.test(e.path)).map((e) => e.path.slice(e.path.indexOf('/_local/') + 1)))];
}

function changesRequests(log) {
  return log.filter((e) => e.path.endsWith('/_changes'));
}

describe('replication: local PouchDB <-> server', { timeout: 120_000 }, () => {
  const fx = serverFixture({ before, after });

  it('push to the server, then pull into a fresh local db: contents equal', T, async () => {
    const local = memoryDb('push-src');
    const ids = await seed(local);
    const rec = recordingFetch();
    const remote = fx.server.db(uniqueName('push'), { fetch: rec.fetch });

    const pushed = await local.replicate.to(remote);
    assert.equal(pushed.ok, true);
    assert.equal(pushed.status, 'complete');
    assert.equal(pushed.doc_write_failures, 0);
    assert.equal(pushed.docs_written, SEED_LEAVES, 'one write per leaf revision');

    const expected = await snapshot(local);
    assert.deepEqual(Object.keys(expected).sort(), [...ids].sort());
    assert.deepEqual(await snapshot(remote), expected, 'server content equals the local source');

    // Specific checks, as a reader would see them.
    const c = await remote.get('conflicted', { conflicts: true });
    assert.equal(c._rev, `3-${h('c')}`);
    assert.deepEqual(c._conflicts, [`2-${h('b')}`]);
    await assert.rejects(remote.get('deleted'), (err) => err.status === 404 && err.reason === 'deleted');
    const loser = await remote.get('conflict-att', { rev: `2-${h('1')}`, attachments: true });
    assert.equal(Buffer.from(loser._attachments['loser.txt'].data, 'base64').toString(), 'only on the losing leaf');

    const pulledDb = memoryDb('pull-dst');
    const pulled = await pulledDb.replicate.from(remote);
    assert.equal(pulled.ok, true);
    assert.equal(pulled.docs_written, SEED_LEAVES);
    assert.equal(pulled.doc_write_failures, 0);
    assert.deepEqual(await snapshot(pulledDb), expected, 'pulled content equals the original');
    // Attachments pulled from the server are byte-identical.
    const wa = await pulledDb.get('with-atts', { attachments: true, binary: true });
    const orig = await local.get('with-atts', { attachments: true, binary: true });
    assert.ok(wa._attachments['bin.dat'].data.equals(orig._attachments['bin.dat'].data));
    assert.ok(wa._attachments['note.txt'].data.equals(orig._attachments['note.txt'].data));
    await Promise.all([local.destroy(), pulledDb.destroy()]);
  });

  for (const direction of ['push', 'pull']) {
    it(`${direction}: checkpoints on both sides, and a second run transfers nothing`, T, async () => {
      const local = memoryDb(`${direction}-cp`);
      const rec = recordingFetch();
      const name = uniqueName(`${direction}-cp`);
      const remote = fx.server.db(name, { fetch: rec.fetch });
      const seedInto = direction === 'push' ? local : remote;
      const ids = await seed(seedInto);
      const run = () => (direction === 'push' ? local.replicate.to(remote) : local.replicate.from(remote));

      rec.log.length = 0;
      const first = await run();
      assert.equal(first.ok, true);
      assert.equal(first.docs_written, SEED_LEAVES);
      assert.equal(ids.length, 25);
      const cpIds = checkpointIds(rec.log);
      assert.equal(cpIds.length, 1, `one checkpoint id written to the server: ${cpIds}`);
      const cpId = cpIds[0];

      // The checkpoint on the server, read back through PouchDB and raw HTTP, and the local one.
      const remoteCp = await remote.get(cpId);
      const localCp = await local.get(cpId);
      assert.equal(remoteCp.last_seq, first.last_seq);
      assert.equal(localCp.last_seq, first.last_seq);
      assert.equal(remoteCp.session_id, localCp.session_id);
      assert.equal(remoteCp.replicator, 'pouchdb');
      assert.ok(Array.isArray(remoteCp.history) && remoteCp.history.length >= 1);
      assert.match(remoteCp._rev, /^0-\d+$/, 'a _local doc rev is 0-N');
      const raw = await http('GET', `${fx.server.url}/${name}/${cpId}`);
      assert.equal(raw.status, 200);
      assert.equal(raw.body.last_seq, first.last_seq);
      // _local docs stay out of _all_docs and _changes.
      const all = await remote.allDocs();
      assert.ok(!all.rows.some((r) => r.id.startsWith('_local/')));

      // Second run: starts from the checkpoint, reads and writes nothing.
      rec.log.length = 0;
      const second = await run();
      assert.equal(second.ok, true);
      assert.equal(second.docs_read, 0);
      assert.equal(second.docs_written, 0);
      if (direction === 'pull') {
        const reqs = changesRequests(rec.log);
        assert.ok(reqs.length >= 1);
        assert.equal(reqs[0].query.since, String(first.last_seq), 'the pull resumed from the checkpoint');
        assert.equal(reqs.reduce((n, r) => n + r.changesRows, 0), 0, 'no change rows were sent again');
      } else {
        // Pushing, the server is the target: no documents were offered to it again.
        assert.ok(!rec.log.some((e) => e.path.endsWith('/_revs_diff') || e.path.endsWith('/_bulk_docs')), JSON.stringify(rec.log.map((e) => `${e.method} ${e.path}`)));
      }
      assert.deepEqual(checkpointIds(rec.log), [], 'nothing new: the checkpoint is not rewritten');

      // A new change after the checkpoint is the only thing the third run moves.
      await seedInto.put({ _id: 'after-checkpoint', v: 1 });
      rec.log.length = 0;
      const third = await run();
      assert.equal(third.docs_written, 1);
      assert.equal(third.docs_read, 1);
      await local.destroy();
    });
  }

  it('two-way sync of concurrent edits gives the same winner and conflicts on both sides', T, async () => {
    const local = memoryDb('sync');
    const remote = fx.server.db(uniqueName('sync'));
    const r = await local.put({ _id: 'shared', v: 0 });
    await local.replicate.to(remote);
    // Edit on both sides from the same parent.
    await local.put({ _id: 'shared', _rev: r.rev, v: 'local' });
    await remote.put({ _id: 'shared', _rev: r.rev, v: 'remote' });
    await local.put({ _id: 'local-only' });
    await remote.put({ _id: 'remote-only' });
    const res = await local.sync(remote);
    assert.equal(res.push.ok, true);
    assert.equal(res.pull.ok, true);
    const l = await local.get('shared', { conflicts: true });
    const s = await remote.get('shared', { conflicts: true });
    assert.equal(l._rev, s._rev);
    assert.equal(l.v, s.v);
    assert.deepEqual(l._conflicts, s._conflicts);
    assert.equal(s._conflicts.length, 1);
    for (const id of ['local-only', 'remote-only']) {
      await local.get(id);
      await remote.get(id);
    }
    // Resolve on the server, sync again: resolved on both sides.
    await remote.remove('shared', s._conflicts[0]);
    await local.sync(remote);
    const l2 = await local.get('shared', { conflicts: true });
    assert.equal(l2._conflicts, undefined);
    assert.equal(l2._rev, s._rev);
    assert.deepEqual(await snapshot(local), await snapshot(remote));
    await local.destroy();
  });

  it('incremental updates of documents with attachments, both ways', T, async () => {
    const local = memoryDb('inc-att');
    const remote = fx.server.db(uniqueName('inc-att'));
    await local.put({
      _id: 'doc',
      v: 1,
      _attachments: {
        'a.txt': { content_type: 'text/plain', data: Buffer.from('text one').toString('base64') },
        'b.bin': { content_type: 'application/octet-stream', data: Buffer.from([1, 2, 3]).toString('base64') },
      },
    });
    await local.replicate.to(remote);
    // Update the body only (stubs), locally, and push.
    const d1 = await local.get('doc');
    await local.put({ ...d1, v: 2 });
    const p2 = await local.replicate.to(remote);
    assert.equal(p2.docs_written, 1);
    const r2 = await remote.get('doc', { attachments: true });
    assert.equal(r2.v, 2);
    assert.equal(Buffer.from(r2._attachments['a.txt'].data, 'base64').toString(), 'text one');
    // Add and replace attachments on the server, pull.
    const s1 = await remote.putAttachment('doc', 'c.txt', r2._rev, Buffer.from('added on server'), 'text/plain');
    await remote.putAttachment('doc', 'a.txt', s1.rev, Buffer.from('text two'), 'text/plain');
    const p3 = await local.replicate.from(remote);
    assert.equal(p3.docs_written, 1);
    const l3 = await local.get('doc', { attachments: true, binary: true });
    assert.equal(l3._attachments['a.txt'].data.toString(), 'text two');
    assert.equal(l3._attachments['c.txt'].data.toString(), 'added on server');
    assert.deepEqual([...l3._attachments['b.bin'].data], [1, 2, 3]);
    assert.deepEqual(await snapshot(local), await snapshot(remote));
    await local.destroy();
  });

  it('filtered replication: doc_ids and selector, pull and push', T, async () => {
    const remote = fx.server.db(uniqueName('filtered'));
    await remote.bulkDocs([
      { _id: 'apple', type: 'fruit' },
      { _id: 'pear', type: 'fruit' },
      { _id: 'leek', type: 'veg' },
      { _id: '_design/app', views: {} },
    ]);
    const byIds = memoryDb('filtered-ids');
    const r1 = await byIds.replicate.from(remote, { doc_ids: ['pear', 'leek', 'nope'] });
    assert.equal(r1.docs_written, 2);
    assert.deepEqual((await byIds.allDocs()).rows.map((r) => r.id), ['leek', 'pear']);

    const bySel = memoryDb('filtered-sel');
    const r2 = await bySel.replicate.from(remote, { selector: { type: 'fruit' } });
    assert.equal(r2.docs_written, 2);
    assert.deepEqual((await bySel.allDocs()).rows.map((r) => r.id), ['apple', 'pear']);
    // A later matching change is picked up from the filtered checkpoint.
    await remote.put({ _id: 'kiwi', type: 'fruit' });
    await remote.put({ _id: 'carrot', type: 'veg' });
    const r3 = await bySel.replicate.from(remote, { selector: { type: 'fruit' } });
    assert.equal(r3.docs_written, 1);
    assert.deepEqual((await bySel.allDocs()).rows.map((r) => r.id), ['apple', 'kiwi', 'pear']);

    // Pushing a subset (the filter runs locally) and a design document.
    const src = memoryDb('filtered-push');
    await src.bulkDocs([{ _id: 'p1', keep: true }, { _id: 'p2', keep: false }, { _id: '_design/pushed', views: {} }]);
    const target = fx.server.db(uniqueName('filtered-push'));
    const r4 = await src.replicate.to(target, { selector: { $or: [{ keep: true }, { views: { $exists: true } }] } });
    assert.equal(r4.docs_written, 2);
    assert.deepEqual((await target.allDocs()).rows.map((r) => r.id), ['_design/pushed', 'p1']);
    await Promise.all([byIds.destroy(), bySel.destroy(), src.destroy()]);
  });

  it('live replication carries a change made after it started', T, async () => {
    const local = memoryDb('live');
    const remote = fx.server.db(uniqueName('live'));
    await remote.put({ _id: 'first' });
    const rep = local.replicate.from(remote, { live: true });
    try {
      await waitForDoc(local, 'first');
      await remote.put({ _id: 'second', v: 2 });
      const doc = await waitForDoc(local, 'second');
      assert.equal(doc.v, 2);
    } finally {
      rep.cancel();
    }
    await local.destroy();
  });
  it('live two-way sync converges while both sides are written to', T, async () => {
    const local = memoryDb('live-sync');
    const remote = fx.server.db(uniqueName('live-sync'));
    const sync = local.sync(remote, { live: true, retry: false });
    sync.on('error', () => {});
    try {
      const writes = [];
      for (let i = 0; i < 10; i++) {
        writes.push(local.put({ _id: `l-${i}`, i }));
        writes.push(remote.put({ _id: `r-${i}`, i }));
      }
      await Promise.all(writes);
      for (const id of ['l-9', 'r-9', 'l-0', 'r-0']) {
        await waitForDoc(local, id);
        await waitForDoc(remote, id);
      }
      const deadline = Date.now() + 10_000;
      while ((await local.info()).doc_count < 20 || (await remote.info()).doc_count < 20) {
        if (Date.now() > deadline) throw new Error('live sync did not converge');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      sync.cancel();
    }
    assert.deepEqual(await snapshot(local), await snapshot(remote));
    await local.destroy();
  });
});

async function waitForDoc(db, id, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await db.get(id);
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    if (Date.now() > deadline) throw new Error(`${id} did not arrive within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
