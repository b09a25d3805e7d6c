/**
 * Peers' requests run in stretches of at most `budgetMs` of the event loop; the rest wait for the next
 * stretch, and the loop goes round in between, its timers included (issue 12).
 *
 * Node runs every readable socket's callbacks in one phase of its loop and the timers only after it. A
 * tracker with more work than CPU (a fleet reconnecting after a takeover, searches with thousands of
 * hits) then handled seconds of requests in one go, missed its own cluster heartbeats, took that for a
 * freeze and gave up command, and every peer moved to another tracker: more work still. With the gate it
 * answers late instead, and the cluster keeps its main. Cluster links and heartbeats (PING) do not pass
 * through it. A connection's waiting requests count in its in-flight limit, so the queue is bounded.
 */
export interface RequestGateOptions {
  /** Request work run in one stretch before the rest waits for the next turn of the loop. */
  budgetMs: number;
  /**
   * An ordinary (not urgent) request that waited longer than this for its turn is refused with `shed`'s
   * error instead of run (default: never). Its peer gives up after a few seconds anyway; work done for an
   * answer nobody waits for is what turns an overloaded tracker into one that answers nobody.
   */
  maxWaitMs?: number;
  /** The error a shed request fails with. */
  shed?: (waitedMs: number) => Error;
  /**
   * While the oldest ordinary request has waited this long, ordinary requests are taken newest first
   * (adaptive LIFO), until the oldest has run or been refused (default: always oldest first).
   */
  lifoAfterMs?: number;
  /** Milliseconds, monotonic (performance.now unless a test passes its own). */
  now?: () => number;
}

interface Waiting {
  work: () => void | Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
  /** When it began to wait. */
  at: number;
}

/** A FIFO of waiting requests (an array and a head, compacted now and then). */
class Line {
  private items: Array<Waiting | undefined> = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(w: Waiting): void {
    this.items.push(w);
  }

  /** The request that has waited longest. */
  get oldest(): Waiting | undefined {
    return this.items[this.head];
  }

  /** The newest request. */
  pop(): Waiting {
    const w = this.items.pop()!;
    if (this.head >= this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return w;
  }

  shift(): Waiting {
    const w = this.items[this.head]!;
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return w;
  }

  drainAll(): Waiting[] {
    const all = this.items.slice(this.head) as Waiting[];
    this.items = [];
    this.head = 0;
    return all;
  }
}

/**
 * Two classes of requests. Urgent ones (a peer's own announcements: what a takeover waits for) and
 * ordinary ones (lookups, searches) take turns while both wait, so neither starves the other: before, a
 * main that took over under more lookups than it could answer kept every re-announcement waiting behind
 * them past its peer's timeout, for minutes, and no peer counted as back (issue 12).
 *
 * Under overload the ordinary line follows Facebook's "adaptive LIFO" (Maurer, "Fail at Scale", 2015):
 * - an ordinary request that waited past `maxWaitMs` is refused without being run: its peer gives up
 *   after a few seconds anyway, and work done for an answer nobody waits for is what keeps an overloaded
 *   tracker overloaded;
 * - once the oldest has waited `lifoAfterMs`, the newest go first: they are answered while their peers
 *   still wait, and the old ones, which would be late anyway, are the ones refused. First in, first out,
 *   every answer came just before the deadline, and a fresh request (a new main's first lookup) waited as
 *   long as the rest.
 */
export class RequestGate {
  private readonly budgetMs: number;
  private readonly maxWaitMs: number;
  private readonly shedError: (waitedMs: number) => Error;
  private readonly lifoAfterMs: number;
  private readonly now: () => number;
  private readonly urgent = new Line();
  private readonly ordinary = new Line();
  /** The last request run from the queues was urgent: an ordinary one goes next if one waits. */
  private urgentLast = false;
  /** When this stretch began (-1: none running). */
  private stretchAt = -1;
  private scheduled: NodeJS.Immediate | undefined;
  /** Requests that waited for a later stretch, in total. */
  deferred = 0;
  /** Ordinary requests refused for having waited past maxWaitMs, in total. */
  shed = 0;

  constructor(opts: RequestGateOptions) {
    this.budgetMs = opts.budgetMs;
    this.maxWaitMs = opts.maxWaitMs ?? Infinity;
    this.shedError = opts.shed ?? ((ms) => new Error(`waited ${Math.round(ms)} ms for its turn`));
    this.lifoAfterMs = opts.lifoAfterMs ?? Infinity;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Requests waiting now. */
  get queued(): number {
    return this.urgent.length + this.ordinary.length;
  }

  /**
   * Runs `work` now when this stretch has time left and nothing waits before it; otherwise once its turn
   * comes (`urgent` ones take turns with the others). Settles as `work` does.
   */
  run(work: () => void | Promise<void>, urgent = false): void | Promise<void> {
    if (this.queued === 0 && this.startOrContinue()) return work();
    this.deferred++;
    return new Promise<void>((resolve, reject) => {
      (urgent ? this.urgent : this.ordinary).push({ work, resolve, reject, at: this.now() });
      this.schedule();
    });
  }

  /** Fails every waiting request with `err` (the tracker is closing). */
  stop(err: unknown): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    for (const w of [...this.urgent.drainAll(), ...this.ordinary.drainAll()]) w.reject(err);
  }

  /** Whether this stretch has time left; starts one (ended by the next setImmediate) if none runs. */
  private startOrContinue(): boolean {
    const now = this.now();
    if (this.stretchAt < 0) {
      this.stretchAt = now;
      this.schedule();
      return true;
    }
    return now - this.stretchAt < this.budgetMs;
  }

  private schedule(): void {
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.stretchAt = -1;
      this.drain();
    });
  }

  /** One stretch of waiting requests; what is left goes on after the loop's next turn. */
  private drain(): void {
    while (this.queued > 0 && this.startOrContinue()) {
      const now = this.now();
      const oldest = this.ordinary.oldest;
      if (oldest && now - oldest.at > this.maxWaitMs) {
        // Refused unrun, one a pass: a backlog that expires at once (after a pause) still counts in the stretch.
        this.ordinary.shift();
        this.shed++;
        oldest.reject(this.shedError(now - oldest.at));
        continue;
      }
      const fromUrgent = this.urgent.length > 0 && !(this.urgentLast && this.ordinary.length > 0);
      this.urgentLast = fromUrgent;
      const w = fromUrgent ? this.urgent.shift() : now - oldest!.at > this.lifoAfterMs ? this.ordinary.pop() : this.ordinary.shift();
      try {
        const r = w.work();
        if (r && typeof r.then === 'function') r.then(w.resolve, w.reject);
        else w.resolve();
      } catch (err) {
        w.reject(err);
      }
    }
  }
}
