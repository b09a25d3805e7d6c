/**
 * Issue 10, "a missed un-ban that heals on reconnect": a blacklist change pushed while a peer had no
 * tracker session (its links cut, failing over) used to be lost until the peer daemon restarted: an
 * un-banned peer stayed refused, a banned one kept the connections it had. Now a peer re-syncs the
 * blacklist by version on every (re)connection. Two real trackers (a main and its backup), a real peer
 * daemon that reaches them through proxies (so its links alone can be cut), and a downloader's key.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import type { Tracker } from '../../daemon/tracker.js';
import { clientHandshake } from '../../peerd/handshake.js';
import { blacklistDigest, dial, formatAddress, generateKeyPair, toP2PError, type Address, type Connection, type KeyPair } from '../../protocol/index.js';
import { ADMIN_TOKEN, Fleet, type TestPeer } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { TcpProxy } from '../helpers/relay.js';
import { tlsAs } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';


const addr = (a: Address): string => formatAddress(a.host, a.port);

interface Setup {
  fleet: Fleet;
  trackers: Tracker[];
  /** The seeder's way to each tracker. */
  proxies: TcpProxy[];
  seeder: TestPeer;
  fileId: Buffer;
  admin: AdminClient;
}

async function setUp(t: Tap): Promise<Setup> {
  const fleet = new Fleet(t);
  const trackers = await fleet.startCluster(2);
  const proxies: TcpProxy[] = [];
  for (const tr of trackers) {
    const p = new TcpProxy(tr.address!.port);
    await p.listen(new Set(trackers.map((x) => x.address!.port)));
    t.teardown(() => p.close());
    proxies.push(p);
  }
  const seeder = await fleet.startPeer('seeder', { trackers: proxies.map((p) => ({ host: '127.0.0.1', port: p.port })) });
  const f = path.join(seeder.shareDir, 'f.txt');
  fs.writeFileSync(f, 'the file the downloader wants');
  const [shared] = await seeder.call('share', { paths: [f] });
  const admin = await AdminClient.connect(addr(fleet.trackerAddress), ADMIN_TOKEN);
  t.teardown(() => admin.close());
  return { fleet, trackers, proxies, seeder, fileId: Buffer.from(shared!.id, 'hex'), admin };
}

/** A session of `keys` with the seeder's chunk server: 'served' with the connection, or the code it was refused with. */
async function connectToSeeder(t: Tap, s: Setup, keys: KeyPair): Promise<{ conn?: Connection; code: string }> {
  const conn = await dial(s.seeder.daemon.chunkServer.address!, { requestTimeoutMs: 3000, tls: tlsAs(keys, s.seeder.daemon.keys.publicKey) });
  t.teardown(() => conn.destroy());
  try {
    await clientHandshake(conn, 0);
    await conn.request('GET_CHUNK', { fileId: s.fileId, index: 0 }, 'CHUNK');
    return { conn, code: 'served' };
  } catch (err) {
    conn.destroy();
    return { code: toP2PError(err).code };
  }
}

/** Cuts every link of the seeder to the trackers, and waits until it knows. */
async function cutSeeder(s: Setup): Promise<void> {
  for (const p of s.proxies) p.set('drop');
  await until('the seeder to lose its tracker session', async () => ((await s.seeder.call('status', {})).tracker.state !== 'connected' ? true : undefined));
}

/** Heals the seeder's link to tracker `i` only, and waits until it has a session there. */
async function healSeeder(s: Setup, i: number): Promise<void> {
  s.proxies[i]!.set('pass');
  const via = `127.0.0.1:${s.proxies[i]!.port}`;
  await until(`the seeder back with tracker ${i}`, async () => {
    const st = (await s.seeder.call('status', {})).tracker;
    return st.state === 'connected' && st.address === via ? true : undefined;
  });
}

/** Waits until every tracker holds (or no longer holds) `target`: the change is committed everywhere. */
async function everywhere(s: Setup, target: string, banned: boolean): Promise<void> {
  await until(`every tracker to ${banned ? 'ban' : 'lift the ban on'} ${target}`, () =>
    s.trackers.every((tr) => !!tr.state.isBanned(target, '') === banned) ? true : undefined,
  );
}

t.test('a missed un-ban heals on reconnect: the seeder serves the un-banned peer again', async (t) => {
  const s = await setUp(t);
  const downloader = generateKeyPair().keys;
  t.equal((await connectToSeeder(t, s, downloader)).code, 'served', 'the seeder serves the downloader at first');

  await s.admin.add(downloader.peerId, 'test ban');
  await until('the pushed ban to reach the seeder', async () => ((await connectToSeeder(t, s, downloader)).code === 'P2P_BLACKLISTED' ? true : undefined));

  await cutSeeder(s);
  await s.admin.remove(downloader.peerId);
  await everywhere(s, downloader.peerId, false);
  // The seeder fails over to the backup, which holds the un-ban by replication but pushed it to nobody here.
  await healSeeder(s, 1);
  const served = await until('the seeder to serve the un-banned downloader', async () => ((await connectToSeeder(t, s, downloader)).code === 'served' ? true : undefined), 8000).catch(() => false);
  t.ok(served, 'after reconnecting to another tracker, the seeder follows its list: the un-banned peer is served');
  const held = s.seeder.daemon.blacklist.syncedVersion;
  t.match(held, /^\d+\.\d+$/, `the seeder re-synced to a version (${held})`);
  t.equal(held, s.trackers[1]!.state.blacklistVersion, "the backup's, which is the main's");
  t.equal(held, s.trackers[0]!.state.blacklistVersion);
});

t.test('a missed ban heals on reconnect: the banned peer loses the connection it had, and is refused', async (t) => {
  const s = await setUp(t);
  const downloader = generateKeyPair().keys;
  const before = await connectToSeeder(t, s, downloader);
  t.equal(before.code, 'served', 'the downloader is served, and keeps its connection open');
  const open = before.conn!;
  let lastWord = '';
  open.on('remoteError', (e: { code: string }) => (lastWord = e.code));

  await cutSeeder(s);
  await s.admin.add(downloader.peerId, 'banned while the seeder was away');
  await everywhere(s, downloader.peerId, true);
  await healSeeder(s, 0);
  const closed = await until('the seeder to cut the banned peer\'s connection', () => (open.isClosed ? true : undefined), 8000).catch(() => false);
  t.ok(closed, 'the connection the banned peer already had is closed once the seeder re-syncs, as a pushed ban does');
  t.equal(lastWord, 'P2P_BLACKLISTED', 'saying why');
  t.equal((await connectToSeeder(t, s, downloader)).code, 'P2P_BLACKLISTED', 'and a new connection is refused');
  const held = s.seeder.daemon.blacklist.syncedVersion;
  t.match(held, /^\d+\.\d+$/, `the seeder re-synced to a version (${held})`);
  t.equal(held, s.trackers[0]!.state.blacklistVersion, "the main's");
});

t.test('a restarted seeder enforces the list it kept before any tracker answers, and re-syncs it for nothing when it did not change', async (t) => {
  const s = await setUp(t);
  const downloader = generateKeyPair().keys;
  await s.admin.add(downloader.peerId, 'banned before the restart');
  await until('the pushed ban to reach the seeder', async () => ((await connectToSeeder(t, s, downloader)).code === 'P2P_BLACKLISTED' ? true : undefined));

  await s.seeder.stop();
  for (const p of s.proxies) p.set('drop');
  const seeder = await s.fleet.startPeer('seeder', { trackers: s.proxies.map((p) => ({ host: '127.0.0.1', port: p.port })) });
  const restarted = { ...s, seeder };
  t.not((await seeder.call('status', {})).tracker.state, 'connected', 'the restarted seeder reaches no tracker');
  t.equal((await connectToSeeder(t, restarted, downloader)).code, 'P2P_BLACKLISTED', 'and still refuses the banned peer: the list it kept is in force');
  t.equal((await connectToSeeder(t, restarted, generateKeyPair().keys)).code, 'served', 'while serving others');

  const answers: Array<{ changed: boolean; targets: number }> = [];
  const tracker = seeder.daemon.tracker;
  const request = tracker.request.bind(tracker);
  tracker.request = (async (...args: Parameters<typeof request>) => {
    const answer = await request(...args);
    if (args[0] === 'BLACKLIST_SYNC') answers.push({ changed: (answer as { changed: boolean }).changed, targets: (answer as { targets: unknown[] }).targets.length });
    return answer;
  }) as typeof request;
  await healSeeder(restarted, 0);
  await until('the restarted seeder to re-sync', () => (seeder.daemon.blacklist.listIsCurrent ? true : undefined));
  t.same(answers, [{ changed: false, targets: 0 }], 'the tracker, seeing the digest of the very list it holds, sent none of it');
  t.equal(seeder.daemon.blacklist.syncedVersion, s.trackers[0]!.state.blacklistVersion, 'and the seeder holds its version');
  t.equal((await connectToSeeder(t, restarted, downloader)).code, 'P2P_BLACKLISTED', 'the ban stays in force');
});

t.test("the tracker's answer to a re-sync: unchanged only for the very list, by its digest or by the version a 0.1 peer was told", async (t) => {
  const s = await setUp(t);
  const sync = (version: string): Promise<{ version: string; changed: boolean; targets: Array<{ target: string }> }> => s.seeder.daemon.tracker.request('BLACKLIST_SYNC', { version }, 'BLACKLIST_STATE');
  const x = generateKeyPair().keys.peerId;
  await s.admin.add(x, 'first ban');
  await everywhere(s, x, true);
  const told = await sync('');
  t.match(told, { changed: true, targets: [{ target: x }] }, 'a peer holding nothing gets the list');
  t.match(await sync(told.version), { changed: false, targets: [] }, "a 0.1 peer echoing the version it was told, nothing having changed: unchanged");
  t.match(await sync(blacklistDigest([x])), { changed: false, targets: [] }, 'a peer holding that list, by its digest: unchanged');
  // The ban lifted and made again: the same list, the same digest, a later version. A 0.1 peer that
  // missed both pushes holds the list; one that got only the first holds none: it must get the list.
  await s.admin.remove(x);
  await everywhere(s, x, false);
  await s.admin.add(x, 'banned again');
  await everywhere(s, x, true);
  t.match(await sync(told.version), { changed: true, targets: [{ target: x }] }, 'the old version echoed after a change and its undoing: the whole list');
  t.match(await sync(blacklistDigest([])), { changed: true, targets: [{ target: x }] }, 'the digest of an empty list: the whole list');
  t.match(await sync(blacklistDigest([x])), { changed: false }, 'the digest of the list as it is: unchanged');
});

t.test('a seeder whose list is synced judges the peers it meets by that list, without asking the tracker each time', async (t) => {
  const s = await setUp(t);
  const asked: string[] = [];
  const tracker = s.seeder.daemon.tracker;
  const request = tracker.request.bind(tracker);
  tracker.request = ((name: string, ...rest: unknown[]) => {
    if (name === 'BLACKLIST_CHECK') asked.push(name);
    return (request as (...a: unknown[]) => unknown)(name, ...rest);
  }) as typeof tracker.request;
  await until('the seeder to hold the synced list', () => (s.seeder.daemon.blacklist.listIsCurrent ? true : undefined));

  const banned = generateKeyPair().keys;
  await s.admin.add(banned.peerId, 'banned before it ever met the seeder');
  await everywhere(s, banned.peerId, true);
  await until('the pushed ban to reach the seeder', () => (s.seeder.daemon.blacklist.knownBanned(banned.peerId, '') ? true : undefined));
  for (let i = 0; i < 3; i++) {
    t.equal((await connectToSeeder(t, s, generateKeyPair().keys)).code, 'served', `new downloader ${i + 1} is served`);
  }
  t.equal((await connectToSeeder(t, s, banned)).code, 'P2P_BLACKLISTED', 'the banned peer is refused');
  t.same(asked, [], 'and the tracker was not asked about any of them');

  // Without a session the list may be behind, but there is nobody to ask: the known entries decide at once
  // (waiting for a session would hold the peer's handshake past its deadline).
  await cutSeeder(s);
  t.notOk(s.seeder.daemon.blacklist.listIsCurrent, 'with no session the list is not taken as current');
  t.equal((await connectToSeeder(t, s, banned)).code, 'P2P_BLACKLISTED', 'the known ban still applies');
  t.equal((await connectToSeeder(t, s, generateKeyPair().keys)).code, 'served', 'a new peer is served on the known entries');
  t.same(asked, [], 'without waiting for a tracker to ask');

  await healSeeder(s, 0);
  await until('the seeder to re-sync', () => (s.seeder.daemon.blacklist.listIsCurrent ? true : undefined));
  t.equal((await connectToSeeder(t, s, generateKeyPair().keys)).code, 'served', 'back in session, a new peer is served');
  t.same(asked, [], 'without asking the tracker');
});
