import { createHash, generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import {
  CHUNK_SIZE,
  MalformedMessageError,
  PEER_ID_PATTERN,
  chunkCount,
  chunkLength,
  decodeManifest,
  encodeManifest,
  adminProof,
  generateKeyPair,
  verifyAdminProof,
  keyPairFromPem,
  manifestId,
  peerIdOf,
  receiptPayload,
  sha256,
  signPayload,
  verifyManifest,
  verifyPayload,
  type Manifest,
} from '../../protocol/index.js';
import { cat, filled, hex, u32, u64 } from '../helpers/bytes.js';

const sha = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

function manifestOf(data: Buffer, chunkSize: number): Manifest {
  const hashes: Buffer[] = [];
  for (let at = 0; at < data.length; at += chunkSize) hashes.push(sha(data.subarray(at, at + chunkSize)));
  return { size: data.length, chunkSize, hashes };
}

t.test('manifest: the encoding the specification gives', (t) => {
  const data = Buffer.from('abcdefghij'); // 10 bytes in chunks of 4: 4 + 4 + 2
  const m = manifestOf(data, 4);
  const encoded = encodeManifest(m);
  const want = cat(Buffer.from('P2PM'), hex('01'), u64(10), u32(4), u32(3), sha(Buffer.from('abcd')), sha(Buffer.from('efgh')), sha(Buffer.from('ij')));
  t.equal(encoded.toString('hex'), want.toString('hex'), '"P2PM", version 1, u64 size, u32 chunk size, u32 count, hashes');
  t.strictSame(decodeManifest(encoded), m, 'decodes back');
  t.ok(manifestId(encoded).equals(sha(want)), 'the file id is the SHA-256 of the encoded manifest');
  t.ok(sha256(data).equals(sha(data)), 'sha256 is SHA-256');
  t.equal(CHUNK_SIZE, 1024 * 1024, 'chunks are 1 MiB');
  const empty = encodeManifest({ size: 0, chunkSize: CHUNK_SIZE, hashes: [] });
  t.equal(empty.length, 21, 'an empty file has a 21-byte manifest with no hashes');
  t.strictSame(decodeManifest(empty), { size: 0, chunkSize: CHUNK_SIZE, hashes: [] });
  t.end();
});

t.test('manifest: verifyManifest accepts only the manifest whose hash is the id', (t) => {
  const m = manifestOf(Buffer.from('some file contents'), 4);
  const encoded = encodeManifest(m);
  const id = manifestId(encoded);
  t.strictSame(verifyManifest(encoded, id), m, 'the right manifest for the id');
  const other = encodeManifest(manifestOf(Buffer.from('some file content!'), 4));
  t.equal(verifyManifest(other, id), undefined, "another file's manifest is refused");
  for (const at of [0, 4, 12, 20, encoded.length - 1]) {
    const tampered = Buffer.from(encoded);
    tampered[at]! ^= 0x01;
    t.equal(verifyManifest(tampered, id), undefined, `a manifest with byte ${at} flipped is refused`);
  }
  t.equal(verifyManifest(encoded, filled(32, 0)), undefined, 'a manifest under the wrong id is refused');
  const junk = Buffer.from('not a manifest at all');
  t.equal(verifyManifest(junk, sha(junk)), undefined, 'bytes that hash to the id but are no manifest are refused, not thrown');
  t.end();
});

t.test('manifest: malformed encodings are refused with P2P_MALFORMED', (t) => {
  const good = encodeManifest(manifestOf(Buffer.from('abcdefghij'), 4));
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['a header cut short', good.subarray(0, 20)],
    ['wrong magic', cat(Buffer.from('P2PX'), good.subarray(4))],
    ['version 2', cat(good.subarray(0, 4), hex('02'), good.subarray(5))],
    ['a missing hash byte', good.subarray(0, good.length - 1)],
    ['a trailing byte', cat(good, hex('00'))],
    ['a count that disagrees with the size', cat(good.subarray(0, 17), u32(2), good.subarray(21, 21 + 64))],
    ['chunk size 0', cat(Buffer.from('P2PM'), hex('01'), u64(0), u32(0), u32(0))],
    ['a size above 2^53', cat(Buffer.from('P2PM'), hex('01'), u64(2n ** 53n), u32(0xffffffff), u32(2 ** 21))],
    ['a count of 2^32-1 with no hashes', cat(Buffer.from('P2PM'), hex('01'), u64(0xffffffff), u32(1), u32(0xffffffff))],
  ];
  for (const [what, bytes] of cases) {
    t.throws(() => decodeManifest(bytes), MalformedMessageError, what);
    t.throws(() => decodeManifest(bytes), { code: 'P2P_MALFORMED' }, `${what}: P2P_MALFORMED`);
  }
  t.end();
});

t.test('chunkCount and chunkLength at the edges', (t) => {
  const cs = 4;
  t.equal(chunkCount(0, cs), 0, 'an empty file has no chunks');
  t.equal(chunkCount(1, cs), 1, 'one byte is one chunk');
  t.equal(chunkLength({ size: 1, chunkSize: cs }, 0), 1, '... of one byte');
  t.equal(chunkCount(12, cs), 3, 'an exact multiple: no empty extra chunk');
  t.strictSame([0, 1, 2].map((i) => chunkLength({ size: 12, chunkSize: cs }, i)), [4, 4, 4], 'every chunk full');
  t.equal(chunkCount(13, cs), 4, 'one byte more: one more chunk');
  t.strictSame([0, 1, 2, 3].map((i) => chunkLength({ size: 13, chunkSize: cs }, i)), [4, 4, 4, 1], 'the last chunk is short');
  t.equal(chunkCount(CHUNK_SIZE * 3 - 1, CHUNK_SIZE), 3, 'one byte short of three chunks is three chunks');
  t.equal(chunkLength({ size: CHUNK_SIZE * 3 - 1, chunkSize: CHUNK_SIZE }, 2), CHUNK_SIZE - 1);
  const huge = 200 * 1024 ** 3; // 200 GiB
  t.equal(chunkCount(huge, CHUNK_SIZE), 200 * 1024, '200 GiB in 1 MiB chunks');
  t.equal(chunkLength({ size: huge + 5, chunkSize: CHUNK_SIZE }, 200 * 1024), 5, 'the short last chunk of a huge file');
  for (const size of [1, 3, 4, 5, 8, 9, 100]) {
    const lengths = Array.from({ length: chunkCount(size, cs) }, (_, i) => chunkLength({ size, chunkSize: cs }, i));
    t.equal(
      lengths.reduce((a, b) => a + b, 0),
      size,
      `size ${size}: chunk lengths add up to the size`,
    );
    t.ok(lengths.every((n) => n > 0 && n <= cs), `size ${size}: every chunk has 1..chunkSize bytes`);
  }
  t.end();
});

t.test('Ed25519 identities', (t) => {
  const { pem, keys } = generateKeyPair();
  t.equal(keys.publicKey.length, 32, 'a raw 32-byte public key');
  t.equal(keys.peerId.length, 40, 'the peer id is 40 characters');
  t.match(keys.peerId, PEER_ID_PATTERN, '... of lower-case hex');
  t.equal(keys.peerId, sha(keys.publicKey).subarray(0, 20).toString('hex'), 'the first 20 bytes of SHA-256 of the public key');
  t.equal(peerIdOf(keys.publicKey), keys.peerId, 'peerIdOf agrees');
  const again = keyPairFromPem(pem);
  t.ok(again.publicKey.equals(keys.publicKey), 'the PEM gives back the same key');
  t.equal(again.peerId, keys.peerId, '... and the same peer id');
  t.notSame(generateKeyPair().keys.peerId, keys.peerId, 'a new key is a new peer id');
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  t.throws(() => keyPairFromPem(ec), /Ed25519/, 'a key of another kind is refused');
  t.end();
});

t.test('signatures', (t) => {
  const alice = generateKeyPair().keys;
  const mallory = generateKeyPair().keys;
  const payload = cat(Buffer.from('a payload\0'), filled(32, 7));
  const sig = signPayload(alice, payload);
  t.equal(sig.length, 64, 'a 64-byte signature');
  t.ok(verifyPayload(alice.publicKey, payload, sig), "verifies under the signer's key");
  t.notOk(verifyPayload(mallory.publicKey, payload, sig), "does not verify under another key");
  t.notOk(verifyPayload(alice.publicKey, payload, signPayload(mallory, payload)), 'a signature by another key fails');
  t.notOk(verifyPayload(alice.publicKey, cat(Buffer.from('a payload\0'), filled(32, 8)), sig), 'a signature over other bytes fails');
  const flipped = Buffer.from(sig);
  flipped[10]! ^= 1;
  t.notOk(verifyPayload(alice.publicKey, payload, flipped), 'a tampered signature fails');
  t.notOk(verifyPayload(alice.publicKey.subarray(0, 31), payload, sig), 'a 31-byte key is refused, not thrown');
  t.notOk(verifyPayload(alice.publicKey, payload, sig.subarray(0, 63)), 'a 63-byte signature is refused, not thrown');
  t.notOk(verifyPayload(filled(32, 0xff), payload, sig), 'bytes that are no valid key are refused, not thrown');
  t.end();
});

t.test('an admin proof is made with the token, for one TLS session only', (t) => {
  const binding = filled(32, 0x42);
  const proof = adminProof('token-1', binding);
  t.equal(proof.length, 32, 'HMAC-SHA256: 32 bytes');
  t.ok(verifyAdminProof('token-1', binding, proof), 'verifies with the same token over the same session');
  t.notOk(verifyAdminProof('token-2', binding, proof), 'not with another token');
  t.notOk(verifyAdminProof('token-1', filled(32, 0x43), proof), 'not over another session (a relayed proof)');
  t.notOk(verifyAdminProof('token-1', binding, proof.subarray(0, 31)), 'a short proof is refused, not thrown');
  t.notOk(verifyAdminProof('token-1', binding, Buffer.alloc(0)), 'an empty proof (a tracker without a token) is refused');
  t.end();
});

t.test('receipts bind the file, the chunk, its hash and the downloader', (t) => {
  const server = generateKeyPair().keys;
  const downloader = generateKeyPair().keys;
  const fileId = filled(32, 0x0f);
  const hash = filled(32, 0x4a);
  const payload = receiptPayload(fileId, 3, hash, downloader.peerId);
  t.equal(
    payload.toString('hex'),
    cat(Buffer.from('p2pshare receipt v1'), fileId, u32(3), hash, Buffer.from(downloader.peerId, 'hex')).toString('hex'),
    '"p2pshare receipt v1", file id, u32 index, hash, 20-byte downloader id',
  );
  t.equal(payload.length, 107);
  const sig = signPayload(server, payload);
  t.ok(verifyPayload(server.publicKey, receiptPayload(fileId, 3, hash, downloader.peerId), sig), 'the receipt verifies');
  const otherId = filled(32, 0x10);
  const otherHash = Buffer.from(hash);
  otherHash[31]! ^= 1;
  const otherPeer = generateKeyPair().keys.peerId;
  const lastHexDigitChanged = downloader.peerId.slice(0, 39) + (downloader.peerId[39] === '0' ? '1' : '0');
  const changes: Array<[string, Buffer]> = [
    ['another file id', receiptPayload(otherId, 3, hash, downloader.peerId)],
    ['another chunk index', receiptPayload(fileId, 4, hash, downloader.peerId)],
    ['chunk index + 2^24', receiptPayload(fileId, 3 + 2 ** 24, hash, downloader.peerId)],
    ['another hash (one bit)', receiptPayload(fileId, 3, otherHash, downloader.peerId)],
    ['another downloader', receiptPayload(fileId, 3, hash, otherPeer)],
    ['a downloader id one hex digit apart', receiptPayload(fileId, 3, hash, lastHexDigitChanged)],
  ];
  for (const [what, changed] of changes) {
    t.notOk(verifyPayload(server.publicKey, changed, sig), `${what}: the receipt no longer verifies`);
  }
  t.notOk(verifyPayload(downloader.publicKey, payload, sig), 'a receipt names its signer: it does not verify under another key');
  t.end();
});
