/**
 * One tracker's outgoing connection to another member of the cluster. Every request this tracker makes of
 * that one (heartbeats, replicated writes, sync, votes) goes over it, in order. Opening it says HELLO as a
 * tracker and then sends a HEARTBEAT first, so the other side knows our rank before anything else
 * arrives on it. When it closes, the cluster hears of it once (`onDown`); the next request reopens it.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  clusterProof,
  dial,
  encodeLinkClaim,
  verifyClusterProof,
  P2PError,
  Role,
  toP2PError,
  type Address,
  type Body,
  type Clock,
  type Connection,
  type MessageName,
} from '../protocol/index.js';

/** A snapshot of all durable state travels in one SYNC_STATE frame. */
const MAX_SYNC_BYTES = 256 * 1024 * 1024;

export interface TrackerLinkOptions {
  rank: number;
  address: Address;
  /** HOST:PORT as listed in --cluster, for messages. */
  label: string;
  /** The cluster secret both sides must prove (HMAC challenge both ways); absent: links are not authenticated. */
  clusterSecret?: string | undefined;
  /** Our own listen port, sent in HELLO. */
  selfPort: number;
  connectTimeoutMs: number;
  /** The HEARTBEAT that opens the link (our current view). */
  greeting: () => Body<'HEARTBEAT'>;
  /** The answer to the opening HEARTBEAT. */
  onGreeted: (ack: Body<'HEARTBEAT_ACK'>) => void;
  /** A connection that was up closed (once per connection). */
  onDown: (conn: Connection, reason: string) => void;
  logger: Logger;
  clock: Clock;
}

export class TrackerLink {
  private conn: Connection | undefined;
  private opening: Promise<Connection> | undefined;
  private closed = false;
  private lastFailure = '';

  constructor(private readonly opts: TrackerLinkOptions) {}

  get rank(): number {
    return this.opts.rank;
  }

  get isUp(): boolean {
    return !!this.conn && !this.conn.isClosed;
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

  /** A request over the link, opening it if needed. */
  async request<N extends MessageName, R extends MessageName>(name: N, body: Body<N>, expect: R, timeoutMs: number): Promise<Body<R>> {
    const conn = await this.open();
    return conn.request(name, body, expect, { timeoutMs });
  }

  /** Drops the connection (the other side sees it close); the next request reopens it. */
  reset(reason: string): void {
    const conn = this.conn;
    if (!conn) return;
    this.conn = undefined;
    conn.destroy(new P2PError('P2P_CONNECTION_CLOSED', reason));
  }

  close(): void {
    this.closed = true;
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
        maxBodyBytes: MAX_SYNC_BYTES,
        readTimeoutMs: 30_000,
      });
      const timeoutMs = this.opts.connectTimeoutMs;
      const clientNonce = randomBytes(32);
      // Our rank is the one our heartbeats carry; the proofs both ways cover it and the rank we dial.
      const claim = { from: this.opts.greeting().rank, to: this.opts.rank };
      const hello = { role: Role.tracker, publicKey: encodeLinkClaim(claim), nonce: clientNonce, listenPort: this.opts.selfPort, software: 'p2p-tracker' };
      const challenge = await conn.request('HELLO', hello, 'CHALLENGE', { timeoutMs });
      const secret = this.opts.clusterSecret;
      if (secret) {
        const handshake = { clientNonce, serverNonce: Buffer.from(challenge.nonce), claim };
        if (!verifyClusterProof(secret, 'server', handshake, challenge.signature)) {
          throw new P2PError(
            'P2P_UNAUTHORIZED',
            `tracker ${label} does not prove the cluster secret as rank ${claim.to}; check that every tracker has the same --cluster list, in the same order, and the same --cluster-secret-file (or --admin-token-file)`,
          );
        }
        await conn.request('AUTH', { signature: clusterProof(secret, 'client', handshake) }, 'WELCOME', { timeoutMs });
      }
      const ack = await conn.request('HEARTBEAT', this.opts.greeting(), 'HEARTBEAT_ACK', { timeoutMs });
      if (this.closed) throw new P2PError('P2P_SHUTTING_DOWN', 'this tracker is shutting down');
      const opened = conn;
      this.conn = opened;
      opened.on('close', (err?: P2PError) => {
        if (this.conn === opened) this.conn = undefined;
        this.opts.onDown(opened, err?.message ?? 'connection closed');
      });
      if (this.lastFailure) logger.info({ tracker: label }, `link to tracker ${label} is up again`);
      this.lastFailure = '';
      this.opts.onGreeted(ack);
      return opened;
    } catch (err) {
      conn?.destroy();
      const e = toP2PError(err);
      // A dead tracker fails every heartbeat period: log the first failure of a kind, not each one.
      if (e.message !== this.lastFailure) logger.debug({ tracker: label, err: e.message }, `cannot reach tracker ${label}`);
      this.lastFailure = e.message;
      throw e;
    }
  }
}
