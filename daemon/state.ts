/**
 * The tracker's replicated state machine. Every change is an Op, applied in sequence order on the main
 * and on every backup, so all trackers hold the same state. Holders (who has which file) are soft state
 * in memory; the blacklist, reports and audit log are durable in the Store, in the same transaction as
 * the sequence number that wrote them.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { P2PError, PEER_ID_PATTERN } from '../protocol/index.js';
import type { AuditRecord, BlacklistEntry, ReportRecord, Store } from './store.js';

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

export type Op =
  | { op: 'register'; peer: PeerInfo; files: FileReg[] }
  | { op: 'unregister'; peerId: string; ids: string[] | 'all' }
  | { op: 'drop-peer'; peerId: string }
  | { op: 'blacklist-add'; entry: BlacklistEntry }
  | { op: 'blacklist-rm'; target: string; by: string; time: number }
  | { op: 'report'; report: ReportRecord }
  | { op: 'report-status'; id: string; status: string; by: string; time: number }
  /**
   * A new main's first write in its term. It moves seq on by two, so every write of the new term has a
   * higher seq than any write the previous main applied but never got acknowledged (see cluster.ts).
   */
  | { op: 'term'; term: number };

/** Ops whose effect is durable (the rest is soft state that peers re-announce). */
export function isDurableOp(op: Op): boolean {
  return op.op === 'blacklist-add' || op.op === 'blacklist-rm' || op.op === 'report' || op.op === 'report-status';
}

interface FileRecord {
  id: string;
  size: number;
  /** name -> peers that hold the file under that name */
  names: Map<string, Set<string>>;
  /** peerId -> complete? */
  holders: Map<string, boolean>;
}

interface PeerRecord extends PeerInfo {
  files: Map<string, string>; // fileId -> name
}

export interface SearchHit {
  id: string;
  name: string;
  size: number;
  peers: number;
}

export interface Holder extends PeerInfo {
  complete: boolean;
}

export interface Snapshot {
  term: number;
  seq: number;
  peers: Array<{ peer: PeerInfo; files: FileReg[] }>;
  blacklist: BlacklistEntry[];
  reports: ReportRecord[];
  audit: AuditRecord[];
}

/** A blacklist target is a peer id (40 hex characters) or an IP address, in one canonical spelling. */
export function normalizeTarget(target: string): string {
  const t = target.trim().toLowerCase();
  if (PEER_ID_PATTERN.test(t)) return t;
  const ip = t.startsWith('::ffff:') && net.isIPv4(t.slice(7)) ? t.slice(7) : t;
  if (net.isIPv4(ip)) return ip;
  if (net.isIPv6(ip)) return canonicalIPv6(ip);
  throw new P2PError('P2P_BAD_REQUEST', `'${target}' is neither a peer id (40 hex characters) nor an IP address`);
}

function canonicalIPv6(ip: string): string {
  // Let the URL parser do RFC 5952 compression, so "::0001" and "::1" are one entry.
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

export function normalizeHostForMatch(host: string): string {
  try {
    return normalizeTarget(host);
  } catch {
    return host;
  }
}

export class TrackerState {
  private readonly files = new Map<string, FileRecord>();
  private readonly peers = new Map<string, PeerRecord>();
  private readonly banned = new Map<string, BlacklistEntry>();
  term = 0;
  seq = 0;
  private hasState: boolean;

  constructor(readonly store: Store) {
    this.term = Number(store.getMeta('term') ?? 0);
    this.seq = Number(store.getMeta('seq') ?? 0);
    this.hasState = store.getMeta('stateful') === '1';
    for (const e of store.blacklist()) this.banned.set(e.target, e);
  }

  /** True when this tracker has ever held replicated state (a fresh --data has none). */
  get stateful(): boolean {
    return this.hasState;
  }

  markStateful(): void {
    if (!this.hasState) this.store.setMeta('stateful', '1');
    this.hasState = true;
  }

  /** Records a new term durably before the caller acts in it. */
  setTerm(term: number): void {
    this.store.setMeta('term', String(term));
    this.term = term;
  }

  /** Applies one op at sequence `seq`; durable parts are committed before this returns. */
  apply(op: Op, seq: number): void {
    switch (op.op) {
      case 'register':
        this.register(op.peer, op.files);
        break;
      case 'unregister':
        this.unregister(op.peerId, op.ids);
        break;
      case 'drop-peer':
        this.unregister(op.peerId, 'all');
        this.peers.delete(op.peerId);
        break;
      case 'term':
        this.store.transaction(() => {
          this.store.setMeta('seq', String(seq));
          this.store.setMeta('stateful', '1');
        });
        this.seq = seq;
        this.hasState = true;
        return;
      case 'blacklist-add':
      case 'blacklist-rm':
      case 'report':
      case 'report-status':
        this.store.transaction(() => {
          this.applyDurable(op);
          this.store.setMeta('seq', String(seq));
          this.store.setMeta('stateful', '1');
        });
        this.seq = seq;
        this.hasState = true;
        return;
    }
    this.seq = seq;
  }

  private applyDurable(op: Extract<Op, { op: 'blacklist-add' | 'blacklist-rm' | 'report' | 'report-status' }>): void {
    switch (op.op) {
      case 'blacklist-add':
        if (!this.banned.has(op.entry.target)) {
          this.store.addBlacklist(op.entry);
          this.banned.set(op.entry.target, op.entry);
        }
        this.store.addAudit({ time: op.entry.since, actor: op.entry.addedBy, action: 'blacklist-add', detail: `${op.entry.target}: ${op.entry.reason}` });
        this.dropBanned(op.entry.target);
        break;
      case 'blacklist-rm':
        this.store.removeBlacklist(op.target);
        this.banned.delete(op.target);
        this.store.addAudit({ time: op.time, actor: op.by, action: 'blacklist-rm', detail: op.target });
        break;
      case 'report':
        this.store.addReport(op.report);
        this.store.addAudit({
          time: op.report.time,
          actor: op.report.reporter,
          action: 'report',
          detail: `${op.report.fileId} against ${op.report.targets.join(',')}: ${op.report.reason} (${op.report.status})`,
        });
        break;
      case 'report-status':
        this.store.setReportStatus(op.id, op.status);
        this.store.addAudit({ time: op.time, actor: op.by, action: 'report-status', detail: `${op.id}: ${op.status}` });
        break;
    }
  }

  /** Removes every holding of peers the target matches (by id or address). */
  private dropBanned(target: string): void {
    for (const peer of [...this.peers.values()]) {
      if (peer.peerId === target || normalizeHostForMatch(peer.host) === target) {
        this.unregister(peer.peerId, 'all');
        this.peers.delete(peer.peerId);
      }
    }
  }

  private register(info: PeerInfo, files: FileReg[]): void {
    let peer = this.peers.get(info.peerId);
    if (!peer) {
      peer = { ...info, files: new Map() };
      this.peers.set(info.peerId, peer);
    } else {
      peer.host = info.host;
      peer.port = info.port;
      peer.publicKey = info.publicKey;
    }
    for (const f of files) {
      let rec = this.files.get(f.id);
      if (!rec) {
        rec = { id: f.id, size: f.size, names: new Map(), holders: new Map() };
        this.files.set(f.id, rec);
      }
      const oldName = peer.files.get(f.id);
      if (oldName !== undefined && oldName !== f.name) this.removeName(rec, oldName, peer.peerId);
      peer.files.set(f.id, f.name);
      rec.holders.set(peer.peerId, f.complete);
      let holders = rec.names.get(f.name);
      if (!holders) rec.names.set(f.name, (holders = new Set()));
      holders.add(peer.peerId);
    }
  }

  private removeName(rec: FileRecord, name: string, peerId: string): void {
    const set = rec.names.get(name);
    if (!set) return;
    set.delete(peerId);
    if (set.size === 0) rec.names.delete(name);
  }

  private unregister(peerId: string, ids: string[] | 'all'): void {
    const peer = this.peers.get(peerId);
    if (!peer) return;
    const list = ids === 'all' ? [...peer.files.keys()] : ids;
    for (const id of list) {
      const name = peer.files.get(id);
      if (name === undefined) continue;
      peer.files.delete(id);
      const rec = this.files.get(id);
      if (!rec) continue;
      rec.holders.delete(peerId);
      this.removeName(rec, name, peerId);
      if (rec.holders.size === 0) this.files.delete(id);
    }
  }

  isBanned(peerId: string, host: string): BlacklistEntry | undefined {
    return this.banned.get(peerId) ?? this.banned.get(normalizeHostForMatch(host));
  }

  blacklistEntries(): BlacklistEntry[] {
    return [...this.banned.values()].sort((a, b) => a.since - b.since || a.target.localeCompare(b.target));
  }

  hasPeer(peerId: string): boolean {
    return this.peers.has(peerId);
  }

  peerIds(): string[] {
    return [...this.peers.keys()];
  }

  peerFileCount(peerId: string): number {
    return this.peers.get(peerId)?.files.size ?? 0;
  }

  search(text: string, limit: number): { hits: SearchHit[]; truncated: boolean } {
    const needle = text.toLowerCase();
    const hits: SearchHit[] = [];
    for (const rec of this.files.values()) {
      for (const name of rec.names.keys()) {
        if (!name.toLowerCase().includes(needle)) continue;
        if (hits.length >= limit) return { hits, truncated: true };
        hits.push({ id: rec.id, name, size: rec.size, peers: rec.holders.size });
      }
    }
    hits.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    return { hits, truncated: false };
  }

  lookup(fileId: string): { size: number; holders: Holder[] } | undefined {
    const rec = this.files.get(fileId);
    if (!rec) return undefined;
    const holders: Holder[] = [];
    for (const [peerId, complete] of rec.holders) {
      const p = this.peers.get(peerId);
      if (p) holders.push({ peerId, publicKey: p.publicKey, host: p.host, port: p.port, complete });
    }
    return { size: rec.size, holders };
  }

  snapshot(): Snapshot {
    return { ...this.replicated(), audit: this.store.audit(100_000) };
  }

  /** Everything replicated but the audit log (which is informational, and not compared). */
  private replicated(): Omit<Snapshot, 'audit'> {
    return {
      term: this.term,
      seq: this.seq,
      peers: [...this.peers.values()].map((p) => ({
        peer: { peerId: p.peerId, publicKey: p.publicKey, host: p.host, port: p.port },
        files: [...p.files].map(([id, name]) => {
          const rec = this.files.get(id)!;
          return { id, name, size: rec.size, complete: rec.holders.get(p.peerId) ?? true };
        }),
      })),
      blacklist: this.store.blacklist(),
      reports: this.store.reports(),
    };
  }

  /** Replaces everything with a snapshot from the main (durably, in one transaction). */
  restore(s: Snapshot): void {
    this.files.clear();
    this.peers.clear();
    this.banned.clear();
    this.store.transaction(() => {
      this.store.replaceAll(s.blacklist, s.reports, s.audit);
      this.store.setMeta('seq', String(s.seq));
      this.store.setMeta('stateful', '1');
      if (s.term > this.term) this.store.setMeta('term', String(s.term));
    });
    for (const e of s.blacklist) this.banned.set(e.target, e);
    for (const { peer, files } of s.peers) this.register(peer, files);
    this.seq = s.seq;
    this.hasState = true;
    if (s.term > this.term) this.term = s.term;
  }

  /** A digest of everything replicated, to compare trackers (tests, admin status). */
  stateHash(): string {
    const s = this.replicated();
    const h = createHash('sha256');
    h.update(JSON.stringify(s.blacklist));
    h.update(JSON.stringify(s.reports));
    const peers = s.peers
      .map((p) => ({ ...p, files: [...p.files].sort((a, b) => a.id.localeCompare(b.id)) }))
      .sort((a, b) => a.peer.peerId.localeCompare(b.peer.peerId));
    h.update(JSON.stringify(peers));
    return h.digest('hex');
  }
}
