/**
 * Peers' requests run in stretches of at most `budgetMs` of the event loop; the rest wait, in the order
 * they came, for the next stretch, and the loop goes round in between, its timers included (issue 12).
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
  /** Milliseconds, monotonic (performance.now unless a test passes its own). */
  now?: () => number;
}

interface Waiting {
  work: () => void | Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

export class RequestGate {
  private readonly budgetMs: number;
  private readonly now: () => number;
  private waiting: Waiting[] = [];
  private head = 0;
  /** When this stretch began (-1: none running). */
  private stretchAt = -1;
  private scheduled: NodeJS.Immediate | undefined;
  /** Requests that waited for a later stretch, in total. */
  deferred = 0;

  constructor(opts: RequestGateOptions) {
    this.budgetMs = opts.budgetMs;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Requests waiting now. */
  get queued(): number {
    return this.waiting.length - this.head;
  }

  /**
   * Runs `work` now when this stretch has time left and nothing waits before it; otherwise once its turn
   * comes. Settles as `work` does.
   */
  run(work: () => void | Promise<void>): void | Promise<void> {
    if (this.queued === 0 && this.startOrContinue()) return work();
    this.deferred++;
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ work, resolve, reject });
      this.schedule();
    });
  }

  /** Fails every waiting request with `err` (the tracker is closing). */
  stop(err: unknown): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    const waiting = this.waiting.slice(this.head);
    this.waiting = [];
    this.head = 0;
    for (const w of waiting) w.reject(err);
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
      const w = this.waiting[this.head]!;
      this.waiting[this.head++] = undefined as unknown as Waiting;
      try {
        const r = w.work();
        if (r && typeof r.then === 'function') r.then(w.resolve, w.reject);
        else w.resolve();
      } catch (err) {
        w.reject(err);
      }
    }
    if (this.queued === 0) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
  }
}
