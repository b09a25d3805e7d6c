/**
 * The messages trackers exchange, one kind per job. They travel one way each (an answer is a message of
 * its own), as JSON in RAFT frames between real trackers and as objects in the simulation. Each is bounded:
 * entries, snapshot chunks and merge batches are cut at MAX_BATCH_BYTES.
 */
import type { DurableRecord } from '../ops.js';
import type { LogEntry, LogPosition } from './log.js';

/** The most a single message carries of entries, snapshot records or merge records. */
export const MAX_BATCH_BYTES = 512 * 1024;

export type RaftMessage =
  /** Every heartbeat period, to every tracker: what the sender is and has (informational). */
  /**
   * `hears` (absent from trackers of release 0.1): the ranks the sender heard from within failover-ms,
   * itself included. A main hands command only to a tracker that a majority hears and that hears them.
   * `peers` (absent from release 0.1's trackers and from the simulation): the peers with a session at the
   * sender, in use or standby. A main hands command back to a higher rank once it has most of the main's
   * (RaftNodeOptions.peerSessions).
   */
  | { t: 'status'; term: number; role: string; last: LogPosition; applied: number; fresh: boolean; leader: number; pending: boolean; hears?: number[]; peers?: number }
  /**
   * Main -> backup: entries after `prev` (none: a heartbeat), and the main's commit index. `round` (absent
   * from older trackers) is echoed in the answer: a main that woke from a freeze counts only answers to
   * what it sent since (RaftNode.noticeFreeze).
   */
  | { t: 'append'; term: number; prev: LogPosition; entries: LogEntry[]; commit: number; round?: number }
  /**
   * `match`: the backup's log agrees up to here; `hint`: where to try next after a refusal; `want`: not 0
   * when the backup needs a snapshot, a number naming that need (an answer sent before the snapshot
   * arrived names the need it served, so it does not cause another).
   */
  | { t: 'append-reply'; term: number; ok: boolean; match: number; hint: number; want: number; applied: LogPosition; round?: number }
  | { t: 'vote'; term: number; last: LogPosition; pre: boolean; transfer: boolean }
  | { t: 'vote-reply'; term: number; pre: boolean; granted: boolean; reason: string }
  /**
   * Main -> backup: part `part` of the snapshot `id` (NDJSON records); the last part has `done`.
   * `agrees`: the main's log holds the entry the backup last applied (so installing drops nothing of it).
   */
  | { t: 'snapshot'; term: number; id: number; part: number; done: boolean; records: string; agrees: boolean; want: number }
  | { t: 'snapshot-reply'; term: number; id: number; part: number; ok: boolean; match: number }
  /** Backup -> main: durable records it had to give up; answered once they are committed. */
  | { t: 'merge'; term: number; id: number; records: DurableRecord[] }
  | { t: 'merge-reply'; term: number; id: number }
  /** Main -> a higher-ranked, caught-up backup: take command now (Raft's leadership transfer). */
  | { t: 'timeout-now'; term: number };

/** Terms, indexes and epochs stay far below 2^53, so arithmetic on them stays exact. */
const MAX_NUMBER = 2 ** 48;

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 && x <= MAX_NUMBER;
const isBool = (x: unknown): x is boolean => typeof x === 'boolean';
const isPosition = (x: unknown): x is LogPosition => {
  if (typeof x !== 'object' || x === null) return false;
  const p = x as Record<string, unknown>;
  return isCount(p.index) && isCount(p.term) && typeof p.epoch === 'number' && Number.isSafeInteger(p.epoch) && p.epoch >= -1;
};
const isEntry = (x: unknown): boolean => {
  if (!isPosition(x)) return false;
  return typeof (x as unknown as { op?: unknown }).op === 'string';
};

const CHECKS: { readonly [K in RaftMessage['t']]: (o: Record<string, unknown>) => boolean } = {
  status: (o) =>
    typeof o.role === 'string' && o.role.length <= 16 && isPosition(o.last) && isCount(o.applied) && isBool(o.fresh) && isBool(o.pending) && typeof o.leader === 'number' && Number.isSafeInteger(o.leader) && (o.hears === undefined || (Array.isArray(o.hears) && o.hears.length <= 64 && o.hears.every(isCount))) && (o.peers === undefined || isCount(o.peers)),
  append: (o) => isPosition(o.prev) && Array.isArray(o.entries) && o.entries.every(isEntry) && isCount(o.commit) && (o.round === undefined || isCount(o.round)),
  'append-reply': (o) => isBool(o.ok) && isCount(o.match) && typeof o.hint === 'number' && Number.isSafeInteger(o.hint) && isCount(o.want) && isPosition(o.applied) && (o.round === undefined || isCount(o.round)),
  vote: (o) => isPosition(o.last) && isBool(o.pre) && isBool(o.transfer),
  'vote-reply': (o) => isBool(o.pre) && isBool(o.granted) && typeof o.reason === 'string',
  snapshot: (o) => isCount(o.id) && isCount(o.part) && isBool(o.done) && typeof o.records === 'string' && isBool(o.agrees) && isCount(o.want),
  'snapshot-reply': (o) => isCount(o.id) && isCount(o.part) && isBool(o.ok) && isCount(o.match),
  merge: (o) => isCount(o.id) && Array.isArray(o.records),
  'merge-reply': (o) => isCount(o.id),
  'timeout-now': () => true,
};

/** Whether a message from another tracker is well formed, every field of it (records are checked where applied). */
export function isRaftMessage(x: unknown): x is RaftMessage {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.t === 'string' && Object.hasOwn(CHECKS, o.t) && isCount(o.term) && CHECKS[o.t as RaftMessage['t']](o);
}
