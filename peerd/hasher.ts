/**
 * Checking chunks on a second core: the SHA-256 of the data and the Ed25519 signature of its receipt.
 * Verifying a GiB costs about 0.7 s of hashing and 0.15 s of signature checks; done on the main thread
 * they delay every socket read and write behind them. A worker thread works on chunk buffers that live
 * in shared memory (the download's ChunkPool makes them so): nothing is copied, the main thread posts a
 * few numbers and small fields and gets 32 bytes and a yes or no back. A buffer that is not shared, or a
 * worker that is gone, is checked on the main thread, so the result is the same either way.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { sha256, verifyPayload } from '../protocol/index.js';

/** The worker: plain JavaScript, so it runs the same from `dist/` and under the test runner. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash, createPublicKey, verify } = require('node:crypto');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const memory = [];
const keys = new Map();
function keyObject(raw) {
  const id = Buffer.from(raw).toString('base64');
  let key = keys.get(id);
  if (!key) {
    if (keys.size >= 1024) keys.clear();
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
    keys.set(id, key);
  }
  return key;
}
parentPort.on('message', (m) => {
  if (m.sab) { memory[m.slot] = Buffer.from(m.sab); return; }
  let hash = null;
  let signed = false;
  try {
    hash = createHash('sha256').update(memory[m.slot].subarray(m.offset, m.offset + m.length)).digest();
    if (m.receipt) {
      const r = m.receipt;
      signed = r.publicKey.length === 32 && r.signature.length === 64 && verify(null, r.payload, keyObject(r.publicKey), r.signature);
    }
  } catch { if (!hash) hash = null; }
  parentPort.postMessage({ id: m.id, hash, signed });
});
`;

/** A receipt to check with a chunk: `signature` must be `publicKey`'s signature of `payload`. */
export interface ReceiptToCheck {
  publicKey: Buffer;
  payload: Buffer;
  signature: Buffer;
}

export interface ChunkCheck {
  /** SHA-256 of the data. */
  hash: Buffer;
  /** The receipt's signature is valid (false when there was no receipt to check). */
  signed: boolean;
}

export interface Hasher {
  sha256(data: Buffer): Promise<Buffer>;
  /** The data's hash and whether its receipt is validly signed, in one trip to the worker. */
  check(data: Buffer, receipt: ReceiptToCheck): Promise<ChunkCheck>;
  /** Chunks are coming: get ready now (a worker takes tens of milliseconds to start). */
  warm?(): void;
  close(): Promise<void>;
}

/** The check the worker makes, made here and now on the calling thread. */
export function checkNow(data: Buffer, receipt: ReceiptToCheck | undefined): ChunkCheck {
  return { hash: sha256(data), signed: receipt ? verifyPayload(receipt.publicKey, receipt.payload, receipt.signature) : false };
}


interface Pending {
  data: Buffer;
  receipt: ReceiptToCheck | undefined;
  resolve(result: ChunkCheck): void;
}

export class WorkerHasher implements Hasher {
  private worker: Worker | undefined;
  private readonly slots = new Map<ArrayBufferLike, number>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failed = false;

  constructor(private readonly log?: Logger) {}

  async sha256(data: Buffer): Promise<Buffer> {
    return (await this.run(data, undefined)).hash;
  }

  check(data: Buffer, receipt: ReceiptToCheck): Promise<ChunkCheck> {
    return this.run(data, receipt);
  }

  warm(): void {
    if (!this.failed) this.start();
  }

  private run(data: Buffer, receipt: ReceiptToCheck | undefined): Promise<ChunkCheck> {
    const memory = data.buffer;
    if (this.failed || !(memory instanceof SharedArrayBuffer)) return Promise.resolve(checkNow(data, receipt));
    const worker = this.start();
    let slot = this.slots.get(memory);
    if (slot === undefined) {
      slot = this.slots.size;
      this.slots.set(memory, slot);
      worker.postMessage({ slot, sab: memory });
    }
    const id = this.nextId++;
    if (this.pending.size === 0) worker.ref(); // a hash in progress keeps the process up
    // The receipt's fields may be views into a large buffer (a TLS read's, a frame's): a message copies
    // the whole buffer under a view, so each field goes as a copy of exactly its own bytes.
    const own = receipt && { publicKey: new Uint8Array(receipt.publicKey), payload: new Uint8Array(receipt.payload), signature: new Uint8Array(receipt.signature) };
    return new Promise((resolve) => {
      this.pending.set(id, { data, receipt, resolve });
      worker.postMessage({ id, slot, offset: data.byteOffset, length: data.length, receipt: own });
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.failed = true;
    this.settleOnMainThread();
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    // The worker keeps few JavaScript objects (a message at a time): a small heap keeps its memory small.
    const w = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 } });
    w.on('message', (m: { id: number; hash: Uint8Array | null; signed: boolean }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) w.unref();
      p.resolve(m.hash ? { hash: Buffer.from(m.hash.buffer, m.hash.byteOffset, m.hash.length), signed: m.signed } : checkNow(p.data, p.receipt));
    });
    const fail = (why: string): void => {
      if (this.worker !== w) return;
      this.log?.warn({ why }, 'hash worker stopped; hashing on the main thread from now on');
      this.worker = undefined;
      this.failed = true;
      this.settleOnMainThread();
    };
    w.on('error', (err) => fail(err.message));
    w.on('exit', (code) => fail(`exit code ${code}`));
    // Only a hash being computed keeps the process up (see run()); unref last, after every listener.
    w.unref();
    this.worker = w;
    return w;
  }

  /** Hashes still owed are done here: a caller never waits on a worker that is gone. */
  private settleOnMainThread(): void {
    const owed = [...this.pending.values()];
    this.pending.clear();
    for (const p of owed) p.resolve(checkNow(p.data, p.receipt));
  }
}
