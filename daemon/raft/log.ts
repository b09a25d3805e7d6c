/**
 * The replicated log of one tracker, durable in the Store and mirrored in memory: entries after the
 * point the state was last folded to (the snapshot point), plus the hard state Raft needs on disk before
 * a tracker answers anything: the current term and whom it voted for in that term.
 *
 * Every entry carries the epoch of the main that wrote it: a random number the main draws when it takes
 * command. Raft identifies an entry by (index, term); a tracker whose --data was wiped starts again from
 * term 0 and may reuse a term it held before, so here an entry is identified by (index, term, epoch).
 */
import type { Store, StoredEntry } from '../store.js';

export type LogEntry = StoredEntry;

export interface LogPosition {
  index: number;
  term: number;
  epoch: number;
}

export class RaftLog {
  private entries: LogEntry[];
  /** The snapshot point: the log holds the entries after it. */
  start: LogPosition;
  term: number;
  votedFor: number | undefined;

  constructor(private readonly store: Store) {
    this.term = store.metaNumber('term');
    const voted = store.getMeta('voted_for');
    this.votedFor = voted === undefined || voted === '' ? undefined : Number(voted);
    this.start = { index: store.metaNumber('log_start_index'), term: store.metaNumber('log_start_term'), epoch: store.metaNumber('log_start_epoch') };
    this.entries = store.logEntries().filter((e) => e.index > this.start.index);
  }

  /** Records a term and vote durably before the caller acts on them. */
  setHardState(term: number, votedFor: number | undefined): void {
    if (term === this.term && votedFor === this.votedFor) return;
    this.store.transaction(() => {
      this.store.setMeta('term', term);
      this.store.setMeta('voted_for', votedFor === undefined ? '' : votedFor);
    });
    this.term = term;
    this.votedFor = votedFor;
  }

  get lastIndex(): number {
    return this.start.index + this.entries.length;
  }

  get last(): LogPosition {
    const e = this.entries[this.entries.length - 1];
    return e ? { index: e.index, term: e.term, epoch: e.epoch } : this.start;
  }

  get isEmpty(): boolean {
    return this.lastIndex === 0;
  }

  /** The entry at `index` (undefined at or before the snapshot point, or past the end). */
  entry(index: number): LogEntry | undefined {
    return this.entries[index - this.start.index - 1];
  }

  /** The position at `index`, including the snapshot point itself. */
  position(index: number): LogPosition | undefined {
    if (index === this.start.index) return this.start;
    const e = this.entry(index);
    return e && { index: e.index, term: e.term, epoch: e.epoch };
  }

  /** Whether the log holds an entry at `p` written by the same main (same term and epoch). */
  matches(p: LogPosition): boolean {
    if (p.index === 0) return true;
    const mine = this.position(p.index);
    return !!mine && mine.term === p.term && mine.epoch === p.epoch;
  }

  /** Entries from `from` on, at most `maxBytes` of ops (at least one entry if there is one). */
  slice(from: number, maxBytes: number): LogEntry[] {
    const out: LogEntry[] = [];
    let bytes = 0;
    for (let i = from; i <= this.lastIndex; i++) {
      const e = this.entry(i);
      if (!e) break;
      if (out.length > 0 && bytes + e.op.length > maxBytes) break;
      bytes += e.op.length;
      out.push(e);
    }
    return out;
  }

  /** Appends entries durably; the caller has already dropped any conflicting suffix. */
  append(entries: LogEntry[]): void {
    if (entries.length === 0) return;
    this.store.transaction(() => {
      for (const e of entries) this.store.putLogEntry(e);
    });
    this.entries.push(...entries);
  }

  /** Drops every entry after `index`. */
  truncateAfter(index: number): void {
    if (index >= this.lastIndex) return;
    this.store.truncateLog(index);
    this.entries.length = Math.max(0, index - this.start.index);
  }

  /** Forgets entries up to `p` (already applied and folded into the state); `p` becomes the snapshot point. */
  compact(p: LogPosition): void {
    if (p.index > this.start.index) this.moveStart(p);
  }

  /** After installing a snapshot at `p`: keeps the entries after it if the log agrees at `p`, else none. */
  resetTo(p: LogPosition): void {
    if (!(this.matches(p) && p.index <= this.lastIndex)) {
      this.store.truncateLog(0);
      this.entries = [];
    }
    this.moveStart(p);
  }

  private moveStart(p: LogPosition): void {
    this.store.transaction(() => {
      this.store.compactLog(p.index);
      this.store.setMeta('log_start_index', p.index);
      this.store.setMeta('log_start_term', p.term);
      this.store.setMeta('log_start_epoch', p.epoch);
    });
    this.entries = this.entries.filter((e) => e.index > p.index);
    this.start = p;
  }
}
