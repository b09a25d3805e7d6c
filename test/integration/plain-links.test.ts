/**
 * Issue 10: `--plain-chunk-links`, for networks the operator trusts. Chunk connections between two peers
 * that both set it skip TLS; everything else stays as it was:
 * - the tracker link stays encrypted (a sniffer there sees no file name and no token);
 * - a peer with the flag still downloads from, and serves, peers without it (in TLS);
 * - on a plain link the downloader proves its key by signing the seeder's nonce, so a wrong signature,
 *   a signature made for another seeder and a blacklisted key are refused as before;
 * - every chunk is still verified: a seeder that serves bad data is caught and blacklisted by evidence;
 * - a tracker takes no plain client, and says so with P2P_TLS_REQUIRED.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import { SOFTWARE } from '../../peerd/handshake.js';
import type { PeerDaemonOptions } from '../../peerd/peerd.js';
import { dial, formatAddress, generateKeyPair, plainAuthPayload, Role, signPayload, type Address, type Connection, type KeyPair } from '../../protocol/index.js';
import { ADMIN_TOKEN, Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { sniffedPeers } from '../helpers/net.js';
import type { Tap } from '../helpers/tap.js';

const marker = 'THE-CONTENT-MARKER-5d1c2';
const content = `${marker}\n`.repeat(50_000);

/** A seeder behind a sniffer (it advertises the sniffer's address), a downloader, one shared text file. */
async function setup(t: Tap, plain: { seeder: boolean; downloader: boolean }) {
  const { fleet, seeder, downloader, onTrackerLink, onPeerLink } = await sniffedPeers(t, { seeder: { plainChunkLinks: plain.seeder }, downloader: { plainChunkLinks: plain.downloader } });
  const name = 'plain-links-plans.txt';
  fs.writeFileSync(path.join(seeder.shareDir, name), content);
  await seeder.call('share', { paths: [path.join(seeder.shareDir, name)] });
  await Fleet.held(downloader, name, 1);
  const out = path.join(fleet.dir, 'got.txt');
  const got = await downloader.call('get', { key: name, out, overwrite: false });
  return { fleet, seeder, downloader, name, out, got, onTrackerLink, onPeerLink, via: formatAddress(onPeerLink.address.host, onPeerLink.address.port) };
}

t.test('both peers with --plain-chunk-links: chunks travel in clear, verified; the tracker link stays in TLS', async (t) => {
  const s = await setup(t, { seeder: true, downloader: true });
  t.equal(fs.readFileSync(s.out, 'utf8'), content, 'the download is intact');
  t.same(s.got.peers.map((p) => p.address), [s.via], 'it came through the sniffed peer link');
  t.not(s.onPeerLink.seen().indexOf(marker), -1, 'the file content is visible on the peer link: it ran without TLS');
  const trackerWire = s.onTrackerLink.seen();
  t.ok(trackerWire.length > 500, 'the tracker link carried traffic');
  t.equal(trackerWire.indexOf(s.name), -1, 'the file name never appears on the tracker link');
  t.equal(trackerWire.indexOf(ADMIN_TOKEN), -1, 'nor the admin token');
});

t.test('a downloader with the flag and a seeder without it: the download runs in TLS', async (t) => {
  const s = await setup(t, { seeder: false, downloader: true });
  t.equal(fs.readFileSync(s.out, 'utf8'), content, 'the download is intact');
  t.same(s.got.peers.map((p) => p.address), [s.via], 'from that seeder');
  t.ok(s.onPeerLink.bytes() > 600_000, 'the chunks crossed the sniffed link');
  t.equal(s.onPeerLink.seen().indexOf(marker), -1, 'encrypted: the content never appears on the wire');
});

t.test('a seeder with the flag still serves a downloader without it, in TLS', async (t) => {
  const s = await setup(t, { seeder: true, downloader: false });
  t.equal(fs.readFileSync(s.out, 'utf8'), content, 'the download is intact');
  t.equal(s.onPeerLink.seen().indexOf(marker), -1, 'encrypted: the content never appears on the wire');
});

/** A plain TCP connection to `at`, and its HELLO answered with the seeder's nonce. */
async function plainHello(t: Tap, at: Address): Promise<{ conn: Connection; nonce: Buffer }> {
  const conn = await dial(at, { connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
  t.teardown(() => conn.destroy());
  const { nonce } = await conn.request('HELLO', { role: Role.peer, listenPort: 1, software: SOFTWARE, link: Buffer.alloc(0) }, 'PLAIN_CHALLENGE');
  return { conn, nonce };
}

const auth = (conn: Connection, keys: KeyPair, payload: Buffer, signer: KeyPair = keys) =>
  conn.request('PLAIN_AUTH', { publicKey: keys.publicKey, signature: signPayload(signer, payload) }, 'WELCOME');

t.test('on a plain link the downloader must prove its key for this seeder and this connection', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeder = await fleet.startPeer('seeder', { plainChunkLinks: true });
  const at = seeder.daemon.chunkServer.address!;
  const seederKey = seeder.daemon.keys.publicKey;
  const me = generateKeyPair().keys;

  const before = await dial(at, { connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
  t.teardown(() => before.destroy());
  await t.rejects(before.request('GET_MANIFEST', { fileId: Buffer.alloc(32) }, 'MANIFEST'), { code: 'P2P_NOT_AUTHENTICATED' }, 'nothing is served before the handshake');

  const wrong = await plainHello(t, at);
  await t.rejects(auth(wrong.conn, me, plainAuthPayload(wrong.nonce, seederKey), generateKeyPair().keys), { code: 'P2P_BAD_SIGNATURE' }, 'a signature by another key is refused');

  const elsewhere = await plainHello(t, at);
  await t.rejects(auth(elsewhere.conn, me, plainAuthPayload(elsewhere.nonce, generateKeyPair().keys.publicKey)), { code: 'P2P_BAD_SIGNATURE' }, 'a proof made for another seeder is refused (it cannot be relayed)');

  const first = await plainHello(t, at);
  const welcome = await auth(first.conn, me, plainAuthPayload(first.nonce, seederKey));
  t.equal(welcome.peerId, me.peerId, 'the right proof is welcomed as that peer');
  const replay = await plainHello(t, at);
  t.not(replay.nonce.toString('hex'), first.nonce.toString('hex'), 'each connection gets a fresh nonce');
  await t.rejects(auth(replay.conn, me, plainAuthPayload(first.nonce, seederKey)), { code: 'P2P_BAD_SIGNATURE' }, 'a proof from an earlier connection is refused');

  const admin = await AdminClient.connect(formatAddress(fleet.trackerAddress.host, fleet.trackerAddress.port), ADMIN_TOKEN);
  t.teardown(() => admin.close());
  await admin.add(me.peerId, 'test');
  const banned = await plainHello(t, at);
  await t.rejects(auth(banned.conn, me, plainAuthPayload(banned.nonce, seederKey)), { code: 'P2P_BLACKLISTED' }, 'a blacklisted key is refused on a plain link too');
});

/**
 * An honest seeder and a misbehaving one, all three peers on plain links, and a download of a `mib` MiB
 * file from both, checked byte for byte.
 */
async function downloadPastACheat(t: Tap, mib: number, cheat: Partial<PeerDaemonOptions>) {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const honest = await fleet.startPeer('honest', { plainChunkLinks: true });
  const bad = await fleet.startPeer('bad', { plainChunkLinks: true, ...cheat });
  const downloader = await fleet.startPeer('downloader', { plainChunkLinks: true });
  const orig = path.join(fleet.dir, 'orig.bin');
  Fleet.randomFile(orig, mib);
  await Fleet.seed([honest, bad], orig, 'data.bin', downloader);
  const out = path.join(fleet.dir, 'got.bin');
  const r = await downloader.call('get', { key: 'data.bin', out, overwrite: false });
  t.ok(fs.readFileSync(out).equals(fs.readFileSync(orig)), 'the download is byte-identical');
  return { fleet, bad, downloader, r };
}

t.test('on plain links a seeder that serves bad data is still caught and blacklisted by evidence', async (t) => {
  const { fleet, bad, r } = await downloadPastACheat(t, 8, { corruptChunks: true });
  t.equal(r.peers.find((p) => p.id === bad.daemon.peerId)?.bytes ?? 0, 0, 'the bad seeder contributed 0 verified bytes');
  const admin = await AdminClient.connect(formatAddress(fleet.trackerAddress.host, fleet.trackerAddress.port), ADMIN_TOKEN);
  t.teardown(() => admin.close());
  const list = await until('the bad seeder on the blacklist', async () => {
    const l = (await admin.blacklist()).entries.map((e) => e.target);
    return l.includes(bad.daemon.peerId) ? l : undefined;
  });
  t.same(list, [bad.daemon.peerId], 'its own signed receipts convict it, and only it');
});

t.test('on plain links every receipt is checked (it is the only proof of who sent a chunk): garbage signatures after the 16th drop the peer', async (t) => {
  const { bad: relay, downloader, r } = await downloadPastACheat(t, 48, { misbehaveAfter: { chunks: 16, what: 'garbage-receipts' } });
  t.ok(relay.daemon.chunkServer.bytesSent > 16 * 1024 * 1024, 'it served past its 16th chunk');
  t.ok((r.peers.find((p) => p.id === relay.daemon.peerId)?.bytes ?? 0) <= 16 * 1024 * 1024, 'no chunk with a garbage receipt was kept under its name');
  const d = downloader.daemon.counters.verificationFailures;
  t.ok(d.bad_receipt >= 1, 'refused as a bad receipt');
});

t.test('a tracker refuses a plain client with P2P_TLS_REQUIRED', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const conn = await dial(fleet.trackerAddress, { connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
  t.teardown(() => conn.destroy());
  await t.rejects(conn.request('HELLO', { role: Role.peer, listenPort: 1, software: SOFTWARE, link: Buffer.alloc(0) }, 'WELCOME'), { code: 'P2P_TLS_REQUIRED' }, 'a coded refusal, not a dropped connection');
});
