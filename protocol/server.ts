/**
 * The server side of a connection, shared by the tracker and the peer daemon's chunk server: accepting a
 * socket within the connection limits (in total and per address) and under a handshake deadline, and the
 * server's half of the peer handshake (section 6 of README.md). Who may connect and what a server says in
 * WELCOME stay with each server; this file only enforces the limits and checks the proofs.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import { setDeadline, systemClock, type Clock, type Timer } from './clock.js';
import { Connection, normalizeHost, silentLogger, type ConnectionOptions, type IncomingRequest } from './connection.js';
import { P2PError } from './errors.js';
import { peerIdOf, verifyPayload } from './identity.js';
import { Role, type Body } from './messages.js';
import { TLS_HANDSHAKE_RECORD, plainAuthPayload, plainNonce } from './plain-link.js';
import { acceptTls, offersAlpn } from './tls.js';

export interface ConnectionLimits {
  /** Open connections in total; one more is refused with P2P_TOO_MANY_CONNECTIONS. */
  maxConnections: number;
  /** Open connections from one address; one more is refused with P2P_TOO_MANY_CONNECTIONS. */
  maxConnectionsPerIp: number;
  /** From accept to a completed handshake; later, P2P_HANDSHAKE_TIMEOUT and the connection is closed. */
  handshakeTimeoutMs: number;
  /**
   * TLS handshakes run at once; the rest wait their turn, unread, in arrival order (default: no limit).
   * A tracker after a takeover is dialled by thousands of peers within a second: run all their handshakes
   * together and one turn of its event loop lasts seconds, longer than its cluster's failover time.
   */
  maxTlsHandshakes?: number;
  /**
   * How long a client may wait for its turn at a TLS handshake, from accept (default handshakeTimeoutMs);
   * its handshake deadline moves on by the time it waited. A waiting socket is not read, so
   * the server cannot see its client leave: past this it presumes it gone and closes it without a turn. A
   * tracker sets it to what its peers wait (a crowd after a takeover waits seconds for a turn, and closing
   * them at 2 s sent each to another tracker, and back, for a second handshake).
   */
  tlsQueueWaitMs?: number;
  /**
   * A client whose ClientHello offers this ALPN protocol (a tracker's link to another: CLUSTER_ALPN) does
   * not wait behind the queue above: its handshake starts at once, at most maxTlsHandshakes of them at a
   * time. A tracker busy with a crowd of peers must still hear its cluster, or a recovered tracker waits
   * minutes to sync. Claiming it buys a client nothing else: its key is checked like any other.
   */
  priorityAlpn?: string;
  /** Only clients from these addresses (as `addressKey` spells them) may claim priorityAlpn (default: any). */
  priorityFrom?: ReadonlySet<string>;
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
  /**
   * With `tls`: a client whose first byte does not start TLS is served in plain TCP (a peer's chunk link
   * with --plain-chunk-links) instead of being refused with P2P_TLS_REQUIRED.
   */
  plain?: boolean;
  /**
   * A connection was refused before or during its handshake, with this code (P2P_TOO_MANY_CONNECTIONS,
   * P2P_TLS_REQUIRED, P2P_SHUTTING_DOWN, P2P_HANDSHAKE_TIMEOUT): for the daemons' metrics.
   */
  onRefused?: (code: string) => void;
  /** A queued TLS handshake finished (secure), `seconds` from its turn: for the tracker's metrics. */
  onTlsHandshake?: (seconds: number) => void;
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
  /** TLS handshakes under way, and the clients waiting for one (see maxTlsHandshakes). */
  private tlsRunning = 0;
  private priorityRunning = 0;
  private readonly tlsWaiting: Array<{ socket: net.Socket; deadline: number; start: () => void }> = [];
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

  /** The TLS handshake queue (cluster links' aside): clients waiting for a turn, and turns under way. */
  get tlsQueue(): { waiting: number; running: number } {
    return { waiting: this.tlsWaiting.length, running: this.tlsRunning };
  }

  /** From now on every new connection is closed at once with `err` (the server is shutting down). */
  refuseAll(err: P2PError): void {
    this.refusal = err;
  }

  /**
   * Wraps `socket` in a Connection, starts its handshake deadline and gives it to `onAccepted`. With TLS
   * the client's first byte decides how: a TLS record starts TLS, anything else is a plain client (served
   * if `plain`, else refused with P2P_TLS_REQUIRED). Over a limit (or after `refuseAll`), the client gets
   * the reason as an ERROR and is closed, and `onAccepted` is not called.
   */
  accept(socket: net.Socket, onAccepted: (accepted: AcceptedConnection) => void): void {
    // Counted from the accept, so that clients that never say anything count too.
    const { limits } = this.options;
    const ip = this.addressOf(socket);
    const fromIp = this.perAddress.get(ip) ?? 0;
    let refusal = this.refusal;
    if (!refusal && (this.open >= limits.maxConnections || fromIp >= limits.maxConnectionsPerIp)) {
      this.log.warn({ ip, total: this.open, fromIp }, 'connection refused: too many connections');
      const message = this.options.tooManyMessage ?? `too many connections (limit ${limits.maxConnections} in total, ${limits.maxConnectionsPerIp} per address)`;
      refusal = new P2PError('P2P_TOO_MANY_CONNECTIONS', message);
    }
    if (!refusal) {
      this.perAddress.set(ip, fromIp + 1);
      this.open++;
      socket.once('close', () => {
        this.open--;
        const n = (this.perAddress.get(ip) ?? 1) - 1;
        if (n <= 0) this.perAddress.delete(ip);
        else this.perAddress.set(ip, n);
      });
    }
    const acceptedAt = this.clock.now();
    const deadline = acceptedAt + limits.handshakeTimeoutMs;
    const context = this.options.tls;
    if (!context) return this.admit(socket, false, refusal, deadline, onAccepted);
    // The first byte says how the client speaks; until it comes, the handshake deadline applies.
    const silent = this.clock.setTimeout(() => {
      this.options.onRefused?.('P2P_HANDSHAKE_TIMEOUT');
      socket.destroy();
    }, limits.handshakeTimeoutMs);
    const ignore = (): void => {};
    socket.on('error', ignore);
    socket.once('close', () => silent.cancel());
    socket.once('data', (first: Buffer) => {
      silent.cancel();
      socket.off('error', ignore);
      socket.pause();
      socket.unshift(first);
      // A refusal too travels in the client's own terms: inside TLS for a TLS client, as a coded ERROR frame
      // for a plain one (not garbage, nor a dropped connection).
      if (first[0] === TLS_HANDSHAKE_RECORD) {
        const { priorityAlpn, priorityFrom, maxTlsHandshakes } = limits;
        const mayClaim = priorityAlpn && (!priorityFrom || priorityFrom.has(ip)) && this.priorityRunning < (maxTlsHandshakes ?? Infinity);
        if (mayClaim && offersAlpn(first, priorityAlpn)) {
          return this.admit(this.startTls(socket, context, true), false, refusal, deadline, onAccepted);
        }
        // Its handshake deadline moves on by the time it waits for a turn, and no more: a client cannot
        // buy time by sending its first byte late.
        const queuedAt = this.clock.now();
        const turnBy = acceptedAt + (limits.tlsQueueWaitMs ?? limits.handshakeTimeoutMs);
        const start = (): void => this.admit(this.startTls(socket, context), false, refusal, deadline + (this.clock.now() - queuedAt), onAccepted);
        this.tlsWaiting.push({ socket, deadline: turnBy, start });
        return this.nextTls();
      }
      this.admit(socket, true, refusal, deadline, onAccepted);
      socket.resume();
    });
  }

  /** Starts waiting TLS handshakes while fewer than maxTlsHandshakes run; skips clients gone or out of time. */
  private nextTls(): void {
    const max = this.options.limits.maxTlsHandshakes ?? Infinity;
    while (this.tlsRunning < max && this.tlsWaiting.length > 0) {
      const next = this.tlsWaiting.shift()!;
      if (next.socket.destroyed) continue;
      if (this.clock.now() >= next.deadline) {
        // It waited as long as a client waits for a turn: no turn now (its client has given up by now).
        this.options.onRefused?.('P2P_HANDSHAKE_TIMEOUT');
        next.socket.destroy();
        continue;
      }
      next.start();
    }
  }

  private startTls(socket: net.Socket, context: tls.SecureContext, priority = false): tls.TLSSocket {
    if (priority) this.priorityRunning++;
    else this.tlsRunning++;
    const secure = acceptTls(socket, context);
    const turnAt = this.clock.now();
    let done = false;
    const finished = (): void => {
      if (done) return;
      done = true;
      if (priority) return void this.priorityRunning--;
      this.tlsRunning--;
      this.nextTls();
    };
    secure.once('secure', () => {
      if (!priority && !done) this.options.onTlsHandshake?.((this.clock.now() - turnAt) / 1000);
      finished();
    });
    secure.once('close', finished);
    return secure;
  }

  private addressOf(socket: net.Socket): string {
    const host = normalizeHost(socket.remoteAddress ?? '');
    return this.options.addressKey ? this.options.addressKey(host) : host;
  }

  private admit(socket: net.Socket, plain: boolean, refusal: P2PError | undefined, deadline: number, onAccepted: (accepted: AcceptedConnection) => void): void {
    const conn = new Connection(socket, this.options.connection);
    if (plain && !this.options.plain && !refusal) {
      refusal = new P2PError('P2P_TLS_REQUIRED', 'this server takes connections only inside TLS 1.3 (is the other side an older version, or not p2pshare?)');
    }
    if (refusal) {
      this.options.onRefused?.(refusal.code);
      return conn.close(refusal);
    }
    const handshake = new ServerHandshake(conn, {
      plain,
      onTimeout: this.options.onRefused && (() => this.options.onRefused!('P2P_HANDSHAKE_TIMEOUT')),
      logger: this.log,
      clock: this.clock,
      timeoutMs: Math.max(0, deadline - this.clock.now()),
      timeoutMessage: this.options.handshakeTimeoutMessage ?? `no handshake within ${this.options.limits.handshakeTimeoutMs} ms`,
    });
    onAccepted({ conn, handshake });
  }
}

export type HandshakeState = 'hello' | 'auth' | 'ready';

export interface ServerHandshakeOptions {
  /** A plain TCP client (no TLS): its key is proven by PLAIN_AUTH after HELLO. */
  plain?: boolean;
  timeoutMs: number;
  /** The deadline's message (default: names the deadline). */
  timeoutMessage?: string | undefined;
  logger?: Logger;
  clock?: Clock;
  /** The deadline passed before the handshake completed (the connection is being closed). */
  onTimeout?: (() => void) | undefined;
}

/**
 * The server's side of one connection's handshake: TLS has already proven the client's key (if it
 * presented one); the first frame must be HELLO, which says the client's role. The deadline runs from the
 * accept, TLS included, until `markReady` (later by the time a client waited for a TLS turn: tlsQueueWaitMs).
 */
export class ServerHandshake {
  private current: HandshakeState = 'hello';
  private deadline: Timer | undefined;
  private nonce: Buffer | undefined;
  /** The client came without TLS (a plain chunk link). */
  readonly plain: boolean;

  constructor(readonly conn: Connection, options: ServerHandshakeOptions) {
    this.plain = options.plain ?? false;
    const clock = options.clock ?? systemClock;
    const message = options.timeoutMessage ?? `no handshake within ${options.timeoutMs} ms`;
    // A HELLO waiting unread behind our own stall still counts: look once more after the reads.
    this.deadline = setDeadline(
      clock,
      () => {
        if (this.current === 'ready' || conn.isClosed) return;
        options.onTimeout?.();
        conn.close(new P2PError('P2P_HANDSHAKE_TIMEOUT', message));
      },
      options.timeoutMs,
    );
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

  /** A plain client's HELLO: the nonce its PLAIN_AUTH must sign (the answer to HELLO). */
  challenge(req: IncomingRequest<'HELLO'>, message: string): Buffer {
    this.acceptHello();
    if (!this.plain || req.body.role !== Role.peer) throw new P2PError('P2P_NOT_AUTHENTICATED', message);
    this.current = 'auth';
    this.nonce = plainNonce();
    return this.nonce;
  }

  /**
   * A plain client's PLAIN_AUTH: the peer id of the key it signed our nonce and `serverKey` with. A wrong
   * signature is refused with P2P_BAD_SIGNATURE, a PLAIN_AUTH out of turn with P2P_UNEXPECTED_MESSAGE.
   */
  answer(body: Body<'PLAIN_AUTH'>, serverKey: Buffer): string {
    if (this.current !== 'auth' || !this.nonce) throw new P2PError('P2P_UNEXPECTED_MESSAGE', 'PLAIN_AUTH without a PLAIN_CHALLENGE');
    const ok = verifyPayload(body.publicKey, plainAuthPayload(this.nonce, serverKey), body.signature);
    this.nonce = undefined;
    if (!ok) throw new P2PError('P2P_BAD_SIGNATURE', 'PLAIN_AUTH: the signature does not prove that key for this connection');
    return peerIdOf(body.publicKey);
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
