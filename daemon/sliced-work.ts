/**
 * CPU-heavy work done in small slices between the event loop's turns, so that no request holds up the
 * others (issue 10: one REPORT's receipt checks froze the main for seconds, longer than --failover-ms).
 *
 * A job is a generator; each `yield` ends one unit of work (one signature check, a piece of a hash). Each
 * turn runs at most `unitsPerTurn` units, taken in turn from every job waiting (a large job never starves
 * a small one), then yields to I/O with setImmediate: heartbeats and lookups wait at most one slice. Units
 * are counted, not timed, so the slices are the same on a virtual clock.
 */
import { P2PError } from '../protocol/index.js';

export interface SlicedWorkOptions {
  /** Units run per event-loop turn. */
  unitsPerTurn: number;
  /** Units that may wait at once; a job beyond is refused (P2P_RATE_LIMITED) rather than queued. */
  maxQueuedUnits: number;
}

interface Job {
  steps: Generator<void, unknown>;
  /** Units declared for it and not yet run (what it still holds of maxQueuedUnits). */
  units: number;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export class SlicedWork {
  private jobs: Job[] = [];
  private queuedUnits = 0;
  private scheduled: NodeJS.Immediate | undefined;
  private stopped: P2PError | undefined;

  constructor(private readonly opts: SlicedWorkOptions) {}

  /** Units declared by the jobs waiting and not yet run. */
  get queued(): number {
    return this.queuedUnits;
  }

  /** Whether a job of `units` would be taken now. */
  canTake(units: number): boolean {
    return !this.stopped && this.queuedUnits + units <= this.opts.maxQueuedUnits;
  }

  /**
   * Runs `steps`, which declares about `units` units (its share of maxQueuedUnits), and resolves with what
   * it returns. Refused at once when the queue is full or the runner stopped.
   */
  run<T>(units: number, steps: Generator<void, T>): Promise<T> {
    if (this.stopped) return Promise.reject(this.stopped);
    if (!this.canTake(units)) {
      return Promise.reject(new P2PError('P2P_RATE_LIMITED', `the tracker is busy checking other reports (${this.queuedUnits} checks waiting); try again in a few seconds`));
    }
    return new Promise<T>((resolve, reject) => {
      this.jobs.push({ steps, units, resolve: resolve as (v: unknown) => void, reject });
      this.queuedUnits += units;
      this.schedule();
    });
  }

  /** Refuses every job waiting and every new one with `err` (the tracker is closing). */
  stop(err: P2PError): void {
    this.stopped = err;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    for (const job of this.jobs) job.reject(err);
    this.jobs = [];
    this.queuedUnits = 0;
  }

  private schedule(): void {
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.slice();
    });
  }

  /** One turn's worth of units, one unit per job in turn. */
  private slice(): void {
    let budget = this.opts.unitsPerTurn;
    while (budget > 0 && this.jobs.length > 0) {
      for (const job of [...this.jobs]) {
        if (budget <= 0) break;
        budget--;
        this.step(job);
      }
    }
    if (this.jobs.length > 0) this.schedule();
  }

  private step(job: Job): void {
    let done = false;
    try {
      const r = job.steps.next();
      if (r.done) {
        done = true;
        job.resolve(r.value);
      } else if (job.units > 0) {
        job.units--;
        this.queuedUnits--;
      }
    } catch (err) {
      done = true;
      job.reject(err);
    }
    if (done) {
      this.queuedUnits -= job.units;
      job.units = 0;
      this.jobs = this.jobs.filter((j) => j !== job);
    }
  }
}
