/**
 * Safety end to end (issue 3), on real daemons and sockets: who a peer is (spoofing refused everywhere),
 * the blacklist enforced by the tracker and by every serving peer, a malicious seeder caught by its own
 * signed receipts, user reports that need evidence and obey the policy and the rate limit, and an admin
 * interface that only the token opens and whose blacklist survives a restart.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import { clientHandshake } from '../../peerd/handshake.js';
import {
  Connection,
  dial,
  encodeLinkClaim,
  formatAddress,
  generateKeyPair,
  MAX_RECEIPTS_PER_SERVER,
  receiptPayload,
  Role,
  sha256,
  signPayload,
  type Address,
  type Body,
  type KeyPair,
} from '../../protocol/index.js';
import { ADMIN_TOKEN, Fleet, sameContent, type TestPeer } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { identityOf, tlsAs } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';

type Receipt = Body<'REPORT'>['receipts'][number];

const newKeys = (): KeyPair => generateKeyPair().keys;
const addr = (a: Address): string => formatAddress(a.host, a.port);

/** The last word (ERROR with request id 0) each connection received before it was closed. */
const lastWords = new WeakMap<Connection, string>();

/** A connection in TLS as `keys` (a new key if none), that is closed when the test ends; with `expect`, the server must prove that key. */
async function open(t: Tap, a: Address, keys: KeyPair = newKeys(), expect?: Buffer): Promise<Connection> {
  const conn = await dial(a, { requestTimeoutMs: 5000, tls: tlsAs(keys, expect) });
  conn.on('remoteError', (e: { code: string }) => lastWords.set(conn, e.code));
  t.teardown(() => conn.destroy());
  return conn;
}

/** HELLO as a peer (TLS has proven the key). */
function handshake(conn: Connection, listenPort = 0): Promise<Body<'WELCOME'>> {
  return clientHandshake(conn, listenPort);
}

/** An authenticated raw session with the tracker, as a hand-written client would have. */
async function session(t: Tap, a: Address, keys: KeyPair): Promise<Connection> {
  const conn = await open(t, a, keys);
  await handshake(conn);
  return conn;
}

/** The code the other side gave for closing `conn`, once its socket is closed (bounded wait). */
async function closedWith(conn: Connection, what: string): Promise<string | undefined> {
  await until(`${what} to be closed`, () => (conn.isClosed && conn.socket.closed ? true : undefined), 5000);
  return lastWords.get(conn);
}

async function admin(t: Tap, fleet: Fleet, token = ADMIN_TOKEN): Promise<AdminClient> {
  const c = await AdminClient.connect(addr(fleet.trackerAddress), token);
  t.teardown(() => c.close());
  return c;
}

const banned = async (c: AdminClient): Promise<string[]> => (await c.blacklist()).entries.map((e) => e.target).sort();

function randomFile(fleet: Fleet, mib: number, extra = 12345): string {
  const p = path.join(fleet.dir, `orig-${mib}-${extra}.bin`);
  Fleet.randomFile(p, mib, extra);
  return p;
}

/** A chunk fetched by `keys` straight from `from`'s chunk server, and the receipt that came with it. */
async function fetchReceipt(t: Tap, from: TestPeer, keys: KeyPair, fileId: string, index: number): Promise<Receipt> {
  const conn = await open(t, from.daemon.chunkServer.address!, keys, from.daemon.keys.publicKey);
  await clientHandshake(conn, 0);
  const chunk = await conn.request('GET_CHUNK', { fileId: Buffer.from(fileId, 'hex'), index }, 'CHUNK');
  conn.close();
  return { publicKey: from.daemon.keys.publicKey, index, hash: chunk.hash, signature: chunk.signature };
}

t.test('identity spoofing is refused by the tracker, by a serving peer and by a downloader', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const a = await fleet.startPeer('a');
  const b = await fleet.startPeer('b');
  fs.writeFileSync(path.join(a.shareDir, 'a.txt'), 'from a');
  await Fleet.held(b, 'a.txt', 1);
  const mallory = newKeys();

  // Claiming A's key without A's private key: TLS needs the key of the certificate one presents.
  const stolen = { ...identityOf(a.daemon.keys), key: identityOf(mallory).key };
  const spoof = (to: Address): Promise<Connection> => dial(to, { connectTimeoutMs: 2000, tls: { identity: stolen, verify: () => undefined } });
  await t.rejects(spoof(fleet.trackerAddress), /key values mismatch/i, "A's certificate with another private key opens no session at the tracker");
  await t.rejects(spoof(b.daemon.chunkServer.address!), /key values mismatch/i, 'nor at a serving peer');
  t.equal((await a.call('status', {})).tracker.state, 'connected', "A's own session is untouched");
  t.equal((await b.call('search', { text: 'a.txt' }))[0]?.peers, 1, "A's files are still listed");

  // A serving side that claims to be A: B's real server, reached where the tracker lists A.
  await t.rejects(open(t, b.daemon.chunkServer.address!, mallory, a.daemon.keys.publicKey), { code: 'P2P_KEY_MISMATCH' }, 'a downloader refuses a server whose key is not the one listed');

  // A fake server that presents A's certificate but holds another key cannot even start.
  t.throws(() => tls.createSecureContext({ cert: identityOf(a.daemon.keys).cert, key: identityOf(mallory).key }), /key values mismatch/i, "a server cannot present A's certificate without A's key");

  // Control: with the right keys, both handshakes pass (the refusals above are about identity only).
  await t.resolves(handshake(await open(t, fleet.trackerAddress, mallory)), 'an honest new key is welcome at the tracker');
  await t.resolves(handshake(await open(t, a.daemon.chunkServer.address!, mallory, a.daemon.keys.publicKey)), 'and at A, which proves its key');
});

t.test("a peer that registers someone else's address (and a file it does not hold) is never used", async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeder = await fleet.startPeer('seeder');
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 3);
  const id = await Fleet.seed([seeder], orig, 'f.bin', d);
  // Mallory's session says its chunks are served at the seeder's port, and that it holds f.bin.
  const mallory = newKeys();
  const conn = await open(t, fleet.trackerAddress, mallory);
  const welcome = await handshake(conn, seeder.daemon.chunkServer.address!.port);
  t.equal(welcome.observedHost, '127.0.0.1', 'the tracker records the address it sees, not one the peer names');
  await conn.request('REGISTER', { files: [{ id: Buffer.from(id, 'hex'), size: fs.statSync(orig).size, name: 'f.bin', complete: true }] }, 'OK');
  await Fleet.held(d, 'f.bin', 2);

  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the download is intact');
  t.notOk(r.peers.some((p) => p.id === mallory.peerId), 'the impostor was not used: the server at that address proves a different key');
  t.same(r.peers.filter((p) => p.bytes > 0).map((p) => p.id), [seeder.daemon.peerId], 'everything came from the real seeder');
});

t.test('a stranger that claims to be a tracker or an admin gets no peer service and changes nothing', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const p = await fleet.startPeer('p');
  fs.writeFileSync(path.join(p.shareDir, 'p.txt'), 'p');
  await Fleet.held(p, 'p.txt', 1);
  const hello = (conn: Connection, role: number): Promise<unknown> =>
    conn.request('HELLO', { role, listenPort: 0, software: 'x', link: role === Role.tracker ? encodeLinkClaim({ from: 1, to: 0 }) : Buffer.alloc(0) }, 'WELCOME').catch(() => undefined);

  const asTracker = await open(t, fleet.trackerAddress);
  await hello(asTracker, Role.tracker);
  // The fleet's tracker has a token, hence a cluster secret: an unproven "tracker" is not even let in.
  await t.rejects(asTracker.request('SEARCH', { text: '', limit: 10 }, 'SEARCH_RESULT'), { code: 'P2P_NOT_AUTHENTICATED' }, 'a "tracker" gets no search');
  const op = JSON.stringify({ op: 'blacklist-add', entry: { target: p.daemon.peerId, reason: 'forged', since: Date.now(), addedBy: 'x' } });
  const forged = { t: 'append', term: 99, prev: { index: 0, term: 0, epoch: 0 }, entries: [{ index: 1, term: 99, epoch: 1, op }], commit: 1 };
  asTracker.sendEvent('RAFT', { message: JSON.stringify(forged) });
  await t.rejects(asTracker.request('SEARCH', { text: '', limit: 10 }, 'SEARCH_RESULT'), { code: 'P2P_NOT_AUTHENTICATED' }, 'and after a forged replicated write, still nothing');
  t.equal(fleet.tracker.state.isBanned(p.daemon.peerId, ''), undefined, 'a replicated write from an unproven "tracker" is ignored');

  const asAdmin = await open(t, fleet.trackerAddress);
  await hello(asAdmin, Role.admin);
  await t.rejects(asAdmin.request('SEARCH', { text: '', limit: 10 }, 'SEARCH_RESULT'), { code: 'P2P_UNEXPECTED_MESSAGE' }, 'an "admin" session gets no peer service');
  await t.rejects(asAdmin.request('ADMIN_BLACKLIST_ADD', { token: '', target: p.daemon.peerId, reason: 'x' }, 'OK'), { code: 'P2P_UNAUTHORIZED' }, 'and nothing without the token');

  const adm = await admin(t, fleet);
  t.same(await banned(adm), [], 'no one was blacklisted');
  t.equal((await p.call('search', { text: 'p.txt' })).length, 1, 'the peer carries on');
});

t.test('a blacklisted peer id: session cut, files gone, every operation refused, no one downloads from it; rm lifts it', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const [s1, s2, s3] = [await fleet.startPeer('s1'), await fleet.startPeer('s2'), await fleet.startPeer('s3')];
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 6);
  await Fleet.seed([s1!, s2!, s3!], orig, 'shared.bin', d);
  fs.writeFileSync(path.join(s1!.shareDir, 'only-s1.txt'), 'mine');
  await Fleet.held(d, 'only-s1.txt', 1);
  const adm = await admin(t, fleet);

  await adm.add(s1!.daemon.peerId, 'test ban');
  t.same(await banned(adm), [s1!.daemon.peerId], 'the entry is listed');
  const entry = (await adm.blacklist()).entries[0]!;
  t.equal(entry.reason, 'test ban', 'with its reason');
  t.match(entry.addedBy, /^admin@/, 'and who added it');
  // "Effects are visible to the next command": no polling for what the tracker enforces.
  t.same(await d.call('search', { text: 'only-s1' }), [], "the banned peer's files vanish from search at once");
  t.equal((await d.call('search', { text: 'shared.bin' }))[0]?.peers, 2, 'and it no longer counts as a holder');
  await t.rejects(s1!.call('search', { text: '' }), { code: 'P2P_BLACKLISTED' }, 'its own search is refused');
  await t.rejects(s1!.call('get', { key: 'shared.bin', overwrite: true }), { code: 'P2P_BLACKLISTED' }, 'and so is its get');
  t.equal((await s1!.call('status', {})).tracker.state, 'blacklisted', 'its daemon knows its session was cut for the ban');
  await t.rejects(handshake(await open(t, fleet.trackerAddress, s1!.daemon.keys)), { code: 'P2P_BLACKLISTED' }, 'a fresh session with its key (to register, look up or report) is refused');

  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'shared.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'a download from the others arrives intact');
  t.notOk(r.peers.some((p) => p.id === s1!.daemon.peerId), 'the banned peer was not among the sources');
  t.equal(s1!.daemon.chunkServer.bytesSent, 0, 'and sent nothing');

  await adm.remove(s1!.daemon.peerId);
  t.same(await banned(adm), [], 'rm empties the blacklist');
  await t.resolves(handshake(await open(t, fleet.trackerAddress, s1!.daemon.keys)), 'its key is welcome again at once');
  await t.rejects(adm.remove(s1!.daemon.peerId), { code: 'P2P_NOT_FOUND' }, 'removing an absent entry says so');
  // The daemon itself retries on its own schedule; it comes back and re-announces its files.
  t.equal(await Fleet.held(d, 'only-s1.txt', 1), 1, "after rm the peer's files return to search");
  t.ok((await s1!.call('search', { text: 'shared' })).length === 1, 'and its own search works again');
});

t.test('a blacklisted IP address bans every peer from it; the admin can still lift it', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const p = await fleet.startPeer('p');
  const q = await fleet.startPeer('q');
  fs.writeFileSync(path.join(p.shareDir, 'p.txt'), 'p');
  await Fleet.held(q, 'p.txt', 1);
  const watcher = await session(t, fleet.trackerAddress, newKeys());
  const adm = await admin(t, fleet);

  await adm.add('::ffff:127.0.0.1', 'the whole host');
  t.same(await banned(adm), ['127.0.0.1'], 'the address is stored in one canonical spelling');
  t.equal(await closedWith(watcher, 'a live raw session from 127.0.0.1'), 'P2P_BLACKLISTED', 'live sessions from that address are cut, saying why');
  await t.rejects(p.call('search', { text: '' }), { code: 'P2P_BLACKLISTED' }, 'every peer daemon on it is refused');
  await t.rejects(q.call('search', { text: '' }), { code: 'P2P_BLACKLISTED' });
  await t.rejects(handshake(await open(t, fleet.trackerAddress, newKeys())), { code: 'P2P_BLACKLISTED' }, 'a brand-new key from that address is refused too');
  t.same(await banned(adm), ['127.0.0.1'], 'the admin (from the same address) still gets answers');

  await adm.remove('127.0.0.1');
  await t.resolves(handshake(await open(t, fleet.trackerAddress, newKeys())), 'after rm new sessions from the address are welcome');
});

t.test('a serving peer refuses a blacklisted downloader, whether it was told or has to ask', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s1 = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d');
  fs.writeFileSync(path.join(s1.shareDir, 'f.txt'), 'payload');
  await Fleet.held(d, 'f.txt', 1);
  const fileId = (await d.call('search', { text: 'f.txt' }))[0]!.id;

  const live = await open(t, s1.daemon.chunkServer.address!, d.daemon.keys, s1.daemon.keys.publicKey);
  await clientHandshake(live, 0);
  await live.request('GET_MANIFEST', { fileId: Buffer.from(fileId, 'hex') }, 'MANIFEST');

  const adm = await admin(t, fleet);
  await adm.add(d.daemon.peerId, 'leecher');
  t.equal(await closedWith(live, "the downloader's open connection to a seeder"), 'P2P_BLACKLISTED', 'a seeder told of the ban cuts the connection it was serving');
  const again = await open(t, s1.daemon.chunkServer.address!, d.daemon.keys, s1.daemon.keys.publicKey);
  await t.rejects(clientHandshake(again, 0), { code: 'P2P_BLACKLISTED' }, 'and refuses a new one');

  // A seeder that joined after the ban was never pushed it: it must ask the tracker.
  const s2 = await fleet.startPeer('s2');
  fs.writeFileSync(path.join(s2.shareDir, 'f.txt'), 'payload');
  await Fleet.held(s1, 'f.txt', 2);
  const late = await open(t, s2.daemon.chunkServer.address!, d.daemon.keys, s2.daemon.keys.publicKey);
  await t.rejects(clientHandshake(late, 0), { code: 'P2P_BLACKLISTED' }, 'a seeder that was never told asks the tracker and refuses');
  await t.resolves(clientHandshake(await open(t, s2.daemon.chunkServer.address!, newKeys(), s2.daemon.keys.publicKey), 0), 'while it still serves everyone else');
});

t.test('a malicious seeder is blacklisted by evidence while the download completes from honest peers', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const h1 = await fleet.startPeer('honest1');
  const h2 = await fleet.startPeer('honest2');
  const m = await fleet.startPeer('malicious', { corruptChunks: true });
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 12);
  const id = await Fleet.seed([h1, h2, m], orig, 'data.bin', d);

  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'data.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the download is byte-identical');
  t.equal(r.peers.find((p) => p.id === m.daemon.peerId)?.bytes ?? 0, 0, 'the malicious seeder contributed 0 verified bytes');
  t.equal(r.peers.reduce((n, p) => n + p.bytes, 0), r.size, 'the honest peers carried all of it');
  t.ok(m.daemon.chunkServer.bytesSent > 0, 'the malicious seeder did try (it sent bytes that failed verification)');

  const adm = await admin(t, fleet);
  const list = await until('the malicious seeder on the blacklist', async () => {
    const l = await banned(adm);
    return l.includes(m.daemon.peerId) ? l : undefined;
  });
  t.same(list, [m.daemon.peerId], 'it alone is blacklisted; the honest seeders are not');
  const { reports } = await adm.reports();
  t.equal(reports.length, 1, 'one report was filed');
  t.match(reports[0], { reporter: d.daemon.peerId, evidence: 1, targets: m.daemon.peerId, status: 'blacklisted' }, 'a bad-data report by the downloader against that peer');
  t.equal(reports[0]!.fileId.toString('hex'), id, 'about that file');
  await t.rejects(m.call('search', { text: '' }), { code: 'P2P_BLACKLISTED' }, 'the malicious peer is cut off');
});

t.test('a peer\'s receipts beyond the 16 a report can carry are not checked: garbage signatures on good bytes cost nothing, and its 16 checked ones still convict it', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s = await fleet.startPeer('s', { misbehaveAfter: { chunks: MAX_RECEIPTS_PER_SERVER, what: 'garbage-receipts' } });
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 24);
  const id = await Fleet.seed([s], orig, 'f.bin', d);
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the download is byte-identical');
  t.equal(r.peers.find((p) => p.id === s.daemon.peerId)?.bytes, r.size, 'all of it came from that peer: it was not dropped');
  const kept = d.daemon.db.lastTransfer(id)!.receipts;
  t.equal(kept.length, MAX_RECEIPTS_PER_SERVER, 'the transfer history keeps the 16 receipts that were checked');
  const rep = await d.call('report', { key: 'f.bin', reason: 'not what the name says' });
  t.same(rep.blacklisted, [s.daemon.peerId], 'a report with them blacklists the peer');
});

t.test('bad bytes after a peer\'s first 16 chunks are still caught, and reported with their receipt, checked then', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const honest = await fleet.startPeer('honest');
  const m = await fleet.startPeer('late', { misbehaveAfter: { chunks: MAX_RECEIPTS_PER_SERVER, what: 'wrong-bytes' } });
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 48);
  await Fleet.seed([honest, m], orig, 'f.bin', d);
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false });
  t.ok(sameContent(orig, out), 'the download is byte-identical');
  t.ok(m.daemon.chunkServer.bytesSent > MAX_RECEIPTS_PER_SERVER * 1024 * 1024, 'the late cheat served its 16 good chunks and then some');
  t.ok((r.peers.find((p) => p.id === m.daemon.peerId)?.bytes ?? 0) <= MAX_RECEIPTS_PER_SERVER * 1024 * 1024, 'none of its bad bytes were kept');
  const adm = await admin(t, fleet);
  const list = await until('the late cheat on the blacklist', async () => {
    const l = await banned(adm);
    return l.includes(m.daemon.peerId) ? l : undefined;
  });
  t.same(list, [m.daemon.peerId], 'it alone is blacklisted');
  t.match((await adm.reports()).reports, [{ reporter: d.daemon.peerId, evidence: 1, targets: m.daemon.peerId, status: 'blacklisted' }], 'by a bad-data report from the downloader');
});

t.test('a user report blacklists exactly the peers that served the download (policy immediate)', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const seeders = [await fleet.startPeer('s1'), await fleet.startPeer('s2'), await fleet.startPeer('s3')];
  const d = await fleet.startPeer('d');
  const other = await fleet.startPeer('other');
  const orig = randomFile(fleet, 8);
  await Fleet.seed(seeders, orig, 'f.bin', d);

  await t.rejects(d.call('report', { key: 'f.bin', reason: 'nothing yet' }), { code: 'P2P_NOT_FOUND' }, 'a peer with no download of the file cannot report it');
  const out = path.join(fleet.dir, 'got.bin');
  const r = await d.call('get', { key: 'f.bin', out, overwrite: false, maxPeers: 2 });
  const served = r.peers.filter((p) => p.bytes > 0).map((p) => p.id).sort();
  t.ok(served.length >= 1 && served.length <= 2, 'the download used at most the 2 peers asked for');
  await t.rejects(other.call('report', { key: 'f.bin', reason: 'hearsay' }), { code: 'P2P_NOT_FOUND' }, 'a peer that did not download it cannot report it');

  const rep = await d.call('report', { key: 'f.bin', reason: 'not what the name says' });
  t.same([...rep.blacklisted].sort(), served, 'the report blacklists exactly the peers that sent chunks');
  t.same(rep.pending, [], 'nothing is left pending under the immediate policy');
  const adm = await admin(t, fleet);
  t.same(await banned(adm), served, 'the blacklist holds exactly those peers');
  const bystanders = seeders.filter((s) => !served.includes(s.daemon.peerId));
  for (const s of bystanders) t.equal((await s.call('status', {})).tracker.state, 'connected', `${s.name}, which served nothing, is untouched`);
  const { reports } = await adm.reports();
  t.match(reports, [{ reporter: d.daemon.peerId, reason: 'not what the name says', evidence: 0, status: 'blacklisted' }], 'admin reports shows who reported and why');
});

t.test('forged and false reports are refused with P2P_BAD_EVIDENCE and harm no one', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s1 = await fleet.startPeer('s1');
  const d = await fleet.startPeer('d');
  const orig = randomFile(fleet, 2);
  const id = await Fleet.seed([s1], orig, 'f.bin', d);
  const fileId = Buffer.from(id, 'hex');
  await d.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got.bin'), overwrite: false });

  const mallory = newKeys();
  const conn = await session(t, fleet.trackerAddress, mallory);
  const report = (receipts: Receipt[], evidence = 0, manifest: Buffer = Buffer.alloc(0), about: Buffer = fileId): Promise<unknown> =>
    conn.request('REPORT', { fileId: about, reason: 'forged', evidence, manifest, receipts }, 'REPORT_RESULT');

  const hash = sha256(Buffer.from('anything'));
  const forged: Receipt = { publicKey: s1.daemon.keys.publicKey, index: 0, hash, signature: signPayload(mallory, receiptPayload(fileId, 0, hash, mallory.peerId)) };
  await t.rejects(report([forged]), { code: 'P2P_BAD_EVIDENCE' }, "receipts naming s1 but signed by the reporter's key are refused");

  const stolen = d.daemon.db.lastTransfer(id)!.receipts;
  t.ok(stolen.length > 0, "the real downloader's receipts exist");
  await t.rejects(report(stolen), { code: 'P2P_BAD_EVIDENCE' }, "another downloader's genuine receipts are refused (they are bound to its id)");

  await t.rejects(report([]), { code: 'P2P_BAD_EVIDENCE' }, 'a report without receipts is refused');

  const self: Receipt = { publicKey: mallory.publicKey, index: 0, hash, signature: signPayload(mallory, receiptPayload(fileId, 0, hash, mallory.peerId)) };
  await t.rejects(report([self]), { code: 'P2P_BAD_EVIDENCE' }, 'receipts naming only the reporter itself are refused');

  // A genuine receipt for a good chunk, presented as proof of bad data.
  const honest = await fetchReceipt(t, s1, mallory, id, 0);
  const manifest = s1.daemon.library.byId(id)!.encoded;
  await t.rejects(report([honest], 1, manifest), { code: 'P2P_BAD_EVIDENCE' }, 'a bad-data claim whose receipt matches the manifest is refused');
  await t.rejects(report([honest], 0, Buffer.alloc(0), randomBytes(32)), { code: 'P2P_BAD_EVIDENCE' }, 'a genuine receipt for one file cannot back a report about another');
  const fakeManifest = Buffer.from(manifest);
  fakeManifest[fakeManifest.length - 1]! ^= 0xff;
  await t.rejects(report([honest], 1, fakeManifest), { code: 'P2P_BAD_EVIDENCE' }, 'a bad-data claim with a manifest that is not the file id\'s is refused');

  const adm = await admin(t, fleet);
  t.same(await banned(adm), [], 'no one was blacklisted');
  t.same((await adm.reports()).reports, [], 'no report was recorded');
  t.equal((await s1.call('status', {})).tracker.state, 'connected', 'the framed seeder carries on');
  // Control: the same reporter with its genuine receipt is heard (so the refusals were about the evidence).
  const res = (await report([honest])) as Body<'REPORT_RESULT'>;
  t.same(res.blacklisted.map((x) => x.target), [s1.daemon.peerId], 'a report backed by a genuine receipt is accepted');
});

t.test('reports are rate-limited per reporter, bogus ones included', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ reportsPerMinute: 2, reportPolicy: { kind: 'review' } });
  const s1 = await fleet.startPeer('s1');
  const d1 = await fleet.startPeer('d1');
  const d2 = await fleet.startPeer('d2');
  const id = await Fleet.seed([s1], randomFile(fleet, 1), 'f.bin', d1);
  await d1.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got1.bin'), overwrite: false });
  await d2.call('get', { key: id, out: path.join(fleet.dir, 'got2.bin'), overwrite: false });

  await d1.call('report', { key: 'f.bin', reason: 'one' });
  await d1.call('report', { key: 'f.bin', reason: 'two' });
  await t.rejects(d1.call('report', { key: 'f.bin', reason: 'three' }), { code: 'P2P_RATE_LIMITED' }, 'the third report in a minute is refused');
  await t.resolves(d2.call('report', { key: 'f.bin', reason: 'mine' }), 'another reporter is not affected');

  const spammer = await session(t, fleet.trackerAddress, newKeys());
  const bogus = (): Promise<unknown> => spammer.request('REPORT', { fileId: Buffer.from(id, 'hex'), reason: 'spam', evidence: 0, manifest: Buffer.alloc(0), receipts: [] }, 'REPORT_RESULT');
  await t.rejects(bogus(), { code: 'P2P_BAD_EVIDENCE' });
  await t.rejects(bogus(), { code: 'P2P_BAD_EVIDENCE' });
  await t.rejects(bogus(), { code: 'P2P_RATE_LIMITED' }, 'a flood of bogus reports is cut off by the same limit');
  const adm = await admin(t, fleet);
  t.equal((await adm.reports()).reports.length, 3, 'only the three accepted reports are recorded');
});

t.test('policy threshold:2 needs two distinct reporters', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ reportPolicy: { kind: 'threshold', k: 2 } });
  const s1 = await fleet.startPeer('s1');
  const d1 = await fleet.startPeer('d1');
  const d2 = await fleet.startPeer('d2');
  const id = await Fleet.seed([s1], randomFile(fleet, 1), 'f.bin', d1);
  await d1.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got1.bin'), overwrite: false });
  // d1 now shares it too; withdraw it so that d2's download comes from s1 alone.
  await d1.call('unshare', { key: id });
  await until('f.bin back to one holder', async () => ((await d2.call('search', { text: 'f.bin' }))[0]?.peers === 1 ? true : undefined));
  const r2 = await d2.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got2.bin'), overwrite: false });
  t.same(r2.peers.filter((p) => p.bytes > 0).map((p) => p.id), [s1.daemon.peerId], 'both downloads came from s1');

  const adm = await admin(t, fleet);
  const first = await d1.call('report', { key: 'f.bin', reason: 'bad' });
  t.same({ b: first.blacklisted, p: first.pending }, { b: [], p: [s1.daemon.peerId] }, 'one reporter: pending');
  const repeat = await d1.call('report', { key: 'f.bin', reason: 'bad, again' });
  t.same(repeat.blacklisted, [], 'the same reporter twice does not count as two');
  t.same(await banned(adm), [], 'not blacklisted yet');
  const second = await d2.call('report', { key: 'f.bin', reason: 'bad too' });
  t.same(second.blacklisted, [s1.daemon.peerId], 'a second distinct reporter tips it over');
  t.same(await banned(adm), [s1.daemon.peerId], 'and the blacklist shows it');
});

t.test('policy review leaves reported peers pending for an admin', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ reportPolicy: { kind: 'review' } });
  const s1 = await fleet.startPeer('s1');
  const d1 = await fleet.startPeer('d1');
  await Fleet.seed([s1], randomFile(fleet, 1), 'f.bin', d1);
  await d1.call('get', { key: 'f.bin', out: path.join(fleet.dir, 'got1.bin'), overwrite: false });
  const res = await d1.call('report', { key: 'f.bin', reason: 'suspicious' });
  t.same({ b: res.blacklisted, p: res.pending }, { b: [], p: [s1.daemon.peerId] }, 'the served peer is pending');
  const adm = await admin(t, fleet);
  t.same(await banned(adm), [], 'no one is blacklisted');
  t.match((await adm.reports()).reports, [{ reporter: d1.daemon.peerId, targets: s1.daemon.peerId, status: 'pending', reason: 'suspicious' }], 'the admin sees the pending report');
  t.equal((await s1.call('status', {})).tracker.state, 'connected', 'the reported peer carries on');
});

t.test('admin: refused without a configured token and with a wrong one; the right one works', async (t) => {
  /** An admin session that skips the tracker's proof (not the CLI): whatever it sends reaches the tracker. */
  const rawAdmin = async (t: Tap, fleet: Fleet): Promise<Connection> => {
    const conn = await open(t, fleet.trackerAddress);
    await conn.request('HELLO', { role: Role.admin, listenPort: 0, software: 'x', link: Buffer.alloc(0) }, 'WELCOME');
    return conn;
  };
  const rawCommands = (conn: Connection, token: string): Array<[string, Promise<unknown>]> => [
    ['status', conn.request('ADMIN_STATUS', { token }, 'ADMIN_STATUS_RESULT')],
    ['blacklist ls', conn.request('ADMIN_BLACKLIST_LIST', { token }, 'ADMIN_BLACKLIST')],
    ['blacklist add', conn.request('ADMIN_BLACKLIST_ADD', { token, target: '10.1.2.3', reason: 'x' }, 'OK')],
    ['blacklist rm', conn.request('ADMIN_BLACKLIST_REMOVE', { token, target: '10.1.2.3' }, 'OK')],
    ['reports', conn.request('ADMIN_REPORTS', { token }, 'ADMIN_REPORTS_RESULT')],
  ];

  t.test('no token configured', async (t) => {
    const fleet = new Fleet(t);
    await fleet.startTracker({ adminToken: undefined });
    await t.rejects(admin(t, fleet, ADMIN_TOKEN), { code: 'P2P_UNAUTHORIZED', message: /takes no admin commands/ }, 'the CLI is told at once, before it sends the token');
    const raw = await rawAdmin(t, fleet);
    for (const [name, p] of rawCommands(raw, ADMIN_TOKEN)) await t.rejects(p, { code: 'P2P_UNAUTHORIZED' }, `${name}, sent anyway, is refused`);
    for (const [name, p] of rawCommands(raw, '')) await t.rejects(p, { code: 'P2P_UNAUTHORIZED' }, `${name} with an empty token is refused too`);
  });

  t.test('wrong token', async (t) => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _enc, cb) => (lines.push(chunk.toString()), cb()) }));
    const fleet = new Fleet(t);
    await fleet.startTracker({ logger });
    const good = await admin(t, fleet);
    await good.add('10.9.9.9', 'kept');
    await t.rejects(admin(t, fleet, `${ADMIN_TOKEN}x`), { code: 'P2P_UNAUTHORIZED', message: /does not prove the token/ }, 'the CLI with a wrong token is refused before it sends it (the proofs differ)');
    await t.rejects(admin(t, fleet, ADMIN_TOKEN.slice(0, -1)), { code: 'P2P_UNAUTHORIZED' }, 'so is a prefix of the token');
    const raw = await rawAdmin(t, fleet);
    for (const [name, p] of rawCommands(raw, `${ADMIN_TOKEN}x`)) await t.rejects(p, { code: 'P2P_UNAUTHORIZED' }, `${name} with a wrong token, sent anyway, is refused`);
    t.same(await banned(good), ['10.9.9.9'], 'the refused add and rm changed nothing');
    t.ok(lines.some((l) => l.includes('wrong token')), 'the wrong token is logged');
    t.notOk(lines.some((l) => l.includes(ADMIN_TOKEN)), 'without the token itself');
  });

  t.test('right token', async (t) => {
    const fleet = new Fleet(t);
    await fleet.startTracker();
    const c = await admin(t, fleet);
    const { trackers } = await c.status();
    t.match(trackers, [{ address: addr(fleet.trackerAddress), role: 'primary', reachable: true }], 'status lists this tracker as the main');
    await c.add('10.1.2.3', 'why');
    t.same(await banned(c), ['10.1.2.3']);
    await t.rejects(c.add('not a target', 'x'), { code: 'P2P_BAD_REQUEST' }, 'a target that is neither an id nor an address is refused');
    await t.rejects(c.add('10.4.4.4', 'bad\nreason'), { code: 'P2P_BAD_REQUEST' }, 'a reason with control characters is refused');
    await c.remove('10.1.2.3');
    t.same(await banned(c), []);
    t.same((await c.reports()).reports, []);
  });
});

t.test('the blacklist survives a tracker restart', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const p = await fleet.startPeer('p');
  const adm = await admin(t, fleet);
  await adm.add(p.daemon.peerId, 'banned before the restart');
  await adm.add('10.20.30.40', 'an address');
  const before = (await adm.blacklist()).entries;
  adm.close();

  const port = fleet.trackerAddress.port;
  await fleet.tracker.close();
  await fleet.startTracker({}, port);
  const adm2 = await admin(t, fleet);
  t.same((await adm2.blacklist()).entries, before, 'every entry, reason, time and author is back');
  await t.rejects(handshake(await open(t, fleet.trackerAddress, p.daemon.keys)), { code: 'P2P_BLACKLISTED' }, 'and enforced');
  await adm2.remove('10.20.30.40');
  await fleet.tracker.close();
  await fleet.startTracker({}, port);
  t.same(await banned(await admin(t, fleet)), [p.daemon.peerId], 'a removal is durable too');
});
