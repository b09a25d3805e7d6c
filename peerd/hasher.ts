/**
 * SHA-256 of chunks on a second core. Verifying a GiB costs about 0.7 s of hashing; done on the main
 * thread it delays every socket read and write behind it. A worker thread hashes chunk buffers that
 * live in shared memory (the download's ChunkPool makes them so): nothing is copied, the main thread
 * only posts a few numbers and gets 32 bytes back. A buffer that is not shared, or a worker that is gone,
 * is hashed on the main thread, so the result is the same either way.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/** The worker: plain JavaScript, so it runs the same from `dist/` and under the test runner. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const memory = [];
parentPort.on('message', (m) => {
  if (m.sab) { memory[m.slot] = Buffer.from(m.sab); return; }
  let hash = null;
  try { hash = createHash('sha256').update(memory[m.slot].subarray(m.offset, m.offset + m.length)).digest(); }
  catch { hash = null; }
  parentPort.postMessage({ id: m.id, hash });
});
`;

export interface Hasher {
  sha256(data: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

export function sha256Sync(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

interface Pending {
  data: Buffer;
  resolve(hash: Buffer): void;
}

export class WorkerHasher implements Hasher {
  private worker: Worker | undefined;
  private readonly slots = new Map<ArrayBufferLike, number>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failed = false;

  constructor(private readonly log?: Logger) {}

  sha256(data: Buffer): Promise<Buffer> {
    const memory = data.buffer;
    if (this.failed || !(memory instanceof SharedArrayBuffer)) return Promise.resolve(sha256Sync(data));
    const worker = this.start();
    let slot = this.slots.get(memory);
    if (slot === undefined) {
      slot = this.slots.size;
      this.slots.set(memory, slot);
      worker.postMessage({ slot, sab: memory });
    }
    const id = this.nextId++;
    if (this.pending.size === 0) worker.ref(); // a hash in progress keeps the process up
    return new Promise((resolve) => {
      this.pending.set(id, { data, resolve });
      worker.postMessage({ id, slot, offset: data.byteOffset, length: data.length });
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
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.unref();
    w.on('message', (m: { id: number; hash: Uint8Array | null }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) w.unref();
      p.resolve(m.hash ? Buffer.from(m.hash.buffer, m.hash.byteOffset, m.hash.length) : sha256Sync(p.data));
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
    this.worker = w;
    return w;
  }

  /** Hashes still owed are done here: a caller never waits on a worker that is gone. */
  private settleOnMainThread(): void {
    const owed = [...this.pending.values()];
    this.pending.clear();
    for (const p of owed) p.resolve(sha256Sync(p.data));
  }
}
