/**
 * Issue 11, upgrades a fleet can survive:
 * - a frame of a protocol version this release does not speak is refused with P2P_VERSION, in a frame
 *   of our own version (so the other side can read it), with a log line; bytes that are no p2pshare
 *   frame at all stay P2P_BAD_VERSION;
 * - a server of release 0.1, which answered any other version with P2P_BAD_VERSION, is reported to the
 *   user as P2P_VERSION ("an older release");
 * - both daemons' SQLite databases carry a schema version: a fresh or a 0.1 database is migrated on
 *   start and keeps its rows; a database from a newer release is refused with P2P_VERSION, and the
 *   programs say so and exit 1.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { PeerDb } from '../../peerd/db.js';
import { Store } from '../../daemon/store.js';
import {
  dial,
  encodeFrame,
  generateKeyPair,
  migrate,
  P2PError,
  PROTOCOL_VERSIONS,
  Role,
} from '../../protocol/index.js';
import { SOFTWARE } from '../../peerd/handshake.js';
import { Fleet } from '../helpers/fleet.js';
import { LEVEL, jsonLog } from '../helpers/logs.js';
import { run, tempDir } from '../helpers/programs.js';
import { tlsAs } from '../helpers/tls.js';

const hello = { role: Role.peer, listenPort: 1, software: SOFTWARE, link: Buffer.alloc(0) };

t.test('a HELLO in a protocol version this release does not speak: P2P_VERSION in our version, and a log line', async (t) => {
  const log = jsonLog();
  const fleet = new Fleet(t);
  await fleet.startTracker({ logger: log.logger });
  const conn = await dial(fleet.trackerAddress, { tls: tlsAs(generateKeyPair().keys) });
  t.teardown(() => conn.destroy());
  const future = PROTOCOL_VERSIONS.max + 1;
  // Our connection reads frames of our own version only: the answer parses, so it was written in ours.
  const answered = once(conn, 'remoteError') as Promise<[P2PError]>;
  const frame = encodeFrame('HELLO', 1, hello);
  frame[0] = future;
  conn.socket.write(frame);
  const [refusal] = await answered;
  t.equal(refusal.code, 'P2P_VERSION', 'the tracker answers P2P_VERSION, in a frame of its own version');
  t.match(refusal.message, new RegExp(`version ${future} is not spoken here \\(this release speaks version ${PROTOCOL_VERSIONS.max}\\): upgrade the older of the two`), 'naming both versions and what to do');
  await once(conn, 'close');
  t.pass('and closes');
  const line = await log.when((l) => l.code === 'P2P_VERSION');
  t.equal(line.level, LEVEL.warn, `and logged it at warn: ${String(line.err)}`);

  const garbage = await dial(fleet.trackerAddress, { tls: tlsAs(generateKeyPair().keys) });
  t.teardown(() => garbage.destroy());
  garbage.socket.write('GET / HTTP/1.1\r\nHost: tracker\r\n\r\n');
  const bad = await log.when((l) => l.code === 'P2P_BAD_VERSION');
  t.match(String(bad.err), /unsupported protocol version 71/, 'bytes that are no p2pshare frame stay P2P_BAD_VERSION (an HTTP request\'s G is 71)');
});

t.test('a server of release 0.1 refusing our version is reported as P2P_VERSION, an older release', async (t) => {
  // What 0.1 did with a frame of another version: ERROR P2P_BAD_VERSION (id 0) in version 1, then close.
  const server = net.createServer((socket) => {
    socket.once('data', () => {
      socket.end(encodeFrame('ERROR', 0, { code: 'P2P_BAD_VERSION', message: 'unsupported protocol version 2' }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const conn = await dial({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  const err = await conn.request('HELLO', hello, 'WELCOME').then(
    () => undefined,
    (e: P2PError) => e,
  );
  t.equal(err?.code, 'P2P_VERSION', 'the HELLO fails with P2P_VERSION');
  t.match(err?.message, /older release that does not speak p2pshare protocol version 1 \(it said: unsupported protocol version 2\): upgrade the older of the two/, 'saying the other side is the older release');
});

t.test('schema versions: migrations run once, in order, each with its version; a failed one changes nothing', async (t) => {
  const db = new Database(':memory:');
  t.teardown(() => db.close());
  const steps = [
    { version: 1, what: 'a table', up: (d: Database.Database) => d.exec('CREATE TABLE IF NOT EXISTS a (x INTEGER)') },
    { version: 2, what: 'a column', up: (d: Database.Database) => d.exec('ALTER TABLE a ADD COLUMN y INTEGER') },
  ];
  t.same(migrate(db, steps.slice(0, 1), 'test.sqlite'), { from: 0, to: 1, applied: ['1: a table'] }, 'a fresh database gets version 1');
  db.exec('INSERT INTO a (x) VALUES (7)');
  t.same(migrate(db, steps, 'test.sqlite'), { from: 1, to: 2, applied: ['2: a column'] }, 'the next release adds only its own step');
  t.same(migrate(db, steps, 'test.sqlite'), { from: 2, to: 2, applied: [] }, 'and nothing the second time');
  t.same(db.prepare('SELECT x, y FROM a').all(), [{ x: 7, y: null }], 'rows survive');

  const failing = [...steps, { version: 3, what: 'a bad step', up: (d: Database.Database) => { d.exec('CREATE TABLE b (z)'); throw new Error('disk on fire'); } }];
  t.throws(() => migrate(db, failing, 'test.sqlite'), /disk on fire/, 'a failing step throws');
  t.equal(db.pragma('user_version', { simple: true }), 2, 'and leaves the version where it was');
  t.same(db.prepare("SELECT name FROM sqlite_master WHERE name = 'b'").all(), [], 'and none of its changes');
  t.throws(() => migrate(db, [steps[1]!], 'test.sqlite'), /numbered 1, 2, 3/, 'steps must be numbered from 1 without gaps');
});

t.test('the daemons migrate a release 0.1 data folder on start, and refuse one from a newer release', async (t) => {
  const dir = tempDir(t, 'p2p-schema-');
  // A tracker and a peer database as release 0.1 left them: the tables, no version.
  const trackerData = path.join(dir, 'tracker');
  fs.mkdirSync(trackerData, { mode: 0o700 });
  const old = new Database(path.join(trackerData, 'tracker.sqlite'));
  old.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE blacklist (target TEXT PRIMARY KEY, reason TEXT NOT NULL, since INTEGER NOT NULL, added_by TEXT NOT NULL);
    INSERT INTO blacklist VALUES ('10.6.6.6', 'kept across the upgrade', 1, 'admin');`);
  old.close();
  const store = new Store(trackerData);
  t.same(store.schema, { from: 0, to: 1, applied: [store.schema.applied[0]] }, 'the tracker database went from no version to 1');
  t.match(store.bans(), [{ target: '10.6.6.6', reason: 'kept across the upgrade' }], 'and kept its blacklist');
  store.close();

  const peerData = path.join(dir, 'peer');
  fs.mkdirSync(peerData, { mode: 0o700 });
  new PeerDb(peerData).db.close();
  const reopened = new PeerDb(peerData);
  t.same(reopened.schema.from, 2, 'a peer database is at version 2 once opened');
  // Version 1, as this release's first databases were: no copy of the blacklist yet.
  reopened.db.exec('DROP TABLE blacklist_copy');
  reopened.db.pragma('user_version = 1');
  reopened.db.close();
  const fromOne = new PeerDb(peerData);
  t.same(fromOne.schema, { from: 1, to: 2, applied: ["2: the tracker's blacklist as this peer last knew it"] }, 'a version 1 peer database gets the blacklist copy (version 2)');
  fromOne.changeBlacklistCopy(['10.1.1.1', 'a'.repeat(40)], []);
  fromOne.changeBlacklistCopy([], ['10.1.1.1']);
  t.same(fromOne.blacklistCopy(), ['a'.repeat(40)], 'which keeps what it is told');
  fromOne.db.pragma('user_version = 99');
  fromOne.db.close();
  t.throws(() => new PeerDb(peerData), { code: 'P2P_VERSION', message: /schema version 99, written by a newer release; this one knows up to 2/ }, 'a newer one is refused');

  const newer = new Database(path.join(trackerData, 'tracker.sqlite'));
  newer.pragma('user_version = 99');
  newer.close();
  const r = await run('p2p-tracker', ['--listen', '127.0.0.1:0', '--data', trackerData]);
  t.equal(r.code, 1, 'p2p-tracker on a newer release\'s data folder exits 1');
  t.match(r.stderr, /cannot start: .*written by a newer release/, `and says why: ${r.stderr.trim().split('\n').at(-1)}`);
});
