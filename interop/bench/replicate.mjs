// PouchDB 9's replicator between two HTTP databases, timed: the reference figure for
// couch-sync/benches/replication.rs. Usage: node replicate.mjs SOURCE_URL TARGET_URL
// Prints {"seconds": ..., "docs_written": ...}.
import PouchDB from 'pouchdb';

const [source, target] = process.argv.slice(2);
if (!source || !target) {
  console.error('usage: node replicate.mjs SOURCE_URL TARGET_URL');
  process.exit(2);
}
// pouchdb-server gzips responses; ask for identity so the numbers measure replication.
const fetchIdentity = (url, opts = {}) => {
  const headers = new Headers(opts.headers || {});
  headers.set('Accept-Encoding', 'identity');
  return PouchDB.fetch(url, { ...opts, headers });
};
const start = process.hrtime.bigint();
const result = await PouchDB.replicate(new PouchDB(source, { fetch: fetchIdentity }), new PouchDB(target, { fetch: fetchIdentity }), { batch_size: 100 });
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(JSON.stringify({ seconds, docs_written: result.docs_written }));
