// 4. _changes through PouchDB: normal feed (since, limit, include_docs, style=all_docs,
// descending, paging), live changes, doc_ids and selector filters, and the raw longpoll /
// continuous feeds PouchDB and other replicators use.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { serverFixture, uniqueName, http } from './lib/harness.mjs';

const T = { timeout: 20_000 };

/** Resolves with the first change event matching `pred`, rejects after `ms`. */
function nextChange(feed, pred, ms = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      feed.removeListener('change', onChange);
      reject(new Error(`no matching change within ${ms} ms`));
    }, ms);
    function onChange(change) {
      if (pred(change)) {
        clearTimeout(timer);
        feed.removeListener('change', onChange);
        resolve(change);
      }
    }
    feed.on('change', onChange);
    feed.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Reads a streaming response line by line until `until(line)` or `ms`; returns the lines. */
async function readLines(res, until, ms = 8000) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const lines = [];
  let buf = '';
  const deadline = Date.now() + ms;
  try {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`stream: condition not met within ${ms} ms; got ${JSON.stringify(lines)}`);
      let timer;
      const chunk = await Promise.race([
        reader.read(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`stream: condition not met within ${ms} ms; got ${JSON.stringify(lines)}`)), left);
        }),
      ]).finally(() => clearTimeout(timer));
      if (chunk.done) return lines;
      buf += decoder.decode(chunk.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (until(line)) return lines;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

describe('_changes', { timeout: 90_000 }, () => {
  const fx = serverFixture({ before, after });
  let db;
  let name;
  const revs = {};
  before(async () => {
    name = uniqueName('changes');
    db = fx.server.db(name);
    // One write per request, so the seq order is known: a, b, c, then a again, then b deleted.
    for (const id of ['a', 'b', 'c']) revs[id] = (await db.put({ _id: id, type: id === 'b' ? 'veg' : 'fruit', n: id.charCodeAt(0) })).rev;
    revs.a = (await db.put({ _id: 'a', _rev: revs.a, type: 'fruit', n: 1000 })).rev;
    revs.b = (await db.remove('b', revs.b)).rev;
  });

  it('normal feed: one row per document, in update order, latest rev, deletions marked', T, async () => {
    const res = await db.changes();
    assert.deepEqual(res.results.map((r) => r.id), ['c', 'a', 'b']);
    for (const row of res.results) {
      assert.deepEqual(row.changes, [{ rev: revs[row.id] }]);
      assert.equal(typeof row.seq, 'string', 'CouchDB 3 seqs are opaque strings');
    }
    assert.equal(res.results[2].deleted, true);
    assert.equal(res.results[0].deleted, undefined);
    assert.equal(res.last_seq, res.results[2].seq);
  });

  it('since', T, async () => {
    const all = await db.changes();
    const after = await db.changes({ since: all.results[0].seq });
    assert.deepEqual(after.results.map((r) => r.id), ['a', 'b']);
    const none = await db.changes({ since: all.last_seq });
    assert.deepEqual(none.results, []);
    assert.equal(none.last_seq, all.last_seq);
    const now = await db.changes({ since: 'now' });
    assert.deepEqual(now.results, []);
    assert.equal(parseInt(now.last_seq, 10), parseInt(all.last_seq, 10));
  });

  it('limit, and paging with a small batch_size', T, async () => {
    const two = await db.changes({ limit: 2 });
    assert.deepEqual(two.results.map((r) => r.id), ['c', 'a']);
    assert.equal(two.last_seq, two.results[1].seq);
    // Raw: limit=1 reports what is pending.
    const raw = await http('GET', `${fx.server.url}/${name}/_changes?limit=1`);
    assert.equal(raw.body.results.length, 1);
    assert.equal(raw.body.pending, 2);
    // PouchDB pages with since=last_seq when batch_size is small.
    const paged = await db.changes({ batch_size: 1 });
    assert.deepEqual(paged.results.map((r) => r.id), ['c', 'a', 'b']);
  });

  it('descending', T, async () => {
    const res = await db.changes({ descending: true });
    assert.deepEqual(res.results.map((r) => r.id), ['b', 'a', 'c']);
  });

  it('include_docs', T, async () => {
    const res = await db.changes({ include_docs: true });
    const byId = Object.fromEntries(res.results.map((r) => [r.id, r.doc]));
    assert.deepEqual(byId.a, { _id: 'a', _rev: revs.a, type: 'fruit', n: 1000 });
    assert.deepEqual(byId.c, { _id: 'c', _rev: revs.c, type: 'fruit', n: 99 });
    assert.deepEqual(byId.b, { _id: 'b', _rev: revs.b, _deleted: true });
  });

  it('style all_docs lists every leaf of a conflicted document', T, async () => {
    const cdb = fx.server.db(uniqueName('changes-conflict'));
    await cdb.bulkDocs(
      [
        { _id: 'x', _rev: '2-' + 'b'.repeat(32), _revisions: { start: 2, ids: ['b'.repeat(32), 'a'.repeat(32)] }, v: 'b' },
        { _id: 'x', _rev: '2-' + 'c'.repeat(32), _revisions: { start: 2, ids: ['c'.repeat(32), 'a'.repeat(32)] }, v: 'c' },
        { _id: 'y', v: 'plain', _rev: '1-' + 'd'.repeat(32) },
      ],
      { new_edits: false },
    );
    const main = await cdb.changes();
    const x = main.results.find((r) => r.id === 'x');
    assert.deepEqual(x.changes, [{ rev: '2-' + 'c'.repeat(32) }], 'main_only: the winner only');
    const all = await cdb.changes({ style: 'all_docs' });
    const xa = all.results.find((r) => r.id === 'x');
    assert.equal(xa.changes.length, 2);
    assert.deepEqual(xa.changes.map((c) => c.rev).sort(), ['2-' + 'b'.repeat(32), '2-' + 'c'.repeat(32)]);
    assert.equal(xa.changes[0].rev, '2-' + 'c'.repeat(32), 'winner first');
    assert.deepEqual(all.results.find((r) => r.id === 'y').changes, [{ rev: '1-' + 'd'.repeat(32) }]);
    // conflicts: true with include_docs gives _conflicts on the doc.
    const withConf = await cdb.changes({ include_docs: true, conflicts: true });
    assert.deepEqual(withConf.results.find((r) => r.id === 'x').doc._conflicts, ['2-' + 'b'.repeat(32)]);
  });

  it('live changes receive writes made after subscribing', T, async () => {
    const ldb = fx.server.db(uniqueName('changes-live'));
    await ldb.put({ _id: 'before' });
    const since = (await ldb.info()).update_seq;
    const feed = ldb.changes({ live: true, since, include_docs: true });
    try {
      const first = nextChange(feed, (c) => c.id === 'live-1');
      // Let the longpoll request reach the server and wait before writing.
      await new Promise((r) => setTimeout(r, 300));
      await ldb.put({ _id: 'live-1', v: 1 });
      const c1 = await first;
      assert.equal(c1.doc.v, 1);
      // The feed keeps going: a second write arrives too.
      const second = nextChange(feed, (c) => c.id === 'live-2');
      await ldb.put({ _id: 'live-2', v: 2 });
      const c2 = await second;
      assert.equal(c2.doc.v, 2);
      // And an update of an earlier doc.
      const third = nextChange(feed, (c) => c.id === 'live-1' && c.changes[0].rev.startsWith('2-'));
      await ldb.put({ ...c1.doc, v: 3 });
      assert.equal((await third).doc.v, 3);
    } finally {
      feed.cancel();
    }
  });

  it('live changes with a doc_ids filter only see those documents', T, async () => {
    const ldb = fx.server.db(uniqueName('changes-live-ids'));
    const since = (await ldb.info()).update_seq;
    const seen = [];
    const feed = ldb.changes({ live: true, since, doc_ids: ['wanted'] });
    feed.on('change', (c) => seen.push(c.id));
    try {
      const got = nextChange(feed, (c) => c.id === 'wanted');
      await new Promise((r) => setTimeout(r, 200));
      await ldb.put({ _id: 'unwanted' });
      await ldb.put({ _id: 'wanted' });
      await got;
      assert.deepEqual(seen, ['wanted']);
    } finally {
      feed.cancel();
    }
  });

  it('doc_ids filter', T, async () => {
    const res = await db.changes({ doc_ids: ['a', 'b', 'nope'] });
    assert.deepEqual(res.results.map((r) => r.id), ['a', 'b']);
    // GET form with doc_ids in the query string, as CouchDB also accepts.
    const raw = await http('GET', `${fx.server.url}/${name}/_changes?filter=_doc_ids&doc_ids=${encodeURIComponent(JSON.stringify(['c']))}`);
    assert.equal(raw.status, 200, raw.text);
    assert.deepEqual(raw.body.results.map((r) => r.id), ['c']);
  });

  it('selector filter (mango)', T, async () => {
    const sdb = fx.server.db(uniqueName('changes-selector'));
    await sdb.bulkDocs([
      { _id: 'apple', type: 'fruit', price: 3, tags: ['red'] },
      { _id: 'pear', type: 'fruit', price: 5, tags: ['green'] },
      { _id: 'leek', type: 'veg', price: 2, tags: ['green'] },
      { _id: 'plain' },
    ]);
    const ids = async (selector, extra = {}) => (await sdb.changes({ selector, ...extra })).results.map((r) => r.id).sort();
    assert.deepEqual(await ids({ type: 'fruit' }), ['apple', 'pear']);
    assert.deepEqual(await ids({ price: { $gt: 2 } }), ['apple', 'pear']);
    assert.deepEqual(await ids({ type: { $in: ['veg'] } }), ['leek']);
    assert.deepEqual(await ids({ tags: { $elemMatch: { $eq: 'green' } } }), ['leek', 'pear']);
    assert.deepEqual(await ids({ $or: [{ type: 'veg' }, { price: 3 }] }), ['apple', 'leek']);
    assert.deepEqual(await ids({ type: { $exists: false } }), ['plain']);
    const withDocs = await sdb.changes({ selector: { type: 'veg' }, include_docs: true });
    assert.equal(withDocs.results[0].doc.price, 2);
    // Live with a selector.
    const since = (await sdb.info()).update_seq;
    const feed = sdb.changes({ live: true, since, selector: { type: 'fruit' } });
    try {
      const got = nextChange(feed, () => true);
      await new Promise((r) => setTimeout(r, 200));
      await sdb.put({ _id: 'carrot', type: 'veg' });
      await sdb.put({ _id: 'kiwi', type: 'fruit' });
      assert.equal((await got).id, 'kiwi');
    } finally {
      feed.cancel();
    }
  });

  it('raw longpoll: waits for the next change, or times out empty', T, async () => {
    const seq = (await db.info()).update_seq;
    const t0 = Date.now();
    const empty = await http('GET', `${fx.server.url}/${name}/_changes?feed=longpoll&since=${encodeURIComponent(seq)}&timeout=400`);
    const elapsed = Date.now() - t0;
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.body.results, []);
    assert.ok(elapsed >= 300, `returned after ${elapsed} ms, before the timeout`);
    const pending = http('GET', `${fx.server.url}/${name}/_changes?feed=longpoll&since=${encodeURIComponent(seq)}&timeout=10000`);
    await new Promise((r) => setTimeout(r, 200));
    const w = await db.put({ _id: 'longpoll-wake' });
    const res = await pending;
    assert.deepEqual(res.body.results.map((r) => [r.id, r.changes[0].rev]), [['longpoll-wake', w.rev]]);
    assert.equal(res.body.last_seq, res.body.results[0].seq);
  });

  it('raw continuous feed: existing rows, then new changes and heartbeats', T, async () => {
    const url = `${fx.server.url}/${name}/_changes?feed=continuous&since=0&heartbeat=200`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10_000);
    try {
      const res = await fetch(url, { signal: controller.signal });
      assert.equal(res.status, 200);
      setTimeout(() => db.put({ _id: 'continuous-new' }).catch(() => {}), 500);
      let heartbeats = 0;
      let sawNew = false;
      const lines = await readLines(res, (l) => {
        if (l === '') heartbeats++;
        if (l.includes('"continuous-new"')) sawNew = true;
        return sawNew && heartbeats > 0;
      });
      const rows = lines.filter((l) => l.trim()).map((l) => JSON.parse(l));
      const ids = rows.map((r) => r.id);
      assert.deepEqual(ids.slice(0, 3), ['c', 'a', 'b']);
      assert.equal(ids[ids.length - 1], 'continuous-new');
      assert.ok(heartbeats > 0, 'heartbeat newlines were sent while idle');
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  });

  it('raw continuous feed without heartbeat ends with last_seq after timeout', T, async () => {
    const seq = (await db.info()).update_seq;
    const t0 = Date.now();
    const res = await http('GET', `${fx.server.url}/${name}/_changes?feed=continuous&since=${encodeURIComponent(seq)}&timeout=400`);
    assert.ok(Date.now() - t0 >= 300);
    const lines = res.text.split('\n').filter((l) => l.trim());
    assert.equal(lines.length, 1, res.text);
    const end = JSON.parse(lines[0]);
    assert.equal(end.last_seq, seq);
  });
});
