/**
 * The downloader's check of every chunk (peerd/chunk-verifier.ts), with chunks and receipts made by hand:
 * what is refused and why, which receipts are checked (evidence for `p2p report`), and who is reported.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import {
  encodeManifest,
  generateKeyPair,
  MAX_RECEIPTS_PER_SERVER,
  receiptPayload,
  sha256,
  signPayload,
  silentLogger,
  verifyPayload,
  type Body,
  type KeyPair,
  type Manifest,
} from '../../protocol/index.js';
import { ChunkVerifier, type BadData, type ChunkSender } from '../../peerd/chunk-verifier.js';
import { PeerCounters } from '../../peerd/counters.js';
import { checkNow, type Hasher } from '../../peerd/hasher.js';

const CHUNK = 1024;
const chunks = [randomBytes(CHUNK), randomBytes(CHUNK), randomBytes(100)];
const manifest: Manifest = { size: 2 * CHUNK + 100, chunkSize: CHUNK, hashes: chunks.map((c) => sha256(c)) };
const fileId = sha256(encodeManifest(manifest));
const us = generateKeyPair().keys;

/** A hasher that does the work here and counts what it was asked: `check` (with a receipt) or `sha256` alone. */
function countingHasher(): Hasher & { checks: number; hashes: number } {
  return {
    checks: 0,
    hashes: 0,
    async sha256(data) {
      this.hashes++;
      return sha256(data);
    },
    async check(data, receipt) {
      this.checks++;
      return checkNow(data, receipt);
    },
    async close() {},
  };
}

function setup(): { verifier: ChunkVerifier; hasher: ReturnType<typeof countingHasher>; reports: BadData[]; counters: PeerCounters } {
  const hasher = countingHasher();
  const reports: BadData[] = [];
  const counters = new PeerCounters();
  const verifier = new ChunkVerifier({ fileId, manifest, encodedManifest: encodeManifest(manifest), ourPeerId: us.peerId, hasher, logger: silentLogger, onBadData: (e) => reports.push(e), counters });
  return { verifier, hasher, reports, counters };
}

function sender(keys: KeyPair, plain = false): ChunkSender {
  return { peerId: keys.peerId, address: '127.0.0.1:9', publicKey: keys.publicKey, plain, receiptsChecked: 0 };
}

/** Chunk `index` as a peer with `keys` sends it: its bytes (`data`, the real ones unless given), their hash, a receipt signed for us. */
function chunkFrom(keys: KeyPair, index: number, opts: { data?: Buffer; signature?: Buffer; fileId?: Buffer; hash?: Buffer } = {}): Body<'CHUNK'> {
  const data = opts.data ?? chunks[index]!;
  const hash = opts.hash ?? sha256(data);
  const signature = opts.signature ?? signPayload(keys, receiptPayload(opts.fileId ?? fileId, index, hash, us.peerId));
  return { fileId: opts.fileId ?? fileId, index, hash, signature, data };
}

t.test('good chunks pass; a peer\'s first receipts are checked and kept as evidence, later ones on a TLS link are not', async (t) => {
  const { verifier, hasher } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer);
  for (let i = 0; i < MAX_RECEIPTS_PER_SERVER; i++) {
    const v = await verifier.verify(s, i % 3, chunkFrom(peer, i % 3));
    t.same(v, { rejected: undefined, evidence: true }, `chunk ${i + 1}: good, its receipt evidence`);
  }
  t.equal(hasher.checks, MAX_RECEIPTS_PER_SERVER, 'each of those had its signature checked (in the worker)');
  const later = await verifier.verify(s, 0, chunkFrom(peer, 0, { signature: randomBytes(64) }));
  t.same(later, { rejected: undefined, evidence: false }, `the ${MAX_RECEIPTS_PER_SERVER + 1}th, a garbage signature on good bytes: taken, the manifest proves the bytes`);
  t.equal(hasher.hashes, 1, 'hashed only, its signature not checked');
});

t.test('on a plain link every receipt is checked: a garbage signature is refused even after the first ones', async (t) => {
  const { verifier, hasher, counters } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer, true);
  for (let i = 0; i < MAX_RECEIPTS_PER_SERVER; i++) await verifier.verify(s, 0, chunkFrom(peer, 0));
  t.same(await verifier.verify(s, 1, chunkFrom(peer, 1)), { rejected: undefined, evidence: false }, 'a good one after them: taken, not kept as evidence');
  t.equal(hasher.checks, MAX_RECEIPTS_PER_SERVER + 1, 'its signature was checked all the same');
  t.same(await verifier.verify(s, 1, chunkFrom(peer, 1, { signature: randomBytes(64) })), { rejected: 'bad_receipt', evidence: false }, 'a garbage signature: refused');
  t.equal(counters.verificationFailures.bad_receipt, 1, 'and counted');
});

t.test('bad bytes are refused and their sender reported once, with a receipt that convicts it, also past its first receipts', async (t) => {
  const { verifier, reports, counters } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer);
  s.receiptsChecked = MAX_RECEIPTS_PER_SERVER; // its evidence quota is used up: the bad chunk's receipt is checked anyway
  const bad = randomBytes(CHUNK);
  t.same(await verifier.verify(s, 1, chunkFrom(peer, 1, { data: bad })), { rejected: 'bad_data', evidence: false }, 'refused as bad data');
  t.equal(reports.length, 1, 'reported');
  const r = reports[0]!;
  t.equal(r.peerId, peer.peerId, 'the sender');
  t.ok(r.receipt.hash.equals(sha256(bad)), 'the receipt names the hash of the bytes it sent');
  t.ok(verifyPayload(peer.publicKey, receiptPayload(fileId, 1, r.receipt.hash, us.peerId), r.receipt.signature), 'and its signature on that, made out to us, verifies: evidence');
  t.ok(r.manifest.equals(encodeManifest(manifest)), 'with the manifest it contradicts');
  t.same(await verifier.verify(s, 2, chunkFrom(peer, 2, { data: randomBytes(100) })), { rejected: 'bad_data', evidence: false }, 'a second bad chunk of the same peer: refused');
  t.equal(reports.length, 1, 'not reported twice');
  t.equal(counters.verificationFailures.bad_data, 2, 'both counted');
});

t.test('bad bytes with a signature that does not verify: refused as a bad receipt, nothing to report', async (t) => {
  const { verifier, reports } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer);
  s.receiptsChecked = MAX_RECEIPTS_PER_SERVER;
  t.same(await verifier.verify(s, 0, chunkFrom(peer, 0, { data: randomBytes(CHUNK), signature: randomBytes(64) })), { rejected: 'bad_receipt', evidence: false });
  t.equal(reports.length, 0, 'no report: the receipt proves nothing against that peer');
});

t.test('a receipt for another chunk, another file, or other bytes: refused as a bad receipt', async (t) => {
  const { verifier } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer);
  t.same(await verifier.verify(s, 1, chunkFrom(peer, 0)), { rejected: 'bad_receipt', evidence: false }, 'chunk 0 sent for chunk 1');
  t.same(await verifier.verify(s, 0, chunkFrom(peer, 0, { fileId: randomBytes(32) })), { rejected: 'bad_receipt', evidence: false }, 'another file id');
  t.same(await verifier.verify(s, 0, chunkFrom(peer, 0, { hash: sha256(randomBytes(8)) })), { rejected: 'bad_receipt', evidence: false }, 'a hash that is not that of the bytes');
  const other = generateKeyPair().keys;
  t.same(await verifier.verify(s, 0, chunkFrom(other, 0)), { rejected: 'bad_receipt', evidence: false }, "signed by a key that is not the sender's");
});

t.test('the last chunk with a byte added is bad data', async (t) => {
  const { verifier } = setup();
  const peer = generateKeyPair().keys;
  const padded = Buffer.concat([chunks[2]!, Buffer.alloc(1)]);
  t.same(await verifier.verify(sender(peer), 2, chunkFrom(peer, 2, { data: padded })), { rejected: 'bad_data', evidence: false });
});

t.test('inline: the check is made on this thread, the worker not asked', async (t) => {
  const { verifier, hasher } = setup();
  const peer = generateKeyPair().keys;
  t.same(await verifier.verify(sender(peer), 0, chunkFrom(peer, 0), true), { rejected: undefined, evidence: true });
  t.equal(hasher.checks + hasher.hashes, 0, 'the worker had nothing to do');
});

t.test('a checked receipt whose chunk is not kept gives its place back: the next one is checked as evidence', async (t) => {
  const { verifier } = setup();
  const peer = generateKeyPair().keys;
  const s = sender(peer);
  for (let i = 0; i < MAX_RECEIPTS_PER_SERVER; i++) await verifier.verify(s, 0, chunkFrom(peer, 0));
  verifier.unused(s); // the last one lost an endgame race
  t.same(await verifier.verify(s, 1, chunkFrom(peer, 1)), { rejected: undefined, evidence: true });
});
