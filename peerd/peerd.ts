/**
 * The peer daemon: shares files, serves chunks, downloads from many peers at once, and answers the CLI
 * on its control socket. A class you can start and stop in a test; peerd/main.ts is a thin wrapper.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import {
  CHUNK_SIZE,
  Connection,
  formatAddress,
  MAX_RECEIPTS_PER_SERVER,
  MAX_REPORT_RECEIPTS,
  P2PError,
  silentLogger,
  toP2PError,
  type Address,
  type Body,
  type IncomingRequest,
  type Clock,
  type HandlerTable,
  dispatch,
  Evidence,
  CONTROL_COMMANDS,
  isCommandName,
  type CommandName,
  type ControlArgs,
  type GetArgs,
  type RawArgs,
  type SearchArgs,
  MAX_SEARCH_HITS,
  inNameOrder,
  type KeyPair,
  type PinnedAddress,
  type TlsIdentity,
  loadIdentityFile,
} from '../protocol/index.js';
import { ensurePrivateDir } from '../protocol/local-files.js';
import { BlacklistCache } from './blacklist-cache.js';
import { ChunkPool } from './chunk-pool.js';
import { ChunkServer } from './chunk-server.js';
import { PeerCounters } from './counters.js';
import type { PeerMetrics, PeerMetricsSource } from './metrics.js';
import { WorkerHasher } from './hasher.js';
import type { FileInfo, SearchInfo, StatusInfo } from './control.js';
import { PeerDb } from './db.js';
import { PEER_DEFAULTS } from './defaults.js';
import { Download, type DownloadResult, type Strategy } from './downloader.js';
import { RateMeter, TokenBucket } from './rate.js';
import { hashFile, Library, type SharedFile } from './library.js';
import { TrackerClient, type RetryStrategy } from './tracker-client.js';

export interface PeerDaemonOptions {
  /** The trackers in rank order; each may pin its key's id (`ID@HOST:PORT`). */
  trackers: PinnedAddress[];
  shareDir: string;
  dataDir: string;
  listen?: Address;
  advertise?: Address | undefined;
  socketPath?: string | undefined;
  logger?: Logger;
  /** Chunks read or sent at once (each holds a 1 MiB buffer): the cap on concurrent uploads. */
  maxUploads?: number;
  /** A downloader that takes none of the chunks queued for it for this long is cut off (default PEER_DEFAULTS.sendTimeoutMs, 20 s). */
  sendTimeoutMs?: number;
  /** Limits on the chunk server (defaults: 2000 ms, 5000 ms, 1024, 128). */
  handshakeTimeoutMs?: number;
  readTimeoutMs?: number;
  maxConnections?: number;
  maxConnectionsPerIp?: number;
  /** Bytes per second, 0 or absent for unlimited. */
  maxUploadRate?: number;
  maxDownloadRate?: number;
  /** Peer choice for downloads: 'adaptive' (default) or 'original' (the original design's rule). */
  strategy?: Strategy;
  /**
   * --plain-chunk-links: chunk connections between peers that both set it skip TLS (trusted networks only;
   * README.md, section 6). Links to trackers stay in TLS.
   */
  plainChunkLinks?: boolean;
  /** Test hook: serve wrong bytes on purpose (a malicious seeder). */
  corruptChunks?: boolean;
  /** Test hook: serve well at first, then misbehave (ChunkServerOptions.misbehaveAfter). */
  misbehaveAfter?: { chunks: number; what: 'wrong-bytes' | 'garbage-receipts' };
  /**
   * Time and timers for the tracker session, the share folder's rescans, the chunk server, downloads, the
   * rate limits and meters, and the database's timestamps (default: the system clock).
   */
  clock?: Clock;
  /** How long to wait before trying the trackers again after a round in which none answered (default: reconnectBackoff). */
  trackerRetry?: RetryStrategy;
  version?: string;
  /** --metrics: serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (port 0: a free port). Off when absent. */
  metrics?: Address | undefined;
}

const HEX_ID = /^[0-9a-f]{64}$/;
/** A CHUNK body's fields before its data: file id 32, index 4, hash 32, signature 64. */
const CHUNK_HEAD_BYTES = 132;
/**
 * Chunk buffers at most (1 MiB each): one per request in flight, plus the verified chunks waiting for the
 * disk (8 per download); a download sends no request without one (peerd/chunk-pool.ts). 24, not 32: in
 * the lab at 8-20 seeders the downloading daemon peaked at 111-113 MB instead of 123-125, at the same
 * speed (3 runs each, the same hour).
 */
const MAX_CHUNK_BUFFERS = 24;

/** Makes a name from the network safe to use as a file name inside a folder we chose. */
export function safeFileName(name: string, fallback: string): string {
  // No separators or control characters, and no leading dots: not '.', '..' or a hidden file (partial
  // downloads are hidden files). Dots inside a name stay ('notes...txt').
  // eslint-disable-next-line no-control-regex
  let n = path.basename(name.replace(/[\\/\u0000-\u001f\u007f]/g, '_')).replace(/^\.+/, '');
  if (Buffer.byteLength(n) > 255) n = n.slice(0, 200);
  return n.length > 0 ? n : fallback;
}

export class PeerDaemon {
  readonly keys: KeyPair;
  /** Our key's certificate, presented on every TLS link. */
  readonly identity: TlsIdentity;
  readonly db: PeerDb;
  readonly library: Library;
  readonly tracker: TrackerClient;
  readonly blacklist: BlacklistCache;
  readonly chunkServer: ChunkServer;
  readonly socketPath: string;
  private control: net.Server | undefined;
  private readonly controlConns = new Set<Connection>();
  private readonly downloads = new Map<string, Download>();
  private readonly runs = new Map<string, Promise<DownloadResult>>();
  private readonly log: Logger;
  private closed = false;
  private readonly uploadMeter: RateMeter;
  private readonly downloadMeter: RateMeter;
  private readonly downloadBucket: TokenBucket | undefined;
  private readonly uploadBucket: TokenBucket | undefined;
  /** What --metrics reports: counted always (a few additions per chunk), served only with --metrics. */
  readonly counters = new PeerCounters();
  private metrics: PeerMetrics | undefined;
  /** Chunk buffers shared by every download: a chunk is read into one, checked, written, given back. */
  private readonly chunkPool = new ChunkPool(CHUNK_SIZE + CHUNK_HEAD_BYTES, MAX_CHUNK_BUFFERS);
  /** Checks downloaded chunks (the hash, and the receipts that need it: Download.verdict) on a worker thread. */
  private readonly hasher: WorkerHasher;

  constructor(private readonly opts: PeerDaemonOptions) {
    this.log = opts.logger ?? silentLogger;
    this.hasher = new WorkerHasher(this.log);
    ensurePrivateDir(opts.dataDir, this.log);
    this.identity = loadIdentityFile(path.join(opts.dataDir, 'identity.key'));
    this.keys = this.identity.keys;
    this.db = new PeerDb(opts.dataDir, opts.clock);
    this.socketPath = opts.socketPath ?? path.join(opts.dataDir, 'peerd.sock');
    this.library = new Library(opts.shareDir, this.db, this.log, opts.clock);
    this.tracker = new TrackerClient({
      trackers: opts.trackers,
      identity: this.identity,
      knownTrackers: { get: (a) => this.db.knownTrackerKey(a), learn: (a, key) => this.db.learnTrackerKey(a, key) },
      advertisePort: () => this.opts.advertise?.port ?? this.chunkServer.address?.port ?? 0,
      announce: () => this.announcement(),
      logger: this.log,
      clock: opts.clock,
      retry: opts.trackerRetry,
    });
    this.blacklist = new BlacklistCache(this.tracker, this.log, { copy: this.db });
    this.downloadBucket = opts.maxDownloadRate ? new TokenBucket(opts.maxDownloadRate, opts.clock) : undefined;
    this.uploadBucket = opts.maxUploadRate ? new TokenBucket(opts.maxUploadRate, opts.clock) : undefined;
    this.uploadMeter = new RateMeter(opts.clock);
    this.downloadMeter = new RateMeter(opts.clock);
    this.chunkServer = new ChunkServer({
      keys: this.keys,
      identity: this.identity,
      library: this.library,
      blacklist: this.blacklist,
      logger: this.log,
      poolSize: opts.maxUploads ?? PEER_DEFAULTS.maxUploads,
      sendTimeoutMs: opts.sendTimeoutMs,
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
      readTimeoutMs: opts.readTimeoutMs,
      maxConnections: opts.maxConnections,
      maxConnectionsPerIp: opts.maxConnectionsPerIp,
      uploadBucket: this.uploadBucket,
      uploadMeter: this.uploadMeter,
      counters: this.counters,
      corruptChunks: opts.corruptChunks ?? false,
      misbehaveAfter: opts.misbehaveAfter,
      plainLinks: opts.plainChunkLinks ?? false,
      clock: opts.clock,
      hasher: this.hasher,
      partialSource: (id) => {
        const d = this.downloads.get(id);
        const info = d?.manifestInfo;
        if (!d || !info || !d.partialPath) return undefined;
        return { path: d.partialPath, encodedManifest: info.encoded, manifest: info.manifest, has: (i) => d.has(i) };
      },
    });
    // Pushed or re-synced after a reconnection alike: a peer just banned loses what it has here.
    this.blacklist.on('change', (change: Body<'BLACKLIST_CHANGED'>) => {
      for (const { target } of change.added) {
        this.chunkServer.dropPeer(target);
        for (const d of this.downloads.values()) d.dropPeer(target);
      }
    });
    this.library.on('added', (f: SharedFile) => void this.registerFiles([f]).catch(() => undefined));
    this.library.on('removed', (f: SharedFile) => {
      this.chunkServer.forgetFile(f.path);
      // Still shared under another path: register the names left, which replace the gone one at the tracker.
      if (this.library.byId(f.id)) return void this.registerFiles([f]).catch(() => undefined);
      void this.tracker.request('UNREGISTER', { all: false, ids: [{ id: f.idBuf }] }, 'OK').catch(() => undefined);
    });
  }

  get peerId(): string {
    return this.keys.peerId;
  }

  async start(): Promise<void> {
    const { schema } = this.db;
    if (schema.applied.length > 0) this.log.info({ from: schema.from, to: schema.to, applied: schema.applied }, 'database schema migrated');
    // First: a --metrics address that cannot be bound stops the start before anything else is up.
    if (this.opts.metrics) {
      const { PeerMetrics } = await import('./metrics.js');
      this.metrics = await PeerMetrics.serve(this.opts.metrics, this.metricsSource(), this.log);
    }
    try {
      // The hash worker takes a few hundred milliseconds of CPU to start: not in the first download's time.
      this.hasher.warm();
      await this.chunkServer.listen(this.opts.listen ?? { host: '0.0.0.0', port: 0 });
      await this.library.start();
      this.tracker.start();
      await this.listenControl();
    } catch (err) {
      await this.metrics?.close();
      throw err;
    }
    this.resumePartials();
    this.log.info(
      { peerId: this.peerId, listen: this.listenAddress, socket: this.socketPath, shared: this.library.list().length },
      'peer daemon ready',
    );
  }

  /** Downloads interrupted by a crash or a restart continue on their own, where they stopped. */
  private resumePartials(): void {
    for (const p of this.db.allPartials()) {
      if (this.downloads.has(p.fileId)) continue;
      if (fs.existsSync(p.target)) {
        this.db.finishPartial(p.fileId);
        continue;
      }
      this.log.info({ name: p.name, target: p.target }, 'resuming an interrupted download');
      const d = this.newDownload({ fileId: Buffer.from(p.fileId, 'hex'), name: p.name, target: p.target, overwrite: false, strategy: this.opts.strategy });
      void this.runDownload(d).catch((err: unknown) => this.log.warn({ name: p.name, err: (err as Error).message }, 'resumed download failed; it will be tried again at the next start or get'));
    }
  }

  /** Where --metrics is served (with the port bound), once started. */
  get metricsAddress(): Address | undefined {
    return this.metrics?.address;
  }

  /** What the metrics read when scraped: the counters, and the daemon's state as it is then. */
  private metricsSource(): PeerMetricsSource {
    return {
      counters: this.counters,
      downloadsActive: () => this.downloads.size,
      uploadSlots: () => this.chunkServer.uploadSlots,
      uploadBucket: this.uploadBucket,
      downloadBucket: this.downloadBucket,
      sharedFiles: () => this.library.list().length,
      trackerConnected: () => this.tracker.state === 'connected',
    };
  }

  get listenAddress(): string {
    const a = this.chunkServer.address;
    return a ? formatAddress(a.host, a.port) : '';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const d of this.downloads.values()) d.abort('the peer daemon is shutting down');
    this.library.close();
    await new Promise<void>((resolve) => (this.control ? this.control.close(() => resolve()) : resolve()));
    for (const c of this.controlConns) c.close();
    await this.tracker.close();
    await this.chunkServer.close();
    await this.hasher.close();
    await this.metrics?.close();
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
    this.db.close();
  }

  private announcement(): Body<'REGISTER'>['files'] {
    const files = this.library.list().map((f) => ({ id: f.idBuf, size: f.size, name: f.name, complete: true }));
    // Swarming: files still downloading are announced as partly held, so others can fetch their chunks here.
    for (const d of this.downloads.values()) {
      const info = d.manifestInfo;
      if (info && !this.library.byId(d.id)) files.push({ id: d.req.fileId, size: info.manifest.size, name: path.basename(d.req.target), complete: false });
    }
    return files;
  }

  /** Registers the ids of `files` with every name each is shared under here (the tracker replaces an id's names with those). */
  private async registerFiles(files: SharedFile[]): Promise<void> {
    const ids = new Set(files.map((f) => f.id));
    const named = this.library.list().filter((f) => ids.has(f.id));
    if (named.length === 0) return;
    await this.tracker.request('REGISTER', { files: named.map((f) => ({ id: f.idBuf, size: f.size, name: f.name, complete: true })) }, 'OK');
    // A file can stop being shared while its REGISTER waits for a session or is tried again: a file
    // copied into the share folder is hashed half-written, then again once whole. Its UNREGISTER may then
    // have reached the tracker first, and this REGISTER put the stale id back under the name, so that the
    // name named two files. Whatever is no longer shared is unregistered again, after it.
    const gone = named.filter((f) => !this.library.byId(f.id));
    if (gone.length > 0) await this.tracker.request('UNREGISTER', { all: false, ids: gone.map((f) => ({ id: f.idBuf })) }, 'OK');
  }

  private async listenControl(): Promise<void> {
    const p = this.socketPath;
    if (Buffer.byteLength(p) > 100) throw new P2PError('P2P_BAD_PATH', `control socket path is too long for a Unix socket (${p}); pass a shorter --socket`);
    if (fs.existsSync(p)) {
      // A socket left by a daemon that died: remove it, unless a live daemon answers there.
      const alive = await new Promise<boolean>((resolve) => {
        const s = net.connect(p);
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (alive) throw new P2PError('P2P_EXISTS', `another p2p-peerd is already running on ${p}`);
      fs.unlinkSync(p);
    }
    const dir = path.dirname(p);
    const st = fs.statSync(dir);
    if ((st.mode & 0o077) !== 0) this.log.warn({ dir }, 'the control socket folder is open to other users; prefer a private folder');
    this.control = net.createServer((socket) => {
      const conn = new Connection(socket, { logger: this.log, maxInFlight: 16, readTimeoutMs: 10_000, maxBodyBytes: 1024 * 1024 });
      this.controlConns.add(conn);
      conn.on('close', () => this.controlConns.delete(conn));
      conn.onRequest((req) => dispatch(this.controlRequests, req, conn, 'a control request'));
    });
    await new Promise<void>((resolve, reject) => {
      const oldUmask = process.umask(0o177);
      this.control!.once('error', reject);
      this.control!.listen(p, () => {
        process.umask(oldUmask);
        this.control!.off('error', reject);
        resolve();
      });
    });
    fs.chmodSync(p, 0o600);
  }

  /** What the control socket answers: PING, and the commands of `p2p`. */
  private readonly controlRequests: HandlerTable<Connection> = {
    PING: (req, conn) => void conn.reply(req.requestId, 'PONG', {}),
    CONTROL: (req, conn) => this.onControl(conn, req),
  };

  private async onControl(conn: Connection, req: IncomingRequest<'CONTROL'>): Promise<void> {
    const { command, args } = req.body;
    // Arguments that are not a JSON object are malformed, but refused with the connection kept: only a
    // local user can reach this socket (mode 0600), and the network's rule of closing is for strangers.
    let parsed: unknown;
    try {
      parsed = JSON.parse(args);
    } catch {
      throw new P2PError('P2P_MALFORMED', 'control arguments are not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null) throw new P2PError('P2P_MALFORMED', 'control arguments must be a JSON object');
    if (!isCommandName(command)) throw new P2PError('P2P_UNEXPECTED_MESSAGE', `unknown command '${command}' (is this p2p-peerd older than p2p?)`);
    const result = await this.runCommand(command, CONTROL_COMMANDS[command](parsed as RawArgs), conn, req.requestId);
    conn.reply(req.requestId, 'CONTROL_RESULT', { result: JSON.stringify(result) });
  }

  /** Runs a command with its checked arguments (the one place a command's name meets its handler). */
  private runCommand<C extends CommandName>(command: C, args: ControlArgs<C>, conn: Connection, requestId: number): unknown {
    const run = this.commands[command] as (args: ControlArgs<C>, conn: Connection, requestId: number) => unknown;
    return run(args, conn, requestId);
  }

  /** The control commands (protocol/control.ts), each with its arguments already checked. */
  private readonly commands: { readonly [C in CommandName]: (args: ControlArgs<C>, conn: Connection, requestId: number) => unknown } = {
    status: () => this.status(),
    files: () => this.library.list().map(fileInfo),
    share: async ({ paths }) => {
      const files = await this.library.share(paths);
      await this.registerFiles(files);
      return files.map(fileInfo);
    },
    unshare: async ({ key }) => {
      const removed = this.library.unshare(key);
      const ids = removed.filter((f) => !this.library.byId(f.id)).map((f) => ({ id: f.idBuf }));
      if (ids.length) await this.tracker.request('UNREGISTER', { all: false, ids }, 'OK');
      return removed.map(fileInfo);
    },
    search: async (args) => (await this.searchNetwork(args)).hits,
    searchResult: (args) => this.searchNetwork(args),
    resolve: async ({ key, out }) => {
      const r = await this.resolve(key);
      const target = this.targetFor(r.name, r.id, out);
      const exists = fs.existsSync(target);
      return { ...r, target, exists, sameFile: exists && (await this.holdsFile(target, r.id, r.size)) };
    },
    get: (args, conn, requestId) => this.get(args, conn, requestId),
    transfers: () => this.db.transfers(),
    report: ({ key, reason }) => this.report(key, reason),
  };

  status(): StatusInfo {
    return {
      peerId: this.peerId,
      listen: this.listenAddress,
      advertise: this.opts.advertise ? formatAddress(this.opts.advertise.host, this.opts.advertise.port) : '',
      tracker: { address: this.tracker.current ?? null, role: this.tracker.role, state: this.tracker.state, term: this.tracker.term, standby: this.tracker.standbyAddress ?? null },
      trackers: this.opts.trackers.map((t) => formatAddress(t.host, t.port)),
      shared: this.library.list().length,
      transfers: [...this.downloads.values()].map((d) => {
        const p = d.progress;
        return { name: p.name, id: p.id, bytes: p.bytes, total: p.total, peers: p.peers, rateBytesPerSec: p.rateBytesPerSec };
      }),
      uploads: this.chunkServer.uploadsInProgress,
      bytesSent: this.chunkServer.bytesSent,
      rates: { uploadBytesPerSec: this.uploadMeter.bytesPerSec, downloadBytesPerSec: this.downloadMeter.bytesPerSec },
      limits: { maxUploadRate: this.opts.maxUploadRate ?? 0, maxDownloadRate: this.opts.maxDownloadRate ?? 0, maxUploads: this.opts.maxUploads ?? PEER_DEFAULTS.maxUploads },
      version: this.opts.version ?? '',
    };
  }

  /** The network's files whose name contains `text`, at most `limit`, by name. */
  private async searchNetwork({ text, limit }: SearchArgs): Promise<{ hits: SearchInfo[]; truncated: boolean }> {
    const res = await this.tracker.request('SEARCH', { text, limit: limit ?? MAX_SEARCH_HITS }, 'SEARCH_RESULT');
    // Trackers since 0.2 answer in their index's order; the list is shown by name.
    const hits = res.files.map((f) => ({ name: f.name, id: f.id.toString('hex'), size: f.size, peers: f.peers }));
    return { hits: inNameOrder(hits, (h) => h.name, (h) => h.id), truncated: res.truncated };
  }

  /** NAME or ID (or an id prefix of 8+ hex characters) -> one file of the network. */
  private async resolve(key: string): Promise<{ name: string; id: string; size: number }> {
    const k = key.trim();
    const lower = k.toLowerCase();
    const byName = await this.tracker.request('SEARCH', { text: k, limit: MAX_SEARCH_HITS }, 'SEARCH_RESULT');
    const exact = byName.files.filter((f) => f.name === k);
    const ids = new Map(exact.map((f) => [f.id.toString('hex'), f]));
    if (ids.size === 1) {
      const f = exact[0]!;
      return { name: f.name, id: f.id.toString('hex'), size: f.size };
    }
    if (ids.size > 1) {
      throw new P2PError('P2P_AMBIGUOUS', `'${k}' names ${ids.size} different files; get one by id: ${[...ids.keys()].join(', ')}`);
    }
    if (/^[0-9a-f]{8,64}$/.test(lower)) {
      const all = await this.tracker.request('SEARCH', { text: '', limit: 100_000 }, 'SEARCH_RESULT');
      const hits = all.files.filter((f) => f.id.toString('hex').startsWith(lower));
      const distinct = new Map(hits.map((f) => [f.id.toString('hex'), f]));
      if (distinct.size === 1) {
        const f = hits[0]!;
        return { name: f.name, id: f.id.toString('hex'), size: f.size };
      }
      if (distinct.size > 1) throw new P2PError('P2P_AMBIGUOUS', `id prefix '${k}' matches ${distinct.size} files: ${[...distinct.keys()].join(', ')}`);
      if (HEX_ID.test(lower)) {
        // Not listed by name (yet): the holders may still be found by id.
        return { name: lower.slice(0, 16), id: lower, size: 0 };
      }
    }
    throw new P2PError('P2P_NOT_FOUND', `no file named '${k}' on the network (try: p2p search ${k})`);
  }

  private targetFor(name: string, id: string, out: string | undefined): string {
    const safe = safeFileName(name, id.slice(0, 16));
    if (!out) return path.join(path.resolve(this.opts.shareDir), safe);
    const abs = path.resolve(out);
    try {
      if (fs.statSync(abs).isDirectory()) return path.join(abs, safe);
    } catch {
      // not there yet: it is the file to write
    }
    return abs;
  }

  /**
   * Whether the file at `target` is the file `id` (of `size` bytes; 0 when unknown): by size first, then
   * by the id the library or the manifest cache knows for it while its size and mtime are unchanged, and
   * only then by hashing it.
   */
  private async holdsFile(target: string, id: string, size: number): Promise<boolean> {
    let st: fs.Stats;
    try {
      st = fs.statSync(target);
    } catch {
      return false;
    }
    if (!st.isFile() || (size > 0 && st.size !== size)) return false;
    const known = this.library.list().find((f) => f.path === target) ?? this.db.cachedManifest(target);
    if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) return known.id === id;
    try {
      return (await hashFile(target)).id.toString('hex') === id;
    } catch {
      return false;
    }
  }

  private async get(args: GetArgs, conn: Connection, requestId: number): Promise<DownloadResult & { alreadyPresent?: true }> {
    const r = await this.resolve(args.key);
    const target = this.targetFor(r.name, r.id, args.out);
    // The same download is already running (resumed on its own after a restart, say): follow it.
    const running = this.downloads.get(r.id);
    const runningResult = this.runs.get(r.id);
    if (running && runningResult && running.req.target === target) return this.follow(running, runningResult, conn, requestId);
    if (!fs.existsSync(path.dirname(target))) throw new P2PError('P2P_BAD_PATH', `folder ${path.dirname(target)} does not exist`);
    if (fs.existsSync(target)) {
      if (fs.statSync(target).isDirectory()) throw new P2PError('P2P_BAD_PATH', `${target} is a folder`);
      // Issue 11: getting a file that is already there is done, not a conflict (nor a reason to fetch it again).
      if (await this.holdsFile(target, r.id, r.size)) {
        return { name: r.name, id: r.id, path: target, size: fs.statSync(target).size, seconds: 0, firstByteSeconds: null, peers: [], resumedChunks: 0, alreadyPresent: true };
      }
      if (!args.overwrite) throw new P2PError('P2P_EXISTS', `${target} already exists; pass --overwrite to replace it`);
    }
    if (this.downloads.has(r.id)) throw new P2PError('P2P_IN_PROGRESS', `${r.name} is already being downloaded here, to ${this.downloads.get(r.id)!.req.target}; wait for it to finish (p2p status shows it)`);
    const strategy = args.strategy ?? this.opts.strategy;
    const d = this.newDownload({ fileId: Buffer.from(r.id, 'hex'), name: r.name, target, maxPeers: args.maxPeers, overwrite: args.overwrite, strategy });
    const onGone = (): void => d.abort('the p2p command went away; the partial download is kept for resuming');
    conn.once('close', onGone);
    try {
      return await this.follow(d, this.runDownload(d), conn, requestId);
    } finally {
      conn.off('close', onGone);
    }
  }

  /** Relays a download's progress to a `p2p get` and answers with its result. */
  private async follow(d: Download, result: Promise<DownloadResult>, conn: Connection, requestId: number): Promise<DownloadResult> {
    const send = (type: string) => (p: object): void => {
      conn.sendEvent('CONTROL_EVENT', { event: JSON.stringify({ type, ...p }) }, requestId);
    };
    const started = send('started');
    const progress = send('progress');
    d.on('started', started);
    d.on('progress', progress);
    if (d.manifestInfo) started(d.progress);
    try {
      return await result;
    } finally {
      d.off('started', started);
      d.off('progress', progress);
    }
  }

  private newDownload(req: ConstructorParameters<typeof Download>[1]): Download {
    return new Download(
      {
        keys: this.keys,
        identity: this.identity,
        tracker: this.tracker,
        blacklist: this.blacklist,
        db: this.db,
        logger: this.log,
        advertisePort: () => this.opts.advertise?.port ?? this.chunkServer.address?.port ?? 0,
        downloadBucket: this.downloadBucket,
        downloadMeter: this.downloadMeter,
        onBadData: (ev) => void this.reportBadData(ev),
        plainLinks: this.opts.plainChunkLinks ?? false,
        clock: this.opts.clock,
        counters: this.counters,
        chunkPool: this.chunkPool,
        hasher: this.hasher,
      },
      req,
    );
  }

  private runDownload(d: Download): Promise<DownloadResult> {
    const run = this.executeDownload(d);
    this.runs.set(d.id, run);
    void run.catch(() => undefined).finally(() => {
      if (this.runs.get(d.id) === run) this.runs.delete(d.id);
    });
    return run;
  }

  private async executeDownload(d: Download): Promise<DownloadResult> {
    const id = d.id;
    this.downloads.set(id, d);
    d.once('started', () => {
      // Swarming: tell the tracker we hold part of it, so others can fetch our verified chunks.
      const info = d.manifestInfo!;
      void this.tracker
        .request('REGISTER', { files: [{ id: d.req.fileId, size: info.manifest.size, name: path.basename(d.req.target), complete: false }] }, 'OK')
        .catch(() => undefined);
    });
    try {
      const result = await d.run();
      const info = d.manifestInfo!;
      await this.library.addVerified(d.req.target, info.encoded, id);
      await this.registerFiles(this.library.list().filter((f) => f.id === id)).catch((err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'downloaded file not yet registered with the tracker');
      });
      this.counters.downloadsDone++;
      return result;
    } catch (err) {
      this.counters.downloadFailed(toP2PError(err).code);
      if (d.manifestInfo && !this.library.byId(id)) {
        void this.tracker.request('UNREGISTER', { all: false, ids: [{ id: d.req.fileId }] }, 'OK').catch(() => undefined);
      }
      throw err;
    } finally {
      this.downloads.delete(id);
      if (d.partialPath) this.chunkServer.forgetFile(d.partialPath);
    }
  }

  private async reportBadData(ev: { fileId: Buffer; manifest: Buffer; receipt: { publicKey: Buffer; index: number; hash: Buffer; signature: Buffer }; peerId: string }): Promise<void> {
    try {
      const res = await this.tracker.request(
        'REPORT',
        { fileId: ev.fileId, reason: `chunk ${ev.receipt.index} failed verification`, evidence: Evidence.badData, manifest: ev.manifest, receipts: [ev.receipt] },
        'REPORT_RESULT',
      );
      this.log.warn({ peerId: ev.peerId, blacklisted: res.blacklisted.map((x) => x.target) }, 'reported a peer that sent bad data');
    } catch (err) {
      this.log.warn({ peerId: ev.peerId, err: (err as Error).message }, 'could not report a peer that sent bad data');
    }
  }

  private async report(key: string, reason: string): Promise<{ blacklisted: string[]; pending: string[]; fileId: string }> {
    const k = key.trim().toLowerCase();
    let t = HEX_ID.test(k) ? this.db.lastTransfer(k) : undefined;
    if (!t) {
      const byName = this.db.lastTransferByName(key.trim());
      if (byName) t = this.db.lastTransfer(byName.id);
    }
    if (!t) throw new P2PError('P2P_NOT_FOUND', `this peer has no download of '${key}' to report`);
    // One receipt proves a download from its signer; the tracker takes a few per peer and a bounded total,
    // so many peers get fewer each (at least one: every peer that served is named).
    const servers = new Set(t.receipts.map((r) => r.publicKey.toString('hex'))).size;
    const perServer = Math.max(1, Math.min(MAX_RECEIPTS_PER_SERVER, Math.floor(MAX_REPORT_RECEIPTS / Math.max(1, servers))));
    const perPeer = new Map<string, number>();
    const receipts = t.receipts.filter((r) => {
      const k2 = r.publicKey.toString('hex');
      const n = perPeer.get(k2) ?? 0;
      perPeer.set(k2, n + 1);
      return n < perServer;
    }).slice(0, MAX_REPORT_RECEIPTS);
    if (receipts.length === 0) throw new P2PError('P2P_NOT_FOUND', `the download of '${key}' has no receipts (resumed from an older version?)`);
    const res = await this.tracker.request(
      'REPORT',
      { fileId: Buffer.from(t.transfer.id, 'hex'), reason: reason.slice(0, 500), evidence: Evidence.user, manifest: Buffer.alloc(0), receipts },
      'REPORT_RESULT',
    );
    return { fileId: t.transfer.id, blacklisted: res.blacklisted.map((x) => x.target), pending: res.pending.map((x) => x.target) };
  }
}

function fileInfo(f: SharedFile): FileInfo {
  return { name: f.name, id: f.id, size: f.size, path: f.path };
}

