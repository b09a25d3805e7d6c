/**
 * One tracker's outgoing connection to another member of the cluster. Everything this tracker says to
 * that one (daemon/raft/messages.ts) goes over it, in order, as RAFT events; the other side answers on
 * its own link to us. It runs in TLS: this tracker presents its own key, and the other must prove the key
 * pinned or learned for its rank (member-keys.ts); then HELLO says the ranks of both ends, and the other
 * side checks our key against our rank. Messages sent while it is down are
 * kept (the most recent few) and go out once it is up; a link whose writes back up is reset. A link
 * closed from the other end is dialled again at once, and a refused dial is reported (onRefused).
 */
import type { Logger } from 'pino';
import {
  CLUSTER_ALPN,
  dial,
  encodeLinkClaim,
  P2PError,
  Role,
  toP2PError,
  type Address,
  type Clock,
  type Connection,
  type TlsIdentity,
} from '../protocol/index.js';

/** Messages kept while the link is down; older ones are dropped (the cluster resends what matters). */
const MAX_QUEUED = 64;
/** A link with this much unsent is reset rather than buffering more (a stalled or frozen tracker). */
const MAX_UNSENT_BYTES = 16 * 1024 * 1024;
/** A link closed from the other end is dialled again at once, but no more often than this. */
const REDIAL_EVERY_MS = 1000;

export interface TrackerLinkOptions {
  /** The rank this link dials, and our own. */
  rank: number;
  selfRank: number;
  address: Address;
  /** HOST:PORT as listed in --cluster, for messages. */
  label: string;
  /** What this tracker presents in TLS. */
  identity: TlsIdentity;
  /** Checks the key the other tracker proved (throws a P2PError to refuse it). */
  verifyKey: (key: Buffer | undefined) => void;
  /** Our own listen port, sent in HELLO. */
  selfPort: number;
  connectTimeoutMs: number;
  logger: Logger;
  clock: Clock;
  /** A dial was refused (ECONNREFUSED): nothing listens there, so that tracker's process is gone. */
  onRefused?: () => void;
}

export class TrackerLink {
  private conn: Connection | undefined;
  private opening: Promise<Connection> | undefined;
  private closed = false;
  private lastFailure = '';
  private queued: string[] = [];
  private redialledAt = -Infinity;

  constructor(private readonly opts: TrackerLinkOptions) {}

  get isUp(): boolean {
    return !!this.conn && !this.conn.isClosed;
  }

  /** Bytes accepted for this tracker and not yet written to the network. */
  get unsentBytes(): number {
    return this.conn && !this.conn.isClosed ? this.conn.unsentBytes : 0;
  }

  /** Sends one message (JSON); opens the link first if it is down. Never throws. */
  send(message: string): void {
    if (this.closed) return;
    const conn = this.conn;
    if (conn && !conn.isClosed) {
      if (conn.unsentBytes > MAX_UNSENT_BYTES) return this.reset(`more than ${MAX_UNSENT_BYTES} bytes unsent to ${this.opts.label}`);
      conn.sendEvent('RAFT', { message });
      return;
    }
    this.queued.push(message);
    if (this.queued.length > MAX_QUEUED) this.queued.shift();
    this.open().catch(() => undefined);
  }

  /** The open connection, opening it first if needed. */
  open(): Promise<Connection> {
    if (this.closed) return Promise.reject(new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down'));
    if (this.conn && !this.conn.isClosed) return Promise.resolve(this.conn);
    this.opening ??= this.connect().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  /** Drops the connection (the other side sees it close); the next message reopens it. */
  reset(reason: string): void {
    const conn = this.conn;
    if (!conn) return;
    this.conn = undefined;
    conn.destroy(new P2PError('P2P_CONNECTION_CLOSED', reason));
  }

  close(): void {
    this.closed = true;
    this.queued = [];
    this.conn?.destroy(new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down'));
    this.conn = undefined;
  }

  private async connect(): Promise<Connection> {
    const { address, label, logger, clock } = this.opts;
    let conn: Connection | undefined;
    try {
      conn = await dial(address, {
        connectTimeoutMs: this.opts.connectTimeoutMs,
        logger,
        clock,
        readTimeoutMs: 30_000,
        tls: { identity: this.opts.identity, verify: this.opts.verifyKey, alpn: [CLUSTER_ALPN] },
      });
      const hello = { role: Role.tracker, listenPort: this.opts.selfPort, software: 'p2p-tracker', link: encodeLinkClaim({ from: this.opts.selfRank, to: this.opts.rank }) };
      await conn.request('HELLO', hello, 'WELCOME', { timeoutMs: this.opts.connectTimeoutMs });
      if (this.closed) throw new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down');
      const opened = conn;
      this.conn = opened;
      opened.on('close', () => {
        if (this.conn !== opened) return; // reset or closed here
        this.conn = undefined;
        // Closed from the other end: dial again at once (once a second at most, should the other end keep
        // closing it). A tracker whose process died refuses it, which tells the cluster sooner than
        // failover-ms of silence would (onRefused).
        const now = this.opts.clock.now();
        if (now - this.redialledAt < REDIAL_EVERY_MS) return;
        this.redialledAt = now;
        this.open().catch(() => undefined);
      });
      if (this.lastFailure) logger.info({ tracker: label }, `link to tracker ${label} is up again`);
      this.lastFailure = '';
      const queued = this.queued;
      this.queued = [];
      for (const m of queued) this.send(m);
      return opened;
    } catch (err) {
      conn?.destroy();
      const e = toP2PError(err);
      // A dead tracker fails every heartbeat period: log the first failure of a kind, not each one.
      if (e.message !== this.lastFailure) logger.debug({ tracker: label, err: e.message }, `cannot reach tracker ${label}`);
      this.lastFailure = e.message;
      if (!this.closed && (e.cause as NodeJS.ErrnoException | undefined)?.code === 'ECONNREFUSED') this.opts.onRefused?.();
      throw e;
    }
  }
}
