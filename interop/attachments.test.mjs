// 3. Attachments through PouchDB: standalone put/get (binary and text/plain), inline base64 in
// put, `attachments: true`, stubs that keep attachments on update, removal, digests.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { gunzipSync } from 'node:zlib';

import { serverFixture, uniqueName, http, memoryDb } from './lib/harness.mjs';

const T = { timeout: 20_000 };

const md5b64 = (buf) => `md5-${createHash('md5').update(buf).digest('base64')}`;

/** GET without any content decoding: { status, headers, body: Buffer }. */
function rawGet(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const BINARY = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(64 * 1024)]);
const TEXT = 'Hello, attachments! ünïcödé ✓\n'.repeat(200);

describe('attachments', { timeout: 60_000 }, () => {
  const fx = serverFixture({ before, after });
  let db;
  before(() => {
    db = fx.server.db(uniqueName('att'));
  });

  it('putAttachment / getAttachment: binary and text/plain', T, async () => {
    const r1 = await db.putAttachment('standalone', 'blob.bin', BINARY, 'application/octet-stream');
    assert.equal(r1.ok, true);
    assert.match(r1.rev, /^1-/);
    const r2 = await db.putAttachment('standalone', 'note.txt', r1.rev, Buffer.from(TEXT), 'text/plain');
    assert.match(r2.rev, /^2-/);

    const bin = await db.getAttachment('standalone', 'blob.bin');
    assert.ok(Buffer.isBuffer(bin));
    assert.ok(bin.equals(BINARY), 'binary attachment round-trips byte for byte');
    const txt = await db.getAttachment('standalone', 'note.txt');
    assert.equal(txt.toString('utf8'), TEXT);

    const doc = await db.get('standalone');
    const blob = doc._attachments['blob.bin'];
    assert.equal(blob.stub, true);
    assert.equal(blob.content_type, 'application/octet-stream');
    assert.equal(blob.length, BINARY.length);
    assert.equal(blob.revpos, 1);
    // Not compressible: the digest is the md5 of the raw bytes.
    assert.equal(blob.digest, md5b64(BINARY));
    const note = doc._attachments['note.txt'];
    assert.equal(note.stub, true);
    assert.equal(note.content_type, 'text/plain');
    assert.equal(note.length, Buffer.byteLength(TEXT), 'length is the decoded length');
    assert.equal(note.revpos, 2);
    assert.match(note.digest, /^md5-[A-Za-z0-9+/]{22}==$/);

    // An attachment of an older revision is still there (no compaction yet).
    const old = await db.getAttachment('standalone', 'blob.bin', { rev: r1.rev });
    assert.ok(old.equals(BINARY));
  });

  it('text attachments are stored gzip-compressed as CouchDB does', T, async () => {
    const name = db.name.split('/').pop();
    const info = await http('GET', `${fx.server.url}/${name}/standalone?att_encoding_info=true`);
    assert.equal(info.status, 200);
    const note = info.body._attachments['note.txt'];
    assert.equal(note.encoding, 'gzip');
    assert.ok(note.encoded_length > 0 && note.encoded_length < note.length, JSON.stringify(note));
    const blob = info.body._attachments['blob.bin'];
    assert.equal(blob.encoding, undefined);
    // With Accept-Encoding: gzip the stored stream comes back; its md5 is the digest.
    const gz = await rawGet(`${fx.server.url}/${name}/standalone/note.txt`, { 'Accept-Encoding': 'gzip' });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gz.body.length, note.encoded_length);
    assert.equal(md5b64(gz.body), note.digest);
    assert.equal(gunzipSync(gz.body).toString('utf8'), TEXT);
    // Without it, the decoded bytes.
    const plain = await rawGet(`${fx.server.url}/${name}/standalone/note.txt`);
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.equal(plain.body.toString('utf8'), TEXT);
  });

  it('inline base64 attachments in put, read back with attachments: true', T, async () => {
    const res = await db.put({
      _id: 'inline',
      kind: 'inline',
      _attachments: {
        'pic.png': { content_type: 'image/png', data: BINARY.toString('base64') },
        'readme.txt': { content_type: 'text/plain', data: Buffer.from(TEXT).toString('base64') },
        'empty.bin': { content_type: 'application/octet-stream', data: '' },
      },
    });
    assert.match(res.rev, /^1-/);

    const stubs = await db.get('inline');
    assert.deepEqual(Object.keys(stubs._attachments).sort(), ['empty.bin', 'pic.png', 'readme.txt']);
    assert.equal(stubs._attachments['pic.png'].digest, md5b64(BINARY));
    assert.equal(stubs._attachments['empty.bin'].length, 0);
    assert.equal(stubs._attachments['empty.bin'].digest, md5b64(Buffer.alloc(0)));

    const full = await db.get('inline', { attachments: true });
    assert.equal(full._attachments['pic.png'].data, BINARY.toString('base64'));
    assert.equal(full._attachments['readme.txt'].data, Buffer.from(TEXT).toString('base64'));
    assert.equal(full._attachments['empty.bin'].data, '');
    assert.equal(full._attachments['pic.png'].stub, undefined);
    assert.equal(full.kind, 'inline');

    const bin = await db.get('inline', { attachments: true, binary: true });
    assert.ok(bin._attachments['pic.png'].data.equals(BINARY));
    assert.equal(bin._attachments['readme.txt'].data.toString('utf8'), TEXT);

    // The same through allDocs and changes with include_docs.
    const all = await db.allDocs({ keys: ['inline'], include_docs: true, attachments: true });
    assert.equal(all.rows[0].doc._attachments['readme.txt'].data, Buffer.from(TEXT).toString('base64'));
    const ch = await db.changes({ doc_ids: ['inline'], include_docs: true, attachments: true });
    assert.equal(ch.results.length, 1);
    assert.equal(ch.results[0].doc._attachments['pic.png'].data, BINARY.toString('base64'));
  });

  it('stubs on update keep the attachments', T, async () => {
    const before = await db.get('inline');
    const upd = await db.put({ ...before, kind: 'updated' });
    assert.match(upd.rev, /^2-/);
    const after = await db.get('inline');
    assert.equal(after.kind, 'updated');
    for (const name of ['pic.png', 'readme.txt', 'empty.bin']) {
      assert.equal(after._attachments[name].digest, before._attachments[name].digest, name);
      assert.equal(after._attachments[name].length, before._attachments[name].length, name);
      assert.equal(after._attachments[name].revpos, 1, `${name} keeps its revpos`);
    }
    assert.ok((await db.getAttachment('inline', 'pic.png')).equals(BINARY));
    assert.equal((await db.getAttachment('inline', 'readme.txt')).toString('utf8'), TEXT);
  });

  it('a stub for an attachment the document does not have is rejected', T, async () => {
    const cur = await db.get('inline');
    cur._attachments['ghost.bin'] = { stub: true, content_type: 'application/octet-stream', digest: md5b64(Buffer.from('x')), length: 1 };
    // CouchDB: 412 missing_stub.
    await assert.rejects(db.put(cur), (err) => err.status === 412 && err.name === 'missing_stub');
  });

  it('removeAttachment', T, async () => {
    const cur = await db.get('inline');
    const res = await db.removeAttachment('inline', 'pic.png', cur._rev);
    assert.equal(res.ok, true);
    assert.match(res.rev, /^3-/);
    const after = await db.get('inline');
    assert.deepEqual(Object.keys(after._attachments).sort(), ['empty.bin', 'readme.txt']);
    await assert.rejects(db.getAttachment('inline', 'pic.png'), (err) => err.status === 404);
    // Still there in the previous revision.
    assert.ok((await db.getAttachment('inline', 'pic.png', { rev: cur._rev })).equals(BINARY));
    // Removing the rest leaves no _attachments at all.
    let rev = res.rev;
    for (const name of ['empty.bin', 'readme.txt']) rev = (await db.removeAttachment('inline', name, rev)).rev;
    const bare = await db.get('inline');
    assert.equal(bare._attachments, undefined);
    assert.equal(bare.kind, 'updated');
  });

  it('attachment names with slashes, spaces and non-ASCII', T, async () => {
    const name = 'dir/sub dir/fïlé #1.txt';
    const r = await db.putAttachment('names', name, Buffer.from('odd name'), 'text/plain');
    assert.match(r.rev, /^1-/);
    const doc = await db.get('names');
    assert.deepEqual(Object.keys(doc._attachments), [name]);
    assert.equal((await db.getAttachment('names', name)).toString(), 'odd name');
  });

  it('replacing an attachment changes its digest and revpos', T, async () => {
    const r1 = await db.putAttachment('replace', 'a.bin', Buffer.from([1, 2, 3]), 'application/octet-stream');
    const r2 = await db.putAttachment('replace', 'a.bin', r1.rev, Buffer.from([4, 5, 6, 7]), 'application/octet-stream');
    const doc = await db.get('replace');
    assert.equal(doc._rev, r2.rev);
    assert.equal(doc._attachments['a.bin'].revpos, 2);
    assert.equal(doc._attachments['a.bin'].length, 4);
    assert.equal(doc._attachments['a.bin'].digest, md5b64(Buffer.from([4, 5, 6, 7])));
    // A stale rev is a conflict.
    await assert.rejects(
      db.putAttachment('replace', 'a.bin', r1.rev, Buffer.from([9]), 'application/octet-stream'),
      (err) => err.status === 409,
    );
  });

  it('inline attachments do not count towards max_document_size (8 MB of body, as CouchDB)', { timeout: 40_000 }, async () => {
    // 7 MiB of attachment is ~9.8 MB of base64 JSON: CouchDB measures the document body without
    // its attachments against max_document_size, so both a put and PouchDB's push (which sends
    // attachments inline in _bulk_docs) are accepted.
    const big = randomBytes(7 * 1024 * 1024);
    const put = await db.put({ _id: 'big-inline', _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } });
    assert.equal(put.ok, true);
    assert.ok((await db.getAttachment('big-inline', 'big.bin')).equals(big));

    const local = memoryDb('big-push');
    await local.put({ _id: 'big-pushed', _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } });
    const res = await local.replicate.to(db);
    assert.equal(res.doc_write_failures, 0, JSON.stringify(res.errors));
    assert.equal(res.docs_written, 1);
    assert.ok((await db.getAttachment('big-pushed', 'big.bin')).equals(big));
    await local.destroy();
  });
});
