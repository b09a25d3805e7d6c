/**
 * A real identity for every simulated peer: an Ed25519 key and its self-signed certificate, made by the
 * product's own generateKeyPair and tlsIdentity (what p2p-peerd makes in its --data on first start). Making
 * one takes about 2 ms (the certificate's ASN.1 most of it), so 20,000 are kept between runs in
 * os.tmpdir()/p2p-fleet-keys (one JSON line each) and only the missing ones are made, on every core.
 */
import { createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { generateKeyPair, peerIdOf, tlsIdentity, type TlsIdentity } from '../../protocol/index.js';

export const KEY_CACHE_DIR = path.join(os.tmpdir(), 'p2p-fleet-keys');
export const KEY_CACHE_FILE = path.join(KEY_CACHE_DIR, 'identities-v1.jsonl');

/** One line of the cache: the private key (PKCS#8 PEM), its certificate (PEM) and the raw public key (hex). */
interface StoredIdentity {
  key: string;
  cert: string;
  publicKey: string;
}

function makeIdentity(): StoredIdentity {
  const { pem, keys } = generateKeyPair();
  return { key: pem, cert: tlsIdentity(keys).cert, publicKey: keys.publicKey.toString('hex') };
}

/** Lines already in the cache (a torn last line, from an interrupted run, is not counted and is cut). */
function cachedLines(): string[] {
  let text = '';
  try {
    text = fs.readFileSync(KEY_CACHE_FILE, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Whatever follows the last line feed is an unfinished line (or nothing).
  const complete = text.split('\n').slice(0, -1);
  if (!text.endsWith('\n') && text.length > 0) fs.writeFileSync(KEY_CACHE_FILE, complete.map((l) => `${l}\n`).join(''), { mode: 0o600 });
  return complete;
}

/** Makes sure the cache holds at least `count` identities; returns how many it made. */
export async function ensureIdentities(count: number, progress: (line: string) => void): Promise<number> {
  fs.mkdirSync(KEY_CACHE_DIR, { recursive: true, mode: 0o700 });
  const missing = count - cachedLines().length;
  if (missing <= 0) return 0;
  const threads = Math.max(1, Math.min(os.cpus().length, Math.ceil(missing / 500)));
  progress(`making ${missing} peer identities (Ed25519 key + certificate) on ${threads} threads; kept in ${KEY_CACHE_DIR} for the next runs`);
  const started = performance.now();
  const out = fs.openSync(KEY_CACHE_FILE, 'a', 0o600);
  try {
    await Promise.all(
      Array.from({ length: threads }, (_, i) => {
        const n = Math.floor(missing / threads) + (i < missing % threads ? 1 : 0);
        return new Promise<void>((resolve, reject) => {
          const w = new Worker(new URL(import.meta.url), { workerData: { fleetKeys: n } });
          // Whole lines only, each appended by one write: the threads never tear each other's lines.
          w.on('message', (lines: string) => fs.writeSync(out, lines));
          w.once('error', reject);
          w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`identity thread exited ${code}`))));
        });
      }),
    );
  } finally {
    fs.closeSync(out);
  }
  progress(`made ${missing} identities in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return missing;
}

/** Identities `from` .. `from + count - 1` of the cache, as TrackerClient takes them. */
export function loadIdentities(from: number, count: number): TlsIdentity[] {
  const lines = cachedLines();
  if (lines.length < from + count) throw new Error(`the identity cache ${KEY_CACHE_FILE} holds ${lines.length}, not ${from + count}`);
  return lines.slice(from, from + count).map((line) => {
    const s = JSON.parse(line) as StoredIdentity;
    const publicKey = Buffer.from(s.publicKey, 'hex');
    return { keys: { privateKey: createPrivateKey(s.key), publicKey, peerId: peerIdOf(publicKey) }, cert: s.cert, key: s.key };
  });
}

// In an identity thread: make the identities asked for, posting them in batches of whole lines.
if (!isMainThread && (workerData as { fleetKeys?: number } | undefined)?.fleetKeys !== undefined) {
  const total = (workerData as { fleetKeys: number }).fleetKeys;
  let batch = '';
  for (let i = 1; i <= total; i++) {
    batch += `${JSON.stringify(makeIdentity())}\n`;
    if (i % 200 === 0 || i === total) {
      parentPort!.postMessage(batch);
      batch = '';
    }
  }
}
