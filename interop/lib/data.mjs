// A small database with every kind of content replication must carry (plain docs, updates,
// a deletion, conflicts, attachments on winning and losing leaves), and a snapshot of a
// database's full content that is comparable across peers.

import { randomBytes } from 'node:crypto';

/** A 32-hex-digit rev hash made of one repeated character. */
export const h = (c) => c.repeat(32);

export const BINARY = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(16 * 1024)]);
export const TEXT = 'replicated text ✓ ünïcödé\n'.repeat(100);
const b64 = (x) => Buffer.from(x).toString('base64');

/** How many leaf revisions the fixture has (PouchDB's docs_written counts revisions). */
export const SEED_LEAVES = 28;

/** Writes the fixture into `db` (any PouchDB: local or HTTP). Returns the expected doc ids. */
export async function seed(db) {
  const plain = [];
  for (let i = 0; i < 20; i++) plain.push({ _id: `plain-${String(i).padStart(2, '0')}`, i, nested: { list: [i, `${i}`], flag: i % 2 === 0 } });
  await db.bulkDocs(plain);

  await db.put({
    _id: 'with-atts',
    kind: 'attachments',
    _attachments: {
      'bin.dat': { content_type: 'application/octet-stream', data: b64(BINARY) },
      'note.txt': { content_type: 'text/plain', data: b64(TEXT) },
    },
  });
  // Updated after the attachments were added: stubs keep them, revpos 1.
  const wa = await db.get('with-atts');
  await db.put({ ...wa, kind: 'attachments, updated' });

  const d = await db.put({ _id: 'deleted', v: 1 });
  await db.remove('deleted', d.rev);

  let r = await db.put({ _id: 'updated', v: 1 });
  r = await db.put({ _id: 'updated', _rev: r.rev, v: 2 });
  await db.put({ _id: 'updated', _rev: r.rev, v: 3 });

  await db.bulkDocs(
    [
      { _id: 'conflicted', _rev: `2-${h('b')}`, _revisions: { start: 2, ids: [h('b'), h('a')] }, side: 'b' },
      { _id: 'conflicted', _rev: `3-${h('c')}`, _revisions: { start: 3, ids: [h('c'), h('9'), h('a')] }, side: 'c' },
      { _id: 'conflicted', _rev: `2-${h('d')}`, _revisions: { start: 2, ids: [h('d'), h('a')] }, _deleted: true },
      // A losing leaf that carries an attachment.
      {
        _id: 'conflict-att',
        _rev: `2-${h('1')}`,
        _revisions: { start: 2, ids: [h('1'), h('0')] },
        side: 'loser',
        _attachments: { 'loser.txt': { content_type: 'text/plain', data: b64('only on the losing leaf') } },
      },
      {
        _id: 'conflict-att',
        _rev: `2-${h('f')}`,
        _revisions: { start: 2, ids: [h('f'), h('0')] },
        side: 'winner',
        _attachments: { 'winner.bin': { content_type: 'application/octet-stream', data: b64(BINARY.subarray(0, 1000)) } },
      },
    ],
    { new_edits: false },
  );
  return [...plain.map((p) => p._id), 'with-atts', 'deleted', 'updated', 'conflicted', 'conflict-att'];
}

const byRev = (a, b) => (a.rev < b.rev ? -1 : a.rev > b.rev ? 1 : 0);

/**
 * The full content of `db`: for each document (deleted ones too), every leaf with its revision
 * history, body, and attachments (content type, length, base64 data), plus the winner.
 * Digests are left out: CouchDB's digest of a compressible attachment is of its gzip stream,
 * so it legitimately differs between peers that store it differently.
 */
export async function snapshot(db) {
  const changes = await db.changes({ style: 'all_docs' });
  const out = {};
  for (const row of changes.results.sort((a, b) => (a.id < b.id ? -1 : 1))) {
    const id = row.id;
    const leaves = (await db.get(id, { open_revs: 'all', revs: true })).map((x) => x.ok).filter(Boolean);
    const entries = [];
    for (const leaf of leaves) {
      const { _id, _rev, _revisions, _deleted, _attachments, ...body } = leaf;
      const entry = { rev: _rev, deleted: !!_deleted, revisions: _revisions, body };
      if (_attachments && !_deleted) {
        const full = await db.get(id, { rev: _rev, attachments: true });
        entry.attachments = Object.fromEntries(
          Object.entries(full._attachments)
            .sort(([a], [b]) => (a < b ? -1 : 1))
            .map(([name, att]) => [name, { content_type: att.content_type, data: att.data }]),
        );
      }
      entries.push(entry);
    }
    entries.sort(byRev);
    const [info] = (await db.allDocs({ keys: [id] })).rows;
    out[id] = { winner: info.value.rev, deleted: !!info.value.deleted, leaves: entries };
  }
  return out;
}
