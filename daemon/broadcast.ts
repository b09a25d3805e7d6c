/**
 * Events told to every peer session (TRACKER_CHANGED, BLACKLIST_CHANGED), written to a slice of the
 * sessions per turn of the event loop (issue 12).
 *
 * Written in one go, one TRACKER_CHANGED to a 17,000-peer fleet held the tracker's loop for 2.5-3.2 s (a
 * CPU profile of the main in bench:fleet: every sample under `broadcast`). That is longer than
 * --failover-ms, so the tracker took itself for frozen and gave up command, the next change of main was
 * told the same way, and the cluster never settled. A slice here is about as long as a stretch of the
 * request gate, and the loop goes round between slices: timers, the cluster's heartbeats, requests.
 *
 * The frame is encoded once and the same bytes go to every session. Events leave in the order they were
 * given: every slice of the oldest runs before any of the next, so each session sees them in that order.
 * Slices are counted in sessions, not timed, so they are the same on a virtual clock.
 */
export interface BroadcasterOptions<T> {
  /** Sessions written to per turn of the loop. */
  perTurn: number;
  /** Writes `frame` to `target` (which may have closed since: skip it then). */
  deliver(target: T, frame: Buffer): void;
}

interface Pending<T> {
  frame: Buffer;
  targets: readonly T[];
  /** The next target to write to. */
  next: number;
  /** A newer event with the same key makes the rest of this one moot. */
  key: string | undefined;
}

export class Broadcaster<T> {
  private queue: Array<Pending<T>> = [];
  private scheduled: NodeJS.Immediate | undefined;
  private stopped = false;

  constructor(private readonly opts: BroadcasterOptions<T>) {}

  /** Sessions still to be written to, over every event waiting. */
  get pending(): number {
    let n = 0;
    for (const p of this.queue) n += p.targets.length - p.next;
    return n;
  }

  /**
   * Writes `frame` to every one of `targets`, a slice per turn, after the events given before it. With a
   * `key`, the targets an earlier event of the same key has not reached yet are dropped from it: only the
   * latest matters (a peer wants the main of now, not each one in between).
   */
  send(frame: Buffer, targets: readonly T[], key?: string): void {
    if (this.stopped || targets.length === 0) return;
    if (key !== undefined) {
      for (const p of this.queue) if (p.key === key) p.next = p.targets.length;
      this.queue = this.queue.filter((p) => p.next < p.targets.length);
    }
    this.queue.push({ frame, targets, next: 0, key });
    this.schedule();
  }

  /** Drops everything waiting (the tracker is closing). */
  stop(): void {
    this.stopped = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    this.queue = [];
  }

  private schedule(): void {
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.slice();
    });
  }

  private slice(): void {
    let budget = this.opts.perTurn;
    while (budget > 0 && this.queue.length > 0) {
      const p = this.queue[0]!;
      const end = Math.min(p.targets.length, p.next + budget);
      budget -= end - p.next;
      while (p.next < end) this.opts.deliver(p.targets[p.next++]!, p.frame);
      if (p.next >= p.targets.length) this.queue.shift();
    }
    if (this.queue.length > 0) this.schedule();
  }
}
