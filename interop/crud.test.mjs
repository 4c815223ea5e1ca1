// 1. Documents through PouchDB's HTTP adapter: CRUD, conflicts on stale revisions, 404 kinds,
// _all_docs options, _bulk_docs per-document errors, database info counts, _local documents.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { serverFixture, uniqueName, http, splitRev } from './lib/harness.mjs';

const T = { timeout: 20_000 };

async function rejectsWith(promise, status, reason) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status} (${err.message})`);
    if (reason !== undefined) assert.equal(err.reason ?? err.message, reason);
    return true;
  });
}

const errRow = (r) => ({ id: r.id, error: r.error, reason: r.reason, status: r.status });

describe('CRUD through PouchDB', { timeout: 60_000 }, () => {
  const fx = serverFixture({ before, after });
  const fresh = () => fx.server.db(uniqueName('crud'));

  it('put, get, update and remove a document', T, async () => {
    const db = fresh();
    const created = await db.put({ _id: 'doc1', title: 'hello', n: 1, nested: { a: [1, 2, 3] } });
    assert.equal(created.ok, true);
    assert.equal(created.id, 'doc1');
    assert.match(created.rev, /^1-[0-9a-f]{32}$/);

    const got = await db.get('doc1');
    assert.deepEqual(got, { _id: 'doc1', _rev: created.rev, title: 'hello', n: 1, nested: { a: [1, 2, 3] } });

    got.n = 2;
    const updated = await db.put(got);
    assert.match(updated.rev, /^2-[0-9a-f]{32}$/);
    const got2 = await db.get('doc1');
    assert.equal(got2.n, 2);
    assert.equal(got2._rev, updated.rev);

    // The previous revision is still readable by rev (no compaction happened).
    const old = await db.get('doc1', { rev: created.rev });
    assert.equal(old.n, 1);

    // revs: true gives the revision path.
    const withRevs = await db.get('doc1', { revs: true });
    assert.equal(withRevs._revisions.start, 2);
    assert.deepEqual(withRevs._revisions.ids, [splitRev(updated.rev)[1], splitRev(created.rev)[1]]);

    const removed = await db.remove(got2);
    assert.equal(removed.ok, true);
    assert.match(removed.rev, /^3-[0-9a-f]{32}$/);
  });

  it('rejects stale and missing revisions with 409 conflict', T, async () => {
    const db = fresh();
    const r1 = await db.put({ _id: 'c', v: 1 });
    const r2 = await db.put({ _id: 'c', _rev: r1.rev, v: 2 });
    // Stale rev.
    await rejectsWith(db.put({ _id: 'c', _rev: r1.rev, v: 3 }), 409);
    // Creating an existing document without a rev.
    await rejectsWith(db.put({ _id: 'c', v: 4 }), 409);
    // A rev that never existed.
    await rejectsWith(db.put({ _id: 'c', _rev: '2-0123456789abcdef0123456789abcdef', v: 5 }), 409);
    // Deleting with a stale rev.
    await rejectsWith(db.remove('c', r1.rev), 409);
    const cur = await db.get('c');
    assert.equal(cur._rev, r2.rev);
    assert.equal(cur.v, 2);
  });

  it('distinguishes a missing document from a deleted one', T, async () => {
    const db = fresh();
    await rejectsWith(db.get('never-existed'), 404, 'missing');

    const r1 = await db.put({ _id: 'gone', v: 1 });
    const del = await db.remove('gone', r1.rev);
    await rejectsWith(db.get('gone'), 404, 'deleted');

    // The tombstone itself is readable by rev.
    const tomb = await db.get('gone', { rev: del.rev });
    assert.equal(tomb._deleted, true);
    assert.equal(tomb._rev, del.rev);

    // Re-creating a deleted document without a rev continues the deleted branch (gen 3).
    const again = await db.put({ _id: 'gone', v: 'back' });
    assert.match(again.rev, /^3-/);
    assert.equal((await db.get('gone')).v, 'back');
  });

  it('PUT with _deleted:true deletes (status 200, as CouchDB)', T, async () => {
    const db = fresh();
    const name = db.name.split('/').pop();
    const r1 = await db.put({ _id: 'x', v: 1 });
    const res = await http('PUT', `${fx.server.url}/${name}/x`, { body: { _rev: r1.rev, _deleted: true } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.ok, true);
    await rejectsWith(db.get('x'), 404, 'deleted');
  });

  describe('allDocs', () => {
    let db;
    let revs;
    before(async () => {
      db = fresh();
      const docs = [];
      for (let i = 0; i < 10; i++) docs.push({ _id: `doc-${String(i).padStart(2, '0')}`, i });
      const res = await db.bulkDocs(docs);
      revs = Object.fromEntries(res.map((r) => [r.id, r.rev]));
      const del = await db.remove('doc-05', revs['doc-05']);
      revs['doc-05'] = del.rev;
    });
    const ids = (res) => res.rows.map((r) => r.id);

    it('lists all live documents in id order', T, async () => {
      const res = await db.allDocs();
      assert.equal(res.total_rows, 9);
      assert.equal(res.offset, 0);
      assert.deepEqual(ids(res), ['doc-00', 'doc-01', 'doc-02', 'doc-03', 'doc-04', 'doc-06', 'doc-07', 'doc-08', 'doc-09']);
      for (const row of res.rows) {
        assert.equal(row.key, row.id);
        assert.deepEqual(row.value, { rev: revs[row.id] });
        assert.equal(row.doc, undefined);
      }
    });

    it('startkey / endkey / inclusive_end', T, async () => {
      const res = await db.allDocs({ startkey: 'doc-02', endkey: 'doc-04' });
      assert.deepEqual(ids(res), ['doc-02', 'doc-03', 'doc-04']);
      assert.equal(res.offset, 2);
      assert.equal(res.total_rows, 9);
      const excl = await db.allDocs({ startkey: 'doc-02', endkey: 'doc-04', inclusive_end: false });
      assert.deepEqual(ids(excl), ['doc-02', 'doc-03']);
      const across = await db.allDocs({ startkey: 'doc-04', endkey: 'doc-07' });
      assert.deepEqual(ids(across), ['doc-04', 'doc-06', 'doc-07']);
      const prefix = await db.allDocs({ startkey: 'doc-0', endkey: 'doc-0\ufff0' });
      assert.equal(prefix.rows.length, 9);
      const none = await db.allDocs({ startkey: 'zzz' });
      assert.deepEqual(none.rows, []);
    });

    it('limit / skip', T, async () => {
      const res = await db.allDocs({ limit: 3, skip: 2 });
      assert.deepEqual(ids(res), ['doc-02', 'doc-03', 'doc-04']);
      assert.equal(res.offset, 2);
      const page2 = await db.allDocs({ startkey: 'doc-04', limit: 2, skip: 1 });
      assert.deepEqual(ids(page2), ['doc-06', 'doc-07']);
      const zero = await db.allDocs({ limit: 0 });
      assert.deepEqual(zero.rows, []);
      assert.equal(zero.total_rows, 9);
    });

    it('descending', T, async () => {
      const res = await db.allDocs({ descending: true });
      assert.deepEqual(ids(res), ['doc-09', 'doc-08', 'doc-07', 'doc-06', 'doc-04', 'doc-03', 'doc-02', 'doc-01', 'doc-00']);
      const range = await db.allDocs({ descending: true, startkey: 'doc-07', endkey: 'doc-03' });
      assert.deepEqual(ids(range), ['doc-07', 'doc-06', 'doc-04', 'doc-03']);
      const lim = await db.allDocs({ descending: true, limit: 2, skip: 1 });
      assert.deepEqual(ids(lim), ['doc-08', 'doc-07']);
    });

    it('include_docs', T, async () => {
      const res = await db.allDocs({ include_docs: true, startkey: 'doc-08' });
      assert.deepEqual(
        res.rows.map((r) => r.doc),
        [
          { _id: 'doc-08', _rev: revs['doc-08'], i: 8 },
          { _id: 'doc-09', _rev: revs['doc-09'], i: 9 },
        ],
      );
    });

    it('keys: order kept, missing and deleted rows as CouchDB', T, async () => {
      const res = await db.allDocs({ keys: ['doc-03', 'nope', 'doc-05', 'doc-01', 'doc-03'], include_docs: true });
      assert.equal(res.rows.length, 5);
      assert.equal(res.rows[0].id, 'doc-03');
      assert.deepEqual(res.rows[0].doc, { _id: 'doc-03', _rev: revs['doc-03'], i: 3 });
      assert.deepEqual(res.rows[1], { key: 'nope', error: 'not_found' });
      // A deleted document: its tombstone rev, deleted: true, and doc null.
      assert.deepEqual(res.rows[2], { id: 'doc-05', key: 'doc-05', value: { rev: revs['doc-05'], deleted: true }, doc: null });
      assert.equal(res.rows[3].id, 'doc-01');
      assert.equal(res.rows[4].id, 'doc-03');
      const noDocs = await db.allDocs({ keys: ['doc-09', 'doc-00'] });
      assert.deepEqual(ids(noDocs), ['doc-09', 'doc-00']);
      assert.equal(noDocs.rows[0].doc, undefined);
    });
  });

  it('bulkDocs reports per-document errors and writes the rest', T, async () => {
    const db = fresh();
    const first = await db.bulkDocs([{ _id: 'b1', v: 1 }, { _id: 'b2', v: 1 }, { _id: 'b4', v: 1 }]);
    assert.equal(first.length, 3);
    for (const r of first) {
      assert.equal(r.ok, true);
      assert.match(r.rev, /^1-/);
    }
    const res = await db.bulkDocs([
      { _id: 'b1', _rev: first[0].rev, v: 2 }, // ok
      { _id: 'b2', _rev: '1-0123456789abcdef0123456789abcdef', v: 2 }, // stale rev
      { _id: 'b3', v: 1 }, // new
      { _id: 'b4', v: 2 }, // exists, no rev
      { v: 'generated id' }, // server picks the id
    ]);
    assert.equal(res.length, 5);
    assert.equal(res[0].ok, true);
    assert.equal(res[0].id, 'b1');
    assert.match(res[0].rev, /^2-/);
    // PouchDB turns error rows into Error objects carrying the server's fields.
    assert.deepEqual(errRow(res[1]), { id: 'b2', error: 'conflict', reason: 'Document update conflict.', status: 409 });
    assert.equal(res[2].ok, true);
    assert.equal(res[2].id, 'b3');
    assert.deepEqual(errRow(res[3]), { id: 'b4', error: 'conflict', reason: 'Document update conflict.', status: 409 });
    assert.equal(res[4].ok, true);
    assert.ok(typeof res[4].id === 'string' && res[4].id.length > 0);
    assert.equal((await db.get(res[4].id)).v, 'generated id');
    assert.equal((await db.get('b2')).v, 1);
    assert.equal((await db.get('b4')).v, 1);
    assert.equal((await db.get('b1')).v, 2);
  });

  it('bulkDocs can delete', T, async () => {
    const db = fresh();
    const [a] = await db.bulkDocs([{ _id: 'a', v: 1 }]);
    const [d] = await db.bulkDocs([{ _id: 'a', _rev: a.rev, _deleted: true }]);
    assert.equal(d.ok, true);
    assert.match(d.rev, /^2-/);
    await rejectsWith(db.get('a'), 404, 'deleted');
  });

  it('info reports doc_count, doc_del_count and a growing update_seq', T, async () => {
    const db = fresh();
    const empty = await db.info();
    assert.equal(empty.doc_count, 0);
    assert.equal(empty.doc_del_count, 0);
    const res = await db.bulkDocs([{ _id: 'x' }, { _id: 'y' }, { _id: 'z' }]);
    const mid = await db.info();
    assert.equal(mid.doc_count, 3);
    await db.remove('y', res[1].rev);
    const info = await db.info();
    assert.equal(info.doc_count, 2);
    assert.equal(info.doc_del_count, 1);
    assert.equal(info.db_name, db.name.split('/').pop());
    assert.ok(parseInt(info.update_seq, 10) > parseInt(mid.update_seq, 10), `${info.update_seq} after ${mid.update_seq}`);
    // _local documents are not counted.
    await db.put({ _id: '_local/cp', x: 1 });
    assert.equal((await db.info()).doc_count, 2);
  });

  it('document ids with slashes, spaces, unicode, percent signs; design documents', T, async () => {
    const db = fresh();
    const ids = ['a/b', 'with space', 'ünïcödé ✓', '100%', 'q?x=1&y', '+plus', '_design/app'];
    for (const id of ids) {
      const r = await db.put({ _id: id, id });
      assert.equal(r.id, id);
      const got = await db.get(id);
      assert.equal(got._id, id);
      assert.equal(got.id, id);
      const upd = await db.put({ ...got, v: 2 });
      assert.match(upd.rev, /^2-/, id);
    }
    const all = await db.allDocs();
    // _all_docs includes design documents and sorts by raw code point order.
    const expectedOrder = [...ids].sort();
    assert.deepEqual(all.rows.map((r) => r.id), expectedOrder);
    const design = await db.allDocs({ startkey: '_design/', endkey: '_design/\ufff0' });
    assert.deepEqual(design.rows.map((r) => r.id), ['_design/app']);
    const del = await db.get('a/b');
    await db.remove(del);
    await assert.rejects(db.get('a/b'), (err) => err.status === 404);
  });

  it('revs_info, open_revs with a missing rev, latest', T, async () => {
    const db = fresh();
    const r1 = await db.put({ _id: 'r', v: 1 });
    const r2 = await db.put({ _id: 'r', _rev: r1.rev, v: 2 });
    const info = await db.get('r', { revs_info: true });
    assert.deepEqual(info._revs_info, [
      { rev: r2.rev, status: 'available' },
      { rev: r1.rev, status: 'available' },
    ]);
    const open = await db.get('r', { open_revs: [r2.rev, '9-0123456789abcdef0123456789abcdef'] });
    assert.equal(open.length, 2);
    assert.equal(open[0].ok._rev, r2.rev);
    assert.equal(open[1].missing, '9-0123456789abcdef0123456789abcdef');
    assert.equal(open[1].ok, undefined);
    // latest: asking for an old rev gives the leaf that descends from it.
    const latest = await db.get('r', { open_revs: [r1.rev], latest: true });
    assert.equal(latest[0].ok._rev, r2.rev);
  });

  it('bulkGet, as the replicator uses it', T, async () => {
    const db = fresh();
    const a = await db.put({ _id: 'a', v: 1 });
    const a2 = await db.put({ _id: 'a', _rev: a.rev, v: 2 });
    const res = await db.bulkGet({
      docs: [{ id: 'a', rev: a.rev }, { id: 'a', rev: a2.rev }, { id: 'a' }, { id: 'missing' }, { id: 'a', rev: '7-0123456789abcdef0123456789abcdef' }],
      revs: true,
    });
    assert.equal(res.results.length, 5);
    const [r0, r1, r2, r3, r4] = res.results;
    assert.equal(r0.docs[0].ok.v, 1);
    assert.equal(r1.docs[0].ok.v, 2);
    assert.deepEqual(r1.docs[0].ok._revisions, { start: 2, ids: [a2.rev.slice(2), a.rev.slice(2)] });
    assert.equal(r2.docs[0].ok._rev, a2.rev);
    assert.equal(r3.id, 'missing');
    assert.equal(r3.docs[0].error.error, 'not_found');
    assert.equal(r4.docs[0].error.error, 'not_found');
    assert.equal(r4.docs[0].error.rev, '7-0123456789abcdef0123456789abcdef');
  });

  it('allDocs with conflicts: true reports _conflicts on included docs', T, async () => {
    const db = fresh();
    await db.bulkDocs(
      [
        { _id: 'k', _rev: `1-${'a'.repeat(32)}`, _revisions: { start: 1, ids: ['a'.repeat(32)] }, v: 'a' },
        { _id: 'k', _rev: `1-${'b'.repeat(32)}`, _revisions: { start: 1, ids: ['b'.repeat(32)] }, v: 'b' },
      ],
      { new_edits: false },
    );
    const res = await db.allDocs({ include_docs: true, conflicts: true });
    assert.equal(res.rows[0].doc._rev, `1-${'b'.repeat(32)}`);
    assert.deepEqual(res.rows[0].doc._conflicts, [`1-${'a'.repeat(32)}`]);
  });

  it('destroy deletes the database; using the name again starts empty', T, async () => {
    const name = uniqueName('destroy');
    const db = fx.server.db(name);
    await db.put({ _id: 'x' });
    const res = await db.destroy();
    assert.equal(res.ok, true);
    const raw = await http('GET', `${fx.server.url}/${name}`);
    assert.equal(raw.status, 404);
    assert.equal(raw.body.error, 'not_found');
    const again = fx.server.db(name);
    assert.equal((await again.info()).doc_count, 0);
    await assert.rejects(again.get('x'), (err) => err.status === 404);
  });

  it('compact (through PouchDB) removes old revision bodies, keeps leaves', T, async () => {
    const db = fresh();
    const r1 = await db.put({ _id: 'c', v: 1 });
    const r2 = await db.put({ _id: 'c', _rev: r1.rev, v: 2 });
    const res = await db.compact();
    assert.equal(res.ok, true);
    assert.equal((await db.get('c')).v, 2);
    assert.equal((await db.get('c', { rev: r2.rev })).v, 2);
    await assert.rejects(db.get('c', { rev: r1.rev }), (err) => err.status === 404);
    // The history is still known.
    assert.deepEqual((await db.get('c', { revs: true }))._revisions.ids.length, 2);
  });

  it('raw HTTP: a rev in the query that differs from the body is 400 (CouchDB)', T, async () => {
    const db = fresh();
    const name = db.name.split('/').pop();
    const r1 = await db.put({ _id: 'm', v: 1 });
    const res = await http('PUT', `${fx.server.url}/${name}/m?rev=1-0123456789abcdef0123456789abcdef`, { body: { _rev: r1.rev, v: 2 } });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error, 'bad_request');
    assert.equal((await db.get('m')).v, 1);
  });

  it('raw HTTP: integers beyond 2^53 round-trip exactly (CouchDB keeps big integers)', T, async () => {
    const db = fresh();
    await db.info(); // creates the database
    const name = db.name.split('/').pop();
    const body = '{"big":12345678901234567890123,"neg":-9007199254740993,"f":1.5}';
    const put = await http('PUT', `${fx.server.url}/${name}/nums`, { body, headers: { 'Content-Type': 'application/json' } });
    assert.equal(put.status, 201, put.text);
    const got = await http('GET', `${fx.server.url}/${name}/nums`);
    assert.match(got.text, /"big":12345678901234567890123[,}]/);
    assert.match(got.text, /"neg":-9007199254740993[,}]/);
    assert.match(got.text, /"f":1\.5[,}]/);
  });

  it('a document body over max_document_size (8 MB) is 413 document_too_large (CouchDB)', T, async () => {
    const db = fresh();
    const doc = { _id: 'huge', text: 'x'.repeat(8_500_000) };
    await assert.rejects(db.put(doc), (err) => {
      assert.equal(err.status, 413);
      assert.equal(err.name, 'document_too_large');
      assert.equal(err.reason ?? err.message, 'huge');
      return true;
    });
  });

  it('_local documents: never conflict, not in allDocs or changes', T, async () => {
    const db = fresh();
    const a = await db.put({ _id: '_local/state', n: 1 });
    assert.equal(a.ok, true);
    assert.equal(a.rev, '0-1');
    const got = await db.get('_local/state');
    assert.equal(got.n, 1);
    const b = await db.put({ ...got, n: 2 });
    assert.equal(b.rev, '0-2');
    // CouchDB: a write to a _local doc always replaces it (no conflict on a stale or missing rev).
    const c = await db.put({ _id: '_local/state', n: 3 });
    assert.equal(c.ok, true);
    assert.equal((await db.get('_local/state')).n, 3);
    assert.deepEqual((await db.allDocs()).rows, []);
    assert.deepEqual((await db.changes()).results, []);
    const cur = await db.get('_local/state');
    await db.remove(cur);
    await rejectsWith(db.get('_local/state'), 404);
  });
});
