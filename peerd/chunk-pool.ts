/**
 * The download side's chunk buffers: each arriving chunk is read from the socket straight into one of
 * these (see `RequestOptions.into`), verified, written to the partial file from it and given back. The
 * same few buffers serve a whole download, so a GiB costs no allocation per chunk and nothing for the
 * garbage collector. The buffers are shared memory, so a worker thread can hash them without a copy
 * (peerd/hasher.ts).
 *
 * A download claims a buffer before it sends each request (`claim`), and sends no request without one:
 * chunks received, being checked and waiting for the disk can never hold more than `max` buffers, so a
 * busy machine slows the requests down instead of buffering bodies in fresh memory (on 2 cores at 12
 * peers it used to run out 1,772 times in one 100 MiB download, and every body it could not place cost
 * a 1 MiB allocation and its page faults). `whenFree` tells a download that waited when to ask again.
 */
import type { BodyBuffers } from '../protocol/index.js';

/** A buffer promised to one request before it is sent; the connection acquires it when the body comes. */
export interface ChunkClaim extends BodyBuffers {
  /** The request ended without using it (failed, withdrawn, or a body too small to need it). Idempotent. */
  cancel(): void;
}

export class ChunkPool implements BodyBuffers {
  private readonly free: Buffer[] = [];
  /** Every buffer handed out and not yet given back, by its memory (a view finds its buffer). */
  private readonly out = new Map<ArrayBufferLike, Buffer>();
  private allocated = 0;
  /** Buffers promised to requests in flight and not acquired yet. */
  private claims = 0;
  private waiters: Array<() => void> = [];

  constructor(
    /** Bytes per buffer: a chunk's whole CHUNK body (data and receipt fields). */
    readonly bufferBytes: number,
    /** Buffers at most. */
    readonly max = 64,
  ) {}

  /** Buffers handed out right now. */
  get inUse(): number {
    return this.out.size;
  }

  /** Buffers this pool has made (its memory is about this times `bufferBytes`). */
  get size(): number {
    return this.allocated;
  }

  /** Buffers promised to requests and not yet acquired. */
  get claimed(): number {
    return this.claims;
  }

  /** Promises a buffer to one request; undefined while every buffer is out or promised. */
  claim(): ChunkClaim | undefined {
    if (this.out.size + this.claims >= this.max) return undefined;
    this.claims++;
    let open = true;
    const close = (): boolean => {
      if (!open) return false;
      open = false;
      this.claims--;
      return true;
    };
    return {
      acquire: (bytes) => (close() ? this.take(bytes) : undefined),
      release: (view) => this.release(view),
      cancel: () => {
        if (close()) this.wake();
      },
    };
  }

  /** `cb` runs once, the next time a buffer or a claim is given back. */
  whenFree(cb: () => void): void {
    this.waiters.push(cb);
  }

  /** A buffer without a claim (what is not claimed), or undefined. */
  acquire(bytes: number): Buffer | undefined {
    if (this.out.size + this.claims >= this.max) return undefined;
    return this.take(bytes);
  }

  /** Gives back a buffer from `acquire`, or any view of one; anything else is ignored. */
  release(view: Buffer): void {
    const buf = this.out.get(view.buffer);
    if (!buf) return;
    this.out.delete(view.buffer);
    this.free.push(buf);
    this.wake();
  }

  private take(bytes: number): Buffer | undefined {
    if (bytes > this.bufferBytes) return undefined;
    let buf = this.free.pop();
    if (!buf) {
      if (this.allocated >= this.max) return undefined;
      // Its own memory, so `release` can find it from any view; shared memory, so the hash worker can
      // read it where it is (peerd/hasher.ts).
      buf = Buffer.from(new SharedArrayBuffer(this.bufferBytes));
      this.allocated++;
    }
    this.out.set(buf.buffer, buf);
    return buf;
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const cb of waiters) cb();
  }
}
