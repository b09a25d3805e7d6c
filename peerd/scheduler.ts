/**
 * Which chunk to ask which holder for next. Pure bookkeeping: no sockets, no timers, no I/O, so every rule
 * can be tested on its own.
 *
 * A chunk is needed (waiting in the queue, or in flight at one or more sources), being written, or done.
 * Holders are opaque keys (`S`): a complete holder can serve every chunk, a partial holder only the ones
 * its have-bitmap lists. When nothing is left to hand out, the endgame asks a second source for a chunk
 * still in flight elsewhere, the oldest first, so one slow peer cannot hold the last chunks back.
 */

/** 'random': every downloader starting together wants different chunks, so they can trade (swarming). */
export type ChunkOrder = 'random' | 'file';

export interface SchedulerOptions {
  chunks: number;
  /** Chunks already verified on disk (a resumed download). */
  done?: Iterable<number>;
  order: ChunkOrder;
  /** For a 'random' order; tests pass a seeded one. */
  random?: () => number;
  /** Copies of one chunk in flight at once, at most (the endgame's second request). */
  maxCopies?: number;
}

const NEEDED = 0;
const WRITING = 1;
const DONE = 2;

interface SourceState {
  /** undefined: holds the whole file. */
  have: Uint8Array | undefined;
  /** Where this partial holder's scan of `order` resumes: every earlier entry was taken or not held. */
  cursor: number;
  inFlight: Set<number>;
}

export class Scheduler<S> {
  readonly total: number;
  private readonly state: Uint8Array;
  /** 1 while a needed chunk waits to be asked for (in no source's flight). */
  private readonly queued: Uint8Array;
  /** The initial queue, never reordered; entries no longer queued are skipped lazily. */
  private readonly order: number[];
  /** Where complete holders take from `order`: every earlier entry has been taken. */
  private head = 0;
  /** Chunks put back after a lost request, handed out before `order` (first lost, first asked again). */
  private retry: number[] = [];
  private retryHead = 0;
  /** Chunks in flight, in the order they were first asked for (a Map iterates in insertion order). */
  private readonly inFlight = new Map<number, Set<S>>();
  private readonly sources = new Map<S, SourceState>();
  private readonly maxCopies: number;
  private done = 0;

  constructor(opts: SchedulerOptions) {
    this.total = opts.chunks;
    this.maxCopies = opts.maxCopies ?? 2;
    this.state = new Uint8Array(opts.chunks);
    this.queued = new Uint8Array(opts.chunks);
    for (const i of opts.done ?? []) {
      if (i >= 0 && i < opts.chunks && this.state[i] !== DONE) {
        this.state[i] = DONE;
        this.done++;
      }
    }
    this.order = [];
    for (let i = 0; i < opts.chunks; i++) {
      if (this.state[i] === NEEDED) {
        this.order.push(i);
        this.queued[i] = 1;
      }
    }
    if (opts.order === 'random') {
      const random = opts.random ?? Math.random;
      for (let i = this.order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [this.order[i], this.order[j]] = [this.order[j]!, this.order[i]!];
      }
    }
  }

  get doneCount(): number {
    return this.done;
  }

  get complete(): boolean {
    return this.done === this.total;
  }

  isDone(index: number): boolean {
    return this.state[index] === DONE;
  }

  /** Not yet verified: a copy that arrives now is worth checking and writing. */
  isNeeded(index: number): boolean {
    return index >= 0 && index < this.total && this.state[index] === NEEDED;
  }

  /** Copies of a chunk in flight now. */
  copiesInFlight(index: number): number {
    return this.inFlight.get(index)?.size ?? 0;
  }

  /** Requests in flight at one source. */
  inFlightAt(source: S): number {
    return this.sources.get(source)?.inFlight.size ?? 0;
  }

  /** A holder joins: `have` lists its chunks, or is undefined when it holds the whole file. */
  addSource(source: S, have: Uint8Array | undefined): void {
    if (this.sources.has(source)) return this.setHave(source, have);
    this.sources.set(source, { have, cursor: 0, inFlight: new Set() });
  }

  /** A fresher view of what a holder has (undefined: all of it). Unknown sources are ignored. */
  setHave(source: S, have: Uint8Array | undefined): void {
    const st = this.sources.get(source);
    if (!st) return;
    st.have = have;
    st.cursor = this.head; // chunks it skipped before may be among the new ones
  }

  /** A partial holder said it does not have this chunk (yet). */
  lacks(source: S, index: number): void {
    const have = this.sources.get(source)?.have;
    if (have && index < have.length) have[index] = 0;
  }

  /** A holder leaves: the chunks only it had in flight go back to the queue. */
  removeSource(source: S): void {
    const st = this.sources.get(source);
    if (!st) return;
    this.sources.delete(source);
    for (const i of st.inFlight) this.leaveFlight(source, i);
  }

  /**
   * The next chunk to ask `source` for, now recorded as in flight there; undefined when there is nothing
   * it could usefully fetch (or the source is unknown). With `endgame` false, only a chunk no one is
   * fetching: a source known to be slow takes no endgame copy, which would only block a faster one's.
   */
  next(source: S, endgame = true): number | undefined {
    const st = this.sources.get(source);
    if (!st) return undefined;
    const i = this.fromRetry(st) ?? (st.have === undefined ? this.fromHead() : this.fromCursor(st)) ?? (endgame ? this.endgame(source, st) : undefined);
    if (i !== undefined) this.enterFlight(source, st, i);
    return i;
  }

  /**
   * The request for `index` at `source` ended without a usable chunk (failed, cancelled, bad data, or a
   * duplicate that lost the race). A needed chunk no one else is fetching goes back to the queue.
   */
  release(source: S, index: number): void {
    this.sources.get(source)?.inFlight.delete(index);
    this.leaveFlight(source, index);
  }

  /**
   * `source` delivered a verified copy of `index`: it is being written and no one else takes it. Returns
   * the other sources that still had it in flight, so their requests can be withdrawn; or undefined when
   * another copy got there first (while this one was being checked), and this one is not to be written.
   */
  markWriting(source: S, index: number): S[] | undefined {
    if (!this.isNeeded(index)) {
      this.release(source, index);
      return undefined;
    }
    this.state[index] = WRITING;
    this.queued[index] = 0;
    const holders = this.inFlight.get(index);
    this.inFlight.delete(index);
    const others: S[] = [];
    for (const s of holders ?? []) {
      this.sources.get(s)?.inFlight.delete(index);
      if (s !== source) others.push(s);
    }
    return others;
  }

  /** The chunk is written. */
  markDone(index: number): void {
    if (this.state[index] === DONE) return;
    this.state[index] = DONE;
    this.queued[index] = 0;
    this.done++;
  }

  private enterFlight(source: S, st: SourceState, index: number): void {
    this.queued[index] = 0;
    st.inFlight.add(index);
    const holders = this.inFlight.get(index);
    if (holders) holders.add(source);
    else this.inFlight.set(index, new Set([source]));
  }

  private leaveFlight(source: S, index: number): void {
    const holders = this.inFlight.get(index);
    if (holders) {
      holders.delete(source);
      if (holders.size > 0) return; // still covered elsewhere
      this.inFlight.delete(index);
    }
    if (this.state[index] === NEEDED && this.queued[index] === 0) {
      this.queued[index] = 1;
      this.retry.push(index);
    }
  }

  private fromRetry(st: SourceState): number | undefined {
    while (this.retryHead < this.retry.length && this.queued[this.retry[this.retryHead]!] === 0) this.retryHead++;
    if (this.retryHead === this.retry.length) {
      this.retry = [];
      this.retryHead = 0;
      return undefined;
    }
    // Short: only chunks whose requests were lost. A partial holder looks for one it has.
    for (let k = this.retryHead; k < this.retry.length; k++) {
      const i = this.retry[k]!;
      if (this.queued[i] === 1 && (st.have === undefined || st.have[i] === 1)) return i;
    }
    return undefined;
  }

  private fromHead(): number | undefined {
    while (this.head < this.order.length) {
      const i = this.order[this.head++]!;
      if (this.queued[i] === 1) return i;
    }
    return undefined;
  }

  private fromCursor(st: SourceState): number | undefined {
    const have = st.have!;
    // Skip what complete holders took in the meantime.
    while (this.head < this.order.length && this.queued[this.order[this.head]!] === 0) this.head++;
    for (let k = Math.max(st.cursor, this.head); k < this.order.length; k++) {
      const i = this.order[k]!;
      if (this.queued[i] === 1 && have[i] === 1) {
        st.cursor = k + 1;
        return i;
      }
    }
    st.cursor = this.order.length;
    return undefined;
  }

  /** Nothing left unrequested that this source can serve: a chunk in flight elsewhere, the oldest first. */
  private endgame(source: S, st: SourceState): number | undefined {
    for (const [i, holders] of this.inFlight) {
      if (holders.size >= this.maxCopies || holders.has(source)) continue;
      if (st.have !== undefined && st.have[i] !== 1) continue;
      return i;
    }
    return undefined;
  }
}
