// Map/reduce views (JavaScript design documents, `--features js`) through the real PouchDB 9
// client: a design document with `_sum`, `_count`, `_stats` and a JavaScript reduce, and data
// replicated from a local memory PouchDB to couch-sync. Every query runs on both sides and the
// answers are compared: PouchDB's own map/reduce over the same documents (and the same design
// document, replicated with them) computes the truth. Then changes replicated again (updates,
// deletions, documents entering and leaving the view, a conflict and its resolution, a changed
// design document) must show in the next answers (incremental indexing).
//
// Where PouchDB and Apache CouchDB 3.4 differ (query errors, `offset`, ICU string collation),
// the server is held to CouchDB's answer, written out from CouchDB's source and documentation.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { PouchDB, serverFixture, uniqueName, memoryDb, http } from './lib/harness.mjs';

const T = { timeout: 60_000 };

// ---- the design document and the data ----------------------------------------------------------

const MAP = 'function(doc){ if (doc.t) emit([doc.y, doc.m, doc.d], doc.v); }';
const DDOC = {
  _id: '_design/ddoc',
  views: {
    by_day: { map: MAP, reduce: '_sum' },
    count: { map: MAP, reduce: '_count' },
    stats: { map: MAP, reduce: '_stats' },
    custom: { map: MAP, reduce: 'function(keys, values, rereduce){ return sum(values); }' },
    // Map-only: keys of every JSON type, for collation.
    collate: { map: "function(doc){ if ('k' in doc) emit(doc.k, doc._id); }" },
  },
};
const REDUCE_VIEWS = ['by_day', 'count', 'stats', 'custom'];
/** Views with a reduce (`extra` is added by the design-document change). */
const REDUCING = new Set([...REDUCE_VIEWS, 'extra']);

const pad = (i) => String(i).padStart(2, '0');

/** 60 dated events (several per day, some without `t` so outside the view) and one without t. */
function events(from = 0, to = 60) {
  const docs = [];
  for (let i = from; i < to; i++) {
    docs.push({
      _id: `e-${pad(i)}`,
      t: i % 10 === 9 ? '' : 'event',
      y: 2023 + (i % 3),
      m: 1 + ((i * 5) % 12),
      d: 1 + ((i * 7) % 4),
      v: ((i * 13) % 17) - 3,
    });
  }
  return docs;
}

/**
 * CouchDB's collation order, from its documentation ("Views Collation": the example sequence),
 * one document per key; stored in a shuffled order so id order is not key order.
 */
const COLLATION = [
  null, false, true,
  -2, 1, 2, 3.5, 4,
  'a', 'A', 'aa', 'b', 'B', 'ba', 'bb',
  [], ['a'], ['b'], ['b', 'c'], ['b', 'c', 'a'], ['b', 'd'], ['b', 'd', 'e'],
  {}, { a: 1 }, { a: 2 }, { b: 1 }, { b: 2 }, { b: 2, a: 1 }, { b: 2, c: 2 },
];
const collationDocs = () => COLLATION.map((k, i) => ({ _id: `k-${pad((i * 7) % COLLATION.length)}`, k }));

const dayKey = (d) => [d.y, d.m, d.d];

// ---- helpers -------------------------------------------------------------------------------------

async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (err) {
    return { ok: false, err };
  }
}

const describeErr = (e) => `${e.status} ${e.error ?? e.name}: ${e.reason ?? e.message}`;

/**
 * Runs `opts` on view `view` of the local PouchDB and of the server; asserts the same rows (and
 * total_rows for map rows). Returns the server's answer.
 */
async function same(local, remote, view, opts) {
  const label = `${view} ${JSON.stringify(opts)}`;
  const [mine, theirs] = await Promise.all([
    settle(local.query(`ddoc/${view}`, structuredClone(opts))),
    settle(remote.query(`ddoc/${view}`, structuredClone(opts))),
  ]);
  if (!mine.ok) throw new Error(`the local PouchDB refused ${label}: ${describeErr(mine.err)}`);
  if (!theirs.ok) assert.fail(`the server refused ${label}: ${describeErr(theirs.err)}`);
  assert.deepEqual(theirs.value.rows, mine.value.rows, label);
  const mapRows = opts.reduce === false || !REDUCING.has(view);
  if (mapRows) assert.equal(theirs.value.total_rows, mine.value.total_rows, `total_rows of ${label}`);
  else assert.equal(theirs.value.total_rows, undefined, `no total_rows when reducing: ${label}`);
  return theirs.value;
}

/** An existing key of the view (the `n`th distinct one) and a key no document has. */
async function someKeys(local) {
  const rows = (await local.query('ddoc/by_day', { reduce: false })).rows;
  const distinct = [...new Map(rows.map((r) => [JSON.stringify(r.key), r.key])).values()];
  return { k1: distinct[3], k2: distinct[Math.floor(distinct.length / 2)], k3: distinct.at(-2), missing: [1999, 1, 1] };
}

/** The queries both sides answer, built on keys that exist in the current data. */
function mapQueries({ k1, k2, k3, missing }) {
  return [
    { reduce: false },
    { reduce: false, startkey: [2024], endkey: [2024, {}] },
    { reduce: false, startkey: [2024, 6], endkey: [2024, 1], descending: true },
    { reduce: false, startkey: [2024, 6], descending: true, limit: 6 },
    { reduce: false, limit: 5, skip: 3 },
    { reduce: false, descending: true, limit: 7, skip: 2 },
    { reduce: false, startkey: [2023, 5], endkey: [2024, 5], inclusive_end: false },
    { reduce: false, startkey: k1, endkey: k2, inclusive_end: false },
    { reduce: false, key: k1 },
    { reduce: false, keys: [k2, missing, k1, k2] },
    { reduce: false, include_docs: true, startkey: [2024, 6], limit: 7 },
    { reduce: false, include_docs: true, keys: [k3, k1] },
    { reduce: false, include_docs: true, descending: true, skip: 4, limit: 4 },
  ];
}

function reduceQueries({ k1, k2, k3, missing }) {
  return [
    {},
    { reduce: true },
    { group_level: 1 },
    { group_level: 2 },
    { group_level: 3 },
    { group: true },
    { group_level: 1, descending: true },
    { group: true, startkey: [2024, 3], endkey: [2024, 9, {}] },
    { group_level: 2, startkey: [2024], endkey: [2024, {}] },
    { startkey: [2025], endkey: [2025, 6] },
    { group: true, limit: 3, skip: 2 },
    { group_level: 2, descending: true, startkey: [2025, {}], endkey: [2024], limit: 5 },
    { group: true, keys: [k2, k1, missing, k3] },
    { group_level: 1, key: k1 },
    { startkey: [3000] },
  ];
}

/** Every query on every view, local against server. */
async function compareAll(local, remote) {
  const keys = await someKeys(local);
  for (const opts of mapQueries(keys)) {
    for (const view of REDUCE_VIEWS) await same(local, remote, view, opts);
  }
  for (const opts of reduceQueries(keys)) {
    for (const view of REDUCE_VIEWS) await same(local, remote, view, opts);
  }
}

async function replicate(local, remote) {
  const rep = await PouchDB.replicate(local, remote);
  assert.equal(rep.ok, true, JSON.stringify(rep.errors));
  return rep;
}

// ---- the tests -----------------------------------------------------------------------------------

describe('map/reduce views through PouchDB, checked against PouchDB\'s own map/reduce', { timeout: 300_000 }, () => {
  const fx = serverFixture({ before, after });
  let local;
  let remote;
  let name;

  before(async () => {
    local = memoryDb('views-src');
    name = uniqueName('views');
    remote = fx.server.db(name);
    await local.put(structuredClone(DDOC));
    await local.bulkDocs([...events(), { _id: 'no-t', y: 2024, m: 1, d: 1, v: 1000 }, ...collationDocs()]);
    await replicate(local, remote);
  }, T);

  it('the design document arrives as written', T, async () => {
    const ddoc = await remote.get('_design/ddoc');
    assert.deepEqual({ ...ddoc, _rev: undefined }, { ...DDOC, _rev: undefined });
  });

  it('reduce=false: every row, keys, values and ids in CouchDB order', T, async () => {
    const res = await same(local, remote, 'by_day', { reduce: false });
    const expected = events()
      .filter((d) => d.t)
      .map((d) => ({ id: d._id, key: dayKey(d), value: d.v }))
      .sort((a, b) => {
        for (let i = 0; i < 3; i++) if (a.key[i] !== b.key[i]) return a.key[i] - b.key[i];
        return a.id < b.id ? -1 : 1;
      });
    assert.deepEqual(res.rows, expected);
    assert.equal(res.total_rows, expected.length);
    assert.equal(res.offset, 0);
  });

  for (const view of REDUCE_VIEWS) {
    it(`${view}: reduce, group_level 1/2/3, group, ranges, limit/skip, keys`, T, async () => {
      const keys = await someKeys(local);
      for (const opts of reduceQueries(keys)) await same(local, remote, view, opts);
    });
  }

  it('the reductions are what the data says (by hand)', T, async () => {
    const live = events().filter((d) => d.t);
    const vs = live.map((d) => d.v);
    const sum = vs.reduce((a, b) => a + b, 0);
    assert.deepEqual((await remote.query('ddoc/by_day')).rows, [{ key: null, value: sum }]);
    assert.deepEqual((await remote.query('ddoc/custom')).rows, [{ key: null, value: sum }]);
    assert.deepEqual((await remote.query('ddoc/count')).rows, [{ key: null, value: live.length }]);
    assert.deepEqual((await remote.query('ddoc/stats')).rows, [
      {
        key: null,
        value: {
          sum,
          count: vs.length,
          min: Math.min(...vs),
          max: Math.max(...vs),
          sumsqr: vs.reduce((a, v) => a + v * v, 0),
        },
      },
    ]);
    const years = {};
    for (const d of live) years[d.y] = (years[d.y] ?? 0) + d.v;
    assert.deepEqual(
      (await remote.query('ddoc/by_day', { group_level: 1 })).rows,
      Object.keys(years).sort().map((y) => ({ key: [Number(y)], value: years[y] })),
    );
  });

  it('reduce=false with ranges, descending, limit, skip, inclusive_end, key, keys, include_docs', T, async () => {
    const keys = await someKeys(local);
    for (const opts of mapQueries(keys)) await same(local, remote, 'by_day', opts);
    const withDocs = await remote.query('ddoc/by_day', { reduce: false, include_docs: true, limit: 3 });
    for (const row of withDocs.rows) {
      assert.deepEqual(row.doc, await local.get(row.id));
    }
  });

  it('keys in a POST body, as CouchDB takes them', T, async () => {
    const { k1, k2, missing } = await someKeys(local);
    const url = `${fx.server.url}/${name}/_design/ddoc/_view/by_day`;
    const map = await http('POST', `${url}?reduce=false`, { body: { keys: [k2, missing, k1] } });
    assert.equal(map.status, 200, map.text);
    const mine = await local.query('ddoc/by_day', { reduce: false, keys: [k2, missing, k1] });
    assert.deepEqual(map.body.rows, mine.rows);
    const grouped = await http('POST', `${url}?group=true`, { body: { keys: [k2, missing, k1] } });
    assert.equal(grouped.status, 200, grouped.text);
    assert.deepEqual(grouped.body.rows, (await local.query('ddoc/by_day', { group: true, keys: [k2, missing, k1] })).rows);
  });

  it('offset and total_rows as CouchDB counts them', T, async () => {
    // offset: how many rows of the whole view (in the query's direction) precede the first one.
    // (No `skip` here: a clustered CouchDB's workers run with skip=0 and the coordinator sums
    // their offsets, so whether skipped rows count differs between CouchDB versions/setups.)
    const fwd = (await local.query('ddoc/by_day', { reduce: false })).rows;
    const rev = [...fwd].reverse();
    const at = (rows, row) => rows.findIndex((r) => r.id === row.id && JSON.stringify(r.key) === JSON.stringify(row.key));
    for (const opts of [
      { reduce: false, startkey: [2024], endkey: [2024, {}] },
      { reduce: false, startkey: [2024, 6], limit: 3 },
      { reduce: false, descending: true, startkey: [2024, 6], limit: 4 },
      { reduce: false, descending: true, limit: 1 },
      { reduce: false, key: [2025, 5, 1] },
    ]) {
      const res = await remote.query('ddoc/by_day', opts);
      assert.ok(res.rows.length > 0);
      assert.equal(res.total_rows, fwd.length, JSON.stringify(opts));
      assert.equal(res.offset, at(opts.descending ? rev : fwd, res.rows[0]), `offset of ${JSON.stringify(opts)}`);
    }
  });

  it('query errors as CouchDB 3.4 answers them', T, async () => {
    const { k1, k2 } = await someKeys(local);
    const cases = [
      ['by_day', { keys: [k1, k2] }, 'Multi-key fetchs for reduce views must use `group=true`'],
      // CouchDB refuses a single key too, and group_level with keys (PouchDB allows both).
      ['by_day', { keys: [k1] }, 'Multi-key fetchs for reduce views must use `group=true`'],
      ['count', { keys: [k1, k2], group_level: 2 }, 'Multi-key fetchs for reduce views must use `group=true`'],
      ['by_day', { include_docs: true }, '`include_docs` is invalid for reduce'],
      ['collate', { group: true }, 'Invalid use of grouping on a map view.'],
      ['collate', { reduce: true }, 'Reduce is invalid for map-only views.'],
      ['by_day', { reduce: false, startkey: [2025], endkey: [2023] }, 'No rows can match your key range, reverse your start_key and end_key or set descending=true'],
      ['by_day', { reduce: false, descending: true, startkey: [2023], endkey: [2025] }, 'No rows can match your key range, reverse your start_key and end_key or set descending=false'],
      ['by_day', { keys: [k1], startkey: k1, group: true }, '`keys` is incompatible with `key`, `start_key` and `end_key`'],
    ];
    const failures = [];
    for (const [view, opts, reason] of cases) {
      const r = await settle(remote.query(`ddoc/${view}`, opts));
      const got = r.ok ? `200 ${JSON.stringify(r.value).slice(0, 200)}` : describeErr(r.err);
      const want = `400 query_parse_error: ${reason}`;
      if (got !== want) failures.push(`${view} ${JSON.stringify(opts)}: got ${got}, want ${want}`);
    }
    const missing = await settle(remote.query('ddoc/nope'));
    const got404 = missing.ok ? 'a 200' : describeErr(missing.err);
    if (got404 !== '404 not_found: missing_named_view') failures.push(`ddoc/nope: got ${got404}`);
    const noDdoc = await settle(remote.query('nodoc/x'));
    const gotNoDdoc = noDdoc.ok ? 'a 200' : describeErr(noDdoc.err);
    if (gotNoDdoc !== '404 not_found: missing') failures.push(`nodoc/x: got ${gotNoDdoc}`);
    assert.deepEqual(failures, []);
  });

  it('keys of every JSON type collate as CouchDB documents it (letter case aside)', T, async () => {
    const noUpper = (keys) => keys.filter((k) => !(typeof k === 'string' && /[A-Z]/.test(k)));
    const res = await remote.query('ddoc/collate');
    assert.deepEqual(noUpper(res.rows.map((r) => r.key)), noUpper(COLLATION));
    assert.equal(res.total_rows, COLLATION.length);
    const desc = await remote.query('ddoc/collate', { descending: true });
    assert.deepEqual(noUpper(desc.rows.map((r) => r.key)), noUpper([...COLLATION].reverse()));
    // Ranges follow the same order: everything from true up to (not including) the strings.
    const range = await remote.query('ddoc/collate', { startkey: true, endkey: '', inclusive_end: false });
    assert.deepEqual(range.rows.map((r) => r.key), COLLATION.slice(2, 8));
    const arrays = await remote.query('ddoc/collate', { startkey: ['b'], endkey: ['b', {}] });
    assert.deepEqual(arrays.rows.map((r) => r.key), [['b'], ['b', 'c'], ['b', 'c', 'a'], ['b', 'd'], ['b', 'd', 'e']]);
    // PouchDB's own map/reduce agrees (it too compares strings by code point).
    const mine = await local.query('ddoc/collate');
    assert.deepEqual(noUpper(res.rows.map((r) => r.key)), noUpper(mine.rows.map((r) => r.key)));
  });

  // CouchDB collates view keys' strings with ICU (UCA): a < A < aa < b < B < ba. couch-sync
  // compares them by code point (json::collate, documented), as PouchDB does: A < B < a < aa.
  it('strings collate by ICU as in CouchDB (a < A < aa < b < B)', {
    ...T,
    todo: 'couch-sync orders view-key strings by code point, CouchDB by ICU (json::collate)',
  }, async () => {
    const res = await remote.query('ddoc/collate');
    assert.deepEqual(res.rows.map((r) => r.key), COLLATION);
    const desc = await remote.query('ddoc/collate', { descending: true });
    assert.deepEqual(desc.rows.map((r) => r.key), [...COLLATION].reverse());
    const range = await remote.query('ddoc/collate', { startkey: 'a', endkey: 'b' });
    assert.deepEqual(range.rows.map((r) => r.key), ['a', 'A', 'aa', 'b']);
  });

  it('a conflicted document: the view shows the winner only, then the loser once the winner goes', T, async () => {
    const h = (c) => c.repeat(32);
    await local.bulkDocs(
      [
        { _id: 'conf', _rev: `2-${h('a')}`, _revisions: { start: 2, ids: [h('a'), h('0')] }, t: 'event', y: 2030, m: 1, d: 1, v: 7 },
        { _id: 'conf', _rev: `2-${h('b')}`, _revisions: { start: 2, ids: [h('b'), h('0')] }, t: 'event', y: 2031, m: 2, d: 2, v: 9 },
      ],
      { new_edits: false },
    );
    await replicate(local, remote);
    const res = await same(local, remote, 'by_day', { reduce: false, startkey: [2030] });
    assert.deepEqual(res.rows, [{ id: 'conf', key: [2031, 2, 2], value: 9 }]);
    await same(local, remote, 'stats', { group_level: 1, startkey: [2030] });
    await compareAll(local, remote);

    // Resolve by deleting the winner: the other leaf wins and takes its place in the view.
    await local.remove('conf', `2-${h('b')}`);
    await replicate(local, remote);
    const after = await same(local, remote, 'by_day', { reduce: false, startkey: [2030] });
    assert.deepEqual(after.rows, [{ id: 'conf', key: [2030, 1, 1], value: 7 }]);
    await same(local, remote, 'count', { group: true, startkey: [2030] });
  });

  it('incremental: updates, deletions, new documents, documents entering and leaving the view', T, async () => {
    await compareAll(local, remote); // the server's index is built now
    const byId = Object.fromEntries((await local.allDocs({ include_docs: true })).rows.map((r) => [r.id, r.doc]));
    const edits = [];
    for (const id of ['e-00', 'e-01', 'e-02']) edits.push({ ...byId[id], v: byId[id].v + 100 }); // value changes
    edits.push({ ...byId['e-03'], y: 2026, m: 12 }); // key moves
    edits.push({ ...byId['e-04'], t: '' }); // leaves the view
    edits.push({ ...byId['no-t'], t: 'event' }); // enters it
    edits.push({ ...byId['e-05'], _deleted: true }, { ...byId['e-06'], _deleted: true }); // deleted
    edits.push(...events(60, 66)); // new
    const res = await local.bulkDocs(edits);
    assert.ok(res.every((r) => r.ok), JSON.stringify(res));
    await replicate(local, remote);

    await compareAll(local, remote);
    const rows = (await remote.query('ddoc/by_day', { reduce: false })).rows;
    const ids = rows.map((r) => r.id);
    for (const gone of ['e-04', 'e-05', 'e-06']) assert.ok(!ids.includes(gone), `${gone} left the view`);
    for (const added of ['no-t', 'e-60', 'e-61']) assert.ok(ids.includes(added), `${added} is in the view`);
    assert.deepEqual(rows.find((r) => r.id === 'e-03').key, [2026, 12, byId['e-03'].d]);
    assert.equal(rows.find((r) => r.id === 'e-00').value, byId['e-00'].v + 100);
    assert.equal(rows.filter((r) => r.id === 'e-03').length, 1, 'the old row of a moved key is gone');

    // A second round on the already-updated index.
    await local.bulkDocs([{ ...(await local.get('e-60')), v: -50 }, { ...(await local.get('e-61')), _deleted: true }]);
    await replicate(local, remote);
    await compareAll(local, remote);
  });

  it('a changed design document re-indexes its views', T, async () => {
    const before = (await remote.query('ddoc/by_day')).rows[0].value;
    const ddoc = await local.get('_design/ddoc');
    ddoc.views.by_day.map = 'function(doc){ if (doc.t) emit([doc.y, doc.m, doc.d], doc.v * 2); }';
    ddoc.views.extra = { map: 'function(doc){ if (doc.t) emit(doc.v, null); }', reduce: '_count' };
    await local.put(ddoc);
    await replicate(local, remote);
    await compareAll(local, remote);
    assert.equal((await remote.query('ddoc/by_day')).rows[0].value, before * 2);
    await same(local, remote, 'extra', { reduce: false });
    await same(local, remote, 'extra', { group: true });
    await same(local, remote, 'extra', { startkey: 0, endkey: 5 });
  });
});

// ---- through the device hub ------------------------------------------------------------------

describe('map/reduce views through the device hub (stock PouchDB as an app)', { timeout: 120_000 }, () => {
  let hub;
  let agent;
  let hubLib;

  before(async () => {
    hubLib = await import('./lib/hub.mjs');
    hub = await hubLib.startHub({ name: 'views hub' });
    const app = await hubLib.addApp(hub, 'events', ['events:read', 'events:write']);
    agent = new hubLib.PinnedAgent({ cert: app.certPem, key: app.keyPem, pinPem: app.hubCertPem });
  }, T);

  after(async () => {
    agent?.destroy();
    await hub?.stop();
  }, T);

  it('db.query with reduce and group levels on data replicated from PouchDB, then incrementally', T, async () => {
    const remote = new PouchDB(`${hub.url}/events`, { fetch: hubLib.agentFetch(agent) });
    const local = memoryDb('hub-views');
    await local.put(structuredClone(DDOC));
    await local.bulkDocs(events());
    await replicate(local, remote);
    const keys = await someKeys(local);
    for (const opts of [{ reduce: false }, { reduce: false, include_docs: true, limit: 5 }]) {
      for (const view of REDUCE_VIEWS) await same(local, remote, view, opts);
    }
    for (const opts of reduceQueries(keys)) await same(local, remote, 'by_day', opts);
    for (const view of REDUCE_VIEWS) await same(local, remote, view, { group_level: 2 });

    // Changes replicated again: the hub's index follows.
    const some = (await local.allDocs({ include_docs: true, startkey: 'e-', endkey: 'e-\uffff', limit: 10 })).rows;
    await local.bulkDocs(some.map((r, i) => (i % 2 ? { ...r.doc, _deleted: true } : { ...r.doc, v: r.doc.v + 100 })));
    await local.bulkDocs(events(60, 70));
    await replicate(local, remote);
    for (const opts of [{ reduce: false }, { group_level: 1 }, { group: true }]) {
      for (const view of REDUCE_VIEWS) await same(local, remote, view, opts);
    }
  });
});
