/**
 * Tracker links prove the cluster secret both ways: a stranger who claims to be a tracker can neither
 * write (a RAFT append or merge), be served anything, nor sway the chain of command (a RAFT vote).
 *
 * Issue 9, finding 6: each proof covers a side label, both nonces and the ranks of the link (who dials,
 * whom it meant to reach), so a proof seen anywhere opens no other connection, no other direction and
 * no other rank, and a tracker's own proof relayed back to it is useless.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Tracker, type TrackerOptions } from '../../daemon/tracker.js';
import { TrackerLink } from '../../daemon/tracker-link.js';
import type { RaftMessage } from '../../daemon/raft/messages.js';
import {
  clusterProof,
  dial,
  encodeLinkClaim,
  Role,
  silentLogger,
  systemClock,
  type Address,
  type Body,
  type Connection,
  type TrackerLinkClaim,
} from '../../protocol/index.js';
import { startServer } from '../helpers/net.js';
import type { Tap } from '../helpers/roundtrip.js';
import { reservePorts, until } from '../helpers/wait.js';

const SECRET = 'the-cluster-secret';
const local = (port: number): Address => ({ host: '127.0.0.1', port });

/** Trackers on the given addresses (each listed in `cluster`), in a temporary folder, closed at teardown. */
async function startTrackers(t: Tap, cluster: Address[], which: number[], options: Partial<TrackerOptions> | ((i: number) => Partial<TrackerOptions>) = {}): Promise<Tracker[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-cluster-auth-'));
  const trackers = which.map(
    (i) => new Tracker({ listen: cluster[i]!, cluster, dataDir: path.join(dir, `t${i}`), adminToken: 'admin-token', clusterSecret: SECRET, heartbeatMs: 50, failoverMs: 300, ...(typeof options === 'function' ? options(i) : options) }),
  );
  t.teardown(async () => {
    for (const tr of trackers) await tr.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (const tr of trackers) await tr.listen();
  return trackers;
}

/** A connection that says HELLO as a tracker with `claim` (no claim: an empty key field, as before v2). */
async function helloAsTracker(t: Tap, to: Address, claim: TrackerLinkClaim | undefined, clientNonce: Buffer = randomBytes(32)): Promise<{ conn: Connection; clientNonce: Buffer; challenge: Body<'CHALLENGE'> }> {
  const conn = await dial(to);
  t.teardown(() => conn.destroy());
  const publicKey = claim ? encodeLinkClaim(claim) : Buffer.alloc(0);
  const challenge = await conn.request('HELLO', { role: Role.tracker, publicKey, nonce: clientNonce, listenPort: 0, software: 'test' }, 'CHALLENGE');
  return { conn, clientNonce, challenge: { ...challenge, nonce: Buffer.from(challenge.nonce), signature: Buffer.from(challenge.signature) } };
}

/** The AUTH a genuine tracker of rank `claim.from` would send on that connection. */
function genuineAuth(hello: { clientNonce: Buffer; challenge: Body<'CHALLENGE'> }, claim: TrackerLinkClaim, secret = SECRET): Body<'AUTH'> {
  return { signature: clusterProof(secret, 'client', { clientNonce: hello.clientNonce, serverNonce: hello.challenge.nonce, claim }) };
}

/** A RAFT message as a tracker sends one every heartbeat: it only says the sender is there. */
const status = (): string => JSON.stringify({ t: 'status', term: 0, role: 'backup', last: { index: 0, term: 0, epoch: 0 }, applied: 0, fresh: true, leader: -1, pending: false } satisfies RaftMessage);

/**
 * A request no tracker link may make. Trackers speak only RAFT events, so a link that was let in is told
 * so (P2P_UNEXPECTED_MESSAGE), and one whose handshake did not complete is told it is not authenticated.
 */
const search = (conn: Connection): Promise<unknown> => conn.request('SEARCH', { text: '', limit: 1 }, 'SEARCH_RESULT', { timeoutMs: 2000 });
const LET_IN = { code: 'P2P_UNEXPECTED_MESSAGE', message: /trackers speak RAFT events/ };
const NOT_LET_IN = { code: 'P2P_NOT_AUTHENTICATED' };

/** Whether `tracker` has heard, within failover-ms, from each rank of its cluster. */
const heard = async (tracker: Tracker): Promise<boolean[]> => (await tracker.cluster.status()).map((s) => s.reachable);

/** A tracker link as rank `selfRank` would open it to rank `rank` at `address`. */
function linkTo(t: Tap, address: Address, rank: number, selfRank: number, clusterSecret: string | undefined): TrackerLink {
  const link = new TrackerLink({
    rank,
    selfRank,
    address,
    label: `127.0.0.1:${address.port}`,
    clusterSecret,
    selfPort: 0,
    connectTimeoutMs: 2000,
    logger: silentLogger,
    clock: systemClock,
  });
  t.teardown(() => link.close());
  return link;
}

t.test('a stranger claiming to be a tracker is refused everything', async (t) => {
  const cluster = (await reservePorts(2)).map(local);
  const trackers = await startTrackers(t, cluster, [0, 1]);
  // The genuine pair authenticates: one of them becomes main.
  await until('a main', () => trackers.some((tr) => tr.cluster.isPrimary), 5000, 20);
  t.ok(trackers[0]!.cluster.isPrimary, 'the cluster forms with the shared secret');
  const term = trackers[0]!.cluster.term;

  const stranger = await helloAsTracker(t, cluster[0]!, { from: 1, to: 0 });
  const ban = { target: '10.6.6.6', reason: 'pwned', since: 1, addedBy: 'mallory' };
  const op = JSON.stringify({ op: 'blacklist-add', entry: ban });
  const forged: RaftMessage[] = [
    { t: 'merge', term, id: 1, records: [{ k: 'ban', ban: { ...ban, stamp: [term, 99] } }] },
    { t: 'append', term: 99, prev: { index: 0, term: 0, epoch: 0 }, entries: [{ index: 1, term: 99, epoch: 1, op }], commit: 1 },
    { t: 'vote', term: 99, last: { index: 99, term: 99, epoch: 1 }, pre: false, transfer: true },
    { t: 'timeout-now', term },
  ];
  for (const m of forged) stranger.conn.sendEvent('RAFT', { message: JSON.stringify(m) });
  // Frames are handled in order: once this is answered, the forged messages above were handled too.
  await t.rejects(search(stranger.conn), NOT_LET_IN, 'before the cluster secret is proven, nothing is served');
  await t.rejects(stranger.conn.request('AUTH', genuineAuth(stranger, { from: 1, to: 0 }, 'a-guess'), 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, 'a wrong secret is refused');
  t.same(trackers[0]!.state.blacklistEntries(), [], 'no write the stranger sent (a merge, an append) took effect');
  t.ok(trackers[0]!.cluster.isPrimary, 'and the chain of command is undisturbed');
  t.equal(trackers[0]!.cluster.term, term, 'nor the term (by a vote or an append of a later one)');
});

t.test('a correct pair links; a wrong secret is refused both ways', async (t) => {
  const cluster = (await reservePorts(2)).map(local);
  const [tracker] = await startTrackers(t, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });

  const genuine = linkTo(t, cluster[0]!, 0, 1, SECRET);
  await t.rejects(search(await genuine.open()), LET_IN, 'with the shared secret, rank 1 links to rank 0');
  genuine.send(status());
  await until('rank 0 to hear rank 1', async () => (await heard(tracker!))[1]);
  t.pass('and rank 0 hears it over the link');

  const impostor = linkTo(t, cluster[0]!, 0, 1, 'not-the-secret');
  await t.rejects(impostor.open(), { code: 'P2P_UNAUTHORIZED', message: /does not prove the cluster secret as rank 0/ }, "a tracker with another secret refuses the server's proof");

  const hello = await helloAsTracker(t, cluster[0]!, { from: 1, to: 0 });
  await t.rejects(hello.conn.request('AUTH', genuineAuth(hello, { from: 1, to: 0 }, 'not-the-secret'), 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, "and the server refuses a client's proof under another secret");
  await until('the refused connection to close', () => hello.conn.isClosed);

  // Two real trackers with different secrets never hear of each other.
  const split = (await reservePorts(2)).map(local);
  const pair = await startTrackers(t, split, [0, 1], (i) => ({ clusterSecret: `secret-${i}` }));
  await new Promise((resolve) => setTimeout(resolve, 500)); // ten heartbeats
  for (const [i, tr] of pair.entries()) {
    const other = (await tr.cluster.status())[1 - i]!;
    t.equal(other.reachable, false, `tracker ${i} never reached tracker ${1 - i}`);
  }
});

t.test("a tracker's own proof relayed back to it opens nothing (issue 9, finding 6)", async (t) => {
  // Mallory holds the address of rank 1 while it is down. When rank 0 dials it, she opens a link to
  // rank 0 with rank 0's own nonce and hands its proof back: before v2 that opened both links.
  const claims: TrackerLinkClaim[] = [
    { from: 1, to: 0 }, // the link she would like rank 0 to accept
    { from: 0, to: 1 }, // rank 0's own claim, verbatim
    { from: 0, to: 0 },
  ];
  const outcomes: string[] = [];
  const relays = new Map<Connection, { toVictim: Connection; claim: TrackerLinkClaim }>();
  let victim: Address | undefined;
  const mallory = await startServer(t, async (req, conn) => {
    if (req.name === 'HELLO') {
      if (relays.size >= 3 * claims.length) throw new Error('enough');
      const hello = req.body as Body<'HELLO'>;
      const claim = claims[relays.size % claims.length]!;
      const toVictim = await dial(victim!);
      relays.set(conn, { toVictim, claim });
      conn.on('close', () => outcomes.push('dropped'));
      const challenge = await toVictim.request('HELLO', { role: Role.tracker, publicKey: encodeLinkClaim(claim), nonce: Buffer.from(hello.nonce), listenPort: 0, software: 'mallory' }, 'CHALLENGE');
      conn.reply(req.requestId, 'CHALLENGE', challenge);
    } else if (req.name === 'AUTH') {
      // Had rank 0 accepted its own proof, its AUTH would open mallory's link to it as well.
      const relay = relays.get(conn)!;
      outcomes.push(`AUTH for ${relay.claim.from} -> ${relay.claim.to}`);
      await relay.toVictim.request('AUTH', req.body as Body<'AUTH'>, 'WELCOME');
      outcomes.push(`WELCOME for ${relay.claim.from} -> ${relay.claim.to}`);
    }
  });
  const [port0] = await reservePorts(1);
  victim = local(port0!);
  const [tracker] = await startTrackers(t, [victim, local(mallory.port)], [0], { handshakeTimeoutMs: 10_000 });

  await until('rank 0 to answer nine relayed challenges', () => outcomes.length >= 3 * claims.length, 10_000);
  t.same(outcomes.slice(0, 3 * claims.length), Array(3 * claims.length).fill('dropped'), 'rank 0 drops every link whose challenge carries its own proof: the proof covers another link');
  for (const { toVictim, claim } of [...relays.values()].slice(-claims.length)) {
    await t.rejects(search(toVictim), NOT_LET_IN, `mallory's link claiming ${claim.from} -> ${claim.to} is still unauthenticated`);
  }
  t.equal((await tracker!.cluster.status())[1]!.reachable, false, 'rank 0 never took mallory for rank 1');
  t.teardown(() => {
    for (const { toVictim } of relays.values()) toVictim.destroy();
  });

  // The same trick the other way: the server's proof as the client's, on the one connection.
  const hello = await helloAsTracker(t, victim, { from: 1, to: 0 });
  await t.rejects(hello.conn.request('AUTH', { signature: hello.challenge.signature }, 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, "the server's proof reflected as the client's is refused");
});

t.test('a genuine client proof relayed to another connection is refused', async (t) => {
  const cluster = (await reservePorts(2)).map(local);
  await startTrackers(t, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });
  const claim = { from: 1, to: 0 };
  const first = await helloAsTracker(t, cluster[0]!, claim);
  const auth = genuineAuth(first, claim);
  // A relay saw that AUTH and opens its own connection with the same nonce and claim; the server's nonce differs.
  const second = await helloAsTracker(t, cluster[0]!, claim, first.clientNonce);
  t.notOk(second.challenge.nonce.equals(first.challenge.nonce), 'each connection gets a fresh server nonce');
  await t.rejects(second.conn.request('AUTH', auth, 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, 'the proof made for the first connection is refused on the second');
  await first.conn.request('AUTH', auth, 'WELCOME');
  t.pass('and it still opens the connection it was made for');
});

t.test("a link may claim only its own rank, other than the server's, and only the rank it proved", async (t) => {
  const cluster = (await reservePorts(3)).map(local);
  const [tracker] = await startTrackers(t, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });
  const to = cluster[0]!;

  const asRank2 = await helloAsTracker(t, to, { from: 2, to: 0 });
  t.ok(asRank2.challenge.signature.length === 64, 'a claim of rank 2 is answered with a proof');
  await t.rejects(asRank2.conn.request('AUTH', genuineAuth(asRank2, { from: 1, to: 0 }), 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, "rank 1's proof does not open a link that claims rank 2");

  for (const claim of [{ from: 0, to: 0 }, { from: 1, to: 2 }, { from: 7, to: 0 }, undefined]) {
    const what = claim ? `${claim.from} -> ${claim.to}` : 'no claim';
    const hello = await helloAsTracker(t, to, claim);
    t.equal(hello.challenge.signature.length, 0, `${what}: the server proves nothing for a link that cannot be`);
    const auth = genuineAuth(hello, claim ?? { from: 1, to: 0 });
    await t.rejects(hello.conn.request('AUTH', auth, 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, `${what}: refused even with a proof under the right secret`);
  }

  const rank1 = await helloAsTracker(t, to, { from: 1, to: 0 });
  await rank1.conn.request('AUTH', genuineAuth(rank1, { from: 1, to: 0 }), 'WELCOME');
  // No "speaks as rank 2" case: RAFT messages carry no rank; a link's messages count as from the rank it proved.
  rank1.conn.sendEvent('RAFT', { message: status() });
  await t.rejects(search(rank1.conn), LET_IN, 'a link proven as rank 1 is let in');
  t.same(await heard(tracker!), [true, true, false], 'and what it says is heard as from rank 1');
});

t.test("the server's proof replayed to a client with another nonce is refused", async (t) => {
  const cluster = (await reservePorts(2)).map(local);
  await startTrackers(t, cluster, [1], { heartbeatMs: 1000, failoverMs: 5000 });
  // Mallory records rank 1's challenge for a link from rank 0, then plays it to rank 0 when it dials her.
  const recorded = (await helloAsTracker(t, cluster[1]!, { from: 0, to: 1 })).challenge;
  let authsSeen = 0;
  const replay = await startServer(t, (req, conn) => {
    if (req.name === 'HELLO') conn.reply(req.requestId, 'CHALLENGE', recorded);
    if (req.name === 'AUTH') authsSeen++;
  });
  await t.rejects(linkTo(t, local(replay.port), 1, 0, SECRET).open(), { code: 'P2P_UNAUTHORIZED' }, 'the replayed proof does not cover the new client nonce');
  t.equal(authsSeen, 0, 'the client sent no AUTH to the replayer');
  await t.rejects(search(await linkTo(t, cluster[1]!, 1, 0, SECRET).open()), LET_IN, 'the same client links to the real rank 1');
});

t.test('without a secret: only hosts of --cluster link, and the rank a link claims is the only one it may use', async (t) => {
  const cluster = (await reservePorts(3)).map(local);
  const [tracker] = await startTrackers(t, cluster, [0], { adminToken: undefined, clusterSecret: undefined, heartbeatMs: 1000, failoverMs: 5000 });
  const to = cluster[0]!;
  const rank1 = await helloAsTracker(t, to, { from: 1, to: 0 });
  t.equal(rank1.challenge.signature.length, 0, 'no proof without a secret');
  // No "only as that rank" case: RAFT messages carry no rank; a link's messages count as from the rank it claimed.
  rank1.conn.sendEvent('RAFT', { message: status() });
  await t.rejects(search(rank1.conn), LET_IN, 'a host of --cluster links as the rank it claims');
  t.same(await heard(tracker!), [true, true, false], 'and what it says is heard as from that rank');
  for (const claim of [{ from: 0, to: 0 }, { from: 1, to: 1 }, undefined]) {
    const what = claim ? `${claim.from} -> ${claim.to}` : 'no claim';
    await t.rejects(helloAsTracker(t, to, claim), { code: 'P2P_UNAUTHORIZED' }, `${what}: refused at HELLO`);
  }
});
