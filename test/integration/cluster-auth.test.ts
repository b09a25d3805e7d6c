/**
 * Tracker links prove the cluster secret both ways: a stranger who claims to be a tracker can neither
 * write (MERGE, REPLICATE), read the replicated state (SYNC_REQUEST), nor sway the chain of command.
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

const view = (rank: number): Body<'HEARTBEAT'> => ({ rank, term: 0, seq: 0, primary: false, stateful: false });

/** A tracker link as rank `selfRank` would open it to rank `rank` at `address`. */
function linkTo(t: Tap, address: Address, rank: number, selfRank: number, clusterSecret: string | undefined): TrackerLink {
  const link = new TrackerLink({
    rank,
    address,
    label: `127.0.0.1:${address.port}`,
    clusterSecret,
    selfPort: 0,
    connectTimeoutMs: 2000,
    greeting: () => view(selfRank),
    onGreeted: () => undefined,
    onDown: () => undefined,
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

  const stranger = await helloAsTracker(t, cluster[0]!, { from: 1, to: 0 });
  await t.rejects(
    stranger.conn.request('MERGE', { rank: 1, term: 99, ops: JSON.stringify([{ op: 'blacklist-add', entry: { target: '10.6.6.6', reason: 'pwned', since: 1, addedBy: 'mallory' } }]) }, 'OK'),
    { code: 'P2P_NOT_AUTHENTICATED' },
    'no write before the cluster secret is proven',
  );
  await t.rejects(stranger.conn.request('SYNC_REQUEST', { rank: 1, term: 99 }, 'SYNC_STATE'), { code: 'P2P_NOT_AUTHENTICATED' }, 'no state either');
  await t.rejects(stranger.conn.request('AUTH', genuineAuth(stranger, { from: 1, to: 0 }, 'a-guess'), 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, 'a wrong secret is refused');
  t.same(trackers[0]!.state.blacklistEntries(), [], 'nothing the stranger sent took effect');
  t.ok(trackers[0]!.cluster.isPrimary, 'and the chain of command is undisturbed');
});

t.test('a correct pair links; a wrong secret is refused both ways', async (t) => {
  const cluster = (await reservePorts(2)).map(local);
  await startTrackers(t, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });

  const genuine = linkTo(t, cluster[0]!, 0, 1, SECRET);
  const ack = await genuine.request('HEARTBEAT', view(1), 'HEARTBEAT_ACK', 2000);
  t.equal(ack.rank, 0, 'with the shared secret, rank 1 links to rank 0 and is answered');

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
    await t.rejects(toVictim.request('HEARTBEAT', view(1), 'HEARTBEAT_ACK'), { code: 'P2P_NOT_AUTHENTICATED' }, `mallory's link claiming ${claim.from} -> ${claim.to} is still unauthenticated`);
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
  await startTrackers(t, cluster, [0], { heartbeatMs: 1000, failoverMs: 5000 });
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
  await t.rejects(rank1.conn.request('HEARTBEAT', view(2), 'HEARTBEAT_ACK'), { code: 'P2P_UNAUTHORIZED' }, 'a link proven as rank 1 cannot speak as rank 2');
  await t.rejects(rank1.conn.request('VOTE_REQUEST', { rank: 2, term: 9, seq: 9, stateful: true }, 'VOTE'), { code: 'P2P_UNAUTHORIZED' }, 'nor ask for a vote as rank 2');
  t.equal((await rank1.conn.request('HEARTBEAT', view(1), 'HEARTBEAT_ACK', { timeoutMs: 2000 })).rank, 0, 'it speaks as rank 1');
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
  const ack = await linkTo(t, cluster[1]!, 1, 0, SECRET).request('HEARTBEAT', view(0), 'HEARTBEAT_ACK', 2000);
  t.equal(ack.rank, 1, 'the same client links to the real rank 1');
});

t.test('without a secret: only hosts of --cluster link, and the rank a link claims is the only one it may use', async (t) => {
  const cluster = (await reservePorts(3)).map(local);
  await startTrackers(t, cluster, [0], { adminToken: undefined, clusterSecret: undefined, heartbeatMs: 1000, failoverMs: 5000 });
  const to = cluster[0]!;
  const rank1 = await helloAsTracker(t, to, { from: 1, to: 0 });
  t.equal(rank1.challenge.signature.length, 0, 'no proof without a secret');
  t.equal((await rank1.conn.request('HEARTBEAT', view(1), 'HEARTBEAT_ACK', { timeoutMs: 2000 })).rank, 0, 'a host of --cluster links as the rank it claims');
  await t.rejects(rank1.conn.request('HEARTBEAT', view(2), 'HEARTBEAT_ACK'), { code: 'P2P_UNAUTHORIZED' }, 'and only as that rank');
  for (const claim of [{ from: 0, to: 0 }, { from: 1, to: 1 }, undefined]) {
    const what = claim ? `${claim.from} -> ${claim.to}` : 'no claim';
    await t.rejects(helloAsTracker(t, to, claim), { code: 'P2P_UNAUTHORIZED' }, `${what}: refused at HELLO`);
  }
});
