/**
 * Serves other peers: a file's manifest, and any chunk of a shared file by id and index; nothing else.
 * No path ever comes from the network. Each chunk is read straight from disk (files stay open between
 * chunks) into one of a small pool of reused buffers, signed as a receipt and written to the socket
 * without being copied into a frame.
 *
 * A changed file is never served: after each read the open file's stamp (inode, size, mtime, ctime) is
 * compared with the one its manifest was made under. While it is unchanged no write has touched the
 * file, so the chunk is what the manifest says and is not hashed again; once it differs, every chunk is
 * hashed before it goes out (as are chunks of partial downloads, which are still being written), and the
 * file is hashed again in the background.
 *
 * A reader that does not read cannot hold the uploads: the buffers are shared fairly between connections
 * (upload-slots.ts), and a connection with chunks queued for it that finishes taking none of them for
 * `sendTimeoutMs` is closed with P2P_SEND_TIMEOUT, which gives its buffers back.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Logger } from 'pino';
import {
  CHUNK_SIZE,
  chunkLength,
  ConnectionLimiter,
  P2PError,
  receiptPayload,
  sha256,
  signPayload,
  systemClock,
  type Address,
  type Clock,
  type Connection,
  type IncomingRequest,
  serverContext,
  type KeyPair,
  type TlsIdentity,
  type ServerHandshake,
  type AcceptedConnection,
  type HandlerTable,
  dispatch,
  type Timer,
} from '../protocol/index.js';
import type { BlacklistCache } from './blacklist-cache.js';
import type { PeerCounters } from './counters.js';
import { fileStamp, type Library, type SharedFile } from './library.js';
import { OpenFiles } from './open-files.js';
import type { Hasher } from './hasher.js';
import type { RateMeter, TokenBucket } from './rate.js';
import { PEER_DEFAULTS } from './defaults.js';
import { UploadSlots } from './upload-slots.js';

/** The send deadline (PEER_DEFAULTS.sendTimeoutMs, where it is explained). */
export const SEND_TIMEOUT_MS = PEER_DEFAULTS.sendTimeoutMs;

/**
 * Room before a chunk's data in its upload buffer, for the CHUNK frame's head (142 bytes): the frame is
 * sent as one contiguous write (Connection.replyInPlace).
 */
const HEAD_ROOM = 256;
const EMPTY = Buffer.alloc(0);

export interface ChunkServerOptions {
  keys: KeyPair;
  /** Our key's certificate: every chunk connection runs in TLS, unless `plainLinks`. */
  identity: TlsIdentity;
  /**
   * --plain-chunk-links: also serve downloaders that come without TLS (they prove their key with
   * PLAIN_AUTH; see protocol/plain-link.ts). Off: they are refused with P2P_TLS_REQUIRED.
   */
  plainLinks?: boolean;
  library: Library;
  blacklist: BlacklistCache;
  logger: Logger;
  /** Chunk buffers in the pool: the most chunks being read or sent at once (one connection: half of them). */
  poolSize?: number;
  /** The send deadline (SEND_TIMEOUT_MS). */
  sendTimeoutMs?: number;
  clock?: Clock;
  handshakeTimeoutMs?: number;
  /** A request frame must arrive whole within this. */
  readTimeoutMs?: number;
  maxConnections?: number;
  maxConnectionsPerIp?: number;
  /** For the partial files of downloads under way (swarming). */
  partialSource?: (fileId: string) => PartialSource | undefined;
  /** --max-upload-rate: every chunk sent waits for its bytes here. */
  uploadBucket?: TokenBucket | undefined;
  uploadMeter?: RateMeter | undefined;
  /** Hashes chunks that must be checked before they go out (off the main thread); without it, inline. */
  hasher?: Hasher | undefined;
  /** Test hook: a malicious seeder that sends wrong bytes (with an honest receipt of what it sent). */
  corruptChunks?: boolean;
  /**
   * Test hook: a seeder that serves its first `chunks` chunks well (counted over all its connections, as
   * each is read from disk), then sends wrong bytes (with an honest receipt of them) or the right bytes
   * with a receipt whose signature is garbage.
   */
  misbehaveAfter?: { chunks: number; what: 'wrong-bytes' | 'garbage-receipts' };
  /** Chunks and bytes sent by link, connections refused (--metrics). */
  counters?: PeerCounters | undefined;
}

export interface PartialSource {
  path: string;
  encodedManifest: Buffer;
  manifest: SharedFile['manifest'];
  has(index: number): boolean;
}

interface PeerConn {
  conn: Connection;
  /** Its state, the nonce it was challenged with and the downloader's key (protocol/server.ts). */
  hs: ServerHandshake;
  peerId?: string;
  /** Chunks handed to the socket that it has not taken whole yet. */
  chunksUnsent: number;
  /** The send deadline, running while chunksUnsent > 0; each chunk taken starts it again. */
  sendTimer: Timer | undefined;
}

export class ChunkServer {
  private readonly server: net.Server;
  private readonly conns = new Set<PeerConn>();
  private readonly limiter: ConnectionLimiter;
  private readonly slots: UploadSlots<PeerConn>;
  private readonly clock: Clock;
  private readonly sendTimeoutMs: number;
  private readonly files = new OpenFiles();
  /** Files found changed since they were hashed, already sent for re-hashing. */
  private readonly rechecked = new WeakSet<SharedFile>();
  private readonly log: Logger;
  uploadsInProgress = 0;
  bytesSent = 0;
  /** Chunks served so far, for the misbehaveAfter test hook. */
  private servedForHook = 0;
  address: Address | undefined;

  constructor(private readonly opts: ChunkServerOptions) {
    this.log = opts.logger;
    this.slots = new UploadSlots(opts.poolSize ?? PEER_DEFAULTS.maxUploads, HEAD_ROOM + CHUNK_SIZE);
    this.clock = opts.clock ?? systemClock;
    this.sendTimeoutMs = opts.sendTimeoutMs ?? SEND_TIMEOUT_MS;
    this.limiter = new ConnectionLimiter({
      limits: {
        maxConnections: opts.maxConnections ?? PEER_DEFAULTS.maxConnections,
        maxConnectionsPerIp: opts.maxConnectionsPerIp ?? PEER_DEFAULTS.maxConnectionsPerIp,
        handshakeTimeoutMs: opts.handshakeTimeoutMs ?? PEER_DEFAULTS.handshakeTimeoutMs,
      },
      connection: { logger: this.log, maxInFlight: 64, readTimeoutMs: opts.readTimeoutMs ?? PEER_DEFAULTS.readTimeoutMs, idleTimeoutMs: PEER_DEFAULTS.chunkIdleTimeoutMs, maxBodyBytes: 64 * 1024 },
      tooManyMessage: 'this peer has too many connections',
      handshakeTimeoutMessage: 'no handshake within the deadline',
      tls: serverContext(opts.identity),
      plain: opts.plainLinks ?? false,
      onRefused: opts.counters && ((code) => opts.counters!.connectionRefused(code)),
    });
    this.server = net.createServer((s) => this.onSocket(s));
  }

  async listen(addr: Address): Promise<Address> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(addr.port, addr.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const a = this.server.address() as net.AddressInfo;
    this.address = { host: addr.host, port: a.port };
    return this.address;
  }

  async close(): Promise<void> {
    this.limiter.refuseAll(new P2PError('P2P_SHUTTING_DOWN', 'peer daemon is shutting down'));
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns) c.conn.close(new P2PError('P2P_SHUTTING_DOWN', 'peer daemon is shutting down'));
    await closed;
    this.files.closeAll();
  }

  /** Upload buffers (slots) out right now, and in all (--max-uploads). */
  get uploadSlots(): { inUse: number; count: number } {
    return { inUse: this.slots.inUse, count: this.slots.count };
  }

  /** `filePath` is no longer served from (a finished download's partial file, a file that left). */
  forgetFile(filePath: string): void {
    this.files.forget(filePath);
  }

  /** Cuts every connection of a peer that was just blacklisted. */
  dropPeer(target: string): void {
    for (const c of this.conns) {
      if (c.peerId === target || c.conn.remoteAddress === target) c.conn.close(new P2PError('P2P_BLACKLISTED', 'you are blacklisted'));
    }
  }

  private onSocket(socket: net.Socket): void {
    this.limiter.accept(socket, (accepted) => this.onAccepted(accepted));
  }

  private onAccepted(accepted: AcceptedConnection): void {
    const pc: PeerConn = { conn: accepted.conn, hs: accepted.handshake, chunksUnsent: 0, sendTimer: undefined };
    this.conns.add(pc);
    pc.conn.onRequest((req) => this.onRequest(pc, req));
    pc.conn.on('close', () => {
      this.conns.delete(pc);
      pc.sendTimer?.cancel();
      pc.sendTimer = undefined;
      // Requests still waiting for a buffer get none; the socket gives back the ones its chunks held.
      this.slots.drop(pc);
    });
  }

  /** The downloader's key is proven: served, unless it or its address is blacklisted. */
  private async welcome(pc: PeerConn, requestId: number, peerId: string): Promise<void> {
    const { conn } = pc;
    if (await this.opts.blacklist.isBanned(peerId, conn.remoteAddress)) {
      this.log.info({ peerId, remote: conn.remoteAddress }, 'refused a blacklisted downloader');
      this.opts.counters?.connectionRefused('P2P_BLACKLISTED');
      const err = new P2PError('P2P_BLACKLISTED', 'you are blacklisted; this peer will not serve you');
      conn.replyError(requestId, err);
      conn.close(err);
      return;
    }
    pc.peerId = peerId;
    pc.hs.markReady();
    if (pc.hs.plain) this.log.debug({ peerId, remote: conn.remoteAddress }, 'plain chunk link (--plain-chunk-links)');
    conn.reply(requestId, 'WELCOME', { peerId, observedHost: conn.remoteAddress, observedPort: conn.remotePort, leaseMs: 0, role: 'peer', term: 0, primary: '', proof: Buffer.alloc(0) });
  }

  /** A chunk was handed to the socket: the send deadline runs until the socket has taken every one. */
  private chunkQueued(pc: PeerConn): void {
    pc.chunksUnsent++;
    if (!pc.sendTimer) this.startSendDeadline(pc);
  }

  /** The socket took a chunk's bytes: progress, so the deadline starts again (or stops). */
  private chunkTaken(pc: PeerConn): void {
    pc.chunksUnsent--;
    pc.sendTimer?.cancel();
    pc.sendTimer = undefined;
    if (pc.chunksUnsent > 0 && !pc.conn.isClosed) this.startSendDeadline(pc);
  }

  private startSendDeadline(pc: PeerConn): void {
    pc.sendTimer = this.clock.setTimeout(() => {
      pc.sendTimer = undefined;
      const err = new P2PError('P2P_SEND_TIMEOUT', `this peer read none of the ${pc.chunksUnsent} chunks sent to it in ${this.sendTimeoutMs} ms; closing the connection`);
      this.log.warn({ code: err.code, peerId: pc.peerId, remote: pc.conn.remoteAddress, chunksUnsent: pc.chunksUnsent, heldBuffers: this.slots.heldBy(pc) }, 'a downloader stopped reading; closing its connection');
      // At once, without a last word: an ERROR frame would wait behind the bytes it does not read, and
      // destroying the socket is what gives its buffers back.
      pc.conn.destroy(err);
    }, this.sendTimeoutMs);
  }

  private onRequest(pc: PeerConn, req: IncomingRequest): void | Promise<void> {
    if (req.name in this.handshakeRequests) return dispatch(this.handshakeRequests, req, pc, 'a handshake request');
    pc.hs.requireReady(req);
    if (this.opts.blacklist.knownBanned(pc.peerId!, pc.conn.remoteAddress)) {
      pc.conn.close(new P2PError('P2P_BLACKLISTED', 'you are blacklisted'));
      return;
    }
    return dispatch(this.peerRequests, req, pc, 'served by peers');
  }

  /** Requests before the handshake is complete: PING, and the handshake itself. */
  private readonly handshakeRequests: HandlerTable<PeerConn> = {
    PING: (req, pc) => void pc.conn.reply(req.requestId, 'PONG', {}),
    HELLO: (req, pc) => {
      if (pc.hs.plain) {
        // No TLS: the downloader proves its key by signing this nonce (PLAIN_AUTH).
        pc.conn.reply(req.requestId, 'PLAIN_CHALLENGE', { nonce: pc.hs.challenge(req, 'only peers are served') });
        return;
      }
      pc.hs.acceptHello();
      // TLS proved the downloader's key (and ours to it, which it checks against the tracker's list).
      return this.welcome(pc, req.requestId, pc.hs.peerId(req, 'only peers that present the certificate of their key are served'));
    },
    PLAIN_AUTH: (req, pc) => this.welcome(pc, req.requestId, pc.hs.answer(req.body, this.opts.keys.publicKey)),
  };

  /** A downloader's requests, once its key is proven and while it is not blacklisted. */
  private readonly peerRequests: HandlerTable<PeerConn> = {
    GET_MANIFEST: (req, pc) => {
      const id = req.body.fileId.toString('hex');
      const f = this.opts.library.byId(id);
      const encoded = f?.encoded ?? this.opts.partialSource?.(id)?.encodedManifest;
      if (!encoded) throw new P2PError('P2P_NOT_FOUND', 'this peer does not hold that file');
      pc.conn.reply(req.requestId, 'MANIFEST', { manifest: encoded });
    },
    GET_HAVE: (req, pc) => {
      const id = req.body.fileId.toString('hex');
      const f = this.opts.library.byId(id);
      if (f) {
        pc.conn.reply(req.requestId, 'HAVE', { complete: true, bits: Buffer.alloc(0) });
        return;
      }
      const p = this.opts.partialSource?.(id);
      if (!p) throw new P2PError('P2P_NOT_FOUND', 'this peer does not hold that file');
      const n = p.manifest.hashes.length;
      const bits = Buffer.alloc(Math.ceil(n / 8));
      for (let i = 0; i < n; i++) if (p.has(i)) bits[i >> 3]! |= 0x80 >> (i & 7);
      pc.conn.reply(req.requestId, 'HAVE', { complete: false, bits });
    },
    GET_CHUNK: (req, pc) => this.serveChunk(pc, req),
  };

  private async serveChunk(pc: PeerConn, req: IncomingRequest<'GET_CHUNK'>): Promise<void> {
    const { conn } = pc;
    const { fileId, index } = req.body;
    const id = fileId.toString('hex');
    const shared = this.opts.library.byId(id);
    const partial = shared ? undefined : this.opts.partialSource?.(id);
    const source = shared ?? partial;
    if (!source) throw new P2PError('P2P_NOT_FOUND', 'this peer does not hold that file');
    const manifest = source.manifest;
    if (index >= manifest.hashes.length) throw new P2PError('P2P_NOT_FOUND', `chunk ${index} is beyond the end of the file`);
    if (partial && !partial.has(index)) throw new P2PError('P2P_CHUNK_UNAVAILABLE', `chunk ${index} is not here yet`);
    if (conn.isClosed) return;
    const buf = await this.slots.acquire(pc);
    if (!buf) return; // the connection closed while it waited for a buffer
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.uploadsInProgress--;
      this.slots.release(pc, buf);
    };
    this.uploadsInProgress++;
    try {
      if (conn.isClosed || conn.isCancelled(req.requestId)) return release();
      const len = chunkLength(manifest, index);
      const unchanged = await this.files.use(source.path, async (fh) => {
        let got = 0;
        while (got < len) {
          const { bytesRead } = await fh.read(buf, HEAD_ROOM + got, len - got, index * manifest.chunkSize + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got < len) throw new P2PError('P2P_CHUNK_UNAVAILABLE', `chunk ${index} is short on disk`);
        // After the read: a write that began before this stat has already moved the file's ctime.
        return shared !== undefined && fileStamp(await fh.stat()) === shared.stamp;
      });
      const data = buf.subarray(HEAD_ROOM, HEAD_ROOM + len);
      const misbehave = this.opts.misbehaveAfter && this.servedForHook++ >= this.opts.misbehaveAfter.chunks ? this.opts.misbehaveAfter.what : undefined;
      const corrupt = this.opts.corruptChunks || misbehave === 'wrong-bytes';
      if (corrupt) data[0] = data[0]! ^ 0xff;
      let hash = manifest.hashes[index]!;
      if (corrupt) {
        hash = sha256(data); // the test hook's honest receipt of the wrong bytes
      } else if (!unchanged) {
        hash = this.opts.hasher ? await this.opts.hasher.sha256(data) : sha256(data);
        if (shared && !this.rechecked.has(shared)) {
          // Changed since it was hashed: hash it again in the background (its id may change).
          this.rechecked.add(shared);
          this.files.forget(shared.path);
          this.log.info({ path: shared.path }, 'shared file changed since it was hashed; checking every chunk and re-hashing');
          void this.opts.library.recheck(shared.path);
        }
      }
      if (!corrupt && !hash.equals(manifest.hashes[index]!)) {
        // Our own copy no longer matches: never send it.
        this.log.warn({ path: source.path, index }, 'shared file no longer matches its manifest');
        throw new P2PError('P2P_CHUNK_UNAVAILABLE', `chunk ${index} failed this peer's own check`);
      }
      const signature = misbehave === 'garbage-receipts' ? randomBytes(64) : signPayload(this.opts.keys, receiptPayload(fileId, index, hash, pc.peerId!));
      if (this.opts.uploadBucket) await this.opts.uploadBucket.take(len);
      if (conn.isClosed || conn.isCancelled(req.requestId)) return release();
      this.bytesSent += len;
      this.opts.uploadMeter?.add(len);
      this.opts.counters?.uploaded(pc.hs.plain, len);
      this.chunkQueued(pc);
      conn.replyInPlace(req.requestId, 'CHUNK', { fileId, index, hash, signature, data: EMPTY }, buf, HEAD_ROOM, len, () => {
        this.chunkTaken(pc);
        release();
      });
    } catch (err) {
      release();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.files.forget(source.path);
        if (shared) void this.opts.library.recheck(shared.path);
        throw new P2PError('P2P_CHUNK_UNAVAILABLE', 'the file is gone from disk');
      }
      throw err;
    }
  }
}
