/**
 * The tracker's replicated state machine. Every change is an Op (daemon/ops.ts) from the replicated log,
 * applied once committed, in log order, on every tracker, so all trackers hold the same state. Holders
 * (who has which file) are soft state in memory; the blacklist, its removals, reports and the audit log
 * are durable in the Store, each stamped with the (term, index) of the entry that wrote it, in the same
 * transaction as the index of the last entry applied.
 */
import { createHash, type Hash } from 'node:crypto';
import { blacklistDigest, normalizeHostForMatch, P2PError } from '../protocol/index.js';
import type { DurableRecord, Op, SnapshotRecord } from './ops.js';
import { fitPage } from './pages.js';
import { HolderTable, type Holder, type RegistrationTotals, type SearchHit } from './holders.js';
import { compareStamps, type BlacklistEntry, type Stamp, type StampedBan, type Store } from './store.js';

export type { FileReg, Op, PeerInfo } from './ops.js';
export type { Holder, RegistrationTotals, SearchHit } from './holders.js';
export { isDurableOp } from './ops.js';

/** One committed log entry, as the state machine applies it. */
export interface AppliedEntry {
  index: number;
  term: number;
  op: Op;
}

/** Blacklist changes an apply or an install made, for the peers connected to this tracker. */
export interface BlacklistChange {
  added: BlacklistEntry[];
  removed: string[];
}

/** A snapshot's records, made one at a time as they are read (TrackerState.snapshot). */
export interface SnapshotSource {
  readonly length: number;
  at(i: number): SnapshotRecord;
}

/** A snapshot being installed (TrackerState.beginInstall): its records in order, a part at a time, then finish(). */
export interface SnapshotInstall {
  add(records: readonly SnapshotRecord[]): void;
  /** The snapshot's header, once its first record is in. */
  readonly head: Extract<SnapshotRecord, { k: 'head' }> | undefined;
  finish(): void;
}

export class TrackerState {
  /** Who holds which file (soft state); a snapshot installed replaces the whole table. */
  get holders(): HolderTable {
    return this.table;
  }
  private table = new HolderTable();
  private readonly banned = new Map<string, StampedBan>();
  /** The current term (the cluster keeps it durable; mirrored here for messages). */
  term = 0;
  /** The last entry applied: its index, and the term it was written in. */
  appliedIndex: number;
  appliedTerm: number;
  /** Holder lists are empty because this tracker restarted, not because nobody holds anything. */
  holdersLost: boolean;
  /** Called after each change of the blacklist (apply, merge, install). */
  onBlacklistChange: (change: BlacklistChange) => void = () => undefined;
  /**
   * Names the blacklist's targets as of one log entry, `term.index`: the last entry that changed them (or a
   * later one: the snapshot installed, the entry applied before a restart). An entry's (term, index) is
   * unique in a cluster and fixes the log up to it, so two trackers with one version hold one list. It is
   * the version BLACKLIST_STATE tells; peers of this release sync by the list's digest instead
   * (blacklistDigest, computed once per change of the list).
   */
  blacklistVersion: string;

  constructor(readonly store: Store) {
    this.appliedIndex = store.metaNumber('applied');
    this.appliedTerm = store.metaNumber('applied_term');
    this.holdersLost = this.appliedIndex > 0;
    for (const b of store.bans()) this.banned.set(b.target, b);
    this.blacklistVersion = versionOf(this.appliedTerm, this.appliedIndex);
  }

  /** The index of the last entry applied (the old name, kept for messages and report ids). */
  get seq(): number {
    return this.appliedIndex;
  }

  /** True when this tracker has ever held replicated state (a fresh --data has none). */
  get stateful(): boolean {
    return this.appliedIndex > 0;
  }

  /** Applies one committed entry; durable effects are on disk, with the applied index, when this returns. */
  apply(e: AppliedEntry): void {
    const stamp: Stamp = [e.term, e.index];
    const change: BlacklistChange = { added: [], removed: [] };
    const op = e.op;
    if (op.op === 'register' || op.op === 'unregister' || op.op === 'drop-peer') {
      this.applySoft(op);
    } else {
      this.store.transaction(() => {
        this.applyDurable(op, stamp, change);
        this.store.setMeta('applied', e.index);
        this.store.setMeta('applied_term', e.term);
      });
    }
    this.appliedIndex = e.index;
    this.appliedTerm = e.term;
    if (change.added.length > 0 || change.removed.length > 0) {
      this.blacklistVersion = versionOf(e.term, e.index);
      this.onBlacklistChange(change);
    }
  }

  private applySoft(op: Extract<Op, { op: 'register' | 'unregister' | 'drop-peer' }>): void {
    switch (op.op) {
      case 'register':
        if (!this.isBanned(op.peer.peerId, op.peer.host)) this.holders.register(op.peer, op.files);
        return;
      case 'unregister':
        this.holders.unregister(op.peerId, op.ids);
        return;
      case 'drop-peer':
        this.holders.dropPeer(op.peerId);
        return;
    }
  }

  private applyDurable(op: Exclude<Op, { op: 'register' | 'unregister' | 'drop-peer' }>, stamp: Stamp, change: BlacklistChange): void {
    const { store } = this;
    switch (op.op) {
      case 'term':
        if (op.resetHolders) {
          this.holders.clear();
          this.holdersLost = false;
        }
        return;
      case 'blacklist-add':
        this.mergeRecord({ k: 'ban', ban: { ...op.entry, stamp: this.after(op.entry.target, stamp) } }, change);
        store.addAudit({ time: op.entry.since, actor: op.entry.addedBy, action: 'blacklist-add', detail: `${op.entry.target}: ${op.entry.reason}` });
        return;
      case 'blacklist-rm':
        this.mergeRecord({ k: 'unban', tomb: { target: op.target, by: op.by, time: op.time, stamp: this.after(op.target, stamp) } }, change);
        store.addAudit({ time: op.time, actor: op.by, action: 'blacklist-rm', detail: op.target });
        return;
      case 'report':
        this.mergeRecord({ k: 'report', report: { ...op.report, stamp, statusStamp: stamp } }, change);
        store.addAudit({
          time: op.report.time,
          actor: op.report.reporter,
          action: 'report',
          detail: `${op.report.fileId} against ${op.report.targets.join(',')}: ${op.report.reason} (${op.report.status})`,
        });
        return;
      case 'report-status': {
        const r = store.report(op.id);
        if (r) this.mergeRecord({ k: 'report', report: { ...r, status: op.status, statusStamp: compareStamps(stamp, r.statusStamp) > 0 ? stamp : [r.statusStamp[0], r.statusStamp[1] + 1] } }, change);
        store.addAudit({ time: op.time, actor: op.by, action: 'report-status', detail: `${op.id}: ${op.status}` });
        return;
      }
      case 'merge':
        for (const r of op.records) this.mergeRecord(r, change);
        store.addAudit({ time: 0, actor: 'cluster', action: 'merge', detail: `${op.records.length} records merged from a tracker that had to give up its state` });
        store.trimAudit();
        return;
    }
  }

  /**
   * The stamp of a write to `target` made in log order: its own, or just after the stamp it replaces
   * when that one is later (a tracker whose --data was wiped starts again from low terms). A write made
   * on top of a record always wins over it, on every tracker alike.
   */
  private after(target: string, stamp: Stamp): Stamp {
    const current = this.banned.get(target)?.stamp ?? this.store.tombstone(target)?.stamp;
    return current && compareStamps(current, stamp) >= 0 ? [current[0], current[1] + 1] : stamp;
  }

  /**
   * Applies one durable record if it is newer than what is here: the blacklist is a last-writer-wins
   * register per target, ordered by stamp (a removal is a tombstone, so an older ban cannot come back);
   * reports are a set, and a report's status is last-writer-wins.
   */
  private mergeRecord(r: DurableRecord, change: BlacklistChange): void {
    const { store } = this;
    switch (r.k) {
      case 'ban':
      case 'unban': {
        const target = r.k === 'ban' ? r.ban.target : r.tomb.target;
        const stamp = r.k === 'ban' ? r.ban.stamp : r.tomb.stamp;
        const current = this.banned.get(target)?.stamp ?? store.tombstone(target)?.stamp;
        if (current && compareStamps(current, stamp) >= 0) return;
        if (r.k === 'ban') {
          const wasBanned = this.banned.has(target);
          store.putBan(r.ban);
          this.banned.set(target, r.ban);
          this.sortedTargets = undefined;
          this.dropBanned(target);
          if (!wasBanned) change.added.push(plainBan(r.ban));
        } else {
          const wasBanned = this.banned.delete(target);
          this.sortedTargets = undefined;
          store.putTombstone(r.tomb);
          if (wasBanned) change.removed.push(target);
        }
        return;
      }
      case 'report': {
        const current = store.report(r.report.id);
        if (current && compareStamps(current.statusStamp, r.report.statusStamp) >= 0) return;
        store.putReport(current ? { ...current, status: r.report.status, statusStamp: r.report.statusStamp } : r.report);
        return;
      }
    }
  }

  /** Every durable record, to hand to the main when this tracker must give up its state. */
  durableRecords(): DurableRecord[] {
    const { store } = this;
    return [
      // In no particular order: installing and merging do not depend on it (bans() sorts, for the hash).
      ...[...this.banned.values()].map((b): DurableRecord => ({ k: 'ban', ban: copyBan(b) })),
      ...store.tombstones().map((tomb): DurableRecord => ({ k: 'unban', tomb })),
      ...store.stampedReports().map((report): DurableRecord => ({ k: 'report', report })),
    ];
  }

  /**
   * The whole state as records (the header first), at the last applied entry, read out a record at a time
   * as the parts go out. Taken at once: each holder list must be the one at the header's index. (A list
   * read later, as the parts go out, would not do: replaying the log over it can differ from the main. An
   * IP ban matches a peer by the host it has when the ban is applied, and a file's size is set by whoever
   * registers it first.) The holder lists are captured by reference (HolderTable.capture), and each peer's
   * record is made only when its part is serialized.
   */
  snapshot(epoch: number): SnapshotSource {
    // A copy taken from a tracker that lost its holder lists carries that loss: the copy's lists are empty too.
    const head: SnapshotRecord = { k: 'head', index: this.appliedIndex, term: this.appliedTerm, epoch, holdersLost: this.holdersLost };
    const before: SnapshotRecord[] = [head, ...this.durableRecords()];
    const peers = this.table.capture();
    const after: SnapshotRecord[] = this.store
      .audit(1000)
      .reverse()
      .map((audit) => ({ k: 'audit', audit }));
    return {
      length: before.length + peers.length + after.length,
      at(i: number): SnapshotRecord {
        if (i < before.length) return before[i]!;
        if (i < before.length + peers.length) return { k: 'peer', ...peers.at(i - before.length) };
        return after[i - before.length - peers.length]!;
      },
    };
  }

  /** The whole snapshot's records at once (tests, the cluster simulation). */
  snapshotRecords(epoch: number): SnapshotRecord[] {
    const source = this.snapshot(epoch);
    return Array.from({ length: source.length }, (_, i) => source.at(i));
  }

  /** Replaces everything with a snapshot (durably, in one transaction). */
  install(records: SnapshotRecord[]): void {
    const install = this.beginInstall();
    install.add(records);
    install.finish();
  }

  /**
   * Installs a snapshot a part at a time, as its parts arrive: the holder lists build up in a table of
   * their own, so no one turn of the loop registers them all (8.1 s at 500,000 entries in a takeback), and
   * nothing here changes until finish() replaces the state, durably and in one transaction. A snapshot
   * left unfinished (the main changed, a part was lost) is simply dropped.
   */
  beginInstall(): SnapshotInstall {
    const table = new HolderTable();
    let head: Extract<SnapshotRecord, { k: 'head' }> | undefined;
    const durable: SnapshotRecord[] = [];
    let finished = false;
    return {
      get head() {
        return head;
      },
      add: (records) => {
        if (finished) throw new Error('this snapshot is installed already');
        for (const r of records) {
          if (head === undefined) {
            if (r.k !== 'head') throw new P2PError('P2P_MALFORMED', 'a snapshot must start with its header');
            head = r;
          } else if (r.k === 'peer') table.register(r.peer, r.files);
          else if (r.k !== 'head') durable.push(r);
        }
      },
      finish: () => {
        if (head === undefined) throw new P2PError('P2P_MALFORMED', 'a snapshot must start with its header');
        if (finished) throw new Error('this snapshot is installed already');
        finished = true;
        this.adopt(head, durable, table);
      },
    };
  }

  private adopt(head: Extract<SnapshotRecord, { k: 'head' }>, records: readonly SnapshotRecord[], table: HolderTable): void {
    const before = new Map(this.banned);
    this.banned.clear();
    this.sortedTargets = undefined;
    const { store } = this;
    store.transaction(() => {
      store.clearState();
      for (const r of records) {
        switch (r.k) {
          case 'ban':
            store.putBan(r.ban);
            this.banned.set(r.ban.target, r.ban);
            break;
          case 'unban':
            store.putTombstone(r.tomb);
            break;
          case 'report':
            store.putReport(r.report);
            break;
          case 'audit':
            store.addAudit(r.audit);
            break;
          case 'peer':
          case 'head':
            break;
        }
      }
      store.setMeta('applied', head.index);
      store.setMeta('applied_term', head.term);
    });
    table.replace(this.table);
    this.table = table;
    this.appliedIndex = head.index;
    this.appliedTerm = head.term;
    this.blacklistVersion = versionOf(head.term, head.index);
    this.holdersLost = head.holdersLost === true;
    const change: BlacklistChange = { added: [], removed: [] };
    for (const [target, b] of this.banned) if (!before.has(target)) change.added.push(plainBan(b));
    for (const target of before.keys()) if (!this.banned.has(target)) change.removed.push(target);
    if (change.added.length > 0 || change.removed.length > 0) this.onBlacklistChange(change);
  }

  /** Removes every holding of peers the target matches (by id or address). */
  private dropBanned(target: string): void {
    for (const peerId of this.holders.peersMatching(target, normalizeHostForMatch)) this.holders.dropPeer(peerId);
  }

  /**
   * Every ban, as Store.bans() reads them (the same fields, in its order: by `since`, then by target in
   * SQLite's binary order), from memory. Reading them from SQLite took 0.3-0.45 s at 100,000 bans, in the
   * main's turn that takes a snapshot and in every state hash (`p2p admin status`).
   */
  bans(): StampedBan[] {
    const all: StampedBan[] = [];
    for (const b of this.banned.values()) all.push(copyBan(b));
    return all.sort((a, b) => a.since - b.since || compareUtf8(a.target, b.target));
  }

  isBanned(peerId: string, host: string): BlacklistEntry | undefined {
    return this.banned.get(peerId) ?? this.banned.get(normalizeHostForMatch(host));
  }

  blacklistEntries(): BlacklistEntry[] {
    return [...this.banned.values()].map(plainBan).sort((a, b) => a.since - b.since || a.target.localeCompare(b.target));
  }

  hasPeer(peerId: string): boolean {
    return this.holders.hasPeer(peerId);
  }

  peerIds(): string[] {
    return this.holders.peerIds();
  }

  peerFileCount(peerId: string): number {
    return this.holders.peerFileCount(peerId);
  }

  /** What `peerId` has registered now, or would have once `files` were registered too (a file id counts once). */
  registrationTotals(peerId: string, files: ReadonlyArray<{ id: string; name: string }> = []): RegistrationTotals {
    return this.holders.registrationTotals(peerId, files);
  }

  /** How much the tracker holds, for --metrics: files, (peer, file) holder entries, peers with files, blacklist entries. */
  sizes(): { files: number; holders: number; peers: number; blacklist: number } {
    return { ...this.holders.sizes(), blacklist: this.banned.size };
  }

  /**
   * Every target on the blacklist (peer ids and addresses), sorted, for a peer that re-syncs and for the
   * admin's pages. Sorted once per change of the list; the caller must not change the array.
   */
  blacklistTargets(): readonly string[] {
    this.sortedTargets ??= { targets: [...this.banned.keys()].sort() };
    return this.sortedTargets.targets;
  }

  /** blacklistTargets() and its digest, until `banned` changes (every change there sets this undefined). */
  private sortedTargets: { targets: string[]; digest?: string } | undefined;

  /** The list's digest (protocol/blacklist-target.ts): what a peer's BLACKLIST_SYNC is compared with. */
  blacklistDigest(): string {
    const targets = this.blacklistTargets();
    return (this.sortedTargets!.digest ??= blacklistDigest(targets));
  }

  /** Whether `target` itself (a peer id, or an address as normalizeTarget gives it) is on the blacklist. */
  listed(target: string): boolean {
    return this.banned.has(target);
  }

  /**
   * Blacklist entries after target `after` ('' for the first), in target order: at most `limit`, and no
   * more than about `maxBytes` as the protocol encodes them (at least one). `next` is the last target
   * given when more follow, '' at the end.
   */
  blacklistPage(after: string, limit: number, maxBytes: number): { entries: BlacklistEntry[]; next: string } {
    const targets = this.blacklistTargets();
    let lo = 0;
    let hi = targets.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (targets[mid]! <= after) lo = mid + 1;
      else hi = mid;
    }
    const banned = this.banned;
    function* from(i: number): Generator<StampedBan> {
      for (; i < targets.length; i++) yield banned.get(targets[i]!)!;
    }
    const { page, more } = fitPage(from(lo), limit, maxBytes, (b) => 16 + Buffer.byteLength(b.target) + Buffer.byteLength(b.reason) + Buffer.byteLength(b.addedBy));
    return { entries: page.map(plainBan), next: more ? page.at(-1)!.target : '' };
  }

  search(text: string, limit: number): { hits: SearchHit[]; truncated: boolean } {
    return this.holders.search(text, limit);
  }

  lookup(fileId: string): { size: number; holders: Holder[] } | undefined {
    return this.holders.lookup(fileId);
  }

  /** A digest of everything replicated but the audit log, to compare trackers (tests, admin status). */
  stateHash(): string {
    const h = this.durableHash();
    for (const part of this.holderHashParts()) h.update(part);
    return h.digest('hex');
  }

  /**
   * stateHash() without holding up the event loop: the holder lists are hashed a slice at a time, with a
   * turn of the loop between slices (at 1,000 peers the whole took 0.5 s, and `p2p admin status` on a
   * large main could freeze it past --failover-ms). The bytes hashed are stateHash()'s, so the two agree
   * on a state that does not change meanwhile; a hash taken while writes apply may match no single state.
   */
  stateHashInSlices(sliceMs = 5): Promise<string> {
    // Kept while nothing changes: at 1,700,000 entries a hash costs the main 1.2 s of CPU, and an operator
    // polling `p2p admin status` (or a bench polling every tracker) would otherwise pay it every time.
    const key = this.hashKey();
    if (this.hashMemo?.key === key) return this.hashMemo.hash;
    const memo = { key, hash: this.hashInSlices(sliceMs) };
    this.hashMemo = memo;
    const forget = (): void => {
      if (this.hashMemo === memo) this.hashMemo = undefined;
    };
    // A hash taken while writes applied may match no single state: not kept.
    memo.hash.then(() => {
      if (this.hashKey() !== key) forget();
    }, forget);
    return memo.hash;
  }

  private async hashInSlices(sliceMs: number): Promise<string> {
    const h = this.durableHash();
    let sliceAt = performance.now();
    for (const part of this.holderHashParts()) {
      h.update(part);
      if (performance.now() - sliceAt > sliceMs) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceAt = performance.now();
      }
    }
    return h.digest('hex');
  }

  /** What the hashed state is, as far as the memo below can tell: the applied index and the holder table's version. */
  private hashKey(): string {
    return `${this.appliedIndex}:${this.holders.version}`;
  }

  /** The last sliced hash, by the applied index and the holder table's version it was taken at (or is being). */
  private hashMemo: { key: string; hash: Promise<string> } | undefined;

  /** The holder lists' canonical form as JSON, a peer at a time (a peer gone meanwhile is left out). */
  private *holderHashParts(): Generator<string> {
    yield '[';
    let first = true;
    const table = this.table; // one table throughout: a snapshot installed meanwhile replaces it
    for (const peerId of table.canonicalOrder()) {
      const part = table.canonicalPeer(peerId);
      if (part === undefined) continue;
      yield first ? JSON.stringify(part) : `,${JSON.stringify(part)}`;
      first = false;
    }
    yield ']';
  }

  private durableHash(): Hash {
    const h = createHash('sha256');
    h.update(JSON.stringify(this.bans()));
    h.update(JSON.stringify(this.store.tombstones()));
    h.update(JSON.stringify(this.store.stampedReports()));
    return h;
  }
}

/**
 * Orders two strings as SQLite's BINARY collation orders their UTF-8 bytes, which is by code point.
 * JavaScript's `<` compares UTF-16 units, which puts a character past U+FFFF (a surrogate pair, units
 * 0xD800-0xDFFF) before U+E000-U+FFFF; lifting the surrogates above that range gives code point order.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

/** A ban with exactly Store.bans()'s fields, in its order (what the state hash serializes). */
function copyBan(b: StampedBan): StampedBan {
  return { target: b.target, reason: b.reason, since: b.since, addedBy: b.addedBy, stamp: [b.stamp[0], b.stamp[1]] };
}

function versionOf(term: number, index: number): string {
  return `${term}.${index}`;
}

function plainBan(b: StampedBan): BlacklistEntry {
  return { target: b.target, reason: b.reason, since: b.since, addedBy: b.addedBy };
}
