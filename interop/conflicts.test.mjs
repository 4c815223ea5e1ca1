// 2. Conflicts: leaves written with new_edits=false, the winner and _conflicts by CouchDB's rule
// (non-deleted first, then the longest path, then the highest rev id), cross-checked against a
// local in-memory PouchDB holding the same revisions, and resolution by deleting leaves.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { serverFixture, uniqueName, memoryDb, couchWinner, http } from './lib/harness.mjs';

const T = { timeout: 20_000 };

/** A 32-hex-digit rev hash made of one repeated character (stable ordering for the tests). */
const h = (c) => c.repeat(32);

/** A revision of `id` with the given path (newest first), e.g. rev('d', ['c','b','a']) = 3-ccc…. */
function rev(id, path, body = {}, deleted = false) {
  const doc = {
    _id: id,
    _rev: `${path.length}-${h(path[0])}`,
    _revisions: { start: path.length, ids: path.map(h) },
    ...body,
  };
  if (deleted) doc._deleted = true;
  return doc;
}

/** Scenarios: leaves per document, and the expected winner / _conflicts / _deleted_conflicts. */
const SCENARIOS = {
  // Same length: the highest rev id wins.
  'same-length': {
    docs: [rev('same-length', ['b', '1'], { from: 'b' }), rev('same-length', ['a', '1'], { from: 'a' }), rev('same-length', ['e', '1'], { from: 'e' })],
    winner: `2-${h('e')}`,
    conflicts: [`2-${h('b')}`, `2-${h('a')}`],
    deletedConflicts: [],
  },
  // The longer path wins over a higher rev id.
  longest: {
    docs: [rev('longest', ['c', '2', '1'], { from: 'c' }), rev('longest', ['f', '1'], { from: 'f' })],
    winner: `3-${h('c')}`,
    conflicts: [`2-${h('f')}`],
    deletedConflicts: [],
  },
  // A deleted leaf loses against any live one, however long.
  'deleted-loses': {
    docs: [
      rev('deleted-loses', ['9', '8', '7', '1'], {}, true),
      rev('deleted-loses', ['a', '1'], { from: 'a' }),
      rev('deleted-loses', ['d', '1'], { from: 'd' }),
    ],
    winner: `2-${h('d')}`,
    conflicts: [`2-${h('a')}`],
    deletedConflicts: [`4-${h('9')}`],
  },
};

const ALL_DOCS = Object.values(SCENARIOS).flatMap((s) => s.docs);

/** GET straight from the server (for options PouchDB's HTTP adapter does not pass on). */
async function rawGet(db, id, query) {
  const res = await http('GET', `${db.name}/${encodeURIComponent(id)}?${query}`);
  assert.equal(res.status, 200, res.text);
  return res.body;
}

function leavesOf(s) {
  return s.docs.map((d) => ({ rev: d._rev, deleted: !!d._deleted }));
}

describe('conflicts', { timeout: 60_000 }, () => {
  const fx = serverFixture({ before, after });
  let remote;
  let local;
  before(async () => {
    remote = fx.server.db(uniqueName('conflicts'));
    local = memoryDb('conflicts');
    // new_edits=false: nothing is reported for successful writes.
    assert.deepEqual(await remote.bulkDocs(structuredClone(ALL_DOCS), { new_edits: false }), []);
    assert.deepEqual(await local.bulkDocs(structuredClone(ALL_DOCS), { new_edits: false }), []);
  });

  it('the expectations follow CouchDB’s winner rule', () => {
    for (const s of Object.values(SCENARIOS)) assert.equal(couchWinner(leavesOf(s)), s.winner);
  });

  for (const [id, s] of Object.entries(SCENARIOS)) {
    it(`winner and _conflicts: ${id}`, T, async () => {
      const r = await remote.get(id, { conflicts: true });
      // PouchDB's HTTP adapter does not forward deleted_conflicts: ask the server directly.
      r._deleted_conflicts = (await rawGet(remote, id, 'deleted_conflicts=true'))._deleted_conflicts;
      const l = await local.get(id, { conflicts: true, deleted_conflicts: true });
      assert.equal(r._rev, s.winner, 'server winner');
      assert.equal(l._rev, s.winner, 'local PouchDB winner');
      // CouchDB lists _conflicts in winner order (longest, then highest rev id first).
      assert.deepEqual(r._conflicts ?? [], s.conflicts, 'server _conflicts');
      // PouchDB's own order of _conflicts differs from CouchDB's: compare the local side as a set.
      assert.deepEqual([...(l._conflicts ?? [])].sort(), [...s.conflicts].sort(), 'local _conflicts');
      assert.deepEqual([...(r._conflicts ?? [])].sort(), [...(l._conflicts ?? [])].sort(), 'same conflict set on both');
      assert.deepEqual(r._deleted_conflicts ?? [], s.deletedConflicts, 'server _deleted_conflicts');
      // (PouchDB's local adapters do not implement deleted_conflicts.)
      // The winner's body is the winning leaf's body.
      const winnerDoc = s.docs.find((d) => d._rev === s.winner);
      const { _revisions, ...expectedBody } = winnerDoc;
      assert.deepEqual({ ...r, _conflicts: undefined, _deleted_conflicts: undefined }, { ...expectedBody, _conflicts: undefined, _deleted_conflicts: undefined });
    });
  }

  it('open_revs=all lists every leaf on both sides', T, async () => {
    for (const [id, s] of Object.entries(SCENARIOS)) {
      const norm = (list) =>
        list
          .map((x) => ({ rev: x.ok._rev, deleted: !!x.ok._deleted }))
          .sort((a, b) => (a.rev < b.rev ? -1 : 1));
      const r = await remote.get(id, { open_revs: 'all' });
      const l = await local.get(id, { open_revs: 'all' });
      const expected = leavesOf(s).sort((a, b) => (a.rev < b.rev ? -1 : 1));
      assert.deepEqual(norm(r), expected, `server leaves of ${id}`);
      assert.deepEqual(norm(l), expected, `local leaves of ${id}`);
    }
  });

  it('allDocs and changes report the same winner as get', T, async () => {
    const all = await remote.allDocs({ keys: Object.keys(SCENARIOS) });
    for (const row of all.rows) assert.equal(row.value.rev, SCENARIOS[row.id].winner, row.id);
    const ch = await remote.changes({ style: 'all_docs' });
    for (const row of ch.results) {
      const s = SCENARIOS[row.id];
      assert.equal(row.changes[0].rev, s.winner, `changes winner of ${row.id}`);
      assert.deepEqual(
        row.changes.map((c) => c.rev).sort(),
        s.docs.map((d) => d._rev).sort(),
        `changes leaves of ${row.id}`,
      );
    }
  });

  it('a conflicting leaf with the same history on both peers is identical after replication', T, async () => {
    const pulled = memoryDb('conflicts-pulled');
    await pulled.replicate.from(remote);
    for (const [id, s] of Object.entries(SCENARIOS)) {
      const p = await pulled.get(id, { conflicts: true });
      assert.equal(p._rev, s.winner);
      assert.deepEqual([...(p._conflicts ?? [])].sort(), [...s.conflicts].sort());
    }
    await pulled.destroy();
  });

  it('resolving by deleting the losing leaves', T, async () => {
    // Fresh copies of the "same-length" scenario, to resolve on both sides.
    const id = 'resolve-me';
    const docs = [rev(id, ['b', '1'], { from: 'b' }), rev(id, ['a', '1'], { from: 'a' }), rev(id, ['e', '1'], { from: 'e' })];
    await remote.bulkDocs(structuredClone(docs), { new_edits: false });
    await local.bulkDocs(structuredClone(docs), { new_edits: false });

    for (const db of [remote, local]) {
      const side = db === remote ? 'server' : 'local';
      const before = await db.get(id, { conflicts: true });
      assert.equal(before._rev, `2-${h('e')}`, side);
      assert.deepEqual([...before._conflicts].sort(), [`2-${h('a')}`, `2-${h('b')}`], side);

      // Delete one loser: it leaves _conflicts, the winner is unchanged.
      const del = await db.remove(id, `2-${h('b')}`);
      assert.match(del.rev, /^3-/, side);
      const mid = await db.get(id, { conflicts: true });
      assert.equal(mid._rev, `2-${h('e')}`, side);
      assert.deepEqual(mid._conflicts, [`2-${h('a')}`], side);
      if (db === remote) {
        const raw = await rawGet(remote, id, 'deleted_conflicts=true');
        assert.deepEqual(raw._deleted_conflicts, [del.rev], side);
      }

      // Delete the current winner: the remaining live leaf wins, with no conflicts left.
      const del2 = await db.remove(id, `2-${h('e')}`);
      const after = await db.get(id, { conflicts: true });
      assert.equal(after._rev, `2-${h('a')}`, side);
      assert.equal(after.from, 'a', side);
      assert.equal(after._conflicts, undefined, side);

      // Updating the survivor extends it; all tombstones stay tombstones.
      const upd = await db.put({ ...after, resolved: true });
      assert.match(upd.rev, /^3-/, side);
      const leaves = await db.get(id, { open_revs: 'all' });
      const live = leaves.filter((x) => !x.ok._deleted).map((x) => x.ok._rev);
      assert.deepEqual(live, [upd.rev], side);
      assert.equal(leaves.filter((x) => x.ok._deleted).length, 2, side);
      assert.ok(leaves.some((x) => x.ok._rev === del2.rev), side);
    }
  });

  it('a document whose leaves are all deleted is deleted', T, async () => {
    const id = 'all-deleted';
    const docs = [rev(id, ['b', 'a'], {}, true), rev(id, ['c', 'a'], {}, true)];
    for (const db of [remote, local]) {
      await db.bulkDocs(structuredClone(docs), { new_edits: false });
      await assert.rejects(db.get(id), (err) => err.status === 404);
      const row = (await db.allDocs({ keys: [id] })).rows[0];
      assert.equal(row.value.deleted, true);
      assert.equal(row.value.rev, `2-${h('c')}`);
    }
  });

  it('new_edits=false with an existing revision is a no-op', T, async () => {
    const before = await remote.get('longest', { conflicts: true });
    assert.deepEqual(await remote.bulkDocs([rev('longest', ['c', '2', '1'], { from: 'changed' })], { new_edits: false }), []);
    const after = await remote.get('longest', { conflicts: true });
    assert.deepEqual(after, before);
  });

  it('new_edits=false: rev ids are opaque as in CouchDB, but 32 characters must be hex', T, async () => {
    // CouchDB 3.4.3 (measured): `1-xyz` is stored as it is; a 32-character id that is not hex is
    // 400 bad_request "Invalid rev format" and nothing of the request is written.
    assert.deepEqual(await remote.bulkDocs([{ _id: 'oddrev', _rev: '1-xyz', v: 1 }], { new_edits: false }), []);
    assert.equal((await remote.get('oddrev'))._rev, '1-xyz');
    const res = await http('POST', `${remote.name}/_bulk_docs`, {
      body: { new_edits: false, docs: [{ _id: 'fine', _rev: '1-abc' }, { _id: 'badrev', _rev: '1-0123456789abcdef0123456789abcdeg', v: 1 }] },
    });
    assert.equal(res.status, 400, res.text);
    assert.deepEqual(res.body, { error: 'bad_request', reason: 'Invalid rev format' });
    await assert.rejects(remote.get('fine'), (err) => err.status === 404);
    await assert.rejects(remote.get('badrev'), (err) => err.status === 404);
    // Through PouchDB (which only checks the N- prefix itself) the request is refused too.
    await assert.rejects(
      remote.bulkDocs([{ _id: 'badrev', _rev: '1-0123456789abcdef0123456789abcdeZ', v: 1 }], { new_edits: false }),
      (err) => err.status === 400,
    );
  });
});
