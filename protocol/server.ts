/**
 * The server side of a connection, shared by the tracker and the peer daemon's chunk server: accepting a
 * socket within the connection limits (in total and per address) and under a handshake deadline, and the
 * server's half of the peer handshake (section 6 of README.md). Who may connect and what a server says in
 * WELCOME stay with each server; this file only enforces the limits and checks the proofs.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import { systemClock, type Clock, type Timer } from './clock.js';
import { Connection, silentLogger, type ConnectionOptions, type IncomingRequest } from './connection.js';
import { P2PError } from './errors.js';
import { peerIdOf } from './identity.js';
import { Role } from './messages.js';
import { acceptTls } from './tls.js';

export interface ConnectionLimits {
  /** Open connections in total; one more is refused with P2P_TOO_MANY_CONNECTIONS. */
  maxConnections: number;
  /** Open connections from one address; one more is refused with P2P_TOO_MANY_CONNECTIONS. */
  maxConnectionsPerIp: number;
  /** From accept to a completed handshake; later, P2P_HANDSHAKE_TIMEOUT and the connection is closed. */
  handshakeTimeoutMs: number;
}

export interface ConnectionLimiterOptions {
  limits: ConnectionLimits;
  /** For every accepted connection; its logger and clock also serve the limiter and the handshake deadline. */
  connection: ConnectionOptions;
  /** How a client's address is spelled for the per-address count (default: as the connection spells it). */
  addressKey?: (remoteAddress: string) => string;
  /** The refusal's message (default: names both limits). */
  tooManyMessage?: string;
  /** The deadline's message (default: names the deadline). */
  handshakeTimeoutMessage?: string;
  /** The server's TLS settings: every accepted socket starts TLS 1.3 at once (see tls.ts). */
  tls?: tls.SecureContext;
}

export interface AcceptedConnection {
  conn: Connection;
  handshake: ServerHandshake;
}

/**
 * Accepts a server's sockets into Connections while it is under its limits. One per listening server: it
 * counts that server's open connections, and frees a slot in the connection's 'close' handler, the one
 * place every connection ends.
 */
export class ConnectionLimiter {
  private readonly perAddress = new Map<string, number>();
  private open = 0;
  private refusal: P2PError | undefined;
  private readonly log: Logger;
  private readonly clock: Clock;

  constructor(private readonly options: ConnectionLimiterOptions) {
    this.log = options.connection.logger ?? silentLogger;
    this.clock = options.connection.clock ?? systemClock;
  }

  /** Connections accepted and not yet closed. */
  get size(): number {
    return this.open;
  }

  /** From now on every new connection is closed at once with `err` (the server is shutting down). */
  refuseAll(err: P2PError): void {
    this.refusal = err;
  }

  /**
   * Wraps `socket` in a Connection and starts its handshake deadline. Over a limit (or after `refuseAll`),
   * the client gets the reason as an ERROR and is closed, and this returns undefined.
   */
  accept(socket: net.Socket): AcceptedConnection | undefined {
    // A refusal too travels inside TLS (the client reads it as a coded error, not as garbage); the
    // handshake deadline below covers TLS's own handshake.
    const wrapped = this.options.tls ? acceptTls(socket, this.options.tls) : socket;
    const conn = new Connection(wrapped, this.options.connection);
    if (this.refusal) {
      conn.close(this.refusal);
      return undefined;
    }
    const { limits } = this.options;
    const ip = this.options.addressKey ? this.options.addressKey(conn.remoteAddress) : conn.remoteAddress;
    const fromIp = this.perAddress.get(ip) ?? 0;
    if (this.open >= limits.maxConnections || fromIp >= limits.maxConnectionsPerIp) {
      this.log.warn({ ip, total: this.open, fromIp }, 'connection refused: too many connections');
      const message = this.options.tooManyMessage ?? `too many connections (limit ${limits.maxConnections} in total, ${limits.maxConnectionsPerIp} per address)`;
      conn.close(new P2PError('P2P_TOO_MANY_CONNECTIONS', message));
      return undefined;
    }
    this.perAddress.set(ip, fromIp + 1);
    this.open++;
    const handshake = new ServerHandshake(conn, {
      logger: this.log,
      clock: this.clock,
      timeoutMs: limits.handshakeTimeoutMs,
      timeoutMessage: this.options.handshakeTimeoutMessage,
    });
    conn.on('close', () => {
      this.open--;
      const n = (this.perAddress.get(ip) ?? 1) - 1;
      if (n <= 0) this.perAddress.delete(ip);
      else this.perAddress.set(ip, n);
    });
    return { conn, handshake };
  }
}

export type HandshakeState = 'hello' | 'ready';

export interface ServerHandshakeOptions {
  timeoutMs: number;
  /** The deadline's message (default: names the deadline). */
  timeoutMessage?: string | undefined;
  logger?: Logger;
  clock?: Clock;
}

/**
 * The server's side of one connection's handshake: TLS has already proven the client's key (if it
 * presented one); the first frame must be HELLO, which says the client's role. The deadline runs from the
 * accept, TLS included, until `markReady`.
 */
export class ServerHandshake {
  private current: HandshakeState = 'hello';
  private deadline: Timer | undefined;

  constructor(readonly conn: Connection, options: ServerHandshakeOptions) {
    const clock = options.clock ?? systemClock;
    const message = options.timeoutMessage ?? `no handshake within ${options.timeoutMs} ms`;
    this.deadline = clock.setTimeout(() => {
      if (this.current !== 'ready') conn.close(new P2PError('P2P_HANDSHAKE_TIMEOUT', message));
    }, options.timeoutMs);
    conn.on('close', () => this.stopDeadline());
  }

  get state(): HandshakeState {
    return this.current;
  }

  get isReady(): boolean {
    return this.current === 'ready';
  }

  /** Refuses any request but PING and HELLO until the handshake is complete. */
  requireReady(req: IncomingRequest): void {
    if (this.current !== 'ready') throw new P2PError('P2P_NOT_AUTHENTICATED', `${req.name} before the handshake completed`);
  }

  /** A HELLO, of any role: only the first of a connection is allowed. */
  acceptHello(): void {
    if (this.current !== 'hello') throw new P2PError('P2P_UNEXPECTED_MESSAGE', 'HELLO twice');
  }

  /**
   * A peer's HELLO: the peer id of the key its TLS certificate proved. A peer without one is refused with
   * P2P_NOT_AUTHENTICATED (and `message`).
   */
  peerId(req: IncomingRequest<'HELLO'>, message: string): string {
    const key = this.conn.remoteKey;
    if (req.body.role !== Role.peer || !key) throw new P2PError('P2P_NOT_AUTHENTICATED', message);
    return peerIdOf(key);
  }

  /** The handshake is complete: the deadline no longer applies. */
  markReady(): void {
    this.current = 'ready';
    this.stopDeadline();
  }

  private stopDeadline(): void {
    this.deadline?.cancel();
    this.deadline = undefined;
  }
}
