// Mango `_find` through the real PouchDB 9 client with pouchdb-find 9 (HTTP adapter): JSON
// indexes (createIndex, `exists`, partial indexes, getIndexes, deleteIndex), selectors
// ($gt/$lt, $in, $exists, $regex, $elemMatch, $or, nested fields), sort (and CouchDB's
// `no_usable_index` when no index serves it), limit/skip (and CouchDB's default limit of 25),
// bookmark paging, fields, explain, warnings; on documents written over HTTP, on documents
// replicated from a local PouchDB (updates, deletions, a conflict), and through the device hub.
//
// Every expectation is computed in JS from the documents the test wrote (a predicate per
// selector), never copied from a server's answer. Apache CouchDB 3.4's answers are the truth.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { PouchDB, serverFixture, uniqueName, memoryDb, http } from './lib/harness.mjs';

const require = createRequire(import.meta.url);
PouchDB.plugin(require('pouchdb-find'));

const T = { timeout: 30_000 };
const ALL = 1000; // a limit above every result set (CouchDB's default limit is 25)

// ---- the data -------------------------------------------------------------------------------

const NAMES = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
const KINDS = ['a', 'b', 'c'];

/** 40 documents with numbers, strings, arrays, optional and nested fields, and one without `n`. */
function makeDocs() {
  const docs = [];
  for (let i = 0; i < 40; i++) {
    const d = {
      _id: `p-${String(i).padStart(2, '0')}`,
      n: i,
      name: `${NAMES[i % 5]}-${i}`,
      kind: KINDS[i % 3],
      tags: [`t${i % 4}`, `u${i % 7}`],
      scores: [i % 9, (i * 7) % 23],
      nested: { x: i % 5, deep: { y: i % 2 === 0 } },
    };
    if (i % 2 === 0) d.opt = i / 2;
    docs.push(d);
  }
  docs.push({ _id: 'no-n', name: 'zeta-none', kind: 'a', tags: [], scores: [], nested: { x: 9 } });
  return docs;
}

/**
 * The queries and their truth: `pred` says which documents match (CouchDB's semantics for the
 * data above, where `n` is always a number when present).
 */
const isNum = (v) => typeof v === 'number';
const QUERIES = [
  { what: '$gt/$lt range', selector: { n: { $gt: 5, $lt: 17 } }, pred: (d) => isNum(d.n) && d.n > 5 && d.n < 17 },
  { what: '$gte/$lte range', selector: { n: { $gte: 30, $lte: 100 } }, pred: (d) => isNum(d.n) && d.n >= 30 && d.n <= 100 },
  { what: '$in', selector: { kind: { $in: ['a', 'c'] }, n: { $lt: 20 } }, pred: (d) => ['a', 'c'].includes(d.kind) && isNum(d.n) && d.n < 20 },
  { what: '$exists: true', selector: { opt: { $exists: true } }, pred: (d) => 'opt' in d },
  { what: '$exists: false', selector: { kind: 'b', opt: { $exists: false } }, pred: (d) => d.kind === 'b' && !('opt' in d) },
  {
    what: '$regex',
    selector: { name: { $regex: '^(alpha|gamma)-1' } },
    pred: (d) => typeof d.name === 'string' && /^(alpha|gamma)-1/.test(d.name),
  },
  {
    what: '$elemMatch',
    selector: { scores: { $elemMatch: { $gte: 15, $lt: 19 } } },
    pred: (d) => Array.isArray(d.scores) && d.scores.some((s) => isNum(s) && s >= 15 && s < 19),
  },
  { what: '$elemMatch on strings', selector: { tags: { $elemMatch: { $eq: 'u3' } } }, pred: (d) => d.tags?.includes('u3') },
  { what: '$or', selector: { $or: [{ kind: 'c' }, { n: { $lt: 4 } }] }, pred: (d) => d.kind === 'c' || (isNum(d.n) && d.n < 4) },
  {
    what: 'nested fields and $ne',
    selector: { 'nested.x': 3, 'nested.deep.y': { $ne: true } },
    pred: (d) => d.nested?.x === 3 && d.nested?.deep?.y !== true,
  },
  { what: 'implicit $and, $eq', selector: { kind: 'b', n: { $gte: 20 } }, pred: (d) => d.kind === 'b' && isNum(d.n) && d.n >= 20 },
  { what: '$nin and $size', selector: { kind: { $nin: ['a'] }, tags: { $size: 2 }, n: { $gt: 33 } }, pred: (d) => d.kind !== 'a' && d.tags?.length === 2 && d.n > 33 },
];

const ids = (docs) => docs.map((d) => d._id);
const sortedIds = (docs) => ids(docs).sort();
const byN = (a, b) => a.n - b.n || (a._id < b._id ? -1 : 1);
const stripRev = ({ _rev, ...rest }) => rest;

/** The error a PouchDB call rejects with, or a failure if it resolves. */
async function rejection(promise) {
  try {
    const res = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(res)}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

const NO_INDEX_WARNING = 'No matching index found, create an index to optimize query time.';

/** Pages through `request` with `limit` and bookmarks; returns each page's docs. */
async function pages(db, request, limit, maxPages = 10) {
  const out = [];
  let bookmark;
  for (let i = 0; i < maxPages; i++) {
    const res = await db.find({ ...request, limit, ...(bookmark ? { bookmark } : {}) });
    assert.equal(typeof res.bookmark, 'string', `page ${i} has a bookmark: ${JSON.stringify(res)}`);
    out.push(res.docs);
    if (res.docs.length === 0) return out;
    bookmark = res.bookmark;
  }
  assert.fail(`no empty page after ${maxPages} pages`);
}

// ---- against the example server --------------------------------------------------------------

describe('Mango _find through PouchDB (pouchdb-find) against couch-sync', { timeout: 180_000 }, () => {
  const fx = serverFixture({ before, after });
  let db;
  let name;
  const docs = makeDocs();

  before(async () => {
    name = uniqueName('find');
    db = fx.server.db(name);
    const res = await db.bulkDocs(docs);
    assert.ok(res.every((r) => r.ok), JSON.stringify(res));
  }, T);

  describe('indexes', () => {
    it('createIndex creates, then answers `exists` for the same definition', T, async () => {
      const created = await db.createIndex({ index: { fields: ['n'] }, ddoc: 'by-n', name: 'by-n' });
      assert.deepEqual(created, { result: 'created', id: '_design/by-n', name: 'by-n' });
      const again = await db.createIndex({ index: { fields: ['n'] }, ddoc: 'by-n', name: 'by-n' });
      assert.deepEqual(again, { result: 'exists', id: '_design/by-n', name: 'by-n' });

      // Without a name or ddoc CouchDB derives both from the definition: the same ones again.
      const auto = await db.createIndex({ index: { fields: ['kind', 'n'] } });
      assert.equal(auto.result, 'created');
      assert.match(auto.id, /^_design\/.+/);
      assert.ok(auto.name);
      const auto2 = await db.createIndex({ index: { fields: ['kind', 'n'] } });
      assert.deepEqual(auto2, { ...auto, result: 'exists' });

      // The index lives in a design document of language "query", as in CouchDB.
      const ddoc = await db.get('_design/by-n');
      assert.equal(ddoc.language, 'query');
      assert.deepEqual(Object.keys(ddoc.views), ['by-n']);
      // `options.def` keeps the definition as given (pouchdb-find sends `fields: ['n']` as is).
      assert.deepEqual(ddoc.views['by-n'].options.def, { fields: ['n'] });
      assert.equal(ddoc.views['by-n'].reduce, '_count');
    });

    it('a partial index (partial_filter_selector)', T, async () => {
      const res = await db.createIndex({
        index: { fields: ['n'], partial_filter_selector: { kind: 'a' } },
        ddoc: 'partial-a',
        name: 'partial-a',
      });
      assert.deepEqual(res, { result: 'created', id: '_design/partial-a', name: 'partial-a' });
      const again = await db.createIndex({
        index: { fields: ['n'], partial_filter_selector: { kind: 'a' } },
        ddoc: 'partial-a',
        name: 'partial-a',
      });
      assert.equal(again.result, 'exists');
    });

    it('getIndexes lists _all_docs first, then every JSON index with its definition', T, async () => {
      const res = await db.getIndexes();
      assert.equal(res.total_rows, res.indexes.length);
      assert.deepEqual(res.indexes[0], { ddoc: null, name: '_all_docs', type: 'special', def: { fields: [{ _id: 'asc' }] } });
      const byName = Object.fromEntries(res.indexes.map((i) => [i.name, i]));
      assert.deepEqual(byName['by-n'], { ddoc: '_design/by-n', name: 'by-n', type: 'json', partitioned: false, def: { fields: [{ n: 'asc' }] } });
      assert.deepEqual(byName['partial-a'], {
        ddoc: '_design/partial-a',
        name: 'partial-a',
        type: 'json',
        partitioned: false,
        // Stored normalized (mango_opts:validate_selector/1).
        def: { fields: [{ n: 'asc' }], partial_filter_selector: { kind: { $eq: 'a' } } },
      });
      const compound = res.indexes.find((i) => i.def.fields.length === 2);
      assert.ok(compound, JSON.stringify(res.indexes));
      assert.deepEqual(compound.def.fields, [{ kind: 'asc' }, { n: 'asc' }]);
      assert.equal(res.indexes.length, 4, JSON.stringify(res.indexes));
    });

    it('deleteIndex removes an index; deleting it again is 404', T, async () => {
      const made = await db.createIndex({ index: { fields: ['name'] }, ddoc: 'doomed', name: 'by-name' });
      assert.equal(made.result, 'created');
      assert.ok((await db.getIndexes()).indexes.some((i) => i.name === 'by-name'));
      const del = await db.deleteIndex({ ddoc: '_design/doomed', name: 'by-name', type: 'json' });
      assert.deepEqual(del, { ok: true });
      const after = await db.getIndexes();
      assert.ok(!after.indexes.some((i) => i.name === 'by-name'), JSON.stringify(after.indexes));
      const err = await rejection(db.deleteIndex({ ddoc: '_design/doomed', name: 'by-name' }));
      assert.equal(err.status, 404, `${err.status} ${err.error}: ${err.reason}`);
      // Without the index the sort it served is refused again.
      const e2 = await rejection(db.find({ selector: { name: { $gt: null } }, sort: ['name'] }));
      assert.equal(e2.status, 400);
    });
  });

  describe('selectors', () => {
    for (const q of QUERIES) {
      it(`${q.what}: ${JSON.stringify(q.selector)}`, T, async () => {
        const expected = docs.filter(q.pred);
        assert.ok(expected.length > 0 && expected.length < docs.length, `${q.what}: the data exercises the selector`);
        const res = await db.find({ selector: q.selector, limit: ALL });
        assert.deepEqual(sortedIds(res.docs), sortedIds(expected));
        // Whole documents, as stored.
        const want = Object.fromEntries(expected.map((d) => [d._id, d]));
        for (const d of res.docs) {
          assert.match(d._rev, /^1-/);
          assert.deepEqual(stripRev(d), want[d._id]);
        }
      });
    }

    it('$or of indexed ranges gives each matching document once', T, async () => {
      const selector = { $or: [{ n: { $lt: 10 } }, { n: { $gt: 5, $lt: 15 } }, { kind: 'a', n: { $gte: 35 } }] };
      const pred = (d) => isNum(d.n) && (d.n < 10 || (d.n > 5 && d.n < 15) || (d.kind === 'a' && d.n >= 35));
      const res = await db.find({ selector, limit: ALL });
      assert.deepEqual(sortedIds(res.docs), sortedIds(docs.filter(pred)));
    });

    it('an invalid selector operator is a 400', T, async () => {
      const res = await http('POST', `${fx.server.url}/${name}/_find`, { body: { selector: { n: { $bogus: 1 } } } });
      assert.equal(res.status, 400, res.text);
      assert.deepEqual(res.body, { error: 'bad_request', reason: 'Invalid operator: $bogus' });
    });
  });

  describe('sort, limit, skip', () => {
    it('sort ascending and descending on an indexed field', T, async () => {
      const pred = (d) => isNum(d.n) && d.n >= 3 && d.n < 31;
      const asc = docs.filter(pred).sort(byN);
      const resAsc = await db.find({ selector: { n: { $gte: 3, $lt: 31 } }, sort: [{ n: 'asc' }], limit: ALL });
      assert.deepEqual(ids(resAsc.docs), ids(asc));
      const resDesc = await db.find({ selector: { n: { $gte: 3, $lt: 31 } }, sort: [{ n: 'desc' }], limit: ALL });
      assert.deepEqual(ids(resDesc.docs), ids(asc).reverse());
      // The short form ['n'] is ascending.
      const short = await db.find({ selector: { n: { $gte: 3, $lt: 31 } }, sort: ['n'], limit: ALL });
      assert.deepEqual(ids(short.docs), ids(asc));
    });

    it('sort on an indexed field whose selector is on another field', T, async () => {
      // mango_idx_view:is_usable/3: sort fields need not be in the selector.
      const expected = docs.filter((d) => d.kind === 'b' && isNum(d.n)).sort(byN).reverse();
      const res = await db.find({ selector: { kind: 'b' }, sort: [{ n: 'desc' }], limit: ALL });
      assert.deepEqual(ids(res.docs), ids(expected));
    });

    it('sort on a compound index', T, async () => {
      const expected = docs
        .filter((d) => ['b', 'c'].includes(d.kind) && isNum(d.n) && d.n > 10)
        .sort((a, b) => (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : a.n - b.n));
      const selector = { kind: { $in: ['b', 'c'] }, n: { $gt: 10 } };
      const res = await db.find({ selector, sort: [{ kind: 'asc' }, { n: 'asc' }], limit: ALL });
      assert.deepEqual(ids(res.docs), ids(expected));
      const desc = await db.find({ selector, sort: [{ kind: 'desc' }, { n: 'desc' }], limit: ALL });
      assert.deepEqual(ids(desc.docs), ids(expected).reverse());
    });

    it('a sort no index serves: 400 no_usable_index', T, async () => {
      const err = await rejection(db.find({ selector: { n: { $gt: 0 } }, sort: [{ name: 'asc' }] }));
      assert.equal(err.status, 400, `${err.status} ${err.error}: ${err.reason}`);
      assert.equal(err.error, 'no_usable_index');
      assert.equal(err.reason, 'No index exists for this sort, try indexing by the sort fields.');
      // Mixed directions are refused the same way (CouchDB sorts one way per query).
      const mixed = await rejection(db.find({ selector: { kind: 'a' }, sort: [{ kind: 'asc' }, { n: 'desc' }] }));
      assert.equal(mixed.status, 400);
      // The raw answer, as CouchDB sends it.
      const raw = await http('POST', `${fx.server.url}/${name}/_find`, {
        body: { selector: { n: { $gt: 0 } }, sort: [{ name: 'asc' }] },
      });
      assert.equal(raw.status, 400);
      assert.deepEqual(raw.body, { error: 'no_usable_index', reason: 'No index exists for this sort, try indexing by the sort fields.' });
    });

    it('limit and skip', T, async () => {
      const sorted = docs.filter((d) => isNum(d.n) && d.n >= 0).sort(byN);
      const res = await db.find({ selector: { n: { $gte: 0 } }, sort: ['n'], limit: 5, skip: 3 });
      assert.deepEqual(ids(res.docs), ids(sorted.slice(3, 8)));
      const tail = await db.find({ selector: { n: { $gte: 0 } }, sort: [{ n: 'desc' }], limit: 10, skip: 35 });
      assert.deepEqual(ids(tail.docs), ids([...sorted].reverse().slice(35, 45)));
      const past = await db.find({ selector: { n: { $gte: 0 } }, skip: 100 });
      assert.deepEqual(past.docs, []);
      // Without a sort, the _all_docs scan goes in id order.
      const plain = await db.find({ selector: { kind: 'c' }, limit: 4, skip: 2 });
      assert.deepEqual(ids(plain.docs), ids(docs.filter((d) => d.kind === 'c').sort((a, b) => (a._id < b._id ? -1 : 1)).slice(2, 6)));
    });

    it('without a limit CouchDB returns at most 25 documents', T, async () => {
      const res = await db.find({ selector: { n: { $gte: 0 } }, sort: ['n'] });
      assert.deepEqual(ids(res.docs), ids(docs.filter((d) => isNum(d.n)).sort(byN).slice(0, 25)));
    });
  });

  describe('bookmarks', () => {
    it('paging with bookmarks through an index: every match once, in order', T, async () => {
      const expected = docs.filter((d) => isNum(d.n) && d.n >= 4).sort(byN); // 36 docs
      const got = await pages(db, { selector: { n: { $gte: 4 } } }, 13);
      assert.deepEqual(got.map((p) => p.length), [13, 13, 10, 0]);
      assert.deepEqual(ids(got.flat()), ids(expected));
    });

    it('paging with bookmarks over _all_docs and with a sort', T, async () => {
      const pred = (d) => d.kind !== 'b';
      const expected = docs.filter(pred);
      const got = await pages(db, { selector: { kind: { $in: ['a', 'c'] } } }, 10);
      assert.equal(got.length, 4, got.map((p) => p.length).join(','));
      const all = ids(got.flat());
      assert.equal(new Set(all).size, all.length, `no document twice: ${all}`);
      assert.deepEqual([...all].sort(), sortedIds(expected));

      const sortedExpected = docs.filter((d) => d.kind === 'a' && isNum(d.n)).sort(byN).reverse();
      const sortedPages = await pages(db, { selector: { kind: 'a' }, sort: [{ n: 'desc' }] }, 5);
      assert.deepEqual(sortedPages.map((p) => p.length), [5, 5, 4, 0]);
      assert.deepEqual(ids(sortedPages.flat()), ids(sortedExpected));
    });
  });

  describe('fields, explain, warnings', () => {
    it('fields projects the named fields (nested ones too) and leaves out missing ones', T, async () => {
      const res = await db.find({ selector: { n: { $lt: 4 } }, fields: ['_id', 'name', 'nested.x', 'opt'], sort: ['n'] });
      const expected = docs
        .filter((d) => isNum(d.n) && d.n < 4)
        .sort(byN)
        .map((d) => ({ _id: d._id, name: d.name, nested: { x: d.nested.x }, ...('opt' in d ? { opt: d.opt } : {}) }));
      assert.deepEqual(res.docs, expected);
    });

    it('explain names the index the query uses', T, async () => {
      const ex = await db.explain({ selector: { n: { $gt: 5 } } });
      assert.equal(ex.dbname, name);
      assert.deepEqual(ex.index, { ddoc: '_design/by-n', name: 'by-n', type: 'json', partitioned: false, def: { fields: [{ n: 'asc' }] } });
      assert.deepEqual(ex.selector, { n: { $gt: 5 } });
      assert.equal(ex.limit, 25);
      assert.equal(ex.skip, 0);
      // CouchDB >= 3.3.3 (apache/couchdb#4751): [] rather than "all_fields".
      assert.deepEqual(ex.fields, []);
      assert.deepEqual(ex.mrargs.start_key, [5]);
      assert.equal(ex.mrargs.direction, 'fwd');

      const none = await db.explain({ selector: { name: { $regex: '^a' } } });
      assert.equal(none.index.name, '_all_docs');
      assert.equal(none.index.ddoc, null);
      assert.equal(none.index.type, 'special');

      // use_index picks the partial index, which is never chosen on its own.
      const partial = await db.explain({ selector: { n: { $gt: 5 } }, use_index: 'partial-a' });
      assert.equal(partial.index.ddoc, '_design/partial-a');
      assert.equal(partial.index.name, 'partial-a');
      const auto = await db.explain({ selector: { n: { $gt: 5 } } });
      assert.notEqual(auto.index.name, 'partial-a');
    });

    it('a partial index holds only the documents its filter selects', T, async () => {
      const viaPartial = await db.find({ selector: { n: { $gt: 20 } }, use_index: ['_design/partial-a', 'partial-a'], limit: ALL });
      assert.deepEqual(sortedIds(viaPartial.docs), sortedIds(docs.filter((d) => d.kind === 'a' && isNum(d.n) && d.n > 20)));
      assert.equal(viaPartial.warning, undefined, viaPartial.warning);
      const whole = await db.find({ selector: { n: { $gt: 20 } }, limit: ALL });
      assert.deepEqual(sortedIds(whole.docs), sortedIds(docs.filter((d) => isNum(d.n) && d.n > 20)));
    });

    it('a warning when no index is used, none when one is', T, async () => {
      const none = await db.find({ selector: { kind: 'a' }, limit: ALL });
      assert.equal(none.warning, NO_INDEX_WARNING);
      assert.deepEqual(sortedIds(none.docs), sortedIds(docs.filter((d) => d.kind === 'a')));
      const indexed = await db.find({ selector: { n: { $gt: 30 } }, limit: ALL });
      assert.equal(indexed.warning, undefined, indexed.warning);
      // A use_index that cannot serve the query: CouchDB falls back and says so.
      const bad = await db.find({ selector: { kind: 'a' }, use_index: 'by-n', limit: ALL });
      assert.equal(
        bad.warning,
        `_design/by-n was not used because it does not contain a valid index for this query.\n${NO_INDEX_WARNING}`,
      );
      assert.deepEqual(sortedIds(bad.docs), sortedIds(docs.filter((d) => d.kind === 'a')));
    });

    it('execution_stats on request', T, async () => {
      const res = await db.find({ selector: { n: { $gte: 10, $lt: 15 } }, execution_stats: true });
      assert.equal(res.docs.length, 5);
      assert.equal(res.execution_stats.results_returned, 5);
      assert.equal(res.execution_stats.total_docs_examined, 5, JSON.stringify(res.execution_stats));
      assert.equal(typeof res.execution_stats.execution_time_ms, 'number');
    });
  });

  describe('on data replicated from a local PouchDB', () => {
    let local;
    let remote;
    before(async () => {
      local = memoryDb('find-src');
      remote = fx.server.db(uniqueName('find-rep'));
      await local.bulkDocs(makeDocs());
      // Updates, deletions and a conflict whose winner differs from the loser.
      for (const id of ['p-01', 'p-02', 'p-03']) {
        const d = await local.get(id);
        await local.put({ ...d, n: d.n + 100, kind: 'updated' });
      }
      for (const id of ['p-04', 'p-05']) {
        const d = await local.get(id);
        await local.remove(d);
      }
      const h = (c) => c.repeat(32);
      await local.bulkDocs(
        [
          { _id: 'conflicted', _rev: `2-${h('a')}`, _revisions: { start: 2, ids: [h('a'), h('0')] }, n: 500, kind: 'loser' },
          { _id: 'conflicted', _rev: `2-${h('b')}`, _revisions: { start: 2, ids: [h('b'), h('0')] }, n: 600, kind: 'winner' },
        ],
        { new_edits: false },
      );
      const rep = await PouchDB.replicate(local, remote);
      assert.equal(rep.ok, true, JSON.stringify(rep.errors));
      await remote.createIndex({ index: { fields: ['n'] } });
      await remote.createIndex({ index: { fields: ['kind'] } });
    }, T);

    /** The local winners: the truth for every query. */
    async function truth() {
      const all = await local.allDocs({ include_docs: true });
      return all.rows.map((r) => r.doc).filter((d) => !d._id.startsWith('_design/'));
    }

    it('the conflict winner is the one the server sees', T, async () => {
      const winner = (await local.get('conflicted'))._rev;
      assert.equal(winner, `2-${'b'.repeat(32)}`);
      const res = await remote.find({ selector: { n: { $gte: 500 } } });
      assert.deepEqual(res.docs.map((d) => [d._id, d._rev, d.kind]), [['conflicted', winner, 'winner']]);
      const loser = await remote.find({ selector: { kind: 'loser' } });
      assert.deepEqual(loser.docs, []);
      const withConflicts = await remote.find({ selector: { kind: 'winner' }, conflicts: true });
      assert.deepEqual(withConflicts.docs[0]._conflicts, [`2-${'a'.repeat(32)}`]);
    });

    for (const q of QUERIES) {
      it(`${q.what} matches the replicated winners (and the local pouchdb-find)`, T, async () => {
        const data = await truth();
        const expected = data.filter(q.pred);
        const res = await remote.find({ selector: q.selector, limit: ALL });
        assert.deepEqual(sortedIds(res.docs), sortedIds(expected));
        const want = Object.fromEntries(expected.map((d) => [d._id, d]));
        for (const d of res.docs) assert.deepEqual(d, want[d._id]);
        // PouchDB's own Mango on the local copy agrees.
        const mine = await local.find({ selector: q.selector, limit: ALL });
        assert.deepEqual(sortedIds(mine.docs), sortedIds(expected));
      });
    }

    it('deleted and updated documents are found by their current bodies only', T, async () => {
      const data = await truth();
      const sorted = data.filter((d) => isNum(d.n) && d.n >= 0).sort(byN);
      const res = await remote.find({ selector: { n: { $gte: 0 } }, sort: ['n'], limit: ALL });
      assert.deepEqual(ids(res.docs), ids(sorted));
      assert.ok(!ids(res.docs).includes('p-04') && !ids(res.docs).includes('p-05'));
      const updated = await remote.find({ selector: { kind: 'updated' }, fields: ['_id', 'n'] });
      assert.deepEqual(
        updated.docs.sort((a, b) => (a._id < b._id ? -1 : 1)),
        [{ _id: 'p-01', n: 101 }, { _id: 'p-02', n: 102 }, { _id: 'p-03', n: 103 }],
      );
      const got = await pages(remote, { selector: { n: { $gte: 0 } } }, 14);
      assert.deepEqual(ids(got.flat()), ids(sorted));
    });

    it('a second replication of changes is reflected by the next query', T, async () => {
      const d = await local.get('p-10');
      await local.put({ ...d, n: 1000 });
      await local.remove(await local.get('p-11'));
      await local.put({ _id: 'fresh', n: 1001, kind: 'new' });
      const rep = await PouchDB.replicate(local, remote);
      assert.equal(rep.ok, true, JSON.stringify(rep.errors));
      const data = await truth();
      const res = await remote.find({ selector: { n: { $gte: 999 } }, sort: [{ n: 'desc' }] });
      assert.deepEqual(ids(res.docs), ids(data.filter((x) => x.n >= 999).sort(byN).reverse()));
      assert.deepEqual(ids(res.docs), ['fresh', 'p-10']);
      const gone = await remote.find({ selector: { _id: 'p-11' } });
      assert.deepEqual(gone.docs, []);
    });
  });
});

// ---- through the device hub ------------------------------------------------------------------

describe('Mango _find through the device hub (stock PouchDB as an app)', { timeout: 90_000 }, () => {
  let hub;
  let app;
  let agent;
  let hubLib;

  before(async () => {
    hubLib = await import('./lib/hub.mjs');
    hub = await hubLib.startHub({ name: 'find hub' });
    app = await hubLib.addApp(hub, 'notes', ['notes:read', 'notes:write']);
    agent = new hubLib.PinnedAgent({ cert: app.certPem, key: app.keyPem, pinPem: app.hubCertPem });
  }, T);

  after(async () => {
    agent?.destroy();
    await hub?.stop();
  }, T);

  it('createIndex, find with sort/limit/bookmark, explain, on data pushed from a local PouchDB', T, async () => {
    const remote = new PouchDB(`${hub.url}/notes`, { fetch: hubLib.agentFetch(agent) });
    const local = memoryDb('hub-find');
    const docs = makeDocs();
    await local.bulkDocs(docs);
    const rep = await PouchDB.replicate(local, remote);
    assert.equal(rep.ok, true, JSON.stringify(rep.errors));

    const made = await remote.createIndex({ index: { fields: ['n'] }, ddoc: 'by-n', name: 'by-n' });
    assert.deepEqual(made, { result: 'created', id: '_design/by-n', name: 'by-n' });
    assert.equal((await remote.createIndex({ index: { fields: ['n'] }, ddoc: 'by-n', name: 'by-n' })).result, 'exists');

    const expected = docs.filter((d) => isNum(d.n) && d.n > 7 && d.kind !== 'b').sort(byN).reverse();
    const res = await remote.find({ selector: { n: { $gt: 7 }, kind: { $ne: 'b' } }, sort: [{ n: 'desc' }], limit: ALL });
    assert.deepEqual(ids(res.docs), ids(expected));
    const got = await pages(remote, { selector: { n: { $gt: 7 }, kind: { $ne: 'b' } }, sort: [{ n: 'desc' }] }, 8);
    assert.deepEqual(ids(got.flat()), ids(expected));

    const ex = await remote.explain({ selector: { n: { $gt: 7 } } });
    assert.equal(ex.index.ddoc, '_design/by-n');
    assert.equal(ex.index.name, 'by-n');

    const err = await rejection(remote.find({ selector: { n: { $gt: 0 } }, sort: ['name'] }));
    assert.equal(err.status, 400);
    assert.equal(err.error, 'no_usable_index');
  });
});
