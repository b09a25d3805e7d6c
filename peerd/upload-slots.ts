/**
 * The chunk server's upload buffers, shared fairly between connections. A buffer is held from the disk
 * read until the socket has taken the whole chunk, so a connection that stops reading keeps the buffers
 * of the chunks queued for it; with one first-come pool, a client that asked for as many chunks as there
 * are buffers and never read stalled every upload of the daemon. Here:
 *  - one connection holds at most `maxPerOwner` buffers (half the pool, rounded up), so others always
 *    have the rest;
 *  - a freed buffer goes to the waiting connection that holds the fewest (among equals, the one that has
 *    waited longest), so while others wait no connection gets more than its share.
 * What frees the buffers of a reader that never reads is the chunk server's send deadline.
 */
export class UploadSlots<Owner> {
  private readonly free: Buffer[] = [];
  private readonly held = new Map<Owner, number>();
  /** Waiting requests per owner; the Map's order is the order owners have waited in (a grant sends one to the back). */
  private readonly waiting = new Map<Owner, Array<(buf: Buffer | undefined) => void>>();
  readonly maxPerOwner: number;

  constructor(
    /** Buffers in all. */
    readonly count: number,
    bufferBytes: number,
    maxPerOwner = Math.ceil(count / 2),
  ) {
    this.maxPerOwner = Math.max(1, Math.min(count, maxPerOwner));
    // Shared memory: a chunk that must be hashed is hashed where it is, on the hash worker.
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(new SharedArrayBuffer(bufferBytes)));
  }

  /** Buffers out right now. */
  get inUse(): number {
    return this.count - this.free.length;
  }

  heldBy(owner: Owner): number {
    return this.held.get(owner) ?? 0;
  }

  /** A buffer for `owner`, when its turn comes; undefined if the owner is dropped while it waits. */
  acquire(owner: Owner): Promise<Buffer | undefined> {
    if (!this.waiting.has(owner) && this.heldBy(owner) < this.maxPerOwner) {
      const buf = this.free.pop();
      if (buf) {
        this.take(owner);
        return Promise.resolve(buf);
      }
    }
    return new Promise((resolve) => {
      const queue = this.waiting.get(owner);
      if (queue) queue.push(resolve);
      else this.waiting.set(owner, [resolve]);
    });
  }

  /** Gives back a buffer `owner` acquired, to the next in turn. */
  release(owner: Owner, buf: Buffer): void {
    const n = this.heldBy(owner) - 1;
    if (n > 0) this.held.set(owner, n);
    else this.held.delete(owner);
    this.free.push(buf);
    this.grant();
  }

  /** The owner is gone: its waiting requests get no buffer. (The buffers it holds come back by release.) */
  drop(owner: Owner): void {
    const queue = this.waiting.get(owner);
    this.waiting.delete(owner);
    for (const resolve of queue ?? []) resolve(undefined);
    this.grant();
  }

  /** Hands free buffers to the waiting owners that hold the fewest. */
  private grant(): void {
    while (this.free.length > 0) {
      let next: Owner | undefined;
      let fewest = this.maxPerOwner;
      for (const owner of this.waiting.keys()) {
        const n = this.heldBy(owner);
        if (n < fewest) {
          fewest = n;
          next = owner;
        }
      }
      if (next === undefined) return;
      const queue = this.waiting.get(next)!;
      const resolve = queue.shift()!;
      this.waiting.delete(next);
      if (queue.length > 0) this.waiting.set(next, queue); // to the back: equals take turns
      this.take(next);
      resolve(this.free.pop()!);
    }
  }

  private take(owner: Owner): void {
    this.held.set(owner, this.heldBy(owner) + 1);
  }
}
