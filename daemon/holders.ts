/**
 * Who holds which file, under which names: the tracker's soft state (peers announce it again on every
 * session), applied by daemon/state.ts in log order on every tracker.
 *
 * Kept compact because it is most of a tracker's memory: a fleet of 20,000 peers sharing 100 files each
 * is 2,000,000 holder entries. Most files have one holder and one name, so a file keeps its holder and
 * its name inline and switches to a Set or a Map only when a second one comes; a peer keeps, per file,
 * only the names it uses (a string, or a sorted array when it has several); the few files a peer has
 * not finished downloading are in a set of their own. About 250 bytes per entry, against 760 for the
 * Map-per-file layout before it (docs/scaling.md). Names are indexed for search by
 * daemon/name-index.ts.
 */
import { utf8Length } from '../protocol/codec.js';
import type { Body } from '../protocol/messages.js';
import type { FileReg, PeerInfo } from './ops.js';
import { NameIndex } from './name-index.js';

interface FileRecord {
  /** The file id's 32 bytes as a 32-character latin1 string (keyOf): half the memory of its hex. */
  readonly key: string;
  /** Its slot in the index, which also indexes its size in HolderTable's `sizeBySlot`. */
  readonly slot: number;
  /** The one peer that holds it, or every peer that does. */
  holders: PeerRecord | Set<PeerRecord>;
  /** The one name all its holders use, or each name with the number of (holder, name) pairs using it. */
  names: string | Map<string, number>;
}

interface PeerRecord extends PeerInfo {
  /** file -> the name (or the sorted names) this peer holds it under: the same bytes may be shared under several. */
  readonly files: Map<FileRecord, string | string[]>;
  /** The files it holds but has not completed (it shares the chunks it has). */
  partial: Set<FileRecord> | undefined;
  /** UTF-8 bytes of the names in `files`, what the per-peer cap counts. */
  nameBytes: number;
}

/** What one peer has registered: the two things capped per peer (issue 10). */
export interface RegistrationTotals {
  files: number;
  nameBytes: number;
}

export interface SearchHit {
  /** The file id's 32 bytes as a latin1 string: `Buffer.from(key, 'latin1')` is the id (idOfKey gives its hex). */
  key: string;
  name: string;
  size: number;
  peers: number;
}

export interface Holder extends PeerInfo {
  complete: boolean;
}

/** One peer's registrations, as a snapshot carries them. */
export interface PeerHoldings {
  peer: PeerInfo;
  files: FileReg[];
}

export class HolderTable {
  /** Files by key (keyOf their id). */
  private readonly files = new Map<string, FileRecord>();
  /**
   * Each file's size, by its slot. Kept out of the record: a size past 2^31 is not a small integer, and
   * V8 then boxes every record's size in a heap number of its own (16 bytes more per file).
   */
  private sizeBySlot = new Float64Array(1024);
  private readonly peers = new Map<string, PeerRecord>();
  private readonly index = new NameIndex<FileRecord>(indexedNames);
  private holderCount = 0;
  private changes = 0;

  /**
   * Takes the place of `old` (a snapshot installed): moves this table's version past the old one's, so a
   * digest kept by version takes neither for the other, and empties the old one (its index's pending work
   * and memory go with it).
   */
  replace(old: HolderTable): void {
    this.changes = Math.max(this.changes, old.changes) + 1;
    old.clear();
  }

  /** Moves on with every change made to the table (what a digest of it can be kept by). */
  get version(): number {
    return this.changes;
  }

  clear(): void {
    this.changes++;
    this.files.clear();
    this.peers.clear();
    this.index.forgetAll();
    this.holderCount = 0;
  }

  register(info: PeerInfo, files: ReadonlyArray<FileReg>): void {
    this.changes++;
    let peer = this.peers.get(info.peerId);
    if (!peer) {
      peer = { peerId: info.peerId, publicKey: info.publicKey, host: info.host, port: info.port, files: new Map(), partial: undefined, nameBytes: 0 };
      this.peers.set(info.peerId, peer);
    } else {
      peer.host = info.host;
      peer.port = info.port;
      peer.publicKey = info.publicKey;
    }
    const keys = files.map((f) => keyOf(f.id));
    if (eachOnce(keys)) {
      // Each id once, as a peer daemon registers them: no grouping, each file its one name.
      files.forEach((f, i) => this.registerFile(peer, keys[i]!, f.size, [f.name], f.complete));
      return;
    }
    for (const [key, regs] of byFileKey(files)) this.registerFile(peer, key, regs[0]!.size, namesOf(regs), regs.some((r) => r.complete));
  }

  /** One file of a REGISTER: `names`, distinct and sorted, replace the ones `peer` had for it. */
  private registerFile(peer: PeerRecord, key: string, size: number, names: string[], complete: boolean): void {
    let rec = this.files.get(key);
    if (!rec) {
      rec = { key, slot: -1, holders: peer, names: names.length === 1 ? names[0]! : new Map(names.map((n) => [n, 1])) };
      (rec as { slot: number }).slot = this.index.insert(rec);
      this.setSize(rec.slot, size);
      for (const name of names) this.index.addName(rec.slot, name);
      this.files.set(key, rec);
      this.holderCount++;
    } else {
      // The names registered for an id replace the ones this peer had for it (a rename, an unshared copy).
      const old = peer.files.get(rec);
      const sameName = typeof rec.names === 'string' && names.length === 1 && names[0] === rec.names;
      const counts = sameName ? undefined : this.countNames(rec);
      if (old === undefined) this.addHolder(rec, peer);
      else peer.nameBytes -= nameBytes(old);
      if (counts) {
        if (old !== undefined) this.dropNames(counts, old);
        this.addNames(rec, counts, names);
      }
    }
    const held = names.length === 1 ? names[0]! : names;
    peer.files.set(rec, held);
    peer.nameBytes += nameBytes(held);
    if (complete) peer.partial?.delete(rec);
    else (peer.partial ??= new Set()).add(rec);
  }

  /** Drops the holdings `ids` of a peer (all of them with 'all'); the peer itself stays known. */
  unregister(peerId: string, ids: readonly string[] | 'all'): void {
    const peer = this.peers.get(peerId);
    if (!peer) return;
    this.changes++;
    const recs = ids === 'all' ? [...peer.files.keys()] : ids.flatMap((id) => this.files.get(keyOf(id)) ?? []);
    for (const rec of recs) {
      const names = peer.files.get(rec);
      if (names === undefined) continue;
      peer.files.delete(rec);
      peer.partial?.delete(rec);
      peer.nameBytes -= nameBytes(names);
      this.removeHolder(rec, peer, names);
    }
    if (peer.partial?.size === 0) peer.partial = undefined;
  }

  dropPeer(peerId: string): void {
    this.changes++;
    this.unregister(peerId, 'all');
    this.peers.delete(peerId);
  }

  hasPeer(peerId: string): boolean {
    return this.peers.has(peerId);
  }

  peerIds(): string[] {
    return [...this.peers.keys()];
  }

  /** Ids of the peers whose id is `target` or whose address matches it (`matches` spells the host). */
  peersMatching(target: string, hostKey: (host: string) => string): string[] {
    const out: string[] = [];
    for (const p of this.peers.values()) if (p.peerId === target || hostKey(p.host) === target) out.push(p.peerId);
    return out;
  }

  peerFileCount(peerId: string): number {
    return this.peers.get(peerId)?.files.size ?? 0;
  }

  /** What `peerId` has registered now, or would have once `files` were registered too (a file id counts once). */
  registrationTotals(peerId: string, files: ReadonlyArray<{ id: string; name: string }> = []): RegistrationTotals {
    const peer = this.peers.get(peerId);
    const totals = { files: peer?.files.size ?? 0, nameBytes: peer?.nameBytes ?? 0 };
    if (!peer && files.length > 0 && eachOnce(files.map((f) => f.id))) {
      // A peer's first REGISTER, each id once (a registration storm is made of these): every file is new to it.
      totals.files = files.length;
      for (const f of files) totals.nameBytes += utf8Length(f.name);
      return totals;
    }
    // As register() does: the names registered for an id replace the ones the peer had for it.
    for (const [key, regs] of byFileKey(files)) {
      const rec = this.files.get(key);
      const old = rec && peer?.files.get(rec);
      if (old === undefined) totals.files++;
      else totals.nameBytes -= nameBytes(old);
      totals.nameBytes += nameBytes(namesOf(regs));
    }
    return totals;
  }

  /** Whether registering `files` for this peer would change nothing (a re-announcement after a takeover). */
  holdsExactly(info: PeerInfo, files: ReadonlyArray<FileReg>): boolean {
    const peer = this.peers.get(info.peerId);
    if (!peer || peer.host !== info.host || peer.port !== info.port || peer.publicKey !== info.publicKey) return false;
    if (eachOnce(files.map((f) => f.id))) {
      // Each id once, as a peer daemon announces (every peer, again, after a takeover): no grouping.
      for (const f of files) {
        const rec = this.files.get(keyOf(f.id));
        const held = rec && peer.files.get(rec);
        if (held !== f.name || this.sizeBySlot[rec!.slot] !== f.size || f.complete === (peer.partial?.has(rec!) === true)) return false;
      }
      return true;
    }
    for (const [key, regs] of byFileKey(files)) {
      const rec = this.files.get(key);
      const held = rec && peer.files.get(rec);
      if (held === undefined || this.sizeBySlot[rec!.slot] !== regs[0]!.size) return false;
      const names = namesOf(regs);
      if (typeof held === 'string' ? names.length !== 1 || names[0] !== held : names.length !== held.length || names.some((n, i) => n !== held[i])) return false;
      if (regs.some((r) => r.complete) === (peer.partial?.has(rec!) === true)) return false;
    }
    return true;
  }

  sizes(): { files: number; holders: number; peers: number } {
    return { files: this.files.size, holders: this.holderCount, peers: this.peers.size };
  }

  /** The index's postings (for the memory figures and tests). */
  get indexCounts(): { postings: number; stale: number; lists: number } {
    return this.index.counts;
  }

  /**
   * Files with a name containing `text` (case-insensitive; every file for ''), at most `limit`, in the
   * index's order: the peer daemon puts them in name order (protocol/name-order.ts) for `p2p search`.
   */
  search(text: string, limit: number): { hits: SearchHit[]; truncated: boolean } {
    const hits: SearchHit[] = [];
    let truncated = false;
    this.index.search(text, (rec, name) => {
      if (hits.length >= limit) {
        truncated = true;
        return false;
      }
      hits.push({ key: rec.key, name, size: this.sizeBySlot[rec.slot]!, peers: holdersOf(rec) });
      return true;
    });
    return { hits, truncated };
  }

  lookup(fileId: string): { size: number; holders: Holder[] } | undefined {
    const rec = this.files.get(keyOf(fileId));
    if (!rec) return undefined;
    const holders: Holder[] = [];
    for (const p of rec.holders instanceof Set ? rec.holders : [rec.holders]) {
      holders.push({ peerId: p.peerId, publicKey: p.publicKey, host: p.host, port: p.port, complete: !p.partial?.has(rec) });
    }
    return { size: this.sizeBySlot[rec.slot]!, holders };
  }

  /** Every peer's registrations, as register() takes them (for snapshots). */
  *holdings(): Generator<PeerHoldings> {
    const all = this.capture();
    for (let i = 0; i < all.length; i++) yield all.at(i);
  }

  /**
   * Every peer's registrations as they stand now, to be read out later a peer at a time (a snapshot's
   * parts, as they go out). Taking it copies references only, no id or record is made: at 5,000 peers ×
   * 100 files, building every peer's records at once held the main for 0.7 s, and for seconds at 20,000,
   * past --failover-ms. Later writes do not show in it: the lists and the sizes are copied, the names a
   * peer holds a file under are replaced on a write, never changed in place, and a file record's key and
   * slot never change (a slot freed later may be reused, so the sizes are copied by slot now).
   */
  capture(): HoldingsCapture {
    const peers: CapturedPeer[] = [];
    for (const p of this.peers.values()) {
      const recs = new Array<FileRecord>(p.files.size);
      const held = new Array<string | string[]>(p.files.size);
      let i = 0;
      for (const [rec, names] of p.files) {
        recs[i] = rec;
        held[i++] = names;
      }
      const partial = p.partial && p.partial.size > 0 ? new Set(p.partial) : undefined;
      peers.push({ info: { peerId: p.peerId, publicKey: p.publicKey, host: p.host, port: p.port }, recs, held, partial });
    }
    return new HoldingsCapture(peers, this.sizeBySlot.slice());
  }

  /**
   * The holder lists in one canonical form, for the state hash that compares trackers: the peers in this
   * order (hex: the order localeCompare gave), each as canonicalPeer() gives it.
   */
  canonicalOrder(): string[] {
    return [...this.peers.keys()].sort(compare);
  }

  /** One peer's part of the canonical form (undefined if it holds nothing now). */
  canonicalPeer(peerId: string): unknown {
    const p = this.peers.get(peerId);
    if (!p) return undefined;
    return {
      peerId: p.peerId,
      host: p.host,
      port: p.port,
      files: [...p.files].map(([rec, names]): [string, string[]] => [idOfKey(rec.key), typeof names === 'string' ? [names] : names]).sort((a, b) => compare(a[0], b[0])),
    };
  }

  private setSize(slot: number, size: number): void {
    if (slot >= this.sizeBySlot.length) {
      const grown = new Float64Array(Math.max(slot + 1, Math.ceil(this.sizeBySlot.length * 1.5)));
      grown.set(this.sizeBySlot);
      this.sizeBySlot = grown;
    }
    this.sizeBySlot[slot] = size;
  }

  private addHolder(rec: FileRecord, peer: PeerRecord): void {
    if (rec.holders instanceof Set) rec.holders.add(peer);
    else rec.holders = new Set([rec.holders, peer]);
    this.holderCount++;
  }

  private removeHolder(rec: FileRecord, peer: PeerRecord, names: string | string[]): void {
    this.holderCount--;
    if (rec.holders === peer) {
      // Its last holder: the file goes, and its names leave the index.
      for (const name of namesOfFile(rec)) this.index.removeName(name);
      this.index.release(rec.slot);
      this.files.delete(rec.key);
      return;
    }
    if (!(rec.holders instanceof Set)) return;
    rec.holders.delete(peer);
    if (rec.holders.size === 1) rec.holders = rec.holders.values().next().value!;
    // In the inline form every holder left uses the one name still; otherwise count this one's off.
    if (typeof rec.names === 'string') return;
    this.dropNames(rec.names, names);
    this.settleNames(rec);
  }

  /** Switches a file to counting per name (inline, the one name counts every holder). */
  private countNames(rec: FileRecord): Map<string, number> {
    if (typeof rec.names === 'string') rec.names = new Map([[rec.names, holdersOf(rec)]]);
    return rec.names;
  }

  private addNames(rec: FileRecord, counts: Map<string, number>, names: readonly string[]): void {
    for (const name of names) {
      const count = counts.get(name) ?? 0;
      if (count === 0) this.index.addName(rec.slot, name);
      counts.set(name, count + 1);
    }
    this.settleNames(rec);
  }

  private dropNames(counts: Map<string, number>, names: string | readonly string[]): void {
    for (const name of typeof names === 'string' ? [names] : names) {
      const count = (counts.get(name) ?? 0) - 1;
      if (count > 0) counts.set(name, count);
      else {
        counts.delete(name);
        this.index.removeName(name);
      }
    }
  }

  /** Back to the inline form when one name is left and every holder uses it. */
  private settleNames(rec: FileRecord): void {
    if (typeof rec.names === 'string' || rec.names.size !== 1) return;
    const [name, count] = rec.names.entries().next().value!;
    if (count === holdersOf(rec)) rec.names = name;
  }
}

interface CapturedPeer {
  info: PeerInfo;
  recs: FileRecord[];
  /** The name (or names) of recs[i]. */
  held: Array<string | string[]>;
  partial: Set<FileRecord> | undefined;
}

/** A HolderTable's registrations at one moment (HolderTable.capture), a peer at a time as register() takes them. */
export class HoldingsCapture {
  constructor(
    private readonly peers: readonly CapturedPeer[],
    private readonly sizeBySlot: Float64Array,
  ) {}

  get length(): number {
    return this.peers.length;
  }

  at(i: number): PeerHoldings {
    const { info, recs, held, partial } = this.peers[i]!;
    const files: FileReg[] = [];
    for (let f = 0; f < recs.length; f++) {
      const rec = recs[f]!;
      const names = held[f]!;
      const complete = !partial?.has(rec);
      const id = idOfKey(rec.key);
      const size = this.sizeBySlot[rec.slot]!;
      if (typeof names === 'string') files.push({ id, name: names, size, complete });
      else for (const name of names) files.push({ id, name, size, complete });
    }
    return { peer: { ...info }, files };
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function holdersOf(rec: FileRecord): number {
  return rec.holders instanceof Set ? rec.holders.size : 1;
}

/** A file's names as the index reads them: its one name as a plain string (no array made per candidate). */
function indexedNames(rec: FileRecord): string | Iterable<string> {
  return typeof rec.names === 'string' ? rec.names : rec.names.keys();
}

function namesOfFile(rec: FileRecord): Iterable<string> {
  return typeof rec.names === 'string' ? [rec.names] : rec.names.keys();
}

/** Whether no value repeats (a REGISTER lists each id once, as peer daemons send them: no grouping needed). */
function eachOnce(values: readonly string[]): boolean {
  return new Set(values).size === values.length;
}

/** A registration's entries grouped by file key (keyOf its id), in the order the ids first appear. */
function byFileKey<F extends { id: string }>(files: ReadonlyArray<F>): Map<string, F[]> {
  const groups = new Map<string, F[]>();
  for (const f of files) {
    const key = keyOf(f.id);
    const group = groups.get(key);
    if (group) group.push(f);
    else groups.set(key, [f]);
  }
  return groups;
}

const SCRATCH = Buffer.alloc(32);

/** Starts the key of an id that is not 64 hex digits: no latin1 key has a character past 255. */
const OTHER_ID = '\u0100';

/**
 * A file id (64 hex digits) as the table keys it: its 32 bytes as a latin1 string, 48 bytes of heap
 * against 80 for the hex (Node's V8 keeps 8-byte pointers, so a string's header is 16 bytes). Both
 * spellings sort alike. Applying a committed write must not fail, so any other id (only tests and the
 * cluster simulation make them; upper-case hex too, which the tracker never writes) is kept as it is,
 * apart from every real one.
 */
export function keyOf(id: string): string {
  // In JS, checking the digits as it reads them: every tracker keys each file of every REGISTER, and a
  // regular expression, then a hex write and a latin1 read through Buffer took twice as long.
  if (id.length !== 64) return OTHER_ID + id;
  for (let i = 0; i < 32; i++) {
    const high = hexDigit(id.charCodeAt(2 * i));
    const low = hexDigit(id.charCodeAt(2 * i + 1));
    if (high < 0 || low < 0) return OTHER_ID + id;
    KEY_CODES[i] = high * 16 + low;
  }
  return String.fromCharCode.apply(null, KEY_CODES);
}

/** The value of a lower-case hex digit's character code (the tracker writes ids in lower case), else -1. */
function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

const KEY_CODES: number[] = new Array<number>(32).fill(0);

/** The hex spelling of a file key (keyOf's inverse). */
export function idOfKey(key: string): string {
  if (key.startsWith(OTHER_ID)) return key.slice(OTHER_ID.length);
  SCRATCH.write(key, 0, 32, 'latin1');
  return SCRATCH.toString('hex', 0, 32);
}

/**
 * A search's hits as the SEARCH_RESULT answer carries them, to be encoded at once: the ids are views of
 * one scratch buffer that the next call writes over. (A buffer per answer, 320 KB for 10,000 hits, is
 * memory outside the heap, which V8 answers with full collections: see protocol/frame-buffers.ts. A
 * Buffer.from per id was a native call each.)
 */
export function searchAnswer({ hits, truncated }: { hits: readonly SearchHit[]; truncated: boolean }): Body<'SEARCH_RESULT'> {
  if (idScratch.length < 32 * hits.length) idScratch = Buffer.allocUnsafeSlow(32 * hits.length);
  const all = idScratch;
  const files = hits.map((h, i) => {
    const { key } = h;
    let id: Buffer;
    if (key.length === 32 && !key.startsWith(OTHER_ID)) {
      const at = 32 * i;
      for (let k = 0; k < 32; k++) all[at + k] = key.charCodeAt(k);
      id = all.subarray(at, at + 32);
    } else {
      // Not an id's key (OTHER_ID: only tests and the simulation make them): its latin1 bytes, as before.
      id = Buffer.from(key, 'latin1');
    }
    return { id, name: h.name, size: h.size, peers: h.peers };
  });
  return { files, truncated };
}

let idScratch = Buffer.alloc(0);

/** The distinct names of one id's entries, sorted (every tracker applies and hashes them alike). */
function namesOf(regs: ReadonlyArray<{ name: string }>): string[] {
  if (regs.length === 1) return [regs[0]!.name];
  return [...new Set(regs.map((r) => r.name))].sort();
}

function nameBytes(names: string | readonly string[]): number {
  if (typeof names === 'string') return utf8Length(names);
  return names.reduce((sum, name) => sum + utf8Length(name), 0);
}

