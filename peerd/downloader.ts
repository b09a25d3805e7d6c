/**
 * One download: find the holders, prove who they are, measure them, fetch the manifest and check it
 * against the id, then fetch chunks from every chosen peer at once. Each peer keeps several requests in
 * flight, so faster peers naturally take more chunks. Every chunk is verified before it is written in
 * place into a partial file; a bad chunk is fetched again elsewhere and its sender dropped (and reported,
 * with its own signed receipt as evidence). The verified file is renamed into place and shared.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import {
  chunkLength,
  dial,
  formatAddress,
  P2PError,
  receiptPayload,
  sha256,
  toP2PError,
  verifyManifest,
  verifyPayload,
  type Body,
  type Connection,
  type KeyPair,
  type Manifest,
} from '../protocol/index.js';
import type { BlacklistCache } from './blacklist-cache.js';
import type { PeerDb, ReceiptRecord, TransferRecord } from './db.js';
import { clientHandshake } from './handshake.js';
import type { RateMeter, TokenBucket } from './rate.js';
import type { TrackerClient } from './tracker-client.js';

export interface DownloadDeps {
  keys: KeyPair;
  tracker: TrackerClient;
  blacklist: BlacklistCache;
  db: PeerDb;
  logger: Logger;
  advertisePort: () => number;
  /** --max-download-rate, shared by every download of this daemon. */
  downloadBucket?: TokenBucket | undefined;
  /** Counts received chunk bytes for `p2p status`. */
  downloadMeter?: RateMeter | undefined;
  /** Called when a peer is caught sending bad data, with its signed receipt as evidence. */
  onBadData: (evidence: { fileId: Buffer; manifest: Buffer; receipt: ReceiptRecord; peerId: string }) => void;
}

export interface DownloadRequest {
  fileId: Buffer;
  name: string;
  target: string;
  maxPeers?: number | undefined;
  overwrite: boolean;
  /** 'adaptive' (default): keeps measuring and adds or drops peers; 'original': the original design's fixed rule. */
  strategy?: Strategy | undefined;
}

export type Strategy = 'adaptive' | 'original';

export interface DownloadProgress {
  name: string;
  id: string;
  bytes: number;
  total: number;
  chunksDone: number;
  chunks: number;
  peers: number;
  rateBytesPerSec: number;
}

export interface PeerShare {
  id: string;
  address: string;
  bytes: number;
  chunks: number;
}

export interface DownloadResult {
  name: string;
  id: string;
  path: string;
  size: number;
  seconds: number;
  peers: PeerShare[];
  resumedChunks: number;
}

interface Source {
  peerId: string;
  publicKey: Buffer;
  address: string;
  conn: Connection;
  rttMs: number;
  inFlight: Map<number, AbortController>;
  depth: number;
  bytes: number;
  chunks: number;
  failures: number;
  alive: boolean;
  startedAt: number;
  /** For a peer that is itself still downloading: the chunks it has (refreshed while we run). */
  have: Uint8Array | undefined;
  complete: boolean;
  chunkMs: number[];
  haveAskedAt: number;
  /** Far behind the others (mean + 3 standard deviations): kept at one request in flight. */
  deweighted: boolean;
}

/** The original design's rule: every holder while at most 5 hold the file, beyond that the fastest half. */
export function choosePeerCount(holders: number, maxPeers?: number): number {
  if (maxPeers !== undefined && maxPeers > 0) return Math.min(holders, maxPeers);
  return holders <= 5 ? holders : Math.ceil(holders / 2);
}

const JOURNAL_EVERY = 16;
/** Chunks received and verified but not yet written, at most (each holds 1 MiB of memory). */
const MAX_PENDING_WRITES = 8;
/** Adaptive strategy: peers to start with, and how often the set is reconsidered. */
const ADAPTIVE_INITIAL_PEERS = 10;
const ADAPTIVE_TICK_MS = 250;
/** After the first holder answers, how long to wait for others before starting. */
const START_GRACE_MS = 30;
/** While downloading, how often the tracker is asked again for new (partial) holders. */
const RELOOKUP_MS = 2000;
const MAX_PEER_FAILURES = 3;

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

export function partialPathFor(target: string, fileId: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${fileId.slice(0, 12)}.part`);
}

export class Download extends EventEmitter {
  readonly id: string;
  private manifest: Manifest | undefined;
  private encodedManifest: Buffer | undefined;
  private readonly sources: Source[] = [];
  private readonly done: Uint8Array = new Uint8Array(0);
  private doneFlags: Uint8Array = new Uint8Array(0);
  private queue: number[] = [];
  private doneCount = 0;
  private bytesDone = 0;
  private fh: fsp.FileHandle | undefined;
  private unjournaled: number[] = [];
  private journaling: Promise<void> = Promise.resolve();
  private readonly receipts = new Map<number, ReceiptRecord>();
  private finish!: { resolve: () => void; reject: (e: Error) => void };
  private failed: Error | undefined;
  private readonly started = performance.now();
  private lastProgress = 0;
  private readonly aborter = new AbortController();
  private partPath = '';
  private resumed = 0;
  private relookups = 0;
  /** Holders measured but not (yet) used: the adaptive strategy draws on them. */
  private spare: Source[] = [];
  private tick: NodeJS.Timeout | undefined;
  private lastTickBytes = 0;
  private lastTickAt = 0;
  private lastAddRate = 0;
  private pendingWrites = 0;
  private lastLookupAt = performance.now();
  private lookingUp = false;

  constructor(
    private readonly deps: DownloadDeps,
    readonly req: DownloadRequest,
  ) {
    super();
    this.id = req.fileId.toString('hex');
    void this.done;
  }

  get strategy(): Strategy {
    return this.req.strategy ?? 'adaptive';
  }

  get progress(): DownloadProgress {
    const secs = (performance.now() - this.started) / 1000;
    return {
      name: this.req.name,
      id: this.id,
      bytes: this.bytesDone,
      total: this.manifest?.size ?? 0,
      chunksDone: this.doneCount,
      chunks: this.manifest?.hashes.length ?? 0,
      peers: this.sources.filter((s) => s.alive).length,
      rateBytesPerSec: secs > 0 ? Math.round(this.bytesDone / secs) : 0,
    };
  }

  /** Which chunks are verified on disk (swarming: served to others while downloading). */
  has(index: number): boolean {
    return this.doneFlags[index] === 1;
  }

  get partialPath(): string {
    return this.partPath;
  }

  get manifestInfo(): { manifest: Manifest; encoded: Buffer } | undefined {
    return this.manifest && this.encodedManifest ? { manifest: this.manifest, encoded: this.encodedManifest } : undefined;
  }

  /** A peer was just blacklisted: stop using it at once. */
  dropPeer(target: string): void {
    for (const s of this.sources) if (s.peerId === target || s.address.startsWith(`${target}:`) || s.address.startsWith(`[${target}]:`)) this.lose(s, 'blacklisted');
  }

  abort(reason = 'download cancelled'): void {
    this.fail(new P2PError('P2P_CONNECTION_CLOSED', reason));
  }

  async run(): Promise<DownloadResult> {
    const log = this.deps.logger.child({ download: this.id.slice(0, 12) });
    try {
      await this.connectSources(false);
      if (this.sources.length === 0) throw new P2PError('P2P_NOT_FOUND', `no reachable peer holds ${this.req.name}`);
      await this.fetchManifest();
      const m = this.manifest!;
      await this.openPartial();
      this.emit('started', this.progress);
      if (this.doneCount < m.hashes.length) {
        await new Promise<void>((resolve, reject) => {
          this.finish = { resolve, reject };
          for (const s of this.sources) this.pump(s);
          this.checkStalled();
          if (this.strategy === 'adaptive') {
            this.lastTickAt = performance.now();
            this.tick = setInterval(() => this.reconsider(), ADAPTIVE_TICK_MS);
            this.tick.unref();
          }
        });
      }
      await this.journaling;
      await this.fh!.datasync();
      await this.fh!.close();
      this.fh = undefined;
      await fsp.rename(this.partPath, this.req.target);
      this.deps.db.finishPartial(this.id);
      const seconds = (performance.now() - this.started) / 1000;
      const result: DownloadResult = {
        name: this.req.name,
        id: this.id,
        path: this.req.target,
        size: m.size,
        seconds: Math.round(seconds * 1000) / 1000,
        peers: this.sources.map((s) => ({ id: s.peerId, address: s.address, bytes: s.bytes, chunks: s.chunks })),
        resumedChunks: this.resumed,
      };
      const record: TransferRecord = { id: this.id, name: this.req.name, path: this.req.target, size: m.size, seconds: result.seconds, time: Date.now(), peers: result.peers };
      this.deps.db.addTransfer(record, [...this.receipts.values()]);
      log.info({ size: m.size, seconds: result.seconds, peers: result.peers.length }, 'download complete');
      return result;
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'download failed');
      throw toP2PError(err);
    } finally {
      clearInterval(this.tick);
      this.aborter.abort();
      for (const s of this.spare) s.conn.close();
      for (const s of this.sources) {
        for (const [, a] of s.inFlight) a.abort();
        s.conn.close();
      }
      if (this.fh) await this.fh.close().catch(() => undefined);
    }
  }

  private async connectSources(more: boolean): Promise<void> {
    let holders: Body<'LOOKUP_RESULT'>['peers'];
    try {
      holders = (await this.deps.tracker.request('LOOKUP', { id: this.req.fileId }, 'LOOKUP_RESULT')).peers;
    } catch (err) {
      if (more) return;
      throw err;
    }
    const known = new Set([...this.sources, ...this.spare].map((s) => s.peerId));
    const candidates = holders.filter(
      (h) => h.peerId !== this.deps.keys.peerId && !known.has(h.peerId) && !this.deps.blacklist.knownBanned(h.peerId, h.host),
    );
    if (this.strategy === 'original' || this.req.maxPeers) {
      // The original rule ranks every holder by round-trip time, so it waits to have measured them all.
      const measured = (
        await Promise.all(candidates.slice(0, 256).map((h) => this.connectOne(h.peerId, h.publicKey, h.host, h.port, h.complete)))
      ).filter((s): s is Source => s !== undefined);
      // Fastest first; a complete holder is preferred over a partial one only when it is as fast.
      measured.sort((a, b) => a.rttMs - b.rttMs || Number(b.complete) - Number(a.complete));
      const alive = this.sources.filter((s) => s.alive).length;
      const want = Math.max(0, choosePeerCount(alive + measured.length, this.req.maxPeers) - alive);
      for (const s of measured.slice(0, want)) this.use(s);
      for (const s of measured.slice(want)) s.conn.close();
      return;
    }
    // Adaptive: start as soon as the first holders answer (a far-away or slow one must not delay the
    // start); the rest join as they are measured, up to the initial count, then wait as spares.
    await new Promise<void>((resolve) => {
      let pending = Math.min(candidates.length, 256);
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        resolve();
      };
      if (pending === 0) return finish();
      for (const h of candidates.slice(0, 256)) {
        void this.connectOne(h.peerId, h.publicKey, h.host, h.port, h.complete).then((s) => {
          pending--;
          if (s) {
            if (this.failed || this.aborter.signal.aborted) s.conn.close();
            else this.admit(s);
            if (!settled) setTimeout(finish, START_GRACE_MS).unref();
          }
          if (pending === 0) finish();
        });
      }
    });
  }

  /** A newly measured holder: used at once while fewer than the initial count are, otherwise a spare. */
  private admit(s: Source): void {
    if (this.sources.filter((x) => x.alive).length < ADAPTIVE_INITIAL_PEERS) {
      this.use(s);
      if (this.finish && this.manifest) this.pump(s);
      return;
    }
    const i = this.spare.findIndex((x) => x.rttMs > s.rttMs);
    if (i < 0) this.spare.push(s);
    else this.spare.splice(i, 0, s);
  }

  private use(s: Source): void {
    this.sources.push(s);
    s.startedAt = performance.now();
    s.conn.on('close', () => this.lose(s, 'connection closed'));
    if (!s.complete && this.manifest) void this.refreshHave(s);
  }

  /**
   * The adaptive strategy, every ADAPTIVE_TICK_MS: add spare peers while more peers still bring more
   * speed (the download is limited by the peers, not by our link), and drop peers that fall far behind
   * (a mean chunk time over 20 times the others', or beyond their mean + 3 standard deviations).
   */
  private reconsider(): void {
    if (this.failed || !this.manifest) return;
    const now = performance.now();
    const rate = ((this.bytesDone - this.lastTickBytes) * 1000) / Math.max(1, now - this.lastTickAt);
    this.lastTickBytes = this.bytesDone;
    this.lastTickAt = now;
    const alive = this.sources.filter((s) => s.alive);
    // Partial holders fill in over time: ask idle ones what they have now (a busy one is asked as it asks).
    for (const s of alive) if (s.have !== undefined && s.inFlight.size === 0 && now - s.haveAskedAt > 1000) void this.refreshHave(s);
    // New holders appear while we run (in a flash crowd, every other downloader): look again now and then.
    if (now - this.lastLookupAt > RELOOKUP_MS && !this.lookingUp) {
      this.lastLookupAt = now;
      this.lookingUp = true;
      void this.connectSources(true).finally(() => {
        this.lookingUp = false;
      });
    }
    const measured = alive.filter((s) => s.chunkMs.length >= 3);
    if (measured.length >= 4) {
      for (const s of measured) {
        const others = measured.filter((o) => o !== s).map((o) => mean(o.chunkMs));
        const m = mean(others);
        const sd = Math.sqrt(mean(others.map((x) => (x - m) ** 2)));
        const mine = mean(s.chunkMs.slice(-8));
        if (mine > 20 * m) {
          this.deps.logger.info({ peer: s.address, chunkMs: Math.round(mine), meanMs: Math.round(m) }, 'peer far behind the others; dropping it');
          this.lose(s, 'far slower than the others');
        } else if (sd > 0 && mine > m + 3 * sd && mine > 2 * m) {
          // Behind, but not hopeless: one request at a time, so it cannot hold many chunks back.
          s.deweighted = true;
          s.depth = 1;
        } else {
          s.deweighted = false;
        }
      }
    }
    const remaining = this.manifest.hashes.length - this.doneCount;
    if (this.spare.length === 0 || remaining < 4) return;
    // Keep adding while the last addition raised the rate by at least 5%.
    if (this.lastAddRate === 0 || rate > this.lastAddRate * 1.05) {
      this.lastAddRate = rate;
      for (const s of this.spare.splice(0, 2)) {
        this.use(s);
        this.pump(s);
      }
    }
  }

  private async refreshHave(s: Source): Promise<void> {
    s.haveAskedAt = performance.now();
    try {
      const have = await s.conn.request('GET_HAVE', { fileId: this.req.fileId }, 'HAVE', { timeoutMs: 5000 });
      if (have.complete) {
        s.complete = true;
        s.have = undefined;
      } else {
        const n = this.manifest!.hashes.length;
        const bits = new Uint8Array(n);
        for (let i = 0; i < n; i++) bits[i] = (have.bits[i >> 3]! >> (7 - (i & 7))) & 1;
        s.have = bits;
      }
      this.pump(s);
    } catch {
      // keep the old view; a failed chunk request will tell
    }
  }

  private async connectOne(peerId: string, publicKey: Buffer, host: string, port: number, complete: boolean): Promise<Source | undefined> {
    const address = formatAddress(host, port);
    let conn: Connection | undefined;
    try {
      conn = await dial({ host, port }, { connectTimeoutMs: 2000, requestTimeoutMs: 30_000, readTimeoutMs: 60_000, maxBodyBytes: 64 * 1024 * 1024, logger: this.deps.logger });
      const t0 = performance.now();
      await clientHandshake(conn, this.deps.keys, this.deps.advertisePort(), publicKey, 3000);
      // Round-trip time: the handshake is two round trips (including signature checks), then one ping;
      // the smaller estimate wins.
      const t1 = performance.now();
      await conn.request('PING', {}, 'PONG', { timeoutMs: 2000 });
      const rttMs = Math.min(performance.now() - t1, (t1 - t0) / 2);
      return {
        peerId,
        publicKey,
        address,
        conn,
        rttMs,
        inFlight: new Map(),
        depth: 4,
        bytes: 0,
        chunks: 0,
        failures: 0,
        alive: true,
        startedAt: performance.now(),
        have: complete ? undefined : new Uint8Array(0),
        complete,
        chunkMs: [],
        haveAskedAt: 0,
        deweighted: false,
      };
    } catch (err) {
      this.deps.logger.info({ peer: address, err: (err as Error).message }, 'holder unusable for this download');
      conn?.destroy();
      return undefined;
    }
  }

  private async fetchManifest(): Promise<void> {
    for (const s of [...this.sources].sort((a, b) => Number(b.complete) - Number(a.complete) || a.rttMs - b.rttMs)) {
      try {
        const { manifest } = await s.conn.request('GET_MANIFEST', { fileId: this.req.fileId }, 'MANIFEST', { timeoutMs: 10_000 });
        const m = verifyManifest(manifest, this.req.fileId);
        if (!m) {
          this.deps.logger.warn({ peer: s.address }, 'peer sent a manifest that does not match the file id; dropping it');
          this.lose(s, 'bad manifest');
          continue;
        }
        this.manifest = m;
        this.encodedManifest = Buffer.from(manifest);
        this.doneFlags = new Uint8Array(m.hashes.length);
        for (const p of this.sources) if (!p.complete) void this.refreshHave(p);
        return;
      } catch (err) {
        this.lose(s, (err as Error).message);
      }
    }
    throw new P2PError('P2P_NOT_FOUND', `no peer could provide a valid manifest for ${this.req.name}`);
  }

  private async openPartial(): Promise<void> {
    const m = this.manifest!;
    this.partPath = partialPathFor(this.req.target, this.id);
    const prior = this.deps.db.partial(this.id);
    let resumable = false;
    if (prior && prior.partPath === this.partPath && fs.existsSync(this.partPath)) {
      const st = await fsp.stat(this.partPath);
      resumable = st.size === m.size;
    }
    if (resumable) {
      this.fh = await fsp.open(this.partPath, 'r+');
      for (const c of prior!.chunks) {
        if (c < m.hashes.length && this.doneFlags[c] === 0) {
          this.doneFlags[c] = 1;
          this.doneCount++;
          this.bytesDone += chunkLength(m, c);
        }
      }
      const journaled = this.doneCount;
      await this.recoverUnjournaled();
      this.resumed = this.doneCount;
      this.deps.logger.info({ journaled, recovered: this.resumed - journaled }, 'resuming a partial download');
    } else {
      this.fh = await fsp.open(this.partPath, 'w+', 0o644);
      await this.fh.truncate(m.size);
      this.deps.db.startPartial(this.id, this.partPath, this.req.target, this.req.name, this.encodedManifest!);
    }
    this.queue = [];
    for (let i = 0; i < m.hashes.length; i++) if (this.doneFlags[i] === 0) this.queue.push(i);
    if (this.strategy === 'adaptive') {
      // A random order: downloaders that start together then hold different chunks and can trade them
      // (swarming), instead of all waiting on the seeder for the same ones.
      for (let i = this.queue.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [this.queue[i], this.queue[j]] = [this.queue[j]!, this.queue[i]!];
      }
    }
  }

  /**
   * Chunks written after the last journal batch may be on disk already (a process that was killed leaves
   * its writes in the page cache). Each such chunk is read back and checked against the manifest; only
   * the ones that verify are kept. Never-written regions read as zeros and are skipped without hashing.
   */
  private async recoverUnjournaled(): Promise<void> {
    const m = this.manifest!;
    const buf = Buffer.allocUnsafe(m.chunkSize);
    const zeros = Buffer.alloc(m.chunkSize);
    const recovered: number[] = [];
    for (let i = 0; i < m.hashes.length; i++) {
      if (this.doneFlags[i] !== 0) continue;
      const len = chunkLength(m, i);
      const { bytesRead } = await this.fh!.read(buf, 0, len, i * m.chunkSize);
      if (bytesRead !== len) continue;
      const data = buf.subarray(0, len);
      if (data.equals(zeros.subarray(0, len))) continue;
      if (!sha256(data).equals(m.hashes[i]!)) continue;
      this.doneFlags[i] = 1;
      this.doneCount++;
      this.bytesDone += len;
      recovered.push(i);
    }
    if (recovered.length > 0) {
      await this.fh!.datasync();
      this.deps.db.journalChunks(this.id, recovered);
    }
  }

  private canServe(s: Source, i: number): boolean {
    return s.have === undefined || s.have[i] === 1;
  }

  private nextIndex(s: Source): number | undefined {
    if (s.have !== undefined) {
      // A partial holder: the first queued chunk it has (its view is refreshed about once a second).
      if (performance.now() - s.haveAskedAt > 1000) void this.refreshHave(s);
      const k = this.queue.findIndex((i) => this.doneFlags[i] === 0 && s.have![i] === 1 && !s.inFlight.has(i));
      if (k >= 0) return this.queue.splice(k, 1)[0];
    }
    while (s.have === undefined && this.queue.length > 0) {
      const i = this.queue.shift()!;
      if (this.doneFlags[i] === 0 && !s.inFlight.has(i)) return i;
    }
    // Endgame: nothing left unrequested; ask for a chunk still in flight elsewhere (the oldest first).
    for (const other of this.sources) {
      if (other === s || !other.alive) continue;
      for (const i of other.inFlight.keys()) {
        if (this.doneFlags[i] === 0 && !s.inFlight.has(i) && this.canServe(s, i) && this.copiesInFlight(i) < 2) return i;
      }
    }
    return undefined;
  }

  private copiesInFlight(i: number): number {
    let n = 0;
    for (const s of this.sources) if (s.alive && s.inFlight.has(i)) n++;
    return n;
  }

  private pump(s: Source): void {
    if (this.failed || !s.alive) return;
    // Chunks received but not yet on disk count against the budget: when the disk is slower than the
    // network, asking for more would only pile chunks up in memory.
    while (s.inFlight.size < s.depth && this.pendingWrites < MAX_PENDING_WRITES) {
      const i = this.nextIndex(s);
      if (i === undefined) return;
      this.requestChunk(s, i);
    }
  }

  private requestChunk(s: Source, index: number): void {
    const ac = new AbortController();
    s.inFlight.set(index, ac);
    const bucket = this.deps.downloadBucket;
    const len = chunkLength(this.manifest!, index);
    (bucket ? bucket.take(len) : Promise.resolve())
      .then(() => {
        if (ac.signal.aborted) throw new P2PError('P2P_CONNECTION_CLOSED', 'cancelled');
        const t0 = performance.now();
        return s.conn.request('GET_CHUNK', { fileId: this.req.fileId, index }, 'CHUNK', { timeoutMs: 60_000, signal: ac.signal }).then((chunk) => ({ chunk, ms: performance.now() - t0 }));
      })
      .then(
        ({ chunk, ms }) => this.onChunk(s, index, chunk, ms),
        (err: unknown) => this.onChunkError(s, index, ac, err),
      )
      .catch((err: unknown) => this.fail(toP2PError(err)));
  }

  private async onChunk(s: Source, index: number, chunk: Body<'CHUNK'>, ms: number): Promise<void> {
    s.inFlight.delete(index);
    const m = this.manifest!;
    if (this.failed) return;
    if (this.doneFlags[index] !== 0) return this.pump(s); // an endgame duplicate lost the race
    const data = chunk.data;
    const expectedLen = chunkLength(m, index);
    const actual = sha256(data);
    const receiptOk =
      chunk.index === index &&
      chunk.fileId.equals(this.req.fileId) &&
      chunk.hash.equals(actual) &&
      verifyPayload(s.publicKey, receiptPayload(this.req.fileId, index, chunk.hash, this.deps.keys.peerId), chunk.signature);
    if (!receiptOk) {
      this.deps.logger.warn({ peer: s.address, index }, 'chunk came with a receipt that does not match; dropping the peer');
      this.requeue(index);
      return this.lose(s, 'bad receipt');
    }
    if (data.length !== expectedLen || !actual.equals(m.hashes[index]!)) {
      this.deps.logger.warn({ peer: s.address, peerId: s.peerId, index }, 'chunk failed verification; fetching it elsewhere and reporting the sender');
      this.deps.onBadData({
        fileId: this.req.fileId,
        manifest: this.encodedManifest!,
        receipt: { publicKey: s.publicKey, index, hash: chunk.hash, signature: chunk.signature },
        peerId: s.peerId,
      });
      this.requeue(index);
      return this.lose(s, 'sent data that fails verification');
    }
    this.doneFlags[index] = 2; // being written: no one else takes it
    // Endgame: the first verified copy wins; withdraw the others.
    for (const other of this.sources) {
      const ac = other.inFlight.get(index);
      if (ac && other !== s) {
        other.inFlight.delete(index);
        ac.abort();
        this.pump(other);
      }
    }
    this.pendingWrites++;
    try {
      await this.writeAt(data, index * m.chunkSize);
    } catch (err) {
      return this.fail(new P2PError('P2P_INTERNAL', `cannot write ${this.partPath}: ${(err as Error).message}`));
    } finally {
      this.pendingWrites--;
    }
    this.doneFlags[index] = 1;
    this.doneCount++;
    this.bytesDone += data.length;
    this.deps.downloadMeter?.add(data.length);
    s.bytes += data.length;
    s.chunks++;
    s.chunkMs.push(ms);
    if (s.chunkMs.length > 32) s.chunkMs.shift();
    this.receipts.set(index, { publicKey: s.publicKey, index, hash: chunk.hash, signature: chunk.signature });
    this.adaptDepth(s, ms);
    this.unjournaled.push(index);
    if (this.unjournaled.length >= JOURNAL_EVERY) this.flushJournal();
    const now = performance.now();
    if (now - this.lastProgress > 100 || this.doneCount === m.hashes.length) {
      this.lastProgress = now;
      this.emit('progress', this.progress);
    }
    if (this.doneCount === m.hashes.length) return this.finish.resolve();
    this.pump(s);
    if (this.pendingWrites === MAX_PENDING_WRITES - 1) this.pumpAll(); // others may have waited on the disk
  }

  /** Writes a whole chunk at its place (a positional write may write less than asked). */
  private async writeAt(data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh!.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  }

  /** Requests in flight sized to the peer's rate times its round-trip time, within [2, 16]. */
  private adaptDepth(s: Source, chunkMs: number): void {
    if (s.deweighted) return;
    const elapsed = (performance.now() - s.startedAt) / 1000;
    if (elapsed <= 0 || s.chunks < 2) return;
    const rate = s.bytes / elapsed; // bytes per second
    const bdpChunks = (rate * Math.max(s.rttMs, 1)) / 1000 / this.manifest!.chunkSize;
    void chunkMs;
    s.depth = Math.max(2, Math.min(16, Math.ceil(bdpChunks) + 3));
  }

  private flushJournal(): void {
    const batch = this.unjournaled;
    this.unjournaled = [];
    const fh = this.fh!;
    // Chunks are journaled only after the data is on disk: a crash can lose work, never corrupt it.
    this.journaling = this.journaling.then(async () => {
      try {
        await fh.datasync();
        this.deps.db.journalChunks(this.id, batch);
      } catch {
        // the file was closed under us (download ending); the final sync covers these chunks
      }
    });
  }

  private onChunkError(s: Source, index: number, ac: AbortController, err: unknown): void {
    if (s.inFlight.get(index) === ac) s.inFlight.delete(index);
    if (ac.signal.aborted || this.failed) return;
    const e = toP2PError(err);
    if (this.doneFlags[index] === 0) this.requeue(index);
    if (e.code === 'P2P_CONNECTION_CLOSED' || e.code === 'P2P_BLACKLISTED') return this.lose(s, e.message);
    if (e.code === 'P2P_CHUNK_UNAVAILABLE' && s.have !== undefined) {
      // A partial holder that does not have it yet: not a failure; look at its chunks again.
      s.have[index] = 0;
      void this.refreshHave(s);
      this.pumpAll();
      return;
    }
    s.failures++;
    this.deps.logger.info({ peer: s.address, index, err: e.message }, 'chunk request failed');
    if (s.failures >= MAX_PEER_FAILURES) return this.lose(s, `${s.failures} failed requests`);
    this.pumpAll();
  }

  private requeue(index: number): void {
    if (this.doneFlags[index] === 0 && !this.queue.includes(index)) this.queue.unshift(index);
  }

  private pumpAll(): void {
    for (const s of this.sources) this.pump(s);
  }

  /** A peer that fails or vanishes loses its chunks to the others. */
  private lose(s: Source, why: string): void {
    if (!s.alive) return;
    s.alive = false;
    this.deps.logger.info({ peer: s.address, why }, 'peer dropped from this download');
    for (const [i, ac] of s.inFlight) {
      ac.abort();
      if (this.doneFlags[i] === 0) this.requeue(i);
    }
    s.inFlight.clear();
    s.conn.close();
    if (!this.manifest || !this.finish) return;
    this.pumpAll();
    this.checkStalled();
  }

  private checkStalled(): void {
    if (this.failed || this.doneCount === (this.manifest?.hashes.length ?? -1)) return;
    if (this.sources.some((s) => s.alive)) return;
    if (this.spare.length > 0) {
      for (const s of this.spare.splice(0, 4)) this.use(s);
      this.pumpAll();
      return;
    }
    if (this.relookups < 3) {
      this.relookups++;
      // Every source is gone: look again (new holders may have appeared, or finished downloading).
      void this.connectSources(true).then(() => {
        if (this.sources.some((s) => s.alive)) this.pumpAll();
        else this.fail(new P2PError('P2P_CHUNK_UNAVAILABLE', `every peer holding ${this.req.name} failed or left; ${this.doneCount} of ${this.manifest!.hashes.length} chunks are saved and the download resumes when run again`));
      });
      return;
    }
    this.fail(new P2PError('P2P_CHUNK_UNAVAILABLE', `every peer holding ${this.req.name} failed or left; the partial download is kept for resuming`));
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    if (this.unjournaled.length > 0) this.flushJournal();
    this.finish?.reject(err);
  }
}
