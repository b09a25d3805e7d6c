/**
 * Ed25519 identities, the handshake's signed payloads and chunk receipts. Every signature covers a
 * context string, so a signature made for one purpose can never be replayed as another.
 */
import { LRUCache } from 'lru-cache';
import { createHash, createHmac, timingSafeEqual, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { P2PError } from './errors.js';

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: Buffer; // raw 32 bytes
  readonly peerId: string;
}

/** A peer id: the first 20 bytes of SHA-256 of the raw public key, in hex (40 characters). */
export function peerIdOf(publicKey: Buffer): string {
  return createHash('sha256').update(publicKey).digest().subarray(0, 20).toString('hex');
}

export const PEER_ID_PATTERN = /^[0-9a-f]{40}$/;

export function generateKeyPair(): { pem: string; keys: KeyPair } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { pem, keys: keyPairFromPem(pem) };
}

export function keyPairFromPem(pem: string): KeyPair {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new P2PError('P2P_BAD_SIGNATURE', 'identity key is not an Ed25519 key');
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const publicKey = Buffer.from(spki.subarray(spki.length - 32));
  return { privateKey, publicKey, peerId: peerIdOf(publicKey) };
}

/** Key objects of recently seen public keys: a download verifies one receipt per chunk from few peers. */
const keyObjects = new LRUCache<string, KeyObject>({ max: 1024 });

function publicKeyObject(raw: Buffer): KeyObject {
  const id = raw.toString('base64');
  let key = keyObjects.get(id);
  if (!key) {
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
    keyObjects.set(id, key);
  }
  return key;
}

export function signPayload(keys: KeyPair, payload: Buffer): Buffer {
  return sign(null, payload, keys.privateKey);
}

export function verifyPayload(publicKey: Buffer, payload: Buffer, signature: Buffer): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return verify(null, payload, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

/**
 * A chunk receipt: the serving peer's signed statement "I sent chunk `index` of `fileId`, whose bytes hash
 * to `hash`, to `downloaderId`". The downloader keeps it; a report carries it as evidence.
 */
export function receiptPayload(fileId: Buffer, index: number, hash: Buffer, downloaderId: string): Buffer {
  if (fileId.length !== 32 || hash.length !== 32 || !PEER_ID_PATTERN.test(downloaderId)) {
    throw new TypeError('receipt fields: file id and hash must be 32 bytes, the downloader id 40 hex characters');
  }
  const buf = Buffer.alloc(19 + 32 + 4 + 32 + 20);
  buf.write('p2pshare receipt v1', 0, 'latin1');
  fileId.copy(buf, 19);
  buf.writeUInt32BE(index, 51);
  hash.copy(buf, 55);
  Buffer.from(downloaderId, 'hex').copy(buf, 87);
  return buf;
}

/**
 * A tracker link as its dialler claims it in HELLO: its own place in --cluster and the place of the tracker
 * it meant to reach, two bytes, `from` then `to` (HELLO's `link`). TLS proved the dialler's key; the
 * accepting tracker checks that it is the key of the member at rank `from`.
 */
export interface TrackerLinkClaim {
  readonly from: number;
  readonly to: number;
}

export function encodeLinkClaim(claim: TrackerLinkClaim): Buffer {
  if (!isRank(claim.from) || !isRank(claim.to)) throw new TypeError(`tracker ranks are 0-255, not ${claim.from} -> ${claim.to}`);
  return Buffer.from([claim.from, claim.to]);
}

/** The claim in a tracker's HELLO, or undefined when the field is not exactly a claim. */
export function decodeLinkClaim(bytes: Buffer): TrackerLinkClaim | undefined {
  return bytes.length === 2 ? { from: bytes[0]!, to: bytes[1]! } : undefined;
}

function isRank(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 255;
}

/**
 * What a tracker proves to an admin in WELCOME: HMAC-SHA256 under the admin token of a label and this
 * TLS session's keying material (tls.ts, channelBinding). Only a tracker that knows the token can make
 * it, and only for this connection: an impostor cannot make one, nor relay a real tracker's. The admin
 * checks it before it sends the token, so the token never reaches an impostor.
 */
export function adminProof(token: string, binding: Buffer): Buffer {
  return createHmac('sha256', token).update('p2pshare admin v3 server\0').update(binding).digest();
}

export function verifyAdminProof(token: string, binding: Buffer, proof: Buffer): boolean {
  const expected = adminProof(token, binding);
  return proof.length === expected.length && timingSafeEqual(proof, expected);
}

/** The label of the keying material an admin proof covers. */
export const ADMIN_BINDING_LABEL = 'EXPORTER-p2pshare-admin';
