// 9. What PouchDB's own integration suite (pouchdb/pouchdb tests/integration, run with upstream's
// CouchDB expectations) asserts of a CouchDB, through the real PouchDB client: each case is one of
// the differences measured against Apache CouchDB 3.4.3 (../shared/notes/couchdb-differences.md,
// Part A), and each call must settle — an answer whose shape PouchDB's callback cannot handle
// would hang it, and the test's timeout would say so.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { serverFixture, uniqueName, memoryDb } from './lib/harness.mjs';

const T = { timeout: 20_000 };

async function rejectsWith(promise, status, name) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status} (${err.message})`);
    if (name !== undefined) assert.equal(err.name, name);
    return true;
  });
}

describe('CouchDB expectations of PouchDB’s suite', { timeout: 120_000 }, () => {
  const fx = serverFixture({ before, after });
  const fresh = () => fx.server.db(uniqueName('expect'));

  it('A1: opaque revision ids (bulk_docs new_edits=false, get ?rev, revsDiff, open_revs)', T, async () => {
    const db = fresh();
    assert.deepEqual(await db.bulkDocs([{ _id: 'frog', _rev: '1-x', _revisions: { start: 1, ids: ['x'] } }], { new_edits: false }), []);
    assert.equal((await db.get('frog'))._rev, '1-x');
    await rejectsWith(db.get('frog', { rev: '2-g' }), 404, 'not_found');
    const diff = await db.revsDiff({ frog: ['1-x', '2-randomid'] });
    assert.deepEqual(diff, { frog: { missing: ['2-randomid'], possible_ancestors: ['1-x'] } });
    const open = await db.get('frog', { open_revs: ['1-nope'] });
    assert.equal(open.length, 1);
    assert.equal(open[0].missing, '1-nope');
    // A stale made-up revision on an interactive write is a conflict naming the document.
    await db.put({ _id: '2', v: 1 });
    const rows = await db.bulkDocs([{ _id: '2', _rev: '3-totally_fake_rev', v: 2 }]);
    assert.equal(rows[0].id, '2');
    assert.equal(rows[0].name ?? rows[0].error, 'conflict');
  });

  it('A5: an invalid document fails the whole bulkDocs call with 400', T, async () => {
    const db = fresh();
    await rejectsWith(db.bulkDocs([{ _zing: 4 }, { _zoom: 'hello' }]), 400, 'doc_validation');
    await rejectsWith(db.bulkDocs([{ _id: '_invalid', foo: 'bar' }, { _id: 'bin_doc' }]), 400, 'illegal_docid');
    await rejectsWith(db.bulkDocs([{ _id: 'foo', integer: 1 }], { new_edits: false }), 400, 'bad_request');
    assert.equal((await db.info()).doc_count, 0);
  });

  it('A6: text attachments get CouchDB’s digest', T, async () => {
    const db = fresh();
    await db.put({ _id: 'bin_doc', _attachments: { 'foo.txt': { content_type: 'text/plain', data: 'VGhpcyBpcyBhIGJhc2U2NCBlbmNvZGVkIHRleHQ=' } } });
    const doc = await db.get('bin_doc');
    assert.equal(doc._attachments['foo.txt'].digest, 'md5-qUUYqS41RhwF0TrCsTAxFg==');
    assert.equal(doc._attachments['foo.txt'].length, 29);
    const empty = await db.putAttachment('empty', 'e.txt', Buffer.from(''), 'text/plain');
    const got = await db.get('empty');
    assert.equal(empty.ok, true);
    assert.equal(got._attachments['e.txt'].digest, 'md5-cCkGbCesb17xjWYNV0GXmg==');
  });

  it('A8: getAttachment on a _local document is a 400', T, async () => {
    const db = fresh();
    await db.put({ _id: '_local/bin_doc' });
    // (PouchDB reads attachment errors without their JSON body: the status is what it sees.)
    await rejectsWith(db.getAttachment('_local/bin_doc', 'foo.txt'), 400);
    await rejectsWith(db.getAttachment('_local/not_a_doc', 'not-real.txt'), 400);
  });

  it('A9, A10, A14: allDocs key, keys and descending', T, async () => {
    const db = fresh();
    await db.bulkDocs([{ _id: '0' }, { _id: '1' }, { _id: '2' }, { _id: '3' }]);
    const three = await db.get('3');
    await db.remove(three);
    await rejectsWith(db.allDocs({ keys: ['2', '0'], startkey: 'a' }), 400, 'query_parse_error');
    await rejectsWith(db.allDocs({ keys: ['2', '0'], key: '1' }), 400, 'query_parse_error');
    const byKey = await db.allDocs({ key: '3' });
    assert.deepEqual(byKey.rows, []);
    const desc = await db.allDocs({ keys: ['2', '0', '1000'], descending: true });
    assert.deepEqual(desc.rows.map((r) => r.key), ['1000', '0', '2']);
    assert.equal(desc.rows[0].error, 'not_found');
  });

  it('A11: a _local document written with _deleted is gone', T, async () => {
    const db = fresh();
    const put = await db.put({ _id: '_local/foo' });
    const del = await db.put({ _id: '_local/foo', _rev: put.rev, _deleted: true });
    assert.equal(del.rev, '0-0');
    await rejectsWith(db.get('_local/foo'), 404, 'not_found');
    await db.put({ _id: '_local/godzilla' });
    const rows = await db.bulkDocs([{ _id: '_local/godzilla', _rev: '0-1', _deleted: true }]);
    assert.equal(rows[0].rev, '0-0');
    await rejectsWith(db.get('_local/godzilla'), 404, 'not_found');
  });

  it('A12: replicating leaves whose _rev disagrees with _revisions keeps _revisions', T, async () => {
    const db = fresh();
    assert.deepEqual(await db.bulkDocs([{ value: 'db1', _id: 'foo', _rev: '3-c', _revisions: { start: 2, ids: ['c', 'a'] } }], { new_edits: false }), []);
    assert.equal((await db.get('foo'))._rev, '2-c');
  });

  it('A15: replicator fields are kept', T, async () => {
    const db = fresh();
    const [row] = await db.bulkDocs([{ _replication_id: 'test', _replication_state: 'triggered', _replication_state_time: 1, _replication_stats: {} }]);
    const doc = await db.get(row.id);
    assert.equal(doc._replication_state, 'triggered');
  });

  it('A2–A4, A7: design-document JavaScript answers as CouchDB (filters, views, validation)', T, async () => {
    const db = fresh();
    await db.put({
      _id: '_design/foo',
      filters: { even: 'function (doc) { return doc.n % 2 === 0; }' },
      views: { scores: { map: 'function (doc) { if (doc.n) emit(doc.n); }' } },
    });
    await db.bulkDocs([1, 2, 3, 4].map((n) => ({ _id: `d${n}`, n })));
    const even = await db.changes({ filter: 'foo/even', since: 0 });
    assert.deepEqual(even.results.map((r) => r.id).sort(), ['d2', 'd4']);
    await rejectsWith(db.changes({ filter: 'nope/even', since: 0 }), 404, 'not_found');
    const rows = (await db.query('foo/scores', { reduce: false })).rows;
    assert.deepEqual(rows.map((r) => [r.key, r.id]), [[1, 'd1'], [2, 'd2'], [3, 'd3'], [4, 'd4']]);
    await rejectsWith(db.query('foo/nope'), 404, 'not_found');
    await rejectsWith(db.changes({ filter: '_view', since: 0 }), 400, 'bad_request');
    const viewed = await db.changes({ filter: '_view', view: 'foo/scores', since: 0 });
    assert.deepEqual(viewed.results.map((r) => r.id).sort(), ['d1', 'd2', 'd3', 'd4']);
    // validate_doc_update runs: `forbidden` refuses the write with 403, the rest go through.
    await db.put({
      _id: '_design/validate',
      validate_doc_update: "function (newDoc) { if (newDoc.foo === undefined) throw({forbidden: 'Document must have a foo.'}); }",
    });
    await rejectsWith(db.put({ _id: 'x' }), 403, 'forbidden');
    assert.equal((await db.put({ _id: 'y', foo: 1 })).ok, true);
  });

  it('A1 in replication: documents with opaque revision ids replicate both ways', T, async () => {
    const remote = fresh();
    const local = memoryDb('expect-local');
    assert.deepEqual(await local.bulkDocs([{ _id: 'a', _rev: '1-x', v: 1 }, { _id: 'b', _rev: '2-some', _revisions: { start: 2, ids: ['some', 'even'] }, v: 2 }], { new_edits: false }), []);
    const pushed = await local.replicate.to(remote);
    assert.equal(pushed.docs_written, 2);
    assert.equal((await remote.get('b', { revs: true }))._revisions.ids.join(','), 'some,even');
    const back = memoryDb('expect-back');
    const pulled = await back.replicate.from(remote);
    assert.equal(pulled.docs_written, 2);
    assert.equal((await back.get('a'))._rev, '1-x');
    await local.destroy();
    await back.destroy();
  });
});
