/**
 * The peer's session with the tracker cluster. It keeps the ordered tracker list, uses the acting main,
 * fails over to the next tracker within about a second when the one in use fails or stops answering,
 * re-announces every shared file on each (re)connection, and moves to a new main when told of one.
 * Events: 'state' (its state changed), 'session' (a new tracker session is up: what was pushed while there
 * was none may be missed), 'blacklist' (a BLACKLIST_CHANGED push).
 * While no main answers it stays with a backup: reads (search, lookup, blacklist checks) work there,
 * and writes are retried until a main takes them or the retry budget runs out.
 *
 * With more than one tracker it also keeps a standby session: one more session, with the tracker next in
 * rank after the one in use (the one that takes over if the main dies), on which it only pings, slowly.
 * When the main's session closes, or the peer is told to move to the standby's tracker, that session
 * becomes the one in use at once: no handshake, so no wait in the crowd of peers that every takeover and
 * takeback brings to one tracker, and reads go on meanwhile (a backup answers them from its copy).
 * A standby left with a worse-ranked tracker (the better one was down) tries the better one now and then
 * and moves there once it answers: when a main returns, the fleet's standby sessions come to it over half
 * a minute at the pace the peers choose, and the acting main hands command back once it has most of them
 * (daemon/raft/node.ts), so the takeback is a promotion too.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  dial,
  formatAddress,
  P2PError,
  parseAddress,
  RemoteError,
  toP2PError,
  systemClock,
  type Address,
  type Clock,
  type Timer,
  type Body,
  type Connection,
  type KnownKeys,
  type MessageName,
  type PinnedAddress,
  type TlsIdentity,
  checkPinnedKey,
  PEER_FEATURES,
  peerIdOf,
} from '../protocol/index.js';
import { PEER_DEFAULTS } from './defaults.js';
import { clientHandshake } from './handshake.js';

export type TrackerClientState = 'connecting' | 'connected' | 'blacklisted' | 'closed';

export interface TrackerClientOptions {
  /** In rank order; an entry may pin the id of the tracker's key. */
  trackers: PinnedAddress[];
  /** Our key's certificate, presented to the trackers (our peer id is its key's). */
  identity: TlsIdentity;
  /** Keys trackers proved on first contact, by address (peerd's database). */
  knownTrackers: KnownKeys;
  /** The port other peers should use to reach this one. */
  advertisePort: () => number;
  /** Every file to announce, called on each (re)connection. */
  announce: () => Body<'REGISTER'>['files'];
  logger: Logger;
  connectTimeoutMs?: number;
  /** Once TCP is connected, the TLS handshake's wait (default PEER_DEFAULTS.trackerSecureTimeoutMs). */
  secureTimeoutMs?: number;
  /** How long a request waits for a tracker session before it fails. */
  waitMs?: number;
  /** How long a request keeps retrying across failovers and takeovers (default 6000 ms). */
  retryMs?: number;
  /** Timers and time (the system clock unless a test passes a virtual one). */
  clock?: Clock;
  /** How long to wait before the next round of connection attempts (default: reconnectBackoff). */
  retry?: RetryStrategy;
  /** Moves to a new main within a random delay below this (default PEER_DEFAULTS.trackerMoveSpreadMs; 0 at once). */
  moveSpreadMs?: number;
  /** Random numbers in [0, 1) for those delays (Math.random unless a test passes its own). */
  random?: () => number;
  /** The local address its connections to the trackers come from (default: the system's choice). */
  localAddress?: string;
  /** Keep a standby session with the tracker next in rank (default true; it needs two trackers or more). */
  standby?: boolean;
  /** The standby session is opened within a random delay below this (default PEER_DEFAULTS.trackerStandbySpreadMs). */
  standbySpreadMs?: number;
  /**
   * A standby session with a worse-ranked tracker than it could have is moved to a better one every 0.5-1.5
   * times this (default PEER_DEFAULTS.trackerStandbyUpgradeMs; 0: never).
   */
  standbyUpgradeMs?: number;
}

/** What a tracker told of itself and of us when a session was opened (WELCOME), and kept since. */
type SessionFacts = Pick<Body<'WELCOME'>, 'role' | 'primary' | 'term' | 'observedHost' | 'leaseMs'>;

/** The standby session: open and past its handshake, with the tracker next in rank after the one in use. */
interface Standby {
  conn: Connection;
  label: string;
  /** What its tracker said it is, and which tracker it named as main: in WELCOME, then in TRACKER_CHANGED. */
  role: string;
  primary: string;
  term: number;
  observedHost: string;
  leaseMs: number;
  ping: Timer;
}

/**
 * How long to wait before the next round of connection attempts, after `failures` rounds in a row in
 * which no tracker took a session; `blacklisted`: the last answer was a ban.
 */
export type RetryStrategy = (failures: number, blacklisted: boolean) => number;

/** 200 ms, doubling to 2 s; 5 s after a ban (a lifted ban is also noticed when a command asks). */
export const reconnectBackoff: RetryStrategy = (failures, blacklisted) => (blacklisted ? 5000 : Math.min(2000, 100 * 2 ** Math.min(failures, 5)));

/** Errors after which the same request may succeed on another session or a moment later. */
const RETRIABLE = new Set(['P2P_CONNECTION_CLOSED', 'P2P_TIMEOUT', 'P2P_NOT_PRIMARY', 'P2P_SHUTTING_DOWN', 'P2P_STALE_TERM', 'P2P_REPLICATION_FAILED', 'P2P_CONNECT_FAILED']);

const REGISTER_BATCH = 5000;
const labelOf = (a: Address): string => formatAddress(a.host, a.port);
/** Heartbeats at least this often, whatever lease a tracker tells (setInterval takes at most 2^31 - 1 ms). */
const MAX_HEARTBEAT_MS = 60_000;
/** A heartbeat's answer is awaited at least this long: at the default lease, a hung tracker is left within about a second. */
const HEARTBEAT_PATIENCE_MS = 750;
/** A standby session that could not be opened is tried again after this, doubling up to a minute. */
const STANDBY_RETRY_MS = 2000;
/** Standby sessions open over this many of the main's heartbeat leases, at least (standbySpread). */
const STANDBY_SPREAD_LEASES = 4;
const STANDBY_RETRY_MAX_MS = 60_000;
/**
 * The standby pings every 0.6 of the lease its tracker told: a tracker closes a session silent for
 * --lease-ms, so this leaves room for a stall of 0.4 of it. A backup of this release tells a standby
 * --lease-ms itself (PEER_FEATURES.standby: 10 s by default, a ping every 6 s); an older one tells the
 * heartbeat lease, and the standby then pings at about half the pace of the session in use.
 */
const STANDBY_PING_SHARE = 0.6;
/** A standby session's WELCOME may take this long once TLS is up (see open). */
const STANDBY_HELLO_MS = 10_000;
/** A move to a main that could not be reached is tried this many more times before the peer reconnects. */
const MOVE_RETRIES = 3;
/** With no session, the reconnect loop waits this long at most for a standby or a move on its way. */
const LOOP_WAIT_MS = 2000;

export class TrackerClient extends EventEmitter {
  private blacklistCheckedAt = 0;
  state: TrackerClientState = 'connecting';
  conn: Connection | undefined;
  current: string | undefined;
  role = 'unknown';
  term = 0;
  observedHost = '';
  /** The lease of the session in use (WELCOME, or a later LEASE): it pings every third of it. */
  leaseMs = 0;
  /** The heartbeat lease a main told last: it grows with the fleet (daemon/tracker.ts, heartbeatLeaseMs). */
  private mainLeaseMs = 0;
  private preferred: string | undefined;
  /** A tracker that stopped answering heartbeats: tried last until a session with it works again. */
  private unresponsive: string | undefined;
  private loopRunning = false;
  private blacklistReason = '';
  private pingTimer: Timer | undefined;
  private readonly clock: Clock;
  private readonly retry: RetryStrategy;
  private readonly moveSpreadMs: number;
  private readonly random: () => number;
  private moveTimer: Timer | undefined;
  /** A session with a new main is being opened while the one in use stays (switchTo). */
  private moving = false;
  /** A move asked for while one was under way. */
  private nextMove: { address: string; stay: (() => void) | undefined; told: boolean } | undefined;
  /** Settles when the move under way (switchTo) has its answer. */
  private moveDone: Promise<void> = Promise.resolve();
  /** The main the tracker in use named last (WELCOME, TRACKER_CHANGED; itself when it is main). */
  private mainNamed = '';
  /** Sessions on which announceOn is running (one at a time per session). */
  private readonly announcing = new WeakSet<Connection>();
  private readonly waiters = new Set<() => void>();
  private lastError = '';
  private failures = 0;
  /** The standby session (see the top of this file), once open. */
  standby: Standby | undefined;
  /** The next attempt to open one, while it is waited for. */
  private standbyTimer: Timer | undefined;
  private standbyOpening = false;
  /** The tracker a standby session is being opened with (a tracker takes one session per peer: see switchTo). */
  private standbyOpeningTo: string | undefined;
  /** A move to that tracker, asked for meanwhile: made with that session once it is open. */
  private moveOnOpen: { stay: (() => void) | undefined; told: boolean } | undefined;
  /** Settles when the standby session being opened is open or failed. */
  private standbyOpened: Promise<void> = Promise.resolve();
  /** The tracker a move is opening a session with (switchTo). */
  private moveTarget: string | undefined;
  /** Moves to an unreachable main tried again in a row (switchTo). */
  private moveRetries = 0;
  /** This client's listeners on each connection, so a connection that changes roles has one set at a time. */
  private readonly connListeners = new WeakMap<Connection, { event: (name: MessageName, body: unknown) => void; close: (err?: P2PError) => void }>();
  private standbyFailures = 0;
  private readonly standbySpreadMs: number;
  private readonly standbyUpgradeMs: number;
  /** The next try to move the standby to a better-ranked tracker (upgradeStandby). */
  private upgradeTimer: Timer | undefined;

  constructor(private readonly opts: TrackerClientOptions) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.retry = opts.retry ?? reconnectBackoff;
    this.moveSpreadMs = opts.moveSpreadMs ?? PEER_DEFAULTS.trackerMoveSpreadMs;
    this.random = opts.random ?? Math.random;
    this.standbySpreadMs = opts.standbySpreadMs ?? PEER_DEFAULTS.trackerStandbySpreadMs;
    this.standbyUpgradeMs = opts.standbyUpgradeMs ?? PEER_DEFAULTS.trackerStandbyUpgradeMs;
  }

  /** The standby session's tracker, while there is one. */
  get standbyAddress(): string | undefined {
    return this.standby?.label;
  }

  /** Resolves after `ms` on this client's clock. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }

  start(): void {
    void this.loop();
  }

  async close(): Promise<void> {
    const conn = this.conn;
    this.setState('closed');
    this.pingTimer?.cancel();
    this.moveTimer?.cancel();
    this.dropStandby();
    if (conn && !conn.isClosed) {
      await conn.request('LEAVE', {}, 'OK', { timeoutMs: 500 }).catch(() => undefined);
      conn.close();
    }
    this.wake();
  }

  private setState(to: TrackerClientState): void {
    if (to === 'blacklisted') this.blacklistCheckedAt = this.clock.now();
    if (to === 'blacklisted' || to === 'closed') this.dropStandby();
    if (this.state === to) return;
    const from = this.state;
    this.state = to;
    this.opts.logger.info({ from, to, tracker: this.current }, `tracker session ${from} -> ${to}`);
    this.emit('state', to);
    this.wake();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** The trackers to try, in order: the main we were told of first, one that stopped answering heartbeats last. */
  private order(): Address[] {
    const list = this.opts.trackers;
    const first = list.filter((a) => labelOf(a) === this.preferred && labelOf(a) !== this.unresponsive);
    const last = list.filter((a) => labelOf(a) === this.unresponsive);
    return [...first, ...list.filter((a) => !first.includes(a) && !last.includes(a)), ...last];
  }

  private async loop(): Promise<void> {
    if (this.loopRunning) return;
    this.loopRunning = true;
    try {
      while (this.state !== 'closed' && (!this.conn || this.conn.isClosed)) {
        // A standby session or a move on its way: dialling that tracker too would make it close one of the
        // two sessions (it keeps one per peer), so they are waited for (2 s at most), and used if they open.
        if (this.standbyOpening || this.moving) await this.settledOrAfter(Promise.all([this.standbyOpened, this.moveDone]), LOOP_WAIT_MS);
        if (this.conn && !this.conn.isClosed) return;
        if (this.promoteStandby('no tracker session')) {
          this.failures = 0;
          return;
        }
        let connected = false;
        for (const addr of this.order()) {
          if ((this.state as TrackerClientState) === 'closed') return;
          // Still opening a session with it: not a second one.
          const label = labelOf(addr);
          if (label === this.standbyOpeningTo || label === this.moveTarget) continue;
          if (await this.tryConnect(addr)) {
            connected = true;
            break;
          }
          if (this.state === 'blacklisted') break;
        }
        if (connected) {
          this.failures = 0;
          return;
        }
        this.failures++;
        await this.sleep(this.retry(this.failures, this.state === 'blacklisted'));
      }
    } finally {
      this.loopRunning = false;
    }
  }

  /** Resolves when `p` settles or after `ms`, whichever comes first. */
  private settledOrAfter(p: Promise<unknown>, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(resolve, ms);
      const done = (): void => {
        timer.cancel();
        resolve();
      };
      p.then(done, done);
    });
  }

  /**
   * Dials and handshakes one tracker; `helloMs`: how long its WELCOME may take once TLS is up (a standby
   * session waits longer: a backup that a whole fleet opens standbys with after a takeover answers late).
   */
  private async open(addr: Address, helloMs = 2000, features: number = this.features()): Promise<{ conn: Connection; welcome: Body<'WELCOME'> }> {
    const label = labelOf(addr);
    const pinned = this.opts.trackers.find((t) => labelOf(t) === label) ?? addr;
    const verify = (key: Buffer | undefined): void => {
      if (checkPinnedKey(pinned, key, this.opts.knownTrackers, 'tracker', '--trackers') === 'learned') {
        const id = peerIdOf(key!);
        this.opts.logger.warn({ tracker: label, id }, `learned the key of tracker ${label} on first contact (${id}); pin it with ${id}@${label} in --trackers`);
      }
    };
    const conn = await dial(addr, {
      connectTimeoutMs: this.opts.connectTimeoutMs ?? PEER_DEFAULTS.trackerConnectTimeoutMs,
      secureTimeoutMs: this.opts.secureTimeoutMs ?? PEER_DEFAULTS.trackerSecureTimeoutMs,
      requestTimeoutMs: 5000,
      logger: this.opts.logger,
      maxBodyBytes: 64 * 1024 * 1024,
      tls: { identity: this.opts.identity, verify },
      localAddress: this.opts.localAddress,
    });
    try {
      return { conn, welcome: await clientHandshake(conn, this.opts.advertisePort(), helloMs, features) };
    } catch (err) {
      conn.destroy();
      throw err;
    }
  }

  private async tryConnect(addr: Address): Promise<boolean> {
    const label = labelOf(addr);
    try {
      const { conn, welcome } = await this.open(addr);
      if (this.conn && !this.conn.isClosed) {
        // A session came up meanwhile (a standby, promoted). With the same tracker, that tracker keeps only
        // the newer session (this one) and closes the other; with another, this one is spare.
        if (label === this.current) this.adopt(conn, welcome, label, welcome.role === 'primary');
        else this.spare(conn, label, welcome);
        return true;
      }
      // A backup names the main: move there, keeping this session until that one is up (reads work on a
      // backup, and after a takeover every peer waits its turn at the new main). The files are announced
      // to the main; if it cannot be reached, the peer stays here and announces them here (announceOn).
      const main = welcome.role !== 'primary' && welcome.primary && welcome.primary !== label && this.known(welcome.primary) ? welcome.primary : undefined;
      this.adopt(conn, welcome, label, main === undefined);
      if (main) this.switchTo(main, () => void this.announceOn(conn, label));
      return true;
    } catch (err) {
      const e = toP2PError(err);
      if (e.code === 'P2P_BLACKLISTED') {
        this.blacklistReason = e.message;
        this.current = label;
        this.setState('blacklisted');
        return false;
      }
      this.lastError = `tracker ${label}: ${e.message}`;
      this.opts.logger.warn({ tracker: label, err: e.message }, `tracker ${label} unreachable (${e.message}); trying the next one`);
      return false;
    }
  }

  /** Makes a session just opened the one in use (and announces the files on it, unless told not to). */
  private adopt(conn: Connection, welcome: SessionFacts, label: string, announce = true, fromStandby = false): void {
    this.role = welcome.role;
    this.mainNamed = welcome.role === 'primary' ? label : welcome.primary;
    // A standby promoted brings the lease told to a standby, not the main's heartbeat lease.
    if (welcome.role === 'primary' && !fromStandby) this.mainLeaseMs = welcome.leaseMs;
    this.term = welcome.term;
    this.observedHost = welcome.observedHost;
    this.attach(conn, label, welcome.leaseMs);
    // Not awaited: the session is usable at once, and a backup takes the announcement only once it is main.
    if (announce) void this.announceOn(conn, label);
  }

  private known(address: string): boolean {
    return this.opts.trackers.some((a) => labelOf(a) === address);
  }

  private attach(conn: Connection, label: string, leaseMs: number): void {
    if (label === this.unresponsive) this.unresponsive = undefined;
    this.moveRetries = 0;
    this.conn = conn;
    this.current = label;
    this.lastError = '';
    this.setState('connected');
    this.emit('session', label);
    this.pingTimer?.cancel();
    let pingTimer = this.heartbeat(conn, label, leaseMs);
    const event = (name: MessageName, body: unknown): void => {
      if (this.conn !== conn) return;
      if (name !== 'LEASE') return this.onEvent(name, body);
      // Its fleet grew or shrank since WELCOME: ping at the new pace (a session left after a move, never).
      if (this.state === 'closed') return;
      pingTimer.cancel();
      const { leaseMs } = body as Body<'LEASE'>;
      // From the main only: a tracker that named another main since tells a standby's --lease-ms.
      if (this.role === 'primary' && this.mainNamed === this.current) this.mainLeaseMs = leaseMs;
      pingTimer = this.heartbeat(conn, label, leaseMs);
    };
    const close = (err?: P2PError): void => {
      // Its own heartbeats only: a session left after a move ends once the next one has its timer.
      pingTimer.cancel();
      if (this.conn !== conn || this.state === 'closed') return;
      if (err?.code === 'P2P_BLACKLISTED') {
        this.blacklistReason = err.message;
        this.setState('blacklisted');
      } else {
        this.conn = undefined;
        // The standby session takes over at once: no handshake, and no wait in the crowd at the next main.
        if (this.promoteStandby(`tracker ${label} connection lost (${err?.message ?? 'closed'})`)) return;
        this.opts.logger.warn({ tracker: label, err: err?.message }, 'tracker connection lost; failing over');
        this.setState('connecting');
      }
      this.conn = undefined;
      // A tracker that dies drops every peer at once: spread their arrival at the next one.
      const delayMs = Math.floor((this.random() * this.moveSpreadMs) / 4);
      this.clock.setTimeout(() => void this.loop(), delayMs);
    };
    this.listen(conn, event, close);
    this.ensureStandby();
  }

  /** Sets this client's listeners on `conn`, in place of any it had there (a connection changes roles). */
  private listen(conn: Connection, event: (name: MessageName, body: unknown) => void, close: (err?: P2PError) => void): void {
    const before = this.connListeners.get(conn);
    if (before) {
      conn.off('event', before.event);
      conn.off('close', before.close);
    }
    this.connListeners.set(conn, { event, close });
    conn.on('event', event);
    conn.on('close', close);
  }

  /** PINGs on `conn` every third of `leaseMs` (this.pingTimer); a tracker that does not answer is left. */
  private heartbeat(conn: Connection, label: string, leaseMs: number): Timer {
    this.leaseMs = leaseMs;
    // Heartbeats: a third of the lease. A tracker tells 900 ms (a hung tracker is left within about a
    // second) unless its fleet is so large that it asks for fewer (daemon/tracker.ts, heartbeatLeaseMs).
    const pingTimer = this.pinger(conn, Math.floor(leaseMs / 3), () => this.conn === conn, () => {
      this.opts.logger.warn({ tracker: label }, `tracker ${label} did not answer a heartbeat; trying the others`);
      this.unresponsive = label;
      conn.destroy();
    });
    this.pingTimer = pingTimer;
    return pingTimer;
  }

  /**
   * PINGs on `conn` every `everyMs` (within 100 ms .. MAX_HEARTBEAT_MS); `silent` runs when an answer did
   * not come in time, while `ours()` holds. How long an answer may take: 750 ms, or two intervals where
   * they are longer (a large fleet's tracker is busier, and leaving it is costlier: all its peers would).
   */
  private pinger(conn: Connection, everyMs: number, ours: () => boolean, silent: () => void): Timer {
    const every = Math.min(Math.max(100, everyMs), MAX_HEARTBEAT_MS);
    const patienceMs = Math.max(HEARTBEAT_PATIENCE_MS, 2 * every);
    return this.clock.setInterval(() => {
      const sentAt = conn.clock.now();
      conn.request('PING', {}, 'PONG', { timeoutMs: patienceMs }).catch(() => {
        // The timeout already waited for this turn's reads (an answer unread behind our own stall is taken:
        // Connection.request); a tracker that sent anything else since the PING is alive too.
        if (!ours() || conn.lastReadAt > sentAt) return;
        silent();
      });
    }, every);
  }

  /** A PING now: a session told a standby's long lease is told the main's heartbeat lease (LEASE) in answer. */
  private askLease(conn: Connection): void {
    conn.request('PING', {}, 'PONG', { timeoutMs: 5000 }).catch(() => undefined);
  }

  private onEvent(name: MessageName, body: unknown): void {
    if (name === 'BLACKLIST_CHANGED') this.emit('blacklist', body as Body<'BLACKLIST_CHANGED'>);
    else if (name === 'TRACKER_CHANGED') {
      const { primary, term } = body as Body<'TRACKER_CHANGED'>;
      this.term = term;
      if (primary) this.mainNamed = primary;
      if (primary === this.current) {
        // A move told of just before (a main in command for a moment) is moot now: left to run, it took
        // this peer to a tracker that sent it straight back, a handshake on each in a storm of them.
        this.moveTimer?.cancel();
        this.moveTimer = undefined;
        this.nextMove = undefined;
        this.moveOnOpen = undefined;
        this.role = 'primary';
        this.preferred = primary;
        if (this.conn) {
          // A session that was a standby was told a long lease (PEER_FEATURES.standby): a PING now brings
          // the main's heartbeat lease (LEASE) at once, not a third of that long lease later.
          this.askLease(this.conn);
          void this.announceOn(this.conn, primary);
        }
      } else if (this.known(primary)) {
        const delayMs = Math.floor(this.random() * this.moveSpreadMs);
        this.opts.logger.info({ primary, term, from: this.current, delayMs }, `told of a new main ${primary}; moving to it in ${delayMs} ms`);
        const conn = this.conn;
        this.moveTimer?.cancel();
        this.moveTimer = this.clock.setTimeout(() => {
          this.moveTimer = undefined;
          if (this.conn === conn && this.state === 'connected') this.switchTo(primary);
        }, delayMs);
      }
    }
  }

  /**
   * Moves to the tracker at `address` (a new main), keeping the session in use until the new one is up:
   * reads go on meanwhile, and a peer is never without a session while it waits its turn at a main that
   * every peer is moving to at once (its handshakes are queued: seconds, in a fleet of thousands). If the
   * new session fails, or its tracker is not main after all, `stay` runs if given (the peer stays where it
   * is). Otherwise, if the new main could not be reached (its handshake queue is long after a takeback),
   * the move is tried again 1-2 s later, up to MOVE_RETRIES times, the session in use kept meanwhile (its
   * reads still work); after that, or if the tracker is not main after all, the peer leaves the session in
   * use, as it did before moves were made this way: the loop reconnects, trying `address` first, and
   * whichever tracker takes it names the main (a peer must not stay on a backup, where the main would drop
   * its files after a lease).
   */
  private switchTo(address: string, stay?: () => void, told = true): void {
    this.preferred = address;
    const from = this.conn;
    if (!from || from.isClosed || address === this.current) return;
    const fromLabel = this.current!;
    const sb = this.standby;
    if (sb && sb.label === address && !sb.conn.isClosed && !this.moving) {
      // The standby's tracker is main: its session becomes the one in use, without a handshake. `told`: the
      // tracker in use (or the standby's own) said so; otherwise the standby's own word counts.
      this.moveTimer?.cancel();
      this.moveTimer = undefined;
      const fromLeaseMs = this.leaseMs;
      this.takeStandby(sb, `moving to the main ${address}`, told ? 'primary' : sb.role);
      this.retire(from, fromLabel, fromLeaseMs);
      return;
    }
    if (this.standbyOpeningTo === address) {
      // A second session with that tracker would replace the first there (one session per peer), so the
      // standby session on its way is used for the move once it is open.
      this.moveOnOpen = { stay, told };
      return;
    }
    if (this.moving) {
      this.nextMove = { address, stay, told }; // made when the move under way ends
      return;
    }
    this.moving = true;
    this.moveTarget = address;
    let moved!: () => void;
    this.moveDone = new Promise<void>((resolve) => (moved = resolve));
    const stillWanted = (): boolean => this.conn === from && !from.isClosed && this.state === 'connected' && this.preferred === address;
    const giveUp = (why: string, unreachable: boolean): void => {
      const again = !stay && unreachable && this.moveRetries < MOVE_RETRIES;
      this.opts.logger.warn({ tracker: address, err: why }, `could not move to the main ${address} (${why}); ${stay ? `staying on ${this.current}` : again ? `trying again, staying on ${this.current} meanwhile` : 'reconnecting'}`);
      if (stay) stay();
      else if (again) {
        this.moveRetries++;
        this.moveTimer?.cancel();
        this.moveTimer = this.clock.setTimeout(() => {
          this.moveTimer = undefined;
          if (this.conn === from && !from.isClosed && this.state === 'connected' && this.preferred === address) this.switchTo(address, undefined, told);
        }, this.moveSpreadMs + Math.floor(this.random() * this.moveSpreadMs));
      } else from.close();
    };
    this.open(parseAddress(address))
      .then(
        ({ conn, welcome }) => {
          if (!stillWanted()) {
            // The session in use ended meanwhile and none took its place: this one does (closing it would
            // make its tracker, a main, drop this peer's files: it is the peer's session there now).
            // The same for a session with this tracker adopted meanwhile: the tracker keeps one of the two.
            if (((!this.conn || this.conn.isClosed) && this.state === 'connecting') || address === this.current) return this.adopt(conn, welcome, address);
            return this.spare(conn, address, welcome);
          }
          if (welcome.role !== 'primary') {
            conn.close();
            return giveUp(`it is ${welcome.role}`, false);
          }
          // The lease `from` was told last (a LEASE may have come during this move's wait): the standby
          // pings at that pace, and its tracker tells a lease only when it differs from what it told.
          const fromLeaseMs = this.leaseMs;
          this.adopt(conn, welcome, address);
          this.retire(from, fromLabel, fromLeaseMs);
        },
        (err: unknown) => {
          if (stillWanted()) giveUp(toP2PError(err).message, true);
        },
      )
      .catch((err: unknown) => {
        // A listener of 'session' or 'state' threw: not this move's business to crash the daemon.
        this.opts.logger.error({ tracker: address, err: toP2PError(err).message }, 'moving to a new main failed');
      })
      .finally(() => {
        this.moving = false;
        this.moveTarget = undefined;
        moved();
        // Asked to move again while this move was under way (told of another main, or on a new session).
        const next = this.nextMove;
        this.nextMove = undefined;
        if (next && next.address !== this.current && next.address === this.preferred && this.conn && !this.conn.isClosed && this.state === 'connected') this.switchTo(next.address, next.stay, next.told);
      });
  }

  /**
   * What this peer's HELLO says it reads (PEER_FEATURES). With standby sessions, every session carries the
   * standby bit, not only those opened as standbys: any session may become one (the one left by a move,
   * one opened in a race and spared), and a backup tells only a session with the bit --lease-ms. Without
   * it, a session opened as the one in use and left as the standby at a takeback was pinged at the main's
   * pace for good (a review of 03e0756).
   */
  private features(): number {
    return this.opts.standby === false || this.opts.trackers.length < 2 ? PEER_FEATURES.lease : PEER_FEATURES.lease | PEER_FEATURES.standby;
  }

  /** Every tracker but the one in use, in rank order. */
  private others(): Address[] {
    return this.opts.trackers.filter((a) => labelOf(a) !== this.current);
  }

  /** The trackers a standby session may be with, best first: rank order, the one in use left out. */
  private standbyCandidates(): Address[] {
    const others = this.others();
    return [...others.filter((a) => labelOf(a) !== this.unresponsive), ...others.filter((a) => labelOf(a) === this.unresponsive)];
  }

  /**
   * The time over which peers open their standby sessions: standbySpreadMs, or STANDBY_SPREAD_LEASES of the
   * main's heartbeat lease, whichever is longer (0: at once). After a takeover every peer opens one with the
   * same tracker, the next in rank. The lease grows with the fleet (up to --lease-ms), so at 5,000 peers on
   * the defaults they come over 20 s, 250 handshakes a second, where 5 s made 1,000 a second, more than a
   * tracker can make (about 2 ms of CPU each); fleets under about 1,300 peers keep the 5 s.
   */
  private standbySpread(): number {
    return this.standbySpreadMs > 0 ? Math.max(this.standbySpreadMs, STANDBY_SPREAD_LEASES * this.mainLeaseMs) : 0;
  }

  /** Opens a standby session (see the top of this file) within `delayMs`, a random spread unless given. */
  private ensureStandby(delayMs?: number): void {
    if (this.opts.standby === false || this.opts.trackers.length < 2) return;
    if (this.standby || this.standbyOpening || this.standbyTimer || this.state !== 'connected') return;
    const wait = delayMs ?? Math.floor(this.random() * this.standbySpread());
    this.standbyTimer = this.clock.setTimeout(() => {
      this.standbyTimer = undefined;
      void this.openStandby();
    }, wait);
  }

  /** Opens a standby session; `replace`: the standby in place, given up once one with a better-ranked tracker is open. */
  private openStandby(replace?: Standby): Promise<void> {
    if ((replace ? this.standby !== replace : this.standby) || this.standbyOpening || this.state !== 'connected') return Promise.resolve();
    this.standbyOpening = true;
    this.standbyOpened = this.openingStandby(replace);
    return this.standbyOpened;
  }

  /**
   * The trackers ranked better than `sb`'s, best first, the one in use left out. By rank alone: a main that
   * stopped answering (its host hung, so the peer marked it unresponsive) is tried too, or its standbys
   * would never come back to it (a review of b9cc2bc).
   */
  private betterThan(sb: Standby): Address[] {
    const others = this.others();
    const at = others.findIndex((a) => labelOf(a) === sb.label);
    return at < 0 ? others : others.slice(0, at);
  }

  /**
   * Tries now and then to move the standby to a better-ranked tracker (see the top of this file), while it
   * is with a worse one. Every 0.5-1.5 times standbyUpgradeMs, so a fleet's standbys come to a returning
   * main spread over that time. A dial to a tracker that is down costs a refused connection.
   */
  private armUpgrade(): void {
    const sb = this.standby;
    if (this.upgradeTimer || this.standbyUpgradeMs <= 0 || !sb || this.state !== 'connected' || this.betterThan(sb).length === 0) return;
    this.upgradeTimer = this.clock.setTimeout(() => {
      this.upgradeTimer = undefined;
      const now = this.standby;
      if (!now) return;
      // Not while a move is under way or waited for, nor when the standby's tracker is the main to move to:
      // replacing it then would cost that move its handshake-free path.
      if (this.moving || this.standbyOpening || this.moveTimer || now.label === this.preferred) this.armUpgrade();
      else void this.openStandby(now);
    }, Math.floor(this.standbyUpgradeMs * (0.5 + this.random())));
  }

  private async openingStandby(replace?: Standby): Promise<void> {
    let kept = false;
    const failures: string[] = [];
    try {
      for (const addr of replace ? this.betterThan(replace) : this.standbyCandidates()) {
        const label = labelOf(addr);
        // Not with the tracker in use or one a move is opening a session with (one session per peer there).
        if (this.state !== 'connected' || (this.standby && this.standby !== replace)) return;
        if (label === this.current || label === this.moveTarget) continue;
        let opened: { conn: Connection; welcome: Body<'WELCOME'> };
        this.standbyOpeningTo = label;
        try {
          opened = await this.open(addr, STANDBY_HELLO_MS);
        } catch (err) {
          this.standbyOpeningTo = undefined;
          failures.push(`${label}: ${toP2PError(err).message}`);
          const move = this.moveOnOpen;
          this.moveOnOpen = undefined;
          // The move waited for this session: it makes its own now.
          if (move && this.state === 'connected' && this.preferred === label) this.switchTo(label, move.stay, move.told);
          continue;
        }
        this.standbyOpeningTo = undefined;
        const move = this.moveOnOpen;
        this.moveOnOpen = undefined;
        const { conn, welcome } = opened;
        if (replace && !move && this.standby === replace && welcome.role !== 'backup' && welcome.role !== 'primary') {
          // Still copying the main's state (it has just returned): it could not win an election yet, so the
          // standby it would replace stays, and it is tried again later.
          conn.close();
          failures.push(`${label}: ${welcome.role}`);
          continue;
        }
        const state = this.state as TrackerClientState;
        if (state === 'closed' || state === 'blacklisted') {
          conn.close();
          return;
        }
        if (this.standby && this.standby !== replace) {
          if (!(move && this.preferred === label)) {
            conn.close();
            move?.stay?.();
            return;
          }
          // A standby came up meanwhile (a session spared), but a move waited for this one: it is used.
          this.dropStandby();
        } else if (this.standby) {
          // The better-ranked tracker answers: the standby moves there, and the one it replaces is closed.
          this.opts.logger.info({ tracker: label, from: this.standby.label }, `standby session moved from ${this.standby.label} to ${label}, better ranked`);
          this.dropStandby();
        }
        if (label === this.current && this.conn && !this.conn.isClosed) {
          // The tracker in use became this one meanwhile: it keeps the newer session (this) and closes the other.
          this.adopt(conn, welcome, label, welcome.role === 'primary');
          return;
        }
        this.keepStandby(conn, label, welcome);
        kept = true;
        if (!this.conn || this.conn.isClosed) {
          // The session in use ended while this one opened: this one takes its place.
          this.promoteStandby('no tracker session');
          return;
        }
        // Asked to move there meanwhile (by a main's word, or if it says it is main), or its tracker is main
        // and ours is not (we were not told yet): move there, without a handshake.
        if (move && this.preferred === label) {
          if (move.told || welcome.role === 'primary') this.switchTo(label, move.stay, move.told);
          else move.stay?.();
        } else if (welcome.role === 'primary' && this.role !== 'primary') this.switchTo(label);
        return;
      }
    } finally {
      this.standbyOpening = false;
      this.standbyOpeningTo = undefined;
      if (kept) this.standbyFailures = 0;
      else if (this.state === 'connected' && !this.standby) {
        this.standbyFailures++;
        const retryMs = Math.min(STANDBY_RETRY_MAX_MS, STANDBY_RETRY_MS * 2 ** Math.min(this.standbyFailures - 1, 5));
        if (failures.length > 0) this.opts.logger.info({ errors: failures, retryMs }, `no standby session (${failures.join('; ')}); trying again in ${retryMs} ms`);
        this.ensureStandby(retryMs);
      } else if (replace && failures.length > 0) this.opts.logger.debug({ errors: failures }, `the standby stays with ${this.standby?.label} (${failures.join('; ')})`);
      this.armUpgrade();
    }
  }

  /**
   * Keeps `conn` as the standby session. It pings every 0.6 of a lease (STANDBY_PING_SHARE), so a backup
   * hears about half as many heartbeats as the main. It follows its tracker's role (TRACKER_CHANGED): when that tracker becomes main,
   * the peer moves to it.
   */
  private keepStandby(conn: Connection, label: string, facts: SessionFacts): void {
    const sb: Standby = { conn, label, role: facts.role, primary: facts.primary, term: facts.term, observedHost: facts.observedHost, leaseMs: facts.leaseMs, ping: undefined as unknown as Timer };
    sb.ping = this.standbyHeartbeat(sb);
    this.standby = sb;
    this.opts.logger.debug({ tracker: label, role: sb.role }, `standby session with ${label}`);
    // A session with it works again: it is no longer tried last.
    if (label === this.unresponsive) this.unresponsive = undefined;
    this.armUpgrade();
    const event = (name: MessageName, body: unknown): void => {
      if (this.standby !== sb) return;
      if (name === 'LEASE') {
        sb.leaseMs = (body as Body<'LEASE'>).leaseMs;
        sb.ping.cancel();
        sb.ping = this.standbyHeartbeat(sb);
      } else if (name === 'TRACKER_CHANGED') {
        const { primary, term } = body as Body<'TRACKER_CHANGED'>;
        sb.term = term;
        sb.primary = primary;
        sb.role = primary === label ? 'primary' : 'backup';
        if (primary === label && this.current !== label && this.state === 'connected') this.switchTo(label);
      }
    };
    const close = (err?: P2PError): void => {
      if (this.standby !== sb) return;
      sb.ping.cancel();
      this.standby = undefined;
      this.opts.logger.info({ tracker: label, err: err?.message }, `standby session with ${label} closed`);
      this.ensureStandby(STANDBY_RETRY_MS + Math.floor(this.random() * this.standbySpread()));
    };
    this.listen(conn, event, close);
  }

  /** A session opened while another with the tracker in use came up: kept as the standby if there is none. */
  private spare(conn: Connection, label: string, facts: SessionFacts): void {
    if (this.opts.standby !== false && !this.standby && label !== this.current && !conn.isClosed && this.state === 'connected') {
      this.keepStandby(conn, label, facts);
      // Its tracker is main and ours is not: move there (no handshake), as from a standby just opened.
      if (facts.role === 'primary' && this.role !== 'primary') this.switchTo(label);
    } else conn.close();
  }

  private standbyHeartbeat(sb: Standby): Timer {
    return this.pinger(sb.conn, Math.floor(sb.leaseMs * STANDBY_PING_SHARE), () => this.standby === sb, () => {
      this.opts.logger.info({ tracker: sb.label }, `standby tracker ${sb.label} did not answer a heartbeat`);
      // Tried last for the next standby, as for a session in use: a frozen tracker's kernel still takes the
      // connection and the TLS handshake would wait out its whole timeout before the next tracker is tried.
      this.unresponsive = sb.label;
      sb.conn.destroy();
    });
  }

  /** Makes the standby session the one in use, if there is one (true then). */
  private promoteStandby(why: string): boolean {
    const sb = this.standby;
    if (!sb || sb.conn.isClosed || this.state === 'closed' || this.state === 'blacklisted') return false;
    this.takeStandby(sb, why, sb.role);
    return true;
  }

  private takeStandby(sb: Standby, why: string, role: string): void {
    this.standby = undefined;
    sb.ping.cancel();
    this.upgradeTimer?.cancel();
    this.upgradeTimer = undefined;
    this.opts.logger.info({ tracker: sb.label, role, from: this.current }, `${why}: the standby session with ${sb.label} is now the one in use`);
    const { conn, label } = sb;
    // A backup takes the files once it is main: it says so (TRACKER_CHANGED), and they are announced then
    // (onEvent). 20,000 peers announcing to a backup every 200 ms while it is elected would be a storm of
    // refused writes. In case it never says so (another tracker became main and this one did not tell),
    // they are announced a little later all the same (announceOn moves on from a backup that names a main).
    const announceNow = role === 'primary';
    this.adopt(conn, { role, primary: sb.primary, term: sb.term, observedHost: sb.observedHost, leaseMs: sb.leaseMs }, label, announceNow, true);
    // Told a standby's long lease: a main tells the heartbeat lease (LEASE) at the first PING (see onEvent).
    if (announceNow) this.askLease(conn);
    if (!announceNow) {
      // By then an election has settled (or the main it names was alive all along: its session ended for
      // another reason): as a session just opened with a backup would, move to the main it names, staying
      // here (and announcing here) if that fails.
      const laterMs = 2 * this.moveSpreadMs + Math.floor(this.random() * this.moveSpreadMs);
      this.clock.setTimeout(() => {
        if (this.conn !== conn || this.state !== 'connected' || this.role === 'primary' || this.moving) return;
        // The main it names now (it may have told of a new one since: onEvent keeps mainNamed).
        const main = this.mainNamed && this.mainNamed !== label && this.known(this.mainNamed) ? this.mainNamed : undefined;
        if (main) this.switchTo(main, () => void this.announceOn(conn, label), false);
        else void this.announceOn(conn, label);
      }, laterMs);
    }
  }

  /**
   * The session left by a move: kept as the standby if its tracker is the best one for that, else closed.
   * `leaseMs`: the lease that tracker told it last.
   */
  private retire(conn: Connection, label: string, leaseMs: number): void {
    const best = this.standbyCandidates()[0];
    if (this.opts.standby !== false && best && labelOf(best) === label && !conn.isClosed && this.state === 'connected') {
      if (this.standby) this.dropStandby();
      this.keepStandby(conn, label, { role: 'backup', primary: this.current ?? '', term: this.term, observedHost: this.observedHost, leaseMs });
      return;
    }
    conn.close();
    this.ensureStandby();
  }

  /** Closes the standby session, and stops opening one. */
  private dropStandby(): void {
    this.standbyTimer?.cancel();
    this.standbyTimer = undefined;
    this.upgradeTimer?.cancel();
    this.upgradeTimer = undefined;
    const sb = this.standby;
    this.standby = undefined;
    if (sb) {
      sb.ping.cancel();
      sb.conn.close();
    }
  }

  /**
   * Announces every file on the session `conn` until that succeeds or the session ends. When the retries
   * run out on a backup that named another tracker as main (the hop there failed at connect time, say, in a
   * takeover's crowd), it moves there; otherwise it tries again a little later. A peer never stays on a
   * backup unannounced, to be swept from the main's lists as gone.
   */
  private async announceOn(conn: Connection, label: string): Promise<void> {
    if (this.announcing.has(conn)) return;
    this.announcing.add(conn);
    try {
      for (;;) {
        try {
          await this.registerAll();
          return;
        } catch (err) {
          if (this.conn !== conn || this.state !== 'connected') return;
          this.opts.logger.warn({ err: (err as Error).message, tracker: label }, 'could not announce files yet');
          if (this.role !== 'primary' && this.preferred && this.preferred !== label && this.known(this.preferred)) {
            this.switchTo(this.preferred, undefined, false);
            return;
          }
          await this.sleep(1000 + Math.floor(this.random() * this.moveSpreadMs));
          if (this.conn !== conn || this.state !== 'connected') return;
        }
      }
    } finally {
      this.announcing.delete(conn);
    }
  }

  /** Announces every shared file (batched). */
  async registerAll(): Promise<void> {
    const files = this.opts.announce();
    if (files.length === 0) return;
    for (let i = 0; i < files.length; i += REGISTER_BATCH) {
      await this.request('REGISTER', { files: files.slice(i, i + REGISTER_BATCH) }, 'OK');
    }
  }

  /** Waits (up to waitMs) for a usable session. */
  private async session(): Promise<Connection> {
    const deadline = this.clock.now() + (this.opts.waitMs ?? PEER_DEFAULTS.trackerWaitMs);
    for (;;) {
      if (this.state === 'closed') throw new P2PError('P2P_SHUTTING_DOWN', 'the peer daemon is shutting down');
      if (this.state === 'blacklisted') {
        // A user's command asks again (at most once a second), so a lifted ban takes effect at once.
        if (this.clock.now() - this.blacklistCheckedAt > 1000) {
          this.blacklistCheckedAt = this.clock.now();
          for (const addr of this.order()) {
            if ((await this.tryConnect(addr)) || this.state === 'blacklisted') break;
          }
        }
        if (this.state === 'blacklisted') throw new P2PError('P2P_BLACKLISTED', `this peer is refused by the tracker: ${this.blacklistReason}`);
      }
      if (this.conn && !this.conn.isClosed) return this.conn;
      const left = deadline - this.clock.now();
      if (left <= 0) {
        const tried = this.opts.trackers.map(labelOf).join(', ');
        throw new P2PError('P2P_CONNECT_FAILED', `no tracker reachable (tried ${tried})${this.lastError ? `; last error: ${this.lastError}` : ''}`);
      }
      void this.loop();
      await new Promise<void>((resolve) => {
        const done = (): void => {
          t.cancel();
          this.waiters.delete(done);
          resolve();
        };
        const t = this.clock.setTimeout(done, Math.min(left, 200));
        this.waiters.add(done);
      });
    }
  }

  /**
   * A request to the tracker in use. If the session is lost, the tracker is not (or no longer) the main,
   * or a takeover is under way, it is tried again, on the next session where needed, for up to retryMs
   * (or `attempts` tries): every tracker request is idempotent.
   */
  async request<N extends MessageName, R extends MessageName>(name: N, body: Body<N>, expect: R, attempts = Infinity): Promise<Body<R>> {
    const deadline = this.clock.now() + (this.opts.retryMs ?? PEER_DEFAULTS.trackerRetryMs);
    let lastErr: P2PError | undefined;
    for (let i = 0; i < attempts; i++) {
      const conn = await this.session();
      try {
        return await conn.request(name, body, expect, { timeoutMs: 5000 });
      } catch (err) {
        const e = toP2PError(err);
        lastErr = e;
        if (e instanceof RemoteError && e.code === 'P2P_BLACKLISTED') {
          this.blacklistReason = e.message;
          this.setState('blacklisted');
          throw e;
        }
        if (!RETRIABLE.has(e.code) || this.clock.now() >= deadline || i + 1 >= attempts) throw e;
        // P2P_NOT_PRIMARY: a takeover is under way; the tracker in use tells us (TRACKER_CHANGED) where
        // the main is once there is one, and we move then.
        if (e.code !== 'P2P_CONNECTION_CLOSED') await this.sleep(Math.min(200, Math.max(0, deadline - this.clock.now())));
      }
    }
    throw lastErr ?? new P2PError('P2P_CONNECT_FAILED', 'tracker request failed');
  }
}
