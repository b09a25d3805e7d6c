/**
 * The catalogue of replicated operations: every change to a tracker's state is one of these, written to
 * the log by the main and applied, once committed, in log order on every tracker (daemon/state.ts holds
 * the code that applies each one; the compiler insists there is one for every name here). Ops travel
 * between trackers as JSON; `decodeOp` refuses anything that is not a well-formed op of this list.
 */
import { P2PError } from '../protocol/index.js';
import type { AuditRecord, BlacklistEntry, ReportRecord, StampedBan, StampedReport, Tombstone } from './store.js';

export interface PeerInfo {
  peerId: string;
  publicKey: string; // hex
  host: string;
  port: number;
}

export interface FileReg {
  id: string; // hex
  size: number;
  name: string;
  complete: boolean;
}

/**
 * Durable records, as a snapshot carries them and as a merge hands them to the main. Each keeps the
 * stamp of the write that made it, so a merge applies only what is newer than what the main has.
 */
export type DurableRecord = { k: 'ban'; ban: StampedBan } | { k: 'unban'; tomb: Tombstone } | { k: 'report'; report: StampedReport };

/** Everything a snapshot holds, one record per line. */
export type SnapshotRecord =
  | DurableRecord
  | { k: 'head'; index: number; term: number; epoch: number; holdersLost?: boolean }
  | { k: 'peer'; peer: PeerInfo; files: FileReg[] }
  | { k: 'audit'; audit: AuditRecord };

export type Op =
  | { op: 'register'; peer: PeerInfo; files: FileReg[] }
  | { op: 'unregister'; peerId: string; ids: string[] | 'all' }
  | { op: 'drop-peer'; peerId: string }
  | { op: 'blacklist-add'; entry: BlacklistEntry }
  | { op: 'blacklist-rm'; target: string; by: string; time: number }
  | { op: 'report'; report: ReportRecord }
  | { op: 'report-status'; id: string; status: string; by: string; time: number }
  /**
   * A new main's first entry in its term (Raft's no-op): committing it commits every earlier entry.
   * `resetHolders`: the new main lost its holder lists (it restarted), so every tracker drops theirs and
   * peers announce their files again.
   */
  | { op: 'term'; term: number; resetHolders: boolean }
  /** Durable records another tracker had applied and had to give up (see daemon/raft/node.ts). */
  | { op: 'merge'; records: DurableRecord[] };

export type OpName = Op['op'];

interface OpSpec {
  /** Whether applying it changes durable state (the rest is soft state that peers announce again). */
  durable: boolean;
  /** The shape check for an op received from another tracker. */
  check: (o: Record<string, unknown>) => boolean;
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;
const isStamp = (x: unknown): boolean => Array.isArray(x) && x.length === 2 && x.every((n) => Number.isSafeInteger(n) && (n as number) >= 0);
const isStr = (x: unknown): x is string => typeof x === 'string';
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

export function isDurableRecord(r: unknown): r is DurableRecord {
  if (!isObj(r)) return false;
  switch (r.k) {
    case 'ban':
      return isObj(r.ban) && isStr(r.ban.target) && isStr(r.ban.reason) && isNum(r.ban.since) && isStr(r.ban.addedBy) && isStamp(r.ban.stamp);
    case 'unban':
      return isObj(r.tomb) && isStr(r.tomb.target) && isStr(r.tomb.by) && isNum(r.tomb.time) && isStamp(r.tomb.stamp);
    case 'report':
      return isObj(r.report) && isStr(r.report.id) && isStr(r.report.status) && Array.isArray(r.report.targets) && isStamp(r.report.stamp) && isStamp(r.report.statusStamp);
    default:
      return false;
  }
}

export const OPS: { readonly [K in OpName]: OpSpec } = {
  register: { durable: false, check: (o) => isObj(o.peer) && isStr(o.peer.peerId) && Array.isArray(o.files) },
  unregister: { durable: false, check: (o) => isStr(o.peerId) && (o.ids === 'all' || Array.isArray(o.ids)) },
  'drop-peer': { durable: false, check: (o) => isStr(o.peerId) },
  'blacklist-add': { durable: true, check: (o) => isObj(o.entry) && isStr(o.entry.target) && isStr(o.entry.reason) && isNum(o.entry.since) && isStr(o.entry.addedBy) },
  'blacklist-rm': { durable: true, check: (o) => isStr(o.target) && isStr(o.by) && isNum(o.time) },
  report: { durable: true, check: (o) => isObj(o.report) && isStr(o.report.id) && Array.isArray(o.report.targets) },
  'report-status': { durable: true, check: (o) => isStr(o.id) && isStr(o.status) && isStr(o.by) && isNum(o.time) },
  term: { durable: true, check: (o) => isNum(o.term) && typeof o.resetHolders === 'boolean' },
  merge: { durable: true, check: (o) => Array.isArray(o.records) && o.records.every(isDurableRecord) },
};

export function isDurableOp(op: Op): boolean {
  return OPS[op.op].durable;
}

export function encodeOp(op: Op): string {
  return JSON.stringify(op);
}

/** Parses an op from another tracker; a malformed one is refused, never applied. */
export function decodeOp(text: string): Op {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new P2PError('P2P_MALFORMED', 'a replicated write is not valid JSON');
  }
  if (!isObj(o) || !isStr(o.op) || !Object.hasOwn(OPS, o.op) || !OPS[o.op as OpName].check(o)) {
    throw new P2PError('P2P_MALFORMED', 'a replicated write is not a known op');
  }
  return o as Op;
}
