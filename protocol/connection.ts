/**
 * A framed, multiplexed connection: several requests in flight each way, matched by request id, with
 * timeouts, cancellation, limits and backpressure. Policy (who may ask what) lives in the daemons; this
 * file only keeps the bytes honest.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import { afterPendingReads, setDeadline, systemClock, type Clock, type Timer } from './clock.js';
import {
  ConnectionClosedError,
  isErrorCode,
  MalformedMessageError,
  P2PError,
  ProtocolError,
  RemoteError,
  TimeoutError,
  toP2PError,
} from './errors.js';
import { decodeBody, encodeFrame, encodeFrameHead, encodeFrameWith, encodeHeaderFor, Framer, type EncodedBody, DEFAULT_MAX_BODY_BYTES, PROTOCOL_VERSION, SCRATCH_BYTES, type Frame, type FrameHeader } from './framer.js';
import { frameBuffers } from './frame-buffers.js';
import { Messages, type Body, type MessageName } from './messages.js';
import { isTlsSocket, remoteKey } from './tls-key.js';
import type { TlsDialOptions } from './tls.js';

export interface ConnectionOptions {
  maxBodyBytes?: number;
  /** Incoming requests being handled at once; more get P2P_TOO_MANY_REQUESTS. */
  maxInFlight?: number;
  /** Default timeout of outgoing requests. */
  requestTimeoutMs?: number;
  /** A frame whose first byte has arrived must be complete within this (defeats byte dribbling). */
  readTimeoutMs?: number;
  /** Nothing received for this long closes the connection (0: never). */
  idleTimeoutMs?: number;
  logger?: Logger;
  clock?: Clock;
  /**
   * The socket was created with `onread` (see `dial`): reads land where the framer says, and this is the
   * buffer the socket reads into until the connection exists.
   */
  readScratch?: Buffer;
}

/** Buffers that a response body can be read straight into (a pool of chunk buffers). */
export interface BodyBuffers {
  /** A buffer of at least `bytes`, or undefined: the body is then buffered by the connection as usual. */
  acquire(bytes: number): Buffer | undefined;
  /** Takes back a buffer that acquire gave, or any view of it. */
  release(buf: Buffer): void;
}

export interface IncomingRequest<N extends MessageName = MessageName> {
  readonly name: N;
  readonly requestId: number;
  readonly body: Body<N>;
}

export type RequestHandler = (req: IncomingRequest, conn: Connection) => void | Promise<void>;

export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called with events the other side sends under this request's id (progress). */
  onEvent?: (name: MessageName, body: unknown) => void;
  /**
   * Read the answer's body straight into a buffer from here (a chunk lands in place, never copied). When
   * the request resolves, the answer's buffer fields are views of that buffer and the caller owns it: it
   * gives it back with `into.release(...)` once done. When the request fails, the connection gives it back.
   */
  into?: BodyBuffers;
}

interface Pending {
  expect: MessageName;
  resolve(body: unknown): void;
  reject(err: Error): void;
  timer: Timer | undefined;
  onEvent: RequestOptions['onEvent'];
  into: BodyBuffers | undefined;
  /** The buffer from `into` the answer's body is being read into. */
  sunk: Buffer | undefined;
}

/**
 * A logger that drops everything, for code run without one (tests, the CLI). Not pino itself: loading
 * pino costs `p2p` about 40 files at every start.
 */
export const silentLogger: Logger = makeSilentLogger();

function makeSilentLogger(): Logger {
  const noop = (): void => undefined;
  const logger: Record<string, unknown> = {
    level: 'silent',
    fatal: noop,
    error: noop,
    warn: noop,
    info: noop,
    debug: noop,
    trace: noop,
    silent: noop,
    flush: noop,
    isLevelEnabled: () => false,
    bindings: () => ({}),
    setBindings: noop,
  };
  logger.child = () => logger;
  return logger as unknown as Logger;
}

let connectionCounter = 0;

export class Connection extends EventEmitter {
  readonly id = ++connectionCounter;
  readonly remoteAddress: string;
  readonly remotePort: number;
  private readonly framer: Framer;
  private readonly pending = new Map<number, Pending>();
  private readonly cancelled = new Set<number>();
  /** Ids of incoming requests being handled (a CANCEL for anything else is ignored). */
  private readonly incoming = new Set<number>();
  private nextRequestId = 1;
  private inFlight = 0;
  private framesIn = 0;
  private closed = false;
  private closeError: P2PError | undefined;
  private readTimer: Timer | undefined;
  private idleTimer: Timer | undefined;
  private handler: RequestHandler | undefined;
  private readonly maxInFlight: number;
  private readonly requestTimeoutMs: number;
  private readonly readTimeoutMs: number;
  private idleTimeoutMs: number;
  readonly clock: Clock;
  /** Body buffers of failed requests, given back once no socket read can still land in them. */
  private retiring: Array<{ buf: Buffer; into: BodyBuffers }> = [];
  readonly log: Logger;

  /** When bytes last came in (the connection's clock; 0: never). */
  lastReadAt = 0;

  constructor(readonly socket: net.Socket, options: ConnectionOptions = {}) {
    super();
    this.framer = new Framer(options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES, (h) => this.sinkFor(h), options.readScratch);
    this.maxInFlight = options.maxInFlight ?? 64;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.readTimeoutMs = options.readTimeoutMs ?? 30_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 0;
    this.clock = options.clock ?? systemClock;
    this.remoteAddress = normalizeHost(socket.remoteAddress ?? '');
    this.remotePort = socket.remotePort ?? 0;
    this.log = (options.logger ?? silentLogger).child({ conn: this.id, remote: `${this.remoteAddress}:${this.remotePort}` });
    socket.setNoDelay(true);
    // Over TLS, writes leave one buffer at a time. Node's stream layer hands the writes queued behind one
    // in progress to the TLS layer as one writev, and the TLS layer first copies them all into one fresh
    // allocation: for a chunk and whatever was queued with it, 1 MiB of new memory and its page faults per
    // chunk sent. Without `_writev` the queue goes out buffer by buffer, each encrypted where it lies.
    if (isTlsSocket(socket)) (socket as unknown as { _writev: unknown })._writev = null;
    if (!options.readScratch) socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('drain', () => {
      if (!this.closed) socket.resume();
      this.emit('drain');
    });
    socket.on('error', (err) => {
      if (!this.closed) this.closeError ??= toP2PError(err);
    });
    socket.on('close', () => this.onClose());
    this.touch();
  }

  /** Sets the function that answers incoming requests. */
  onRequest(handler: RequestHandler): this {
    this.handler = handler;
    return this;
  }

  /**
   * The Ed25519 key (raw 32 bytes) the other side proved in the TLS handshake; undefined on a plain
   * socket (the control socket) or when it presented no certificate (an admin).
   */
  get remoteKey(): Buffer | undefined {
    if (!isTlsSocket(this.socket)) return undefined;
    this.remoteKeyCache ??= remoteKey(this.socket) ?? null;
    return this.remoteKeyCache ?? undefined;
  }

  private remoteKeyCache: Buffer | null | undefined;

  /** Bytes written but not yet handed to the kernel (a peer that does not read makes this grow). */
  get unsentBytes(): number {
    return this.socket.writableLength;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends a request and resolves with the body of the expected answer; an ERROR answer rejects. */
  request<N extends MessageName, R extends MessageName>(
    name: N,
    body: Body<N>,
    expect: R,
    options: RequestOptions = {},
  ): Promise<Body<R>> {
    if (this.closed) return Promise.reject(this.closeError ?? new ConnectionClosedError());
    const requestId = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xfffffffe ? 1 : this.nextRequestId + 1;
    return new Promise<Body<R>>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
      const entry: Pending = {
        expect,
        resolve: resolve as (b: unknown) => void,
        reject,
        onEvent: options.onEvent,
        into: options.into,
        sunk: undefined,
        timer:
          timeoutMs > 0
            ? // The answer may be in the socket, unread behind our own stall: look once more after the reads.
              setDeadline(
                this.clock,
                () => {
                  if (this.pending.get(requestId) !== entry) return;
                  this.pending.delete(requestId);
                  this.retireSink(requestId, entry);
                  this.sendEvent('CANCEL', { requestId });
                  // entry.reject: with a signal, it also takes the abort listener off (reject alone left it on).
                  entry.reject(new TimeoutError(`${name} to ${this.remoteAddress}:${this.remotePort}`, timeoutMs));
                },
                timeoutMs,
              )
            : undefined,
      };
      this.pending.set(requestId, entry);
      if (options.signal) {
        const signal = options.signal;
        const onAbort = (): void => {
          if (!this.pending.has(requestId)) return;
          this.pending.delete(requestId);
          entry.timer?.cancel();
          this.retireSink(requestId, entry);
          this.sendEvent('CANCEL', { requestId });
          reject(new P2PError('P2P_CONNECTION_CLOSED', `${name} cancelled`));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        const settle = <T>(fn: (v: T) => void) => (v: T): void => {
          signal.removeEventListener('abort', onAbort);
          fn(v);
        };
        entry.resolve = settle(entry.resolve);
        entry.reject = settle(entry.reject);
      }
      try {
        // Not this.write: pausing here would stop us reading the answers that let the other side drain.
        this.socket.write(encodeFrame(name, requestId, body));
      } catch (err) {
        this.pending.delete(requestId);
        entry.timer?.cancel();
        reject(toP2PError(err));
      }
    });
  }

  /**
   * Answers request `requestId`. Returns false when the socket buffer is full (see waitDrain). A large
   * answer is written into reused memory (protocol/frame-buffers.ts), given back once the socket is done
   * with it: its write callback runs after the bytes have left (or been encrypted), or with an error.
   */
  reply<N extends MessageName>(requestId: number, name: N, body: Body<N>): boolean {
    this.forget(requestId);
    if (this.closed) return false;
    const { frame, taken } = encodeFrameWith(name, requestId, body, frameBuffers);
    return this.write(frame, taken && (() => frameBuffers.give(taken)));
  }

  /**
   * Answers request `requestId` with a body encoded beforehand (encodeBody), shared by many answers: only
   * the frame's header is made here, and the body goes out as it is, never copied.
   */
  replyEncoded<N extends MessageName>(requestId: number, body: EncodedBody<N>): boolean {
    this.forget(requestId);
    if (this.closed) return false;
    this.socket.write(encodeHeaderFor(requestId, body));
    return this.write(body.bytes);
  }

  replyError(requestId: number, err: unknown): boolean {
    const e = toP2PError(err);
    this.forget(requestId);
    if (this.closed) return false;
    return this.write(encodeFrame('ERROR', requestId, { code: e.code, message: truncate(e.message, 1000) }));
  }

  /**
   * Answers with a frame whose last field (`rest`, chunk data) is `tailBytes` bytes already in `buf` at
   * `tailAt`: the frame's head is written into the room before them and the frame leaves in one contiguous
   * write, the data never copied. One write matters over TLS: Node's TLS layer gathers a write of several
   * buffers into one fresh allocation before encrypting it (for a chunk, 1 MiB of new memory and its page
   * faults every time). `onFlushed` runs once the socket is done with `buf` (so it may be reused).
   */
  replyInPlace<N extends MessageName>(requestId: number, name: N, head: Body<N>, buf: Buffer, tailAt: number, tailBytes: number, onFlushed?: () => void): boolean {
    this.forget(requestId);
    if (this.closed) {
      onFlushed?.();
      return false;
    }
    const headBuf = encodeFrameHead(name, requestId, head, tailBytes);
    const start = tailAt - headBuf.length;
    if (start < 0) throw new RangeError(`${headBuf.length} bytes of ${name} head do not fit in ${tailAt} bytes of room`);
    headBuf.copy(buf, start);
    return this.write(buf.subarray(start, tailAt + tailBytes), () => onFlushed?.());
  }

  sendEvent<N extends MessageName>(name: N, body: Body<N>, requestId = 0): boolean {
    return this.closed ? false : this.sendFrame(encodeFrame(name, requestId, body));
  }

  /**
   * Writes a whole frame encoded by the caller, the same bytes for many connections (a tracker telling
   * every peer of an event encodes it once). The caller does not change `frame` afterwards.
   */
  sendFrame(frame: Buffer): boolean {
    if (this.closed) return false;
    return this.write(frame);
  }

  /** An incoming request is answered: drop what we kept about it. */
  private forget(requestId: number): void {
    this.incoming.delete(requestId);
    this.cancelled.delete(requestId);
  }

  /** True once the other side withdrew request `requestId` (its answer would be dropped). */
  isCancelled(requestId: number): boolean {
    return this.cancelled.has(requestId);
  }

  /** Resolves when the socket's write buffer has drained (or the connection closed). */
  waitDrain(): Promise<void> {
    if (this.closed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.off('drain', done);
        this.off('close', done);
        resolve();
      };
      this.on('drain', done);
      this.on('close', done);
    });
  }

  /**
   * Closes the connection. With an error, the other side first gets an ERROR frame (request id 0) that
   * says why; the socket is destroyed shortly after if the other side does not close its end.
   */
  close(err?: P2PError): void {
    if (this.closed) return;
    if (err) {
      this.closeError = err;
      try {
        this.socket.write(encodeFrame('ERROR', 0, { code: err.code, message: truncate(err.message, 1000) }));
      } catch {
        // the socket may already be gone; destroying below is enough
      }
    }
    this.closed = true;
    this.stopTimers();
    // Bad input: read no more of it (the rest of an 8 MiB frame would only be read to be dropped, issue 10).
    const badInput = err instanceof ProtocolError;
    if (badInput) this.socket.pause();
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 500);
    // A socket that reads no more never sees the other side's FIN, and a TLS socket may wait on the other
    // side's close_notify: only this timer ends them, so it must run.
    if (!badInput && !isTlsSocket(this.socket)) t.unref();
    this.socket.once('close', () => clearTimeout(t));
    this.failPending(err ?? new ConnectionClosedError());
  }

  /** Destroys at once, without a last word. */
  destroy(err?: P2PError): void {
    if (err) this.closeError ??= err;
    this.closed = true;
    this.stopTimers();
    this.socket.destroy();
    this.failPending(err ?? new ConnectionClosedError());
  }

  /** Writes `buf`; `onFlushed` runs once the socket is done with it (see reply). */
  private write(buf: Buffer, onFlushed?: () => void): boolean {
    const ok = this.socket.write(buf, onFlushed);
    // Backpressure: stop reading new requests while our answers cannot leave.
    if (!ok) this.socket.pause();
    return ok;
  }

  private touch(): void {
    if (this.idleTimeoutMs <= 0 || this.closed) return;
    this.idleTimer?.cancel();
    // Traffic waiting unread behind our own stall re-arms the timer (touch): then this one is moot.
    const timer = setDeadline(
      this.clock,
      () => {
        if (this.idleTimer !== timer || this.closed) return;
        this.log.info({ code: 'P2P_IDLE_TIMEOUT' }, 'closing idle connection');
        this.close(new P2PError('P2P_IDLE_TIMEOUT', `no traffic for ${this.idleTimeoutMs} ms`));
      },
      this.idleTimeoutMs,
    );
    this.idleTimer = timer;
  }

  /** Closes the connection after `ms` without traffic from now on (0: never), in place of the limit it had. */
  setIdleTimeout(ms: number): void {
    this.idleTimeoutMs = ms;
    if (ms <= 0) {
      this.idleTimer?.cancel();
      this.idleTimer = undefined;
    } else this.touch();
  }

  /** User-buffer mode: where the socket's next read goes (called after every read, see `dial`). */
  readBuffer(): Buffer {
    // The read that just finished was the last one that could land in a retired body buffer.
    if (this.retiring.length > 0) this.releaseRetired();
    return this.framer.readBuffer();
  }

  /** User-buffer mode: `n` bytes were read into the buffer `readBuffer` gave. */
  onRead(n: number): void {
    if (this.closed) return;
    this.consume(() => this.framer.commitRead(n, (frame) => this.onFrame(frame)));
  }

  /** Bytes read from the socket outside `onread` ('data' events, or reads before the connection existed). */
  receive(chunk: Buffer): void {
    if (this.closed) return;
    if (this.retiring.length > 0) this.releaseRetired();
    this.consume(() => this.framer.push(chunk, (frame) => this.onFrame(frame)));
  }

  /** A response's header arrived: read its body into the buffer its request brought, if it brought one. */
  private sinkFor(h: FrameHeader): Buffer | undefined {
    if (h.name === 'ERROR') return undefined;
    const entry = this.pending.get(h.requestId);
    if (!entry?.into || entry.sunk || entry.expect !== h.name) return undefined;
    entry.sunk = entry.into.acquire(h.bodyBytes);
    return entry.sunk;
  }

  /** A request failed: its body buffer goes back, but only once no read can still land in it. */
  private retireSink(requestId: number, entry: Pending): void {
    const buf = entry.sunk;
    if (!buf || !entry.into) return;
    entry.sunk = undefined;
    this.framer.withdrawSink(requestId);
    this.retiring.push({ buf, into: entry.into });
  }

  private releaseRetired(): void {
    const list = this.retiring;
    this.retiring = [];
    for (const { buf, into } of list) into.release(buf);
  }

  private consume(feed: () => void): void {
    this.lastReadAt = this.clock.now();
    this.touch();
    const framesBefore = this.framesIn;
    try {
      feed();
    } catch (err) {
      const e = err instanceof P2PError ? err : new MalformedMessageError('frame', err);
      this.log.warn({ code: e.code, err: e.message }, 'bad input from peer; closing connection');
      this.emit('protocolError', e);
      this.close(e);
      return;
    }
    if (this.closed) return;
    if (this.framesIn !== framesBefore && this.readTimer) {
      // The deadline belongs to the frame being read: a new frame starts a new one.
      this.readTimer.cancel();
      this.readTimer = undefined;
    }
    if (this.framer.pendingBytes > 0) {
      if (!this.readTimer) {
        // The rest of the frame may be waiting unread behind our own stall: a completed frame clears the timer.
        const timer = setDeadline(
          this.clock,
          () => {
            if (this.readTimer !== timer || this.closed) return;
            this.log.warn({ code: 'P2P_READ_TIMEOUT' }, 'frame not completed in time; closing connection');
            this.close(new P2PError('P2P_READ_TIMEOUT', `a frame took more than ${this.readTimeoutMs} ms to arrive`));
          },
          this.readTimeoutMs,
        );
        this.readTimer = timer;
      }
    } else if (this.readTimer) {
      this.readTimer.cancel();
      this.readTimer = undefined;
    }
  }

  private onFrame(frame: Frame): void {
    this.framesIn++;
    if (this.closed) return;
    const { kind } = Messages[frame.name];
    if (kind === 'response') return this.onResponse(frame);
    if (kind === 'event') return this.onEventFrame(frame);
    return this.onIncomingRequest(frame);
  }

  private onResponse(frame: Frame): void {
    if (frame.requestId === 0) {
      // An unsolicited ERROR: the other side's last word before it closes.
      if (frame.name === 'ERROR') {
        const body = decodeBody('ERROR', frame.body);
        const code = isErrorCode(body.code) ? body.code : 'P2P_INTERNAL';
        // Our frames are well formed: release 0.1 said P2P_BAD_VERSION only to a version it did not speak.
        this.closeError =
          code === 'P2P_BAD_VERSION'
            ? new RemoteError('P2P_VERSION', `the other side is an older release that does not speak p2pshare protocol version ${PROTOCOL_VERSION} (it said: ${body.message}): upgrade the older of the two`)
            : new RemoteError(code, body.message);
        this.emit('remoteError', this.closeError);
        return;
      }
      throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${frame.name} without a request`);
    }
    const entry = this.pending.get(frame.requestId);
    if (!entry) return; // answer to a request that timed out or was cancelled
    this.pending.delete(frame.requestId);
    entry.timer?.cancel();
    try {
      this.settleResponse(frame, entry);
    } catch (err) {
      this.retireSink(frame.requestId, entry);
      throw err;
    }
  }

  private settleResponse(frame: Frame, entry: Pending): void {
    if (frame.name === 'ERROR') {
      this.retireSink(frame.requestId, entry);
      let body: Body<'ERROR'>;
      try {
        body = decodeBody('ERROR', frame.body);
      } catch (err) {
        entry.reject(err as Error);
        throw err;
      }
      entry.reject(new RemoteError(isErrorCode(body.code) ? body.code : 'P2P_INTERNAL', body.message));
      return;
    }
    if (frame.name !== entry.expect) {
      const err = new P2PError('P2P_UNEXPECTED_MESSAGE', `expected ${entry.expect}, got ${frame.name}`);
      entry.reject(err);
      throw err;
    }
    let decoded: unknown;
    try {
      decoded = decodeBody(frame.name, frame.body);
    } catch (err) {
      entry.reject(err as Error);
      throw err;
    }
    entry.resolve(decoded);
  }

  private onEventFrame(frame: Frame): void {
    const body = decodeBody(frame.name, frame.body);
    if (frame.name === 'CANCEL') {
      const id = (body as Body<'CANCEL'>).requestId;
      if (this.incoming.has(id)) this.cancelled.add(id);
      return;
    }
    if (frame.requestId !== 0) {
      this.pending.get(frame.requestId)?.onEvent?.(frame.name, body);
      return;
    }
    this.emit('event', frame.name, body);
  }

  private onIncomingRequest(frame: Frame): void {
    let body: unknown;
    try {
      body = decodeBody(frame.name, frame.body);
    } catch (err) {
      // Malformed request: answer it (so the client knows why), then the framer's caller closes.
      this.replyError(frame.requestId, err);
      throw err;
    }
    if (!this.handler) {
      this.replyError(frame.requestId, new P2PError('P2P_UNEXPECTED_MESSAGE', `${frame.name} is not served here`));
      return;
    }
    if (this.inFlight >= this.maxInFlight) {
      this.replyError(frame.requestId, new P2PError('P2P_TOO_MANY_REQUESTS', `more than ${this.maxInFlight} requests in flight`));
      return;
    }
    this.inFlight++;
    this.incoming.add(frame.requestId);
    const done = (): void => {
      this.inFlight--;
    };
    const req = { name: frame.name, requestId: frame.requestId, body } as IncomingRequest;
    let result: void | Promise<void>;
    try {
      result = this.handler(req, this);
    } catch (err) {
      done();
      this.answerFailure(req, err);
      return;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(done, (err: unknown) => {
        done();
        this.answerFailure(req, err);
      });
    } else {
      done();
    }
  }

  private answerFailure(req: IncomingRequest, err: unknown): void {
    const e = toP2PError(err);
    if (e.code === 'P2P_INTERNAL') this.log.error({ err, request: req.name }, 'request handler failed');
    this.replyError(req.requestId, e);
    if (e instanceof ProtocolError) this.close(e);
  }

  private stopTimers(): void {
    this.readTimer?.cancel();
    this.idleTimer?.cancel();
    this.readTimer = this.idleTimer = undefined;
  }

  private failPending(err: P2PError): void {
    for (const [requestId, entry] of this.pending) {
      entry.timer?.cancel();
      this.retireSink(requestId, entry);
      entry.reject(err);
    }
    this.pending.clear();
  }

  private onClose(): void {
    const err = this.closeError;
    this.closed = true;
    this.stopTimers();
    this.failPending(err ?? new ConnectionClosedError(`connection to ${this.remoteAddress}:${this.remotePort} closed`));
    this.releaseRetired(); // the socket reads nothing more
    this.emit('close', err);
  }
}

function truncate(s: string, max: number): string {
  return s.length > max ? s.slice(0, max) : s;
}

/** '::ffff:127.0.0.1' -> '127.0.0.1', so IPv4 peers have one spelling everywhere (blacklist, logs). */
export function normalizeHost(host: string): string {
  return host.startsWith('::ffff:') && net.isIPv4(host.slice(7)) ? host.slice(7) : host;
}

export interface DialOptions extends ConnectionOptions {
  connectTimeoutMs?: number;
  /**
   * With TLS: once the TCP connection is made, the TLS handshake must end within this (default: within
   * connectTimeoutMs of the start, as a whole). A busy server takes connections from its queue at its own
   * pace (Node takes one per turn of its event loop), and one abandoned in the queue is work lost for both.
   */
  secureTimeoutMs?: number;
  /** TLS 1.3 (every link between hosts): what we present and how the server's key is checked. */
  tls?: TlsDialOptions | undefined;
  /** Aborting gives up the connection attempt at once (P2P_CONNECT_FAILED); a connection already made is the caller's. */
  signal?: AbortSignal | undefined;
  /** The local address to connect from (default: the system's choice). */
  localAddress?: string | undefined;
}

/**
 * Opens a connection and wraps it: TCP, TLS 1.3 when `options.tls` is given (the key the server proved is
 * checked before anything is sent), or a Unix socket when `path` is given. Reads go where the
 * connection's framer says, through `onread` (TLS too: Node decrypts straight into our buffer), so a
 * chunk's body lands in its pooled buffer without a copy in JavaScript or a buffer per read.
 */
export async function dial(target: { host: string; port: number } | { path: string }, options: DialOptions = {}): Promise<Connection> {
  const connectTimeoutMs = options.connectTimeoutMs ?? 3000;
  const tlsOptions = 'host' in target ? options.tls : undefined;
  const label = 'path' in target ? target.path : formatAddress(target.host, target.port);
  // The TLS machinery (node:tls, certificates, identities) only when a TLS link is dialled: `p2p` talks
  // to its daemon over a Unix socket, and loading it would cost each command about 30 ms.
  const secure = tlsOptions ? (tlsModule ??= await import('./tls.js')) : undefined;
  return new Promise((resolve, reject) => {
    const readScratch = Buffer.allocUnsafe(SCRATCH_BYTES);
    let conn: Connection | undefined;
    // Bytes read before the connection exists (TLS can deliver some with the end of its handshake).
    const early: Buffer[] = [];
    const onread = {
      buffer: (): Buffer => conn?.readBuffer() ?? readScratch,
      callback: (n: number): boolean => {
        if (conn) conn.onRead(n);
        else early.push(Buffer.from(readScratch.subarray(0, n)));
        return true;
      },
    };
    // tls.connect hands localAddress to net.connect, though its typings leave it out.
    const local = options.localAddress === undefined ? {} : { localAddress: options.localAddress };
    const socket =
      'path' in target
        ? net.connect({ path: target.path, onread })
        : tlsOptions && secure
          ? secure.tlsConnect(tlsWithOnread({ ...secure.clientOptions(tlsOptions, target.host), host: target.host, port: target.port, ...local }, onread))
          : net.connect({ port: target.port, host: target.host, ...local, onread });
    const onAbort = (): void => fail(new P2PError('P2P_CONNECT_FAILED', `gave up connecting to ${label}`));
    let settled = false;
    const fail = (err: P2PError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(err);
    };
    const what = tlsOptions ? 'complete a TLS handshake' : 'accept a connection';
    // A deadline that passes during our own stall looks once more after the reads (the server's answer may be unread).
    // Which deadline runs: a late one fails the dial only if its step is still the one under way.
    let step = 0;
    const late = (err: P2PError) => {
      const mine = step;
      return (): void => afterPendingReads(() => {
        if (step === mine) fail(err);
      });
    };
    let timer = setTimeout(late(new P2PError('P2P_CONNECT_FAILED', `${label} did not ${what} in ${connectTimeoutMs} ms`)), connectTimeoutMs);
    const { secureTimeoutMs } = options;
    if (tlsOptions && secureTimeoutMs !== undefined) {
      socket.once('connect', () => {
        clearTimeout(timer);
        step++;
        timer = setTimeout(late(new P2PError('P2P_CONNECT_FAILED', `${label} took a TCP connection but did not complete a TLS handshake in ${secureTimeoutMs} ms`)), secureTimeoutMs);
      });
    }
    socket.once(tlsOptions ? 'secureConnect' : 'connect', () => {
      if (settled) return;
      socket.removeListener('error', onError);
      if (tlsOptions && secure) {
        try {
          secure.verifyServer(socket as tls.TLSSocket, tlsOptions);
        } catch (err) {
          return fail(toP2PError(err));
        }
      }
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      conn = new Connection(socket, { ...options, readScratch });
      for (const bytes of early) conn.receive(bytes);
      resolve(conn);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      const tlsFailed = err.code?.startsWith('ERR_SSL') || err.code?.startsWith('ERR_TLS');
      fail(new P2PError('P2P_CONNECT_FAILED', tlsFailed ? `no TLS 1.3 handshake with ${label} (${err.message})` : `cannot connect to ${label}: ${err.code ?? err.message}`, { cause: err }));
    };
    socket.once('error', onError);
    // Last, once the deadline and the error handler exist (a signal aborted already used to throw here
    // before either did, and left the socket's connection error unhandled: a crash).
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

let tlsModule: typeof import('./tls.js') | undefined;

/** tls.connect takes `onread` like net.connect when it opens the socket itself (Node >= 14.16; @types/node lacks it). */
function tlsWithOnread(options: tls.ConnectionOptions, onread: net.OnReadOpts): tls.ConnectionOptions {
  return Object.assign(options, { onread });
}

export function formatAddress(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}
