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
   * A request (not an urgent one) that waited longer than this for its turn is refused with `shed`'s
   * error instead of run (default: never). Its peer gives up after a few seconds anyway; work done for an
   * answer nobody waits for is what turns an overloaded tracker into one that answers nobody.
   */
  maxWaitMs?: number;
  /** The error a shed request fails with. */
  shed?: (waitedMs: number) => Error;
  /**
   * While the oldest request of a line (not the urgent one) has waited this long, that line's requests
   * are taken newest first (adaptive LIFO), until the oldest has run or been refused (default: always
   * oldest first).
   */
  lifoAfterMs?: number;
  /** Milliseconds, monotonic (performance.now unless a test passes its own). */
  now?: () => number;
  /**
   * Each request as it leaves the gate, run or refused for waiting (not those failed by stop()): its line
   * and how long it waited (0 if run at once).
   */
  onLeave?: (cls: RequestClass, waitedMs: number) => void;
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
  /** Milliseconds its requests' work took in this backlog, over its weight (what its share is measured in). */
  used = 0;

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
 * What a request is to the gate: which line it waits in, and so whose share of the loop's time it uses.
 * - `urgent`: a peer's own announcements (what a takeover waits for) and the blacklist's requests; never
 *   refused for having waited, always oldest first.
 * - `ordinary`: cheap reads (a LOOKUP is tens of microseconds).
 * - `heavy`: reads that may cost milliseconds each (a SEARCH with thousands of hits).
 */
export type RequestClass = 'urgent' | 'ordinary' | 'heavy';

/**
 * Each line's weight: while lines wait, each gets time in proportion to it. A lookup (tens of
 * microseconds) is what a download needs to start and an announcement what a takeover waits for; a search
 * (up to tens of milliseconds) is browsing, and the first thing an overloaded main should refuse. At 5,000
 * peers with 2,000 lookups and 200 searches asked a second (bench:fleet; docs/scaling.md, "Lookups beside
 * searches"), one FIFO for both answered 263-499 lookups a second; these lines 1,740-1,992.
 */
const WEIGHTS: Readonly<Record<RequestClass, number>> = { urgent: 8, ordinary: 8, heavy: 1 };

const CLASSES = Object.keys(WEIGHTS) as RequestClass[];

/**
 * Three lines of requests that share the loop's time by weight while they wait (announcements and lookups
 * 8 times what searches get), by the time their work took rather than by count (weighted fair queueing, with
 * the time each request's synchronous work ran as its cost: what a REGISTER costs later, its commit and
 * apply, is not counted, so under a takeover's storm announcements get more than their share).
 * - A line that needs less than its share is served as soon as the request running now is done: at 2,000
 *   lookups a second and more searches than a core can answer, the lookups used to take turns with the
 *   searches one for one, waited behind 17 ms answers, and most were refused for having waited 2 s
 *   (bench:fleet at 17,000 peers: 63 answered a second). Now a search costs its line 17 ms of its share
 *   and a lookup costs its own line tens of microseconds.
 * - A line that was idle joins where the line served last stood when its request began (it does not save
 *   up time while idle), and once nothing waits every line starts again from nothing.
 * - Announcements get their share too: before, a main that took over under more lookups than it could
 *   answer kept every re-announcement waiting behind them past its peer's timeout, for minutes.
 *
 * Under overload the lines other than `urgent` follow Facebook's "adaptive LIFO" (Maurer, "Fail at
 * Scale", 2015), each on its own:
 * - a request that waited past `maxWaitMs` is refused without being run: its peer gives up after a few
 *   seconds anyway, and work done for an answer nobody waits for is what keeps an overloaded tracker
 *   overloaded;
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
  private readonly onLeave: (cls: RequestClass, waitedMs: number) => void;
  private readonly lines = new Map<RequestClass, Line>(CLASSES.map((c) => [c, new Line()]));
  /**
   * Where the line last served stood when its request began (start-time fair queueing's virtual time): a
   * line that was idle joins there, so it neither saves up time while idle nor pays for what ran before.
   */
  private virtualMs = 0;
  /** When this stretch began (-1: none running). */
  private stretchAt = -1;
  private scheduled: NodeJS.Immediate | undefined;
  /** Requests that waited for a later stretch, in total. */
  deferred = 0;
  /** Requests refused for having waited past maxWaitMs, in total. */
  shed = 0;

  constructor(opts: RequestGateOptions) {
    this.budgetMs = opts.budgetMs;
    this.maxWaitMs = opts.maxWaitMs ?? Infinity;
    this.shedError = opts.shed ?? ((ms) => new Error(`waited ${Math.round(ms)} ms for its turn`));
    this.lifoAfterMs = opts.lifoAfterMs ?? Infinity;
    this.now = opts.now ?? (() => performance.now());
    this.onLeave = opts.onLeave ?? (() => {});
  }

  /** Requests waiting now. */
  get queued(): number {
    let n = 0;
    for (const line of this.lines.values()) n += line.length;
    return n;
  }

  /**
   * Runs `work` now when this stretch has time left and nothing waits before it; otherwise once its line's
   * turn comes. Settles as `work` does.
   */
  run(work: () => void | Promise<void>, cls: RequestClass = 'ordinary'): void | Promise<void> {
    if (this.queued === 0 && this.startOrContinue()) {
      // Nothing waits, so every line starts level; what this one costs counts against its line should a
      // backlog form in this stretch (a search run at once, then lookups and searches queued behind it).
      this.level();
      this.leave(cls, 0);
      const startedAt = this.now();
      try {
        return work();
      } finally {
        this.lines.get(cls)!.used = (this.now() - startedAt) / WEIGHTS[cls];
      }
    }
    this.deferred++;
    const line = this.lines.get(cls)!;
    if (line.length === 0) line.used = Math.max(line.used, this.virtualMs);
    return new Promise<void>((resolve, reject) => {
      line.push({ work, resolve, reject, at: this.now() });
      this.schedule();
    });
  }

  /** Fails every waiting request with `err` (the tracker is closing). */
  stop(err: unknown): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    for (const line of this.lines.values()) for (const w of line.drainAll()) w.reject(err);
  }

  /** Tells `onLeave`; a hook that throws must not strand the request (taken off its line, not yet settled). */
  private leave(cls: RequestClass, waitedMs: number): void {
    try {
      this.onLeave(cls, waitedMs);
    } catch {
      // A metrics hook: the request matters more than its count.
    }
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

  /** Every line starts again from nothing (nothing waits). */
  private level(): void {
    for (const line of this.lines.values()) line.used = 0;
    this.virtualMs = 0;
  }

  /** One stretch of waiting requests; what is left goes on after the loop's next turn. */
  private drain(): void {
    while (this.queued > 0 && this.startOrContinue()) {
      const now = this.now();
      if (this.shedOne(now)) continue;
      // The waiting line that used least (ties to the first: urgent, then ordinary).
      let pick: [RequestClass, Line] | undefined;
      for (const entry of this.lines) if (entry[1].length > 0 && (!pick || entry[1].used < pick[1].used)) pick = entry;
      const [cls, line] = pick!;
      this.virtualMs = line.used;
      const lifo = cls !== 'urgent' && now - line.oldest!.at > this.lifoAfterMs;
      const w = lifo ? line.pop() : line.shift();
      this.leave(cls, now - w.at);
      try {
        const r = w.work();
        if (r && typeof r.then === 'function') r.then(w.resolve, w.reject);
        else w.resolve();
      } catch (err) {
        w.reject(err);
      }
      line.used += (this.now() - now) / WEIGHTS[cls];
    }
    // Nothing waits: the next backlog starts every line level.
    if (this.queued === 0) this.level();
  }

  /**
   * Refuses the oldest request of one line other than `urgent` if it waited past maxWaitMs; one a pass, so
   * that a backlog that expires at once (after a pause) still counts in the stretch.
   */
  private shedOne(now: number): boolean {
    for (const [cls, line] of this.lines) {
      const oldest = line.oldest;
      if (cls === 'urgent' || !oldest || now - oldest.at <= this.maxWaitMs) continue;
      line.shift();
      this.shed++;
      this.leave(cls, now - oldest.at);
      oldest.reject(this.shedError(now - oldest.at));
      return true;
    }
    return false;
  }
}
