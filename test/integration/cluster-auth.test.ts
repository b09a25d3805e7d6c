/**
 * Tracker links run in TLS, and the key each member proves must be the one pinned for its rank in
 * --cluster (ID@HOST:PORT) or, without a pin, the one learned from its address on first contact. A
 * stranger who claims to be a tracker can neither write (a RAFT append or merge), be served anything, nor
 * sway the chain of command (a RAFT vote).
 *
 * Issue 9, finding 6 and issue 10: the shared-secret proof could be relayed back to a tracker; now a link
 * is bound to a key that only its member holds, so holding a --cluster address, or relaying a handshake,
 * gets nobody in.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { Tracker, type TrackerOptions } from '../../daemon/tracker.js';
import type { RaftMessage } from '../../daemon/raft/messages.js';
import {
  dial,
  encodeLinkClaim,
  generateKeyPair,
  loadIdentityFile,
  Role,
  serverContext,
  type Address,
  type Connection,
  type KeyPair,
  type PinnedAddress,
  type TrackerLinkClaim,
} from '../../protocol/index.js';
import { identityOf, tlsAs } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';
import { reservePorts, until } from '../helpers/wait.js';

const local = (port: number): Address => ({ host: '127.0.0.1', port });

/** Trackers on the given addresses (each listed in `cluster`), in a temporary folder, closed at teardown. */
async function startTrackers(t: Tap, dir: string, cluster: PinnedAddress[], which: number[], options: Partial<TrackerOptions> = {}): Promise<Tracker[]> {
  const trackers = which.map((i) => new Tracker({ listen: cluster[i]!, cluster, dataDir: path.join(dir, `t${i}`), adminToken: 'admin-token', heartbeatMs: 50, failoverMs: 300, ...options }));
  t.teardown(async () => {
    for (const tr of trackers) await tr.close();
  });
  for (const tr of trackers) await tr.listen();
  return trackers;
}

function tempDir(t: Tap): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-cluster-auth-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The key a tracker will have with data folder `dir/t<i>` (made now, as the tracker would at start). */
function trackerKey(dir: string, i: number): KeyPair {
  fs.mkdirSync(path.join(dir, `t${i}`), { recursive: true, mode: 0o700 });
  return loadIdentityFile(path.join(dir, `t${i}`, 'identity.key')).keys;
}

/** A connection in TLS with `keys` that says HELLO as a tracker with `claim`. */
async function helloAsTracker(t: Tap, to: Address, keys: KeyPair, claim: TrackerLinkClaim): Promise<{ conn: Connection; hello: Promise<unknown> }> {
  const conn = await dial(to, { tls: tlsAs(keys) });
  t.teardown(() => conn.destroy());
  const hello = conn.request('HELLO', { role: Role.tracker, listenPort: 0, software: 'test', link: encodeLinkClaim(claim) }, 'WELCOME');
  hello.catch(() => undefined);
  return { conn, hello };
}

/** Whether `tracker` has heard, within failover-ms, from each rank of its cluster. */
const heard = async (tracker: Tracker): Promise<boolean[]> => (await tracker.cluster.status()).map((s) => s.reachable);

/** A TLS server with `keys` at `address` that accepts anything and answers nothing: an impostor. */
async function impostor(t: Tap, address: Address, keys: KeyPair): Promise<{ hellos: number }> {
  const seen = { hellos: 0 };
  const server = tls.createServer({ secureContext: serverContext(identityOf(keys)), requestCert: true, rejectUnauthorized: false }, (socket) => socket.on('error', () => undefined));
  server.on('connection', () => seen.hellos++);
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(address.port, address.host, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return seen;
}

t.test('a stranger claiming to be a tracker is refused everything, even from a member host', async (t) => {
  const dir = tempDir(t);
  const cluster = (await reservePorts(2)).map(local);
  const trackers = await startTrackers(t, dir, cluster, [0, 1]);
  // The genuine pair learns each other's keys on first contact: one of them becomes main.
  await until('a main with its backup', async () => trackers[0]!.cluster.isPrimary && (await heard(trackers[0]!)).every(Boolean), 5000, 20);
  t.ok(trackers[0]!.cluster.isPrimary, 'the cluster forms, each learning the other key on first contact');
  const term = trackers[0]!.cluster.term;

  // From 127.0.0.1, the host of rank 1, with a key of its own.
  const stranger = await helloAsTracker(t, cluster[0]!, generateKeyPair().keys, { from: 1, to: 0 });
  const ban = { target: '10.6.6.6', reason: 'pwned', since: 1, addedBy: 'mallory' };
  const op = JSON.stringify({ op: 'blacklist-add', entry: ban });
  const forged: RaftMessage[] = [
    { t: 'merge', term, id: 1, records: [{ k: 'ban', ban: { ...ban, stamp: [term, 99] } }] },
    { t: 'append', term: 99, prev: { index: 0, term: 0, epoch: 0 }, entries: [{ index: 1, term: 99, epoch: 1, op }], commit: 1 },
    { t: 'vote', term: 99, last: { index: 99, term: 99, epoch: 1 }, pre: false, transfer: true },
    { t: 'timeout-now', term },
  ];
  for (const m of forged) stranger.conn.sendEvent('RAFT', { message: JSON.stringify(m) });
  await t.rejects(stranger.hello, { code: 'P2P_KEY_MISMATCH', message: /claims rank 1/ }, "its HELLO as rank 1 is refused: it did not prove rank 1's key");
  t.same(trackers[0]!.state.blacklistEntries(), [], 'no write the stranger sent (a merge, an append) took effect');
  t.ok(trackers[0]!.cluster.isPrimary, 'and the chain of command is undisturbed');
  t.equal(trackers[0]!.cluster.term, term, 'nor the term (by a vote or an append of a later one)');
});

t.test("a tracker's own key cannot be turned against it: a link claiming its rank, or another's with its key, is refused", async (t) => {
  const dir = tempDir(t);
  const cluster = (await reservePorts(3)).map(local);
  const k0 = trackerKey(dir, 0);
  const [t0] = await startTrackers(t, dir, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });
  // Someone who somehow presents t0's key (here: holds it) still may not claim to be t0 to t0 itself.
  const own = await helloAsTracker(t, cluster[0]!, k0, { from: 0, to: 0 });
  await t.rejects(own.hello, { code: 'P2P_UNAUTHORIZED', message: /this tracker's own/ }, 'a link claiming the rank of the tracker it dials is refused');
  const asOther = await helloAsTracker(t, cluster[0]!, k0, { from: 2, to: 0 });
  await t.rejects(asOther.hello, { code: /P2P_UNAUTHORIZED|P2P_KEY_MISMATCH/ }, "t0's key claiming rank 2 is refused (rank 2's key is another, or not known yet)");
  t.same(await heard(t0!), [true, false, false], 't0 hears no member');
});

t.test('pinned ids: an impostor at a member address is refused both ways; the genuine member links', async (t) => {
  const dir = tempDir(t);
  const ports = await reservePorts(2);
  const [k0, k1] = [trackerKey(dir, 0), trackerKey(dir, 1)];
  const pinned: PinnedAddress[] = [
    { ...local(ports[0]!), id: k0.peerId },
    { ...local(ports[1]!), id: k1.peerId },
  ];
  const [t0] = await startTrackers(t, dir, pinned, [0], { heartbeatMs: 50, failoverMs: 300 });
  // Rank 1's address is held by an impostor with a key of its own.
  const fake = generateKeyPair().keys;
  const seen = await impostor(t, pinned[1]!, fake);
  await until('t0 dials the impostor', () => seen.hellos > 0, 5000, 20);
  t.same(await heard(t0!), [true, false], "t0 does not take the impostor at rank 1's address for rank 1 (its key is not the pinned one)");
  const inbound = await helloAsTracker(t, pinned[0]!, fake, { from: 1, to: 0 });
  await t.rejects(inbound.hello, { code: 'P2P_KEY_MISMATCH' }, 'and refuses its link as rank 1');
  t.equal(t0!.state.store.knownKey(`127.0.0.1:${ports[1]}`), undefined, 'nothing learned from the impostor');
});

t.test('learned keys: once a member key is learned, a new key at that address is refused until it is pinned', async (t) => {
  const dir = tempDir(t);
  const cluster = (await reservePorts(2)).map(local);
  const [t0, t1] = await startTrackers(t, dir, cluster, [0, 1]);
  await until('the pair links both ways', async () => (await heard(t0!)).every(Boolean) && (await heard(t1!)).every(Boolean), 5000, 20);
  t.pass('on first contact each learned the other key');
  const key1 = t1!.identity.keys.peerId;
  await t1!.close();
  // Rank 1 comes back with a new key (its --data was lost): the key t0 learned no longer matches.
  fs.rmSync(path.join(dir, 't1'), { recursive: true, force: true });
  const [again] = await startTrackers(t, dir, cluster, [1]);
  t.not(again!.identity.keys.peerId, key1, 'the reinstalled rank 1 has a new key');
  const msg = new Promise<string>((resolve) => {
    const inbound = helloAsTracker(t, cluster[0]!, again!.identity.keys, { from: 1, to: 0 });
    void inbound.then(({ hello }) => hello.then(() => resolve('accepted'), (err: Error) => resolve(`${(err as { code?: string }).code}: ${err.message}`)));
  });
  t.match(await msg, /^P2P_KEY_MISMATCH/, 'a link with the new key is refused: someone may be impersonating rank 1');
  await until('t0 no longer hears the old rank 1', async () => (await heard(t0!))[1] === false, 5000, 20);
  const again2 = await helloAsTracker(t, cluster[0]!, again!.identity.keys, { from: 1, to: 0 });
  await t.rejects(again2.hello, { code: 'P2P_KEY_MISMATCH' }, 'refused again');
  t.same((await heard(t0!))[1], false, 't0 does not count it as rank 1');

  // The operator pins the new key: t0 restarts with ID@HOST:PORT for rank 1, and links again.
  await t0!.close();
  const repinned: PinnedAddress[] = [cluster[0]!, { ...cluster[1]!, id: again!.identity.keys.peerId }];
  const [t0again] = await startTrackers(t, dir, repinned, [0]);
  await until('t0 links with the re-pinned rank 1', async () => (await heard(t0again!))[1] === true, 5000, 20);
  t.pass('with the new id pinned, the pair links again');
});
