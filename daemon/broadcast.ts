/**
 * Events told to every peer session (TRACKER_CHANGED, BLACKLIST_CHANGED), written to a slice of the
 * sessions per turn of the event loop (issue 12).
 *
 * Written in one go, one TRACKER_CHANGED to a 17,000-peer fleet held the tracker's loop for 2.5-3.2 s (a
 * CPU profile of the main in bench:fleet: every sample under `broadcast`). That is longer than
 * --failover-ms, so the tracker took itself for frozen and gave up command, the next change of main was
 * told the same way, and the cluster never settled. The loop now goes round between slices: timers, the
 * cluster's heartbeats, requests.
 *
 * Each event's frame is encoded once, when its first slice is written, and the same bytes go to every
 * session. Events leave in the order they were given: every slice of the oldest runs before any of the
 * next, so each session sees them in that order, and `afterQueued` lets an answer wait for the events
 * given before it (a session must not get an old push after a newer answer). Slices are counted in
 * sessions, not timed, so they are the same on a virtual clock.
 */
export interface BroadcasterOptions<T> {
  /** Sessions written to per turn of the loop. */
  perTurn: number;
  /** Writes `frame` to `target` (which may have closed since: skip it then). */
  deliver(target: T, frame: Buffer): void;
}

/** An event waiting to be told, as `send` gives it back. */
export interface Told {
  /** Some session has been written to: a change can no longer be folded into it. */
  readonly started: boolean;
}

interface Pending<T> extends Told {
  make: () => Buffer;
  frame: Buffer | undefined;
  targets: readonly T[];
  /** The next target to write to. */
  next: number;
  /** A newer event with the same key makes the rest of this one moot. */
  key: string | undefined;
  /** Run once this event and every one before it have been told (or dropped). */
  after: Array<() => void>;
}

export class Broadcaster<T> {
  private queue: Array<Pending<T>> = [];
  private scheduled: NodeJS.Immediate | undefined;
  private stopped = false;

  constructor(private readonly opts: BroadcasterOptions<T>) {}

  /** No event waits to be told. */
  get idle(): boolean {
    return this.queue.length === 0;
  }

  /** Sessions still to be written to, over every event waiting. */
  get pending(): number {
    let n = 0;
    for (const p of this.queue) n += p.targets.length - p.next;
    return n;
  }

  /**
   * Writes the frame `make` encodes (called once, when the first session's turn comes, so that a caller
   * may still fold changes into an event that has not `started`) to every one of `targets`, a slice per
   * turn, after the events given before it. With a `key`, what an earlier event of the same key has not
   * told yet is dropped: only the latest matters (a peer wants the main of now, not each one between).
   */
  send(make: () => Buffer, targets: readonly T[], key?: string): Told {
    if (this.stopped || targets.length === 0) return { started: true };
    if (key !== undefined) this.cancel(key);
    const p: Pending<T> = {
      make,
      frame: undefined,
      targets,
      next: 0,
      key,
      after: [],
      get started() {
        return this.frame !== undefined;
      },
    };
    this.queue.push(p);
    this.schedule();
    return p;
  }

  /** Drops what events of `key` have not told yet (a tracker that lost command stops naming itself). */
  cancel(key: string): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const p = this.queue[i]!;
      if (p.key !== key) continue;
      this.queue.splice(i, 1);
      // What waited for it now waits for the event before it, or runs if there is none.
      if (i > 0) this.queue[i - 1]!.after.push(...p.after);
      else for (const fn of p.after) fn();
    }
  }

  /** Runs `fn` once every event given so far has been told: at once if none is waiting. */
  afterQueued(fn: () => void): void {
    const last = this.queue.at(-1);
    if (last) last.after.push(fn);
    else fn();
  }

  /** Drops everything waiting (the tracker is closing); what waited on it runs now. */
  stop(): void {
    this.stopped = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    const queue = this.queue;
    this.queue = [];
    for (const p of queue) for (const fn of p.after) fn();
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
      p.frame ??= p.make();
      const end = Math.min(p.targets.length, p.next + budget);
      budget -= end - p.next;
      while (p.next < end) this.opts.deliver(p.targets[p.next++]!, p.frame);
      if (p.next >= p.targets.length) {
        this.queue.shift();
        // Before the next event starts: an answer waiting for this one goes out ahead of later pushes.
        for (const fn of p.after) fn();
      }
    }
    if (this.queue.length > 0) this.schedule();
  }
}
