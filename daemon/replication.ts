/**
 * Replication, the main's side: the set of backups that are in sync (each with the one connection its
 * writes travel on), sending each write to all of them with a bounded wait, and dropping a backup that
 * does not acknowledge in time (it must then copy the full state again). Also the wire form of ops in
 * REPLICATE and MERGE (JSON), and the rules by which a two-tracker split brain merges on healing.
 */
import type { Logger } from 'pino';
import { P2PError, toP2PError, type Connection } from '../protocol/index.js';
import type { Op, Snapshot, TrackerState } from './state.js';

const OP_NAMES = new Set(['register', 'unregister', 'drop-peer', 'blacklist-add', 'blacklist-rm', 'report', 'report-status', 'term']);

export function encodeOp(op: Op): string {
  return JSON.stringify(op);
}

/** Parses an op from another tracker; a malformed one is refused, never applied. */
export function decodeOp(text: string): Op {
  let op: unknown;
  try {
    op = JSON.parse(text);
  } catch {
    throw new P2PError('P2P_BAD_REQUEST', 'a replicated write is not valid JSON');
  }
  if (!isOp(op)) throw new P2PError('P2P_BAD_REQUEST', 'a replicated write is not a known op');
  return op;
}

export function decodeOps(text: string): Op[] {
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch {
    throw new P2PError('P2P_BAD_REQUEST', 'merged writes are not valid JSON');
  }
  if (!Array.isArray(list) || !list.every(isOp)) throw new P2PError('P2P_BAD_REQUEST', 'merged writes are not a list of known ops');
  return list;
}

function isOp(x: unknown): x is Op {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  if (typeof o.op !== 'string' || !OP_NAMES.has(o.op)) return false;
  switch (o.op) {
    case 'register':
      return typeof o.peer === 'object' && o.peer !== null && Array.isArray(o.files);
    case 'unregister':
      return typeof o.peerId === 'string' && (o.ids === 'all' || Array.isArray(o.ids));
    case 'drop-peer':
      return typeof o.peerId === 'string';
    case 'blacklist-add':
      return typeof o.entry === 'object' && o.entry !== null && typeof (o.entry as { target?: unknown }).target === 'string';
    case 'blacklist-rm':
      return typeof o.target === 'string' && typeof o.time === 'number';
    case 'report':
      return typeof o.report === 'object' && o.report !== null && typeof (o.report as { id?: unknown }).id === 'string';
    case 'report-status':
      return typeof o.id === 'string' && typeof o.status === 'string';
    case 'term':
      return typeof o.term === 'number';
  }
  return false;
}

export function parseSnapshot(text: string): Snapshot {
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    throw new P2PError('P2P_BAD_REQUEST', 'the state sent by the main is not valid JSON');
  }
  const o = s as Partial<Snapshot> | null;
  if (!o || typeof o.seq !== 'number' || typeof o.term !== 'number' || !Array.isArray(o.peers) || !Array.isArray(o.blacklist) || !Array.isArray(o.reports) || !Array.isArray(o.audit)) {
    throw new P2PError('P2P_BAD_REQUEST', 'the state sent by the main is incomplete');
  }
  return o as Snapshot;
}

/**
 * Whether a write acknowledged by a main that has since stepped down still changes the acting main's
 * state. The blacklist and the reports merge as sets: an entry is added if absent, a report (keyed by
 * its id, which names the term and seq that wrote it) if unknown. A removal wins only over an entry
 * older than it, so a target one side banned after the other side lifted it stays banned.
 */
export function mergeable(op: Op, state: TrackerState): boolean {
  switch (op.op) {
    case 'blacklist-add':
      return !state.blacklistEntries().some((e) => e.target === op.entry.target);
    case 'blacklist-rm': {
      const entry = state.blacklistEntries().find((e) => e.target === op.target);
      return !!entry && entry.since <= op.time;
    }
    case 'report':
      return !state.store.hasReport(op.report.id);
    case 'report-status':
      return state.store.hasReport(op.id);
    default:
      return false; // holders are soft state: their peers announce them again
  }
}

export interface SendResult {
  /** Ranks of the backups that acknowledged. */
  acked: number[];
  /** A backup refused the write because it knows a newer term: the sender is no longer the main. */
  staleTerm: boolean;
}

export interface ReplicatorOptions {
  /** How long a write waits for a backup before that backup is dropped from replication. */
  timeoutMs: number;
  label: (rank: number) => string;
  logger: Logger;
}

export class Replicator {
  /** In-sync backups, each with the connection their writes travel on (in seq order). */
  private readonly streams = new Map<number, Connection>();
  /** The term in which the current set was built. */
  term = 0;

  constructor(private readonly opts: ReplicatorOptions) {}

  has(rank: number): boolean {
    const conn = this.streams.get(rank);
    return !!conn && !conn.isClosed;
  }

  get size(): number {
    return this.streams.size;
  }

  ranks(): number[] {
    return [...this.streams.keys()];
  }

  /** A backup copied the state at the current seq: every later write goes to it on `conn`. */
  add(rank: number, conn: Connection, term: number): void {
    if (term !== this.term) this.clear(term);
    const old = this.streams.get(rank);
    if (old && old !== conn) old.destroy(new P2PError('P2P_CONNECTION_CLOSED', 'replaced by a newer replication stream'));
    this.streams.set(rank, conn);
  }

  /** Starts a new term with no backups in sync (each copies the new main's state first). */
  clear(term: number): void {
    this.streams.clear();
    this.term = term;
  }

  /**
   * Takes a backup out of replication. Its stream is closed, so the backup knows it missed writes and
   * copies the state again; `conn` makes a late failure of an older stream leave a newer one alone.
   */
  drop(rank: number, why: string, conn?: Connection): void {
    const current = this.streams.get(rank);
    if (!current || (conn && conn !== current)) return;
    this.streams.delete(rank);
    this.opts.logger.warn({ tracker: this.opts.label(rank), reason: why }, `backup ${this.opts.label(rank)} dropped from replication (${why}); it must copy the state again`);
    current.destroy(new P2PError('P2P_REPLICATION_FAILED', `dropped from replication: ${why}`));
  }

  /** Sends one write to every in-sync backup; resolves when each has acknowledged, failed or timed out. */
  async send(term: number, seq: number, op: string): Promise<SendResult> {
    const result: SendResult = { acked: [], staleTerm: false };
    const sends = [...this.streams].map(async ([rank, conn]) => {
      try {
        await conn.request('REPLICATE', { term, seq, op }, 'OK', { timeoutMs: this.opts.timeoutMs });
        result.acked.push(rank);
      } catch (err) {
        const e = toP2PError(err);
        if (e.code === 'P2P_STALE_TERM') result.staleTerm = true;
        this.drop(rank, e.code === 'P2P_TIMEOUT' ? `no acknowledgement of write ${seq} within ${this.opts.timeoutMs} ms` : `write ${seq}: ${e.message}`, conn);
      }
    });
    await Promise.all(sends);
    return result;
  }
}
