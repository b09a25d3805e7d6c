/**
 * The tracker-link proof (issue 9, finding 6): an HMAC of the cluster secret over a side label, both nonces
 * and the claimed ranks, so that no proof seen on one link opens another, or the same link the other way.
 */
import { createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';
import { clusterProof, clusterProofPayload, decodeLinkClaim, encodeLinkClaim, verifyClusterProof, type ClusterHandshake } from '../../protocol/index.js';
import { cat, filled, hex } from '../helpers/bytes.js';

const secret = 'the-cluster-secret';
const handshake: ClusterHandshake = { clientNonce: filled(32, 0xc1), serverNonce: filled(32, 0x5e), claim: { from: 2, to: 0 } };

t.test('the proof: HMAC-SHA512 of the side label, a zero byte, both nonces, then the dialler rank and the dialled rank', (t) => {
  for (const side of ['client', 'server'] as const) {
    const want = cat(Buffer.from(`p2pshare cluster v2 ${side}`, 'latin1'), hex('00'), filled(32, 0xc1), filled(32, 0x5e), hex('02 00'));
    t.equal(want.length, 93, 'the payload is 93 bytes');
    t.equal(clusterProofPayload(side, handshake).toString('hex'), want.toString('hex'), `${side} payload, byte for byte`);
    const mac = createHmac('sha512', secret).update(want).digest();
    t.equal(clusterProof(secret, side, handshake).toString('hex'), mac.toString('hex'), `${side} proof is the HMAC of that payload`);
    t.ok(verifyClusterProof(secret, side, handshake, mac), `${side} proof verifies`);
  }
  t.end();
});

t.test('a proof is good for its own side, nonces, ranks and secret only', (t) => {
  const proof = clusterProof(secret, 'client', handshake);
  const { clientNonce, serverNonce, claim } = handshake;
  const others: Array<[string, ClusterHandshake]> = [
    ['another client nonce', { ...handshake, clientNonce: filled(32, 0xc2) }],
    ['another server nonce', { ...handshake, serverNonce: filled(32, 0x5f) }],
    ['the nonces swapped', { ...handshake, clientNonce: serverNonce, serverNonce: clientNonce }],
    ['another dialler rank', { ...handshake, claim: { from: 1, to: 0 } }],
    ['another dialled rank', { ...handshake, claim: { from: 2, to: 1 } }],
    ['the ranks swapped (the same link, dialled the other way)', { ...handshake, claim: { from: claim.to, to: claim.from } }],
  ];
  for (const [what, other] of others) t.notOk(verifyClusterProof(secret, 'client', other, proof), `refused for ${what}`);
  t.notOk(verifyClusterProof(secret, 'server', handshake, proof), "a client's proof does not pass as the server's");
  t.notOk(verifyClusterProof(secret, 'client', handshake, clusterProof(secret, 'server', handshake)), "the server's proof reflected back does not pass as the client's");
  t.notOk(verifyClusterProof('another-secret', 'client', handshake, proof), 'refused under another secret');
  t.notOk(verifyClusterProof(secret, 'client', handshake, proof.subarray(0, 63)), 'a short proof is refused (no exception)');
  t.notOk(verifyClusterProof(secret, 'client', handshake, Buffer.alloc(0)), 'an empty proof is refused');
  const flipped = Buffer.from(proof);
  flipped[17]! ^= 0x01;
  t.notOk(verifyClusterProof(secret, 'client', handshake, flipped), 'a proof with one bit flipped is refused');
  t.end();
});

t.test('property: a proof made for one handshake never verifies for a different one', (t) => {
  const nonce = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));
  const rank = fc.integer({ min: 0, max: 255 });
  const side = fc.constantFrom('client' as const, 'server' as const);
  const hs = fc.record({ clientNonce: nonce, serverNonce: nonce, claim: fc.record({ from: rank, to: rank }) });
  fc.assert(
    fc.property(side, hs, side, hs, (sideA, a, sideB, b) => {
      const same = sideA === sideB && a.clientNonce.equals(b.clientNonce) && a.serverNonce.equals(b.serverNonce) && a.claim.from === b.claim.from && a.claim.to === b.claim.to;
      return verifyClusterProof(secret, sideB, b, clusterProof(secret, sideA, a)) === same;
    }),
    { numRuns: 2000 },
  );
  t.end();
});

t.test('the link claim: two bytes in HELLO, dialler rank then dialled rank', (t) => {
  t.equal(encodeLinkClaim({ from: 1, to: 254 }).toString('hex'), '01fe');
  t.strictSame(decodeLinkClaim(hex('01fe')), { from: 1, to: 254 });
  for (const bytes of [Buffer.alloc(0), hex('01'), hex('010203'), randomBytes(32)]) t.equal(decodeLinkClaim(bytes), undefined, `${bytes.length} bytes are not a claim`);
  for (const bad of [{ from: 256, to: 0 }, { from: -1, to: 0 }, { from: 0, to: 1.5 }]) t.throws(() => encodeLinkClaim(bad), TypeError, `ranks ${bad.from} -> ${bad.to} cannot be encoded`);
  t.throws(() => clusterProofPayload('client', { ...handshake, clientNonce: Buffer.alloc(31) }), TypeError, 'a nonce must be 32 bytes');
  t.end();
});
