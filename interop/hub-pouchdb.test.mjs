// A stock PouchDB 9 in node, as an app on the device, against a running device hub: the app's
// key and certificate come from `device-hub app add`, and PouchDB's HTTP adapter reaches the hub
// over mutual TLS through a custom `fetch` whose agent presents the app's certificate and accepts
// exactly the hub's certificate (`hub.cert.pem`) — nothing else, not even another key of the hub.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';

import { PouchDB, PinnedAgent, addApp, agentFetch, request, startHub } from './lib/hub.mjs';
import { memoryDb } from './lib/harness.mjs';

const T = { timeout: 30_000 };

describe('stock PouchDB with an app certificate from `device-hub app add`', { timeout: 90_000 }, () => {
  let hub;
  let notes; // app granted notes:read + notes:write
  let reader; // app granted notes:read only
  const agents = [];

  /** An agent presenting `app`'s certificate (or none), pinned to `pinPem`. */
  function agentFor(app, pinPem = notes.hubCertPem) {
    const agent = new PinnedAgent({ cert: app?.certPem, key: app?.keyPem, pinPem });
    agents.push(agent);
    return agent;
  }

  /** A PouchDB handle on the hub's database `name`, as `app` (null: no client certificate). */
  function remote(name, app = notes, pinPem) {
    const agent = agentFor(app, pinPem);
    const fetch = agentFetch(agent);
    const db = new PouchDB(`${hub.url}/${encodeURIComponent(name)}`, { fetch });
    db.agent = agent;
    db.log = fetch.log;
    return db;
  }

  before(async () => {
    hub = await startHub({ name: 'pouchdb hub' });
    notes = await addApp(hub, 'notes', ['notes:read', 'notes:write']);
    reader = await addApp(hub, 'reader', ['notes:read']);
    // A database that exists but was granted to another app only.
    await addApp(hub, 'vault', ['secret:write', 'secret:read']);
  }, T);

  after(async () => {
    for (const a of agents) a.destroy();
    await hub?.stop();
  }, T);

  test('app add wrote the app key, its certificate, and the hub certificate and URL', () => {
    assert.ok(notes.keyId, notes.stdout);
    assert.equal(notes.hubUrl, hub.httpkeyUrl);
    assert.equal(notes.hubCertPem, hub.deviceCertPem(), 'hub.cert.pem is the device certificate');
    const cert = new X509Certificate(notes.certPem);
    assert.equal(cert.publicKey.asymmetricKeyType, 'ed25519');
    assert.match(notes.keyPem, /-----BEGIN PRIVATE KEY-----/);
  });

  test('put, get, update, allDocs', T, async () => {
    const db = remote('notes');
    const info = await db.info();
    assert.equal(info.db_name, 'notes');

    const put = await db.put({ _id: 'note:1', title: 'first', tags: ['a'] });
    assert.ok(put.ok);
    assert.match(put.rev, /^1-/);
    const doc = await db.get('note:1');
    assert.deepEqual({ ...doc, _rev: undefined }, { _id: 'note:1', _rev: undefined, title: 'first', tags: ['a'] });

    const upd = await db.put({ ...doc, title: 'first, edited' });
    assert.match(upd.rev, /^2-/);
    await assert.rejects(db.put({ ...doc, title: 'stale' }), (e) => e.status === 409);
    await db.put({ _id: 'note:2', title: 'second' });

    const all = await db.allDocs({ include_docs: true, startkey: 'note:', endkey: 'note:\uffff' });
    assert.deepEqual(all.rows.map((r) => r.id), ['note:1', 'note:2']);
    assert.equal(all.rows[0].doc.title, 'first, edited');
    assert.equal(all.rows[0].value.rev, upd.rev);

    const removed = await db.remove('note:2', all.rows[1].value.rev);
    assert.ok(removed.ok);
    await assert.rejects(db.get('note:2'), (e) => e.status === 404);
    assert.ok(db.log.length > 0 && db.log.every((r) => r.status < 500), JSON.stringify(db.log));
  });

  test('bulkDocs and changes', T, async () => {
    const db = remote('notes');
    const docs = Array.from({ length: 20 }, (_, i) => ({ _id: `bulk:${String(i).padStart(2, '0')}`, n: i }));
    const before = await db.info();
    const res = await db.bulkDocs(docs);
    assert.equal(res.length, 20);
    assert.ok(res.every((r) => r.ok && /^1-/.test(r.rev)), JSON.stringify(res));

    // A per-document conflict comes back as an error row, not a failed call.
    const again = await db.bulkDocs([{ _id: 'bulk:00', n: 'conflict' }, { _id: 'bulk:new', n: 99 }]);
    assert.equal(again[0].status, 409);
    assert.ok(again[1].ok);

    const changes = await db.changes({ since: before.update_seq, include_docs: true });
    const ids = changes.results.map((c) => c.id).sort();
    assert.deepEqual(ids, [...docs.map((d) => d._id), 'bulk:new'].sort());
    assert.ok(changes.results.every((c) => c.doc && c.doc._id === c.id));
    assert.ok(changes.last_seq);

    const filtered = await db.changes({ since: before.update_seq, doc_ids: ['bulk:03', 'bulk:07'] });
    assert.deepEqual(filtered.results.map((c) => c.id).sort(), ['bulk:03', 'bulk:07']);

    const nothingNew = await db.changes({ since: changes.last_seq });
    assert.equal(nothingNew.results.length, 0);
  });

  test('an attachment round-trips (binary and inline)', T, async () => {
    const db = remote('notes');
    const bytes = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    const put = await db.putAttachment('photo', 'pixels.bin', bytes, 'application/octet-stream');
    assert.ok(put.ok);
    const got = await db.getAttachment('photo', 'pixels.bin');
    assert.ok(Buffer.isBuffer(got));
    assert.ok(got.equals(bytes), 'same bytes back');

    const doc = await db.get('photo', { attachments: true });
    const att = doc._attachments['pixels.bin'];
    assert.equal(att.content_type, 'application/octet-stream');
    assert.ok(Buffer.from(att.data, 'base64').equals(bytes));

    const stub = (await db.get('photo'))._attachments['pixels.bin'];
    assert.equal(stub.stub, true);
    assert.equal(stub.length, bytes.length);
    assert.match(stub.digest, /^md5-/);
  });

  test('replication both ways between a memory PouchDB and the hub', T, async () => {
    const local = memoryDb('app-local');
    const hubDb = remote('notes');
    await local.bulkDocs(Array.from({ length: 30 }, (_, i) => ({ _id: `rep:${String(i).padStart(2, '0')}`, i })));
    await local.putAttachment('rep:att', 'hello.txt', Buffer.from('hello from the app'), 'text/plain');
    const gone = await local.put({ _id: 'rep:gone', x: 1 });
    await local.remove('rep:gone', gone.rev);

    const push = await PouchDB.replicate(local, hubDb);
    assert.equal(push.ok, true, JSON.stringify(push.errors));
    assert.equal(push.docs_written, 32);
    const onHub = await hubDb.allDocs({ startkey: 'rep:', endkey: 'rep:\uffff' });
    assert.equal(onHub.rows.length, 31);
    assert.equal((await hubDb.getAttachment('rep:att', 'hello.txt')).toString(), 'hello from the app');
    await assert.rejects(hubDb.get('rep:gone'), (e) => e.status === 404 && e.reason === 'deleted');

    // Changes made on the hub (by the app through HTTP) come back with a pull into a new db.
    await hubDb.put({ ...(await hubDb.get('rep:05')), edited: 'on the hub' });
    const pulled = memoryDb('app-pulled');
    const pull = await PouchDB.replicate(hubDb, pulled);
    assert.equal(pull.ok, true, JSON.stringify(pull.errors));
    assert.equal((await pulled.get('rep:05')).edited, 'on the hub');
    assert.equal((await pulled.getAttachment('rep:att', 'hello.txt')).toString(), 'hello from the app');
    const everything = await hubDb.allDocs();
    assert.equal((await pulled.info()).doc_count, everything.rows.length, 'the pull copied the whole database');

    // Checkpoints: a second push has nothing to write.
    const again = await PouchDB.replicate(local, hubDb);
    assert.equal(again.docs_written, 0);

    // Two-way sync of concurrent edits on both sides.
    await local.put({ ...(await local.get('rep:01')), side: 'local' });
    await hubDb.put({ ...(await hubDb.get('rep:02')), side: 'hub' });
    const sync = await PouchDB.sync(local, hubDb);
    assert.equal(sync.push.ok, true);
    assert.equal(sync.pull.ok, true);
    assert.equal((await hubDb.get('rep:01')).side, 'local');
    assert.equal((await local.get('rep:02')).side, 'hub');
    assert.equal((await local.get('rep:05')).edited, 'on the hub');

    await local.destroy();
    await pulled.destroy();
  });

  test('a read-only app reads but may not write (403)', T, async () => {
    await remote('notes').put({ _id: 'ro:1', title: 'for the reader' });
    const db = remote('notes', reader);
    assert.equal((await db.get('ro:1')).title, 'for the reader');
    await assert.rejects(db.put({ _id: 'reader:1' }), (e) => e.status === 403);
    // A push: the replicator reads and checkpoints (allowed) but its _bulk_docs is refused.
    const local = memoryDb('reader-write');
    await local.put({ _id: 'reader:2' });
    const res = await PouchDB.replicate(local, db).then(
      (r) => assert.fail(`a read-only app's push succeeded: ${JSON.stringify(r)}`),
      (e) => e,
    );
    assert.equal(res.status, 403, JSON.stringify(res));
    assert.equal(res.result?.docs_written, 0);
    await assert.rejects(db.get('reader:2'), (e) => e.status === 404);
    await local.destroy();
  });

  test('a database the app was not granted is refused (403)', T, async () => {
    const secret = remote('secret');
    for (const op of [
      () => secret.info(),
      () => secret.allDocs(),
      () => secret.get('anything'),
      () => secret.put({ _id: 'x' }),
      () => secret.changes(),
    ]) {
      await assert.rejects(op(), (e) => e.status === 403, String(op));
    }
    // Nor the hub's own databases.
    const policy = remote('hub-policy');
    await assert.rejects(policy.allDocs(), (e) => e.status === 403);
    await assert.rejects(policy.put({ _id: 'acl:evil', grant: 'me' }), (e) => e.status === 403);
    // Nor creating a database.
    const raw = await request(secret.agent, 'PUT', `${hub.url}/brand-new`);
    assert.equal(raw.status, 403, raw.text);
    // Replicating out of it fails too.
    const res = await PouchDB.replicate(secret, memoryDb('stolen')).catch((e) => e);
    assert.equal(res.status, 403, JSON.stringify(res));
  });

  test('no client certificate is refused (401)', T, async () => {
    const anon = remote('notes', null);
    await assert.rejects(anon.info(), (e) => e.status === 401);
    await assert.rejects(anon.get('ro:1'), (e) => e.status === 401);
    const raw = await request(anon.agent, 'PUT', `${hub.url}/notes/anon`, { body: { x: 1 } });
    assert.equal(raw.status, 401, raw.text);
    assert.equal(raw.body?.error, 'unauthorized');
    // The agent did pin and connect: the refusal is the hub's, not TLS's.
    assert.equal(anon.agent.pinFailures, 0);
  });

  test('a wrong server pin makes the request fail before anything is sent', T, async () => {
    // The hub's other key (the P-256 one it shows browsers) is not what node is shown: refused.
    const wrong = remote('notes', notes, hub.browserCertPem());
    await assert.rejects(wrong.info(), (e) => e.code === 'PIN_MISMATCH' || /not the pinned one/.test(e.message));
    await assert.rejects(
      wrong.put({ _id: 'must-not-arrive' }),
      (e) => e.code === 'PIN_MISMATCH' || /not the pinned one/.test(e.message),
    );
    assert.ok(wrong.agent.pinFailures >= 1);
    assert.equal(wrong.log.length, 0, 'no response was ever received');
    // An unrelated certificate as pin: refused as well.
    const other = remote('notes', notes, notes.certPem);
    await assert.rejects(other.get('ro:1'), (e) => e.code === 'PIN_MISMATCH' || /not the pinned one/.test(e.message));
    // And the write never reached the hub.
    await assert.rejects(remote('notes').get('must-not-arrive'), (e) => e.status === 404);
  });
});
