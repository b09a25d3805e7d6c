/**
 * Reused memory for large outgoing frames. A tracker's SEARCH answer of 10,000 hits is about 700 KB; a
 * fresh buffer per answer is memory outside the JS heap, and V8 answers that much new outside memory with
 * full collections of the whole heap: at 2,000,000 holder entries, 280-400 ms pauses every few seconds
 * under a steady load of searches, the main answering nothing meanwhile (issue 12). A frame from here is
 * given back once its socket is done with it, and the next one is written into the same memory.
 */

/** Frames smaller than this are allocated as they come (Node's pool serves the smallest). */
export const POOLED_FRAME_MIN_BYTES = 64 * 1024;
/** Larger frames are rare (the first blacklist of a peer, a snapshot) and allocated as they come. */
const POOLED_FRAME_MAX_BYTES = 8 * 1024 * 1024;
/** Free memory kept, at most, across the sizes. */
const RETAINED_MAX_BYTES = 32 * 1024 * 1024;

export class FrameBuffers {
  /** Free buffers by size class (a power of two, from POOLED_FRAME_MIN_BYTES up). */
  private readonly free = new Map<number, Buffer[]>();
  private retained = 0;

  constructor(private readonly retainedMaxBytes = RETAINED_MAX_BYTES) {}

  /** A buffer of at least `bytes` (its contents are old frames' bytes), or undefined if not pooled. */
  take(bytes: number): Buffer | undefined {
    if (bytes < POOLED_FRAME_MIN_BYTES || bytes > POOLED_FRAME_MAX_BYTES) return undefined;
    const size = sizeClass(bytes);
    const buf = this.free.get(size)?.pop();
    if (buf) {
      this.retained -= size;
      return buf;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Gives back a buffer from `take` once nothing reads it any more; kept if there is room. */
  give(buf: Buffer): void {
    const size = buf.length;
    if (this.retained + size > this.retainedMaxBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
    this.retained += size;
  }

  /** Free bytes held (for tests). */
  get retainedBytes(): number {
    return this.retained;
  }
}

function sizeClass(bytes: number): number {
  let size = POOLED_FRAME_MIN_BYTES;
  while (size < bytes) size *= 2;
  return size;
}

/** The process's pool: every connection's large answers share it. */
export const frameBuffers = new FrameBuffers();
