/**
 * The download side's chunk buffers: each arriving chunk is read from the socket straight into one of
 * these (see `RequestOptions.into`), verified, written to the partial file from it and given back. The
 * same few buffers serve a whole download, so a GiB costs no allocation per chunk and nothing for the
 * garbage collector. The pool grows to the most chunks held at once: one being received per connection,
 * plus those waiting to be checked and written, which the download keeps few by not reading its sockets
 * while they are many (peerd/downloader.ts, MAX_PENDING_WRITES). Beyond `max` a body is buffered the old
 * way, in memory allocated for it. The buffers are shared memory, so a worker thread can hash them
 * without a copy (peerd/hasher.ts).
 */
import type { BodyBuffers } from '../protocol/index.js';

export class ChunkPool implements BodyBuffers {
  private readonly free: Buffer[] = [];
  /** Every buffer handed out and not yet given back, by its memory (a view finds its buffer). */
  private readonly out = new Map<ArrayBufferLike, Buffer>();
  private allocated = 0;

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

  acquire(bytes: number): Buffer | undefined {
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

  /** Gives back a buffer from `acquire`, or any view of one; anything else is ignored. */
  release(view: Buffer): void {
    const buf = this.out.get(view.buffer);
    if (!buf) return;
    this.out.delete(view.buffer);
    this.free.push(buf);
  }
}
