/**
 * One download: find the holders, prove who they are, measure them, fetch the manifest and check it
 * against the id, then fetch chunks from every chosen peer at once. Each peer keeps several requests in
 * flight, so faster peers naturally take more chunks. Every chunk is verified before it is written in
 * place into a partial file; a bad chunk is fetched again elsewhere and its sender dropped (and reported,
 * with its own signed receipt as evidence). The verified file is renamed into place and shared.
 *
 * `Download` coordinates the parts, each in its own file: `source.ts` (a holder, dialled and measured),
 * `strategies.ts` (which holders to use), `scheduler.ts` (which chunk to ask whom for), `chunk-verifier.ts`
 * (whether a chunk is the one the manifest names, and its receipt evidence), `partial-file.ts` (the file
 * being written and its resume journal). Whichever way a download ends, everything it holds is
 * released in one place, `cleanup()`.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import {
  chunkLength,
  P2PError,
  systemClock,
  toP2PError,
  verifyManifest,
  type Body,
  type Clock,
  type KeyPair,
  type TlsIdentity,
  type Manifest,
  type Timer,
} from '../protocol/index.js';
import type { BlacklistCache } from './blacklist-cache.js';
import type { ChunkClaim, ChunkPool } from './chunk-pool.js';
import type { DropReason, PeerCounters } from './counters.js';
import type { PeerDb, ReceiptRecord, TransferRecord } from './db.js';
import { PartialFile } from './partial-file.js';
import { WorkerHasher, type Hasher } from './hasher.js';
import { ChunkVerifier, receiptOf, type BadData } from './chunk-verifier.js';
import type { RateMeter, TokenBucket } from './rate.js';
import { Scheduler } from './scheduler.js';
import { connectSource, nextToFill, recordDelivery, type Holder, type Source } from './source.js';
import { STRATEGIES, type PeerStrategy, type Strategy, type Swarm } from './strategies.js';
import type { TrackerClient } from './tracker-client.js';

export { partialPathFor } from './partial-file.js';
export { choosePeerCount, isStrategy, type Strategy } from './strategies.js';

export interface DownloadDeps {
  keys: KeyPair;
  /** Our key and certificate, presented to the peers we download from. */
  identity: TlsIdentity;
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
  onBadData: (evidence: BadData) => void;
  /** Monotonic time and timers; the system clock unless a test passes another. */
  clock?: Clock | undefined;
  /** Buffers chunks are read straight into (shared by the daemon's downloads); without it, each is allocated. */
  chunkPool?: ChunkPool | undefined;
  /** Checks chunks (hash and receipt) off the main thread; without it, a hasher of this download's own. */
  hasher?: Hasher | undefined;
  /** --plain-chunk-links: holders are tried without TLS first (see source.ts). */
  plainLinks?: boolean | undefined;
  /** Chunks and bytes received by link, peers dropped, verification failures, resumes (--metrics). */
  counters?: PeerCounters | undefined;
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
  /** From the start to the first chunk verified and written (null when every chunk was resumed). */
  firstByteSeconds: number | null;
  peers: PeerShare[];
  resumedChunks: number;
}

/** Chunks received and verified but not yet written, at most (each holds 1 MiB of memory). */
const MAX_PENDING_WRITES = 8;
const MAX_PEER_FAILURES = 3;
/** Tracker lookups when every source is gone, before the download gives up. */
const MAX_RELOOKUPS = 3;
/** Spares brought in at once when every source is gone. */
const SPARES_WHEN_STALLED = 4;
/** A partial holder's have-bitmap is asked for again when older than this. */
const HAVE_REFRESH_MS = 1000;
const PROGRESS_EVERY_MS = 100;
const CHUNK_TIMEOUT_MS = 60_000;

export class Download extends EventEmitter {
  readonly id: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly hasher: Hasher;
  /** When the first chunk was verified and written. */
  private firstByteAt: number | undefined;
  /** Milliseconds from the start to the end of each start-up step (logged with the result). */
  private readonly phases: Record<string, number> = {};
  private readonly strategy: PeerStrategy;
  private manifest: Manifest | undefined;
  private encodedManifest: Buffer | undefined;
  /** Checks each chunk against the manifest, once the manifest is known. */
  private verifier: ChunkVerifier | undefined;
  private readonly sources: Source[] = [];
  /** Holders measured but not (yet) used: the adaptive strategy draws on them. */
  private spares: Source[] = [];
  private scheduler: Scheduler<Source> | undefined;
  private partial: PartialFile | undefined;
  private readonly receipts = new Map<number, ReceiptRecord>();
  private bytesDone = 0;
  private bytesFetched = 0;
  private resumed = 0;
  private pendingWrites = 0;
  /** Told the chunk pool to wake this download when a buffer comes back. */
  private waitingForBuffer = false;
  /** When the chunks waiting for the disk last fell below MAX_PENDING_WRITES (0: never that many). */
  private caughtUpAt = 0;
  private relookups = 0;
  private readonly startedAt: number;
  private lastProgressAt = 0;
  private ticker: Timer | undefined;
  /** Set by fail(): the download stops; run() rejects with it. */
  private failed: Error | undefined;
  /** Set by cleanup(): a holder measured after this is closed at once. */
  private ended = false;
  /**
   * Aborted by cleanup(): hangs up on holders still being measured. Every dial of the download listens
   * on it, so Node's cap of 10 listeners (and its warning) does not apply.
   */
  private readonly hangUp = unlimited(new AbortController());
  private readonly failure: Deferred<never> = deferred();
  private readonly allWritten: Deferred<void> = deferred();

  constructor(
    private readonly deps: DownloadDeps,
    readonly req: DownloadRequest,
  ) {
    super();
    this.id = req.fileId.toString('hex');
    this.clock = deps.clock ?? systemClock;
    this.hasher = deps.hasher ?? (sharedHasher ??= new WorkerHasher(deps.logger));
    this.log = deps.logger.child({ download: this.id.slice(0, 12) });
    this.startedAt = this.clock.now();
    this.strategy = STRATEGIES[req.strategy ?? 'adaptive'](this.swarm());
  }

  get progress(): DownloadProgress {
    const secs = (this.clock.now() - this.startedAt) / 1000;
    return {
      name: this.req.name,
      id: this.id,
      bytes: this.bytesDone,
      total: this.manifest?.size ?? 0,
      chunksDone: this.scheduler?.doneCount ?? 0,
      chunks: this.manifest?.hashes.length ?? 0,
      peers: this.alive().length,
      rateBytesPerSec: secs > 0 ? Math.round(this.bytesDone / secs) : 0,
    };
  }

  /** Which chunks are verified on disk (swarming: served to others while downloading). */
  has(index: number): boolean {
    return this.scheduler?.isDone(index) ?? false;
  }

  /** The partial file, once it is open ('' before). */
  get partialPath(): string {
    return this.partial?.path ?? '';
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
    try {
      // The hash worker starts while the holders are looked up and measured, not on the first chunk.
      this.hasher.warm?.();
      await this.unlessFailed(this.connectSources(false));
      this.phases.holders = this.clock.now() - this.startedAt;
      if (this.sources.length === 0) throw new P2PError('P2P_NOT_FOUND', `no reachable peer holds ${this.req.name}`);
      await this.unlessFailed(this.fetchManifest());
      this.phases.manifest = this.clock.now() - this.startedAt;
      await this.openPartial();
      this.phases.opened = this.clock.now() - this.startedAt;
      this.emit('started', this.progress);
      if (!this.scheduler!.complete) {
        this.startFetching();
        await this.unlessFailed(this.allWritten.promise);
      }
      this.phases.written = this.clock.now() - this.startedAt;
      await this.partial!.finish();
      this.phases.synced = this.clock.now() - this.startedAt;
      return this.finished();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'download failed');
      throw toP2PError(err);
    } finally {
      await this.cleanup();
    }
  }

  /** Waits for `work`, or rejects as soon as the download fails (abort included). */
  private async unlessFailed<T>(work: Promise<T>): Promise<T> {
    const value = await Promise.race([work, this.failure.promise]);
    if (this.failed) throw this.failed;
    return value;
  }

  /**
   * The one cleanup point, whichever way the download ends (success, failure, abort): timers, requests in
   * flight, connections and the partial file are released here.
   */
  private async cleanup(): Promise<void> {
    this.ended = true;
    this.hangUp.abort();
    this.ticker?.cancel();
    this.ticker = undefined;
    for (const s of [...this.sources, ...this.spares]) {
      s.alive = false;
      for (const ac of s.inFlight.values()) ac.abort();
      s.inFlight.clear();
      s.conn.close();
    }
    this.spares = [];
    // Waits for writes under way and journals them, so a resumed download need not check them again.
    await this.partial?.close();
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.failure.reject(err);
  }

  /** The download has failed or ended: nothing more is started. */
  private get over(): boolean {
    return this.failed !== undefined || this.ended;
  }

  private finished(): DownloadResult {
    const m = this.manifest!;
    const seconds = Math.round(this.clock.now() - this.startedAt) / 1000;
    const result: DownloadResult = {
      name: this.req.name,
      id: this.id,
      path: this.req.target,
      size: m.size,
      seconds,
      firstByteSeconds: this.firstByteAt === undefined ? null : Math.round(this.firstByteAt - this.startedAt) / 1000,
      peers: this.sources.map((s) => ({ id: s.peerId, address: s.address, bytes: s.bytes, chunks: s.chunks })),
      resumedChunks: this.resumed,
    };
    const record: TransferRecord = { id: this.id, name: this.req.name, path: this.req.target, size: m.size, seconds, time: this.clock.wallNow(), peers: result.peers };
    this.deps.db.addTransfer(record, [...this.receipts.values()]);
    const firstByteMs = result.firstByteSeconds === null ? undefined : result.firstByteSeconds * 1000;
    this.log.info({ size: m.size, seconds, peers: result.peers.length, phasesMs: { ...this.phases, firstByte: firstByteMs } }, 'download complete');
    return result;
  }

  // ---- Sources ----

  private alive(): Source[] {
    return this.sources.filter((s) => s.alive);
  }

  /** What the peer strategy sees of this download. */
  private swarm(): Swarm {
    return {
      logger: this.log,
      clock: this.clock,
      maxPeers: this.req.maxPeers,
      alive: () => this.alive(),
      spareCount: () => this.spares.length,
      measure: async (h, opts) => {
        const s = await connectSource(h, {
          identity: this.deps.identity,
          logger: this.log,
          advertisePort: this.deps.advertisePort,
          now: () => this.clock.now(),
          signal: this.hangUp.signal,
          plainLinks: this.deps.plainLinks ?? false,
          probeLater: opts?.probeLater ?? false,
        });
        if (!s && !this.hangUp.signal.aborted) this.deps.counters?.drop('unreachable');
        return s;
      },
      use: (s) => this.use(s),
      keepSpare: (s) => this.keepSpare(s),
      useSpares: (n) => {
        for (const s of this.takeSpares(n)) this.use(s);
      },
      discard: (s) => s.conn.close(),
      drop: (s, reason, why) => this.lose(s, reason, why),
      shed: (s) => this.shed(s),
      keepingUpSince: () => (this.pendingWrites >= MAX_PENDING_WRITES ? undefined : this.caughtUpAt),
      refreshIdleHaves: () => {
        const now = this.clock.now();
        for (const s of this.alive()) if (!s.complete && s.inFlight.size === 0 && now - s.haveAskedAt > HAVE_REFRESH_MS) void this.refreshHave(s);
      },
      relookup: () => this.connectSources(true),
      bytesFetched: () => this.bytesFetched,
      chunksLeft: () => (this.scheduler ? this.scheduler.total - this.scheduler.doneCount : 0),
    };
  }

  /** Asks the tracker for the holders and lets the strategy bring them in. */
  private async connectSources(more: boolean): Promise<void> {
    if (this.over) return;
    let holders: Body<'LOOKUP_RESULT'>['peers'];
    try {
      holders = (await this.deps.tracker.request('LOOKUP', { id: this.req.fileId }, 'LOOKUP_RESULT')).peers;
      this.phases.lookup ??= this.clock.now() - this.startedAt;
    } catch (err) {
      if (more) return;
      throw err;
    }
    if (this.over) return;
    const known = new Set([...this.sources, ...this.spares].map((s) => s.peerId));
    const candidates: Holder[] = holders.filter(
      (h) => h.peerId !== this.deps.keys.peerId && !known.has(h.peerId) && !this.deps.blacklist.knownBanned(h.peerId, h.host),
    );
    await this.strategy.connect(candidates);
  }

  private use(s: Source): void {
    if (this.over) {
      s.conn.close();
      return;
    }
    this.sources.push(s);
    s.startedAt = this.clock.now();
    s.conn.on('close', () => this.lose(s, 'connection_closed', 'connection closed'));
    if (this.scheduler) {
      this.enlist(s);
      this.pumpAll();
    }
  }

  private keepSpare(s: Source): void {
    if (this.over) {
      s.conn.close();
      return;
    }
    this.spares.push(s); // ordered when taken (takeSpares): round trips are refined meanwhile
  }

  /** The `n` fastest spares, by round trips measured since they were kept (see connectSource's probeLater). */
  private takeSpares(n: number): Source[] {
    this.spares.sort((a, b) => a.rttMs - b.rttMs);
    return this.spares.splice(0, n);
  }

  /** A source may take chunks (a partial holder once it has said which ones it has); pumpAll sends them. */
  private enlist(s: Source): void {
    this.scheduler!.addSource(s, s.complete ? undefined : new Uint8Array(0));
    if (!s.complete) void this.refreshHave(s);
  }

  private async refreshHave(s: Source): Promise<void> {
    s.haveAskedAt = this.clock.now();
    try {
      const have = await s.conn.request('GET_HAVE', { fileId: this.req.fileId }, 'HAVE', { timeoutMs: 5000 });
      if (have.complete) {
        s.complete = true;
        this.scheduler?.setHave(s, undefined);
      } else {
        const n = this.manifest!.hashes.length;
        const bits = new Uint8Array(n);
        for (let i = 0; i < n; i++) bits[i] = (have.bits[i >> 3]! >> (7 - (i & 7))) & 1;
        this.scheduler?.setHave(s, bits);
      }
      this.pumpAll();
    } catch {
      // keep the old view; a failed chunk request will tell
    }
  }

  /** A peer that fails or vanishes loses its chunks to the others. */
  private lose(s: Source, reason: DropReason, why: string = reason): void {
    if (!s.alive) return;
    s.alive = false;
    this.deps.counters?.drop(reason);
    this.log.info({ peer: s.address, why }, 'peer dropped from this download');
    for (const ac of s.inFlight.values()) ac.abort();
    s.inFlight.clear();
    s.conn.close();
    if (!this.scheduler) return;
    this.scheduler.removeSource(s);
    this.pumpAll();
    this.checkStalled();
  }

  private checkStalled(): void {
    if (this.over || this.scheduler!.complete) return;
    if (this.sources.some((s) => s.alive)) return;
    if (this.spares.length > 0) {
      for (const s of this.takeSpares(SPARES_WHEN_STALLED)) this.use(s);
      return;
    }
    const m = this.manifest!;
    if (this.relookups < MAX_RELOOKUPS) {
      this.relookups++;
      // Every source is gone: look again (new holders may have appeared, or finished downloading).
      void this.connectSources(true).then(() => {
        if (this.sources.some((s) => s.alive)) this.pumpAll();
        else this.fail(new P2PError('P2P_CHUNK_UNAVAILABLE', `every peer holding ${this.req.name} failed or left; ${this.scheduler!.doneCount} of ${m.hashes.length} chunks are saved and the download resumes when run again`));
      });
      return;
    }
    this.fail(new P2PError('P2P_CHUNK_UNAVAILABLE', `every peer holding ${this.req.name} failed or left; the partial download is kept for resuming`));
  }

  // ---- Manifest and file ----

  private async fetchManifest(): Promise<void> {
    for (const s of [...this.sources].sort((a, b) => Number(b.complete) - Number(a.complete) || a.rttMs - b.rttMs)) {
      if (this.over) return;
      try {
        const { manifest } = await s.conn.request('GET_MANIFEST', { fileId: this.req.fileId }, 'MANIFEST', { timeoutMs: 10_000 });
        const m = verifyManifest(manifest, this.req.fileId);
        if (!m) {
          this.log.warn({ peer: s.address }, 'peer sent a manifest that does not match the file id; dropping it');
          this.lose(s, 'bad_manifest', 'bad manifest');
          continue;
        }
        this.manifest = m;
        this.encodedManifest = Buffer.from(manifest);
        const { fileId } = this.req;
        const { hasher, log } = this;
        const { keys, onBadData, counters } = this.deps;
        this.verifier = new ChunkVerifier({ fileId, manifest: m, encodedManifest: this.encodedManifest, ourPeerId: keys.peerId, hasher, logger: log, onBadData, counters });
        return;
      } catch (err) {
        this.lose(s, 'bad_manifest', (err as Error).message);
      }
    }
    throw new P2PError('P2P_NOT_FOUND', `no peer could provide a valid manifest for ${this.req.name}`);
  }

  /** Opens (or resumes) the partial file; the chunks already verified on disk are not fetched again. */
  private async openPartial(): Promise<void> {
    const m = this.manifest!;
    const aborted = new AbortController();
    void this.failure.promise.catch(() => aborted.abort());
    // Not raced against a failure: the file must be open before cleanup() can close it.
    this.partial = await PartialFile.open({
      fileId: this.id,
      target: this.req.target,
      name: this.req.name,
      manifest: m,
      encodedManifest: this.encodedManifest!,
      db: this.deps.db,
      clock: this.clock,
      signal: aborted.signal,
    });
    if (this.failed) throw this.failed;
    const resume = this.partial.resume;
    const done = resume?.chunks ?? [];
    if (resume) this.log.info({ journaled: resume.journaled, recovered: resume.recovered }, 'resuming a partial download');
    this.resumed = done.length;
    if (done.length > 0 && this.deps.counters) {
      this.deps.counters.downloadsResumed++;
      this.deps.counters.chunksResumed += done.length;
    }
    for (const i of done) this.bytesDone += chunkLength(m, i);
    // The adaptive strategy takes chunks in a random order: downloaders that start together then hold
    // different chunks and can trade them (swarming), instead of all waiting on the seeder for the same ones.
    this.scheduler = new Scheduler<Source>({ chunks: m.hashes.length, done, order: this.req.strategy === 'original' ? 'file' : 'random' });
  }

  // ---- Chunks ----

  private startFetching(): void {
    // Every source first, then the requests: enlisted one by one, the first few took every chunk buffer
    // (4 requests each) and the rest waited for one to come back, so at 20 holders the download ran on 6
    // of them for its first half second.
    for (const s of this.alive()) this.enlist(s);
    this.pumpAll();
    this.checkStalled();
    this.strategy.start();
    if (this.strategy.tickMs > 0) {
      this.ticker = this.clock.setInterval(() => {
        if (!this.over) this.strategy.onTick();
      }, this.strategy.tickMs);
    }
  }

  /**
   * Tops up the sources one request at a time, each to the source with the smallest share of its depth in
   * flight (nextToFill):
   * when chunk buffers are short (peerd/chunk-pool.ts), every source keeps its share instead of the first
   * ones taking them all, and a far source gets the larger share its depth asks for.
   */
  private pumpAll(): void {
    if (this.over || !this.scheduler) return;
    const ready = this.sources.filter((s) => s.alive);
    for (const s of ready) if (!s.complete && this.clock.now() - s.haveAskedAt > HAVE_REFRESH_MS) void this.refreshHave(s);
    for (;;) {
      const next = nextToFill(ready);
      if (!next) return;
      const sent = this.requestNext(next);
      if (sent === 'blocked') return;
      if (sent === 'nothing') ready.splice(ready.indexOf(next), 1);
    }
  }

  /**
   * Withdraws every request of `s` and keeps it to one at a time, never an endgame copy (see the
   * strategy's shedStuck): its chunks, and the buffers promised to them, go to the others at once.
   */
  private shed(s: Source): number {
    s.deweighted = true;
    s.depth = 1;
    const withdrawn = [...s.inFlight];
    for (const [index, ac] of withdrawn) {
      s.inFlight.delete(index);
      ac.abort();
      this.scheduler?.release(s, index);
    }
    if (withdrawn.length > 0) this.pumpAll();
    return withdrawn.length;
  }

  /** One more request to `s`, unless the scheduler has nothing for it or the buffers or the disk are full. */
  private requestNext(s: Source): 'sent' | 'nothing' | 'blocked' {
    // Chunks received but not yet on disk count against the budget: when the disk is slower than the
    // network, asking for more would only pile chunks up in memory.
    if (this.pendingWrites >= MAX_PENDING_WRITES) return 'blocked';
    // No request without a buffer promised for its answer.
    const pool = this.deps.chunkPool;
    const claim = pool?.claim();
    if (pool && !claim) {
      this.waitForBuffer(pool);
      return 'blocked';
    }
    // A source held back as far behind the others takes no endgame copies: they would only block the
    // copy a faster source could bring.
    const index = this.scheduler!.next(s, !s.deweighted);
    if (index === undefined) {
      claim?.cancel();
      return 'nothing';
    }
    this.requestChunk(s, index, claim);
    return 'sent';
  }

  /** Every chunk buffer is out or promised: ask again when one comes back. */
  private waitForBuffer(pool: ChunkPool): void {
    if (this.waitingForBuffer) return;
    this.waitingForBuffer = true;
    pool.whenFree(() => {
      this.waitingForBuffer = false;
      this.pumpAll();
    });
  }

  private requestChunk(s: Source, index: number, claim: ChunkClaim | undefined): void {
    if (s.inFlight.size === 0) s.busySince = this.clock.now();
    const ac = new AbortController();
    s.inFlight.set(index, ac);
    const bucket = this.deps.downloadBucket;
    const len = chunkLength(this.manifest!, index);
    (bucket ? bucket.take(len) : Promise.resolve())
      .then(() => {
        if (ac.signal.aborted) throw new P2PError('P2P_CONNECTION_CLOSED', 'cancelled');
        const t0 = this.clock.now();
        this.phases.firstRequest ??= t0 - this.startedAt;
        return s.conn
          .request('GET_CHUNK', { fileId: this.req.fileId, index }, 'CHUNK', { timeoutMs: CHUNK_TIMEOUT_MS, signal: ac.signal, into: claim ?? this.deps.chunkPool })
          .then((chunk) => ({ chunk, ms: this.clock.now() - t0 }));
      })
      .then(
        ({ chunk, ms }) => {
          claim?.cancel(); // unused when the body was too small to need it
          return this.receive(s, index, ac, chunk, ms);
        },
        (err: unknown) => {
          claim?.cancel();
          this.onChunkError(s, index, ac, err);
        },
      )
      .catch((err: unknown) => this.fail(toP2PError(err)));
  }

  /**
   * A chunk arrived: verify it, write it, count it. One function with one exit (the `finally`), where the
   * chunk's buffer goes back to the pool whatever happened to its bytes.
   */
  private async receive(s: Source, index: number, ac: AbortController, chunk: Body<'CHUNK'>, ms: number): Promise<void> {
    const scheduler = this.scheduler!;
    // A checked receipt not kept (an endgame duplicate that lost, the download ending) gives its place back.
    let evidence = false;
    let counted = false;
    // From now until it is on disk (or refused) the chunk holds a buffer: it counts against the budget.
    this.pendingWrites++;
    this.phases.firstChunk ??= this.clock.now() - this.startedAt;
    try {
      if (s.inFlight.get(index) === ac) s.inFlight.delete(index);
      if (this.over) return;
      if (!scheduler.isNeeded(index)) {
        scheduler.release(s, index); // an endgame duplicate lost the race
        return;
      }
      // The first chunk is checked on this thread (ChunkVerifier.verify says why).
      const verified = await this.verifier!.verify(s, index, chunk, this.phases.firstVerified === undefined);
      const rejected = verified.rejected;
      evidence = verified.evidence;
      this.phases.firstVerified ??= this.clock.now() - this.startedAt;
      if (this.over) return;
      if (rejected) {
        scheduler.release(s, index);
        this.lose(s, rejected, rejected === 'bad_data' ? 'sent data that fails verification' : 'bad receipt');
        return;
      }
      // The first verified copy wins; withdraw the others (endgame).
      const others = scheduler.markWriting(s, index);
      if (!others) return;
      for (const other of others) {
        other.inFlight.get(index)?.abort();
        other.inFlight.delete(index);
        this.pumpAll();
      }
      try {
        // The first chunk goes to the disk at once: it is the download's first byte.
        await this.partial!.write(index, chunk.data, { now: this.firstByteAt === undefined });
      } catch (err) {
        this.fail(new P2PError('P2P_INTERNAL', `cannot write ${this.partialPath}: ${(err as Error).message}`));
        return;
      }
      scheduler.markDone(index);
      if (this.over) return; // written while the download ended: journaled by cleanup(), not counted
      this.count(s, index, chunk, ms, evidence);
      counted = true;
      if (scheduler.complete) {
        this.allWritten.resolve();
        return;
      }
    } finally {
      if (evidence && !counted) this.verifier!.unused(s);
      if (this.pendingWrites-- === MAX_PENDING_WRITES) this.caughtUpAt = this.clock.now();
      // The chunk is on disk or refused: its buffer goes back (the receipt fields were copied out).
      this.deps.chunkPool?.release(chunk.data);
      this.pumpAll();
    }
  }

  /**
   * A chunk is written: the counters, the receipt (a checked one: the evidence `p2p report` may send), the
   * peer's depth, and now and then a progress event.
   */
  private count(s: Source, index: number, chunk: Body<'CHUNK'>, ms: number, evidence: boolean): void {
    const len = chunk.data.length;
    this.firstByteAt ??= this.clock.now();
    this.bytesDone += len;
    this.bytesFetched += len;
    this.deps.downloadMeter?.add(len);
    this.deps.counters?.downloaded(s.plain, len);
    recordDelivery(s, len, ms, this.manifest!.chunkSize, this.clock.now());
    if (evidence) this.receipts.set(index, receiptOf(s, index, chunk));
    const now = this.clock.now();
    if (now - this.lastProgressAt > PROGRESS_EVERY_MS || this.scheduler!.complete) {
      this.lastProgressAt = now;
      this.emit('progress', this.progress);
    }
  }

  private onChunkError(s: Source, index: number, ac: AbortController, err: unknown): void {
    if (s.inFlight.get(index) === ac) s.inFlight.delete(index);
    if (ac.signal.aborted || this.over) return;
    const scheduler = this.scheduler!;
    scheduler.release(s, index);
    const e = toP2PError(err);
    if (e.code === 'P2P_CONNECTION_CLOSED' || e.code === 'P2P_BLACKLISTED') return this.lose(s, e.code === 'P2P_BLACKLISTED' ? 'blacklisted' : 'connection_closed', e.message);
    if (e.code === 'P2P_CHUNK_UNAVAILABLE' && !s.complete) {
      // A partial holder that does not have it yet: not a failure; look at its chunks again.
      scheduler.lacks(s, index);
      void this.refreshHave(s);
      this.pumpAll();
      return;
    }
    s.failures++;
    this.log.info({ peer: s.address, index, err: e.message }, 'chunk request failed');
    if (s.failures >= MAX_PEER_FAILURES) return this.lose(s, 'request_failures', `${s.failures} failed requests`);
    this.pumpAll();
  }
}

/** For downloads made without a daemon's hasher (tests): one worker for them all, never holding the process up. */
let sharedHasher: WorkerHasher | undefined;

function unlimited(ac: AbortController): AbortController {
  setMaxListeners(0, ac.signal);
  return ac;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

/** A promise settled from outside (Promise.withResolvers is Node 22); a rejection nobody awaits is not reported. */
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
