/**
 * The tracker daemon: knows which peers hold which files and keeps the blacklist. It never carries file
 * data. Sessions, the tracker's part of the handshake (admins, tracker links, the blacklist before
 * WELCOME) and request dispatch live here; the connection limits and the peer handshake are shared with
 * the peer daemon in protocol/server.ts, the replicated state is in state.ts and the cluster (main,
 * backups, takeover) in cluster.ts.
 */
import { EventEmitter } from 'node:events';
import { timingSafeEqual, createHash } from 'node:crypto';
import net from 'node:net';
import type { Logger } from 'pino';
import { LRUCache } from 'lru-cache';
import {
  CLUSTER_ALPN,
  Connection,
  ConnectionLimiter,
  dispatch,
  encodeBody,
  encodeFrame,
  type EncodedBody,
  type HandlerTable,
  type AcceptedConnection,
  formatAddress,
  MAX_REPORT_RECEIPTS,
  normalizeHostForMatch,
  normalizeTarget,
  P2PError,
  PEER_FEATURES,
  peerFeatures,
  Role,
  silentLogger,
  systemClock,
  adminProof,
  ADMIN_BINDING_LABEL,
  channelBinding,
  decodeLinkClaim,
  loadIdentityFile,
  serverContext,
  validateName,
  MAX_SEARCH_HITS,
  type Address,
  type PinnedAddress,
  type TlsIdentity,
  type Body,
  type Clock,
  type Timer,
  type IncomingRequest,
  type MessageName,
  type ServerHandshake,
  type TrackerLinkClaim,
} from '../protocol/index.js';
import path from 'node:path';
import type tls from 'node:tls';
import { ensurePrivateDir } from '../protocol/local-files.js';
import { Cluster, rankOf } from './cluster.js';
import { MemberKeys } from './member-keys.js';
import type { ReportOutcome, SessionRole, TrackerMetrics } from './metrics.js';
import { EVIDENCE_BAD_DATA, planReport, reportChecks, type ReportPolicy } from './reports.js';
import { searchAnswer } from './holders.js';
import { fitPage } from './pages.js';
import { SlicedWork } from './sliced-work.js';
import { RequestGate, type RequestClass } from './request-gate.js';
import { Broadcaster, type Told } from './broadcast.js';
import { TrackerState, type Op, type RegistrationTotals } from './state.js';
import { FleetPeak } from './fleet-peak.js';
import { DEFAULTS } from './defaults.js';
import { Store, type ReportRecord } from './store.js';

export interface TrackerOptions {
  listen: Address;
  /** Every tracker in rank order, this one included (default: listen alone); each may pin its key's id. */
  cluster?: PinnedAddress[];
  dataDir: string;
  /** This tracker's key and certificate (default: DATA/identity.key, made on first start). */
  identity?: TlsIdentity;
  adminToken?: string | undefined;
  /** A frame must arrive whole within this (default 5000 ms). */
  readTimeoutMs?: number;
  heartbeatMs?: number;
  failoverMs?: number;
  reportPolicy?: ReportPolicy;
  /** A peer silent for this long loses its session and holdings. */
  leaseMs?: number;
  /**
   * PINGs a second the peers may send in all: peers ping every 300 ms (so a hung main is left within about
   * a second) until that would be more than this, then less often (see heartbeatLeaseMs).
   */
  peerHeartbeatsPerSecond?: number;
  handshakeTimeoutMs?: number;
  maxConnections?: number;
  maxConnectionsPerIp?: number;
  maxFilesPerRegister?: number;
  /** Files one peer may have registered in all, across its REGISTERs. */
  maxFilesPerPeer?: number;
  /** UTF-8 bytes of the names of one peer's registered files, in all. */
  maxNameBytesPerPeer?: number;
  maxInFlight?: number;
  /** Reports one reporter may file per minute. */
  reportsPerMinute?: number;
  /** Receipt signatures the tracker checks for one reporter per minute (at least MAX_REPORT_RECEIPTS). */
  receiptChecksPerMinute?: number;
  logger?: Logger;
  clock?: Clock;
  /**
   * --takeback-wait-ms: a main hands command back to a returning higher-ranked tracker once that tracker has
   * sessions from nearly all of the main's peers, or after this long at most (0: at once).
   */
  takebackWaitMs?: number;
  /** --takeback-stragglers: peers a returning tracker may lack and still take command back (DEFAULTS.takebackStragglers). */
  takebackStragglers?: number;
  /** --metrics: serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (port 0: a free port). Off when absent. */
  metrics?: Address | undefined;
}

interface Session {
  conn: Connection;
  /** Where its handshake stands (protocol/server.ts). */
  hs: ServerHandshake;
  role: number;
  peerId?: string;
  listenPort: number;
  /** A tracker link: the rank of the tracker at the other end, once its key is checked. */
  trackerRank?: number | undefined;
  /** A peer: the lease it was told last (WELCOME, then LEASE), and whether it reads LEASE (PEER_FEATURES). */
  leaseMs?: number;
  readsLease?: boolean;
  /** It may be a standby (PEER_FEATURES.standby): while this tracker is not main it is told --lease-ms (tellStandbyLease). */
  standby?: boolean;
}

/**
 * A peer's announcements of what it holds and its leaving (what a takeover waits for), and the requests
 * that keep the blacklist working (its sync and checks, reports of bad data: a report refused under load
 * would let a peer serving bad data go unbanned). They wait in a line of their own in the request gate,
 * with its share of the loop's time, instead of behind every lookup and search, and are never refused for
 * having waited.
 */
const URGENT_REQUESTS: ReadonlySet<MessageName> = new Set<MessageName>(['REGISTER', 'UNREGISTER', 'LEAVE', 'BLACKLIST_SYNC', 'BLACKLIST_CHECK', 'REPORT']);

/**
 * Which line of the request gate a peer's request waits in. A SEARCH may cost milliseconds (17 ms for
 * 10,000 hits at 2,000,000 entries) where a LOOKUP costs tens of microseconds: in lines of their own, with
 * shares of the loop's time counted in what their work took, a lookup waits for little more than the
 * request under way however many searches wait.
 */
function requestClass(name: MessageName): RequestClass {
  if (URGENT_REQUESTS.has(name)) return 'urgent';
  return name === 'SEARCH' ? 'heavy' : 'ordinary';
}

/** A standby session with a backup is closed as idle after this many --lease-ms of silence (welcomePeer). */
const STANDBY_IDLE_LEASES = 3;

export class Tracker extends EventEmitter {
  readonly state: TrackerState;
  readonly cluster: Cluster;
  private readonly server: net.Server;
  private readonly sessions = new Set<Session>();
  /** Current session of each peer id (a reconnect replaces the old one). */
  private readonly peerSessions = new Map<string, Session>();
  private readonly limiter: ConnectionLimiter;
  private readonly fleet: FleetPeak;
  private fleetTimer: Timer | undefined;
  private readonly reportBuckets: LRUCache<string, { tokens: number; at: number }>;
  /** Per reporter: the receipt signatures it may still have checked (a token bucket per minute). */
  private readonly receiptCheckBuckets: LRUCache<string, { tokens: number; at: number }>;
  /** Receipt checks and manifest hashing, in slices between the event loop's turns. */
  private readonly reportWork: SlicedWork;
  /** Peers' requests, in stretches between the loop's timers. */
  readonly requests = new RequestGate({
    budgetMs: DEFAULTS.requestStretchMs,
    maxWaitMs: DEFAULTS.requestMaxWaitMs,
    lifoAfterMs: DEFAULTS.requestLifoAfterMs,
    onLeave: (cls, ms) => this.metrics?.requestWaited(cls, ms / 1000),
    shed: (ms) => {
      this.metrics?.overloadRefused();
      this.noteOverload();
      return new P2PError('P2P_OVERLOADED', `the tracker is overloaded: this request waited ${Math.round(ms)} ms for its turn; try again`);
    },
  });
  /** The last BLACKLIST_CHANGED given to the broadcaster, and its changes while it may still take more. */
  private blacklistPush: { changes: Map<string, boolean>; told: Told } | undefined;
  /** Events told to every peer session, a slice of them per turn. */
  private readonly broadcaster = new Broadcaster<Session>({
    perTurn: DEFAULTS.broadcastPerTurn,
    deliver: (s, frame) => {
      if (s.hs.isReady) s.conn.sendFrame(frame);
    },
  });
  private overloadNotedAt = -Infinity;
  private overloadShedAtNote = 0;
  /** Per peer: what its REGISTERs still being committed add, so concurrent ones cannot pass the caps together. */
  private readonly registering = new Map<string, RegistrationTotals>();
  /** Writes about a peer's holdings (register, unregister, drop) proposed here and not yet ended, by peer. */
  private readonly peerWritesInFlight = new Map<string, number>();
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly opts: Required<Omit<TrackerOptions, 'adminToken' | 'identity' | 'logger' | 'clock' | 'cluster' | 'metrics'>>;
  private readonly metricsAt: Address | undefined;
  private metrics: TrackerMetrics | undefined;
  /** This tracker's own key and certificate; its id is what other hosts pin. */
  readonly identity: TlsIdentity;
  private readonly memberKeys: MemberKeys;
  private readonly adminToken: string | undefined;
  /** This tracker's place in --cluster, and how many trackers it lists: what a link's claim is checked against. */
  private readonly selfRank: number;
  private readonly clusterSize: number;
  private readonly adminTokenHash: Buffer | undefined;
  /** The whole blacklist as a BLACKLIST_SYNC answers it, for one version (see wholeBlacklist). */
  private blacklistAnswer: { key: string; body: EncodedBody<'BLACKLIST_STATE'> } | undefined;
  private closing = false;
  address: Address | undefined;

  constructor(options: TrackerOptions) {
    super();
    this.log = options.logger ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    this.opts = {
      listen: options.listen,
      dataDir: options.dataDir,
      heartbeatMs: options.heartbeatMs ?? DEFAULTS.heartbeatMs,
      failoverMs: options.failoverMs ?? DEFAULTS.failoverMs,
      reportPolicy: options.reportPolicy ?? { kind: 'immediate' },
      leaseMs: options.leaseMs ?? DEFAULTS.leaseMs,
      takebackWaitMs: options.takebackWaitMs ?? DEFAULTS.takebackWaitMs,
      takebackStragglers: options.takebackStragglers ?? DEFAULTS.takebackStragglers,
      peerHeartbeatsPerSecond: options.peerHeartbeatsPerSecond ?? DEFAULTS.peerHeartbeatsPerSecond,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
      readTimeoutMs: options.readTimeoutMs ?? DEFAULTS.readTimeoutMs,
      maxConnections: options.maxConnections ?? DEFAULTS.maxConnections,
      maxConnectionsPerIp: options.maxConnectionsPerIp ?? DEFAULTS.maxConnectionsPerIp,
      maxFilesPerRegister: options.maxFilesPerRegister ?? DEFAULTS.maxFilesPerRegister,
      maxFilesPerPeer: options.maxFilesPerPeer ?? DEFAULTS.maxFilesPerPeer,
      maxNameBytesPerPeer: options.maxNameBytesPerPeer ?? DEFAULTS.maxNameBytesPerPeer,
      maxInFlight: options.maxInFlight ?? DEFAULTS.maxInFlight,
      reportsPerMinute: options.reportsPerMinute ?? DEFAULTS.reportsPerMinute,
      // A budget below one full report would refuse honest reports for good.
      receiptChecksPerMinute: Math.max(MAX_REPORT_RECEIPTS, options.receiptChecksPerMinute ?? DEFAULTS.receiptChecksPerMinute),
    };
    this.metricsAt = options.metrics;
    this.adminTokenHash = options.adminToken ? createHash('sha256').update(options.adminToken).digest() : undefined;
    this.adminToken = options.adminToken;
    this.reportBuckets = new LRUCache({ max: 100_000 });
    ensurePrivateDir(options.dataDir, this.log);
    this.receiptCheckBuckets = new LRUCache({ max: 100_000 });
    this.reportWork = new SlicedWork({ unitsPerTurn: DEFAULTS.receiptChecksPerTurn, maxQueuedUnits: DEFAULTS.maxQueuedReceiptChecks });
    this.state = new TrackerState(new Store(options.dataDir));
    this.fleet = new FleetPeak(this.state.store, this.clock);
    this.identity = options.identity ?? loadIdentityFile(path.join(options.dataDir, 'identity.key'));
    this.memberKeys = new MemberKeys(options.cluster ?? [options.listen], this.state.store, this.log, () => Date.now());
    this.cluster = new Cluster({
      identity: this.identity,
      memberKeys: this.memberKeys,
      self: options.listen,
      members: options.cluster ?? [options.listen],
      state: this.state,
      heartbeatMs: this.opts.heartbeatMs,
      failoverMs: this.opts.failoverMs,
      leaseMs: this.opts.leaseMs,
      logger: this.log,
      clock: this.clock,
      isPeerConnected: (peerId) => this.peerSessions.has(peerId),
      peerSessions: () => this.peerSessions.size,
      takebackWaitMs: this.opts.takebackWaitMs,
      takebackStragglers: this.opts.takebackStragglers,
      peersArriving: () => {
        const q = this.limiter.tlsQueue;
        return q.waiting + q.running > 0;
      },
      dropPeer: (peerId) => this.peerWrite(peerId, { op: 'drop-peer', peerId }),
      onApplied: (op) => this.afterApply(op),
      onRoleChange: (from, to) => {
        this.metrics?.roleChanged(from, to);
        // Standby sessions are now sessions with the main: closed after --lease-ms of silence, like all.
        // And the other way: a main that becomes a backup gives them three, as it does at their HELLO.
        const idleMs = to === 'primary' ? this.opts.leaseMs : STANDBY_IDLE_LEASES * this.opts.leaseMs;
        if (to === 'primary' || from === 'primary') for (const s of this.peerSessions.values()) if (s.standby) s.conn.setIdleTimeout(idleMs);
        this.announcePrimary();
      },
      // A backup tells its peers of a new main too: peers keep a standby session with a backup, and one
      // whose main died is on it until it learns where the new main is.
      onFollow: () => this.announcePrimary(),
      onWriteDone: (op, seconds, failure) => this.metrics?.writeDone(op, seconds, failure),
    });
    this.selfRank = rankOf(options.listen, options.cluster ?? [options.listen]);
    this.clusterSize = (options.cluster ?? [options.listen]).length;
    this.limiter = new ConnectionLimiter({
      // Cluster links skip the handshake queue, from the members' addresses only (a member named by host
      // name rather than address waits in the queue like a peer).
      limits: { maxConnections: this.opts.maxConnections, maxConnectionsPerIp: this.opts.maxConnectionsPerIp, handshakeTimeoutMs: this.opts.handshakeTimeoutMs, maxTlsHandshakes: DEFAULTS.maxTlsHandshakes, tlsQueueWaitMs: Math.max(this.opts.handshakeTimeoutMs, DEFAULTS.tlsQueueWaitMs), priorityAlpn: CLUSTER_ALPN, priorityFrom: new Set((options.cluster ?? []).map((a) => normalizeHostForMatch(a.host))) },
      connection: {
        logger: this.log,
        clock: this.clock,
        maxInFlight: this.opts.maxInFlight,
        readTimeoutMs: this.opts.readTimeoutMs,
        idleTimeoutMs: this.opts.leaseMs,
      },
      // One spelling per address, the blacklist's: '::ffff:10.0.0.1' and '10.0.0.1' share one count.
      addressKey: normalizeHostForMatch,
      tls: serverContext(this.identity),
      onRefused: (code) => this.metrics?.refused(code),
      onTlsHandshake: (seconds) => this.metrics?.tlsHandshake(seconds),
    });
    this.server = net.createServer((socket) => this.onSocket(socket));
  }

  async listen(): Promise<Address> {
    // First: a --metrics address that cannot be bound stops the start before the tracker is reachable.
    if (this.metricsAt) {
      const { TrackerMetrics } = await import('./metrics.js');
      this.metrics = await TrackerMetrics.serve(this.metricsAt, { state: this.state, cluster: this.cluster, sessions: () => this.sessionsByRole(), tlsQueue: () => this.limiter.tlsQueue }, this.log);
    }
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        // A deep accept queue (the kernel caps it at net.core.somaxconn): after a takeover thousands of peers
        // connect within a second, and a full queue drops their SYNs for a second's retransmission.
        this.server.listen({ port: this.opts.listen.port, host: this.opts.listen.host, backlog: 4096 }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      await this.metrics?.close();
      throw err;
    }
    const a = this.server.address() as net.AddressInfo;
    this.address = { host: this.opts.listen.host, port: a.port };
    this.cluster.start(this.address);
    // The fleet's size, looked at once a minute too: a fleet whose sessions all last keeps its peak fresh.
    this.fleetTimer = this.clock.setInterval(() => this.fleetNow(), 60_000);
    const { schema } = this.state.store;
    if (schema.applied.length > 0) this.log.info({ from: schema.from, to: schema.to, applied: schema.applied }, 'database schema migrated');
    this.log.info({ listen: formatAddress(this.address.host, this.address.port), role: this.cluster.role, id: this.identity.keys.peerId }, 'tracker listening');
    return this.address;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.fleetTimer?.cancel();
    this.cluster.stop();
    this.reportWork.stop(new P2PError('P2P_SHUTTING_DOWN', 'tracker is shutting down'));
    this.requests.stop(new P2PError('P2P_SHUTTING_DOWN', 'tracker is shutting down'));
    this.broadcaster.stop();
    this.limiter.refuseAll(new P2PError('P2P_SHUTTING_DOWN', 'tracker is shutting down'));
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sessions) s.conn.close(new P2PError('P2P_SHUTTING_DOWN', 'tracker is shutting down'));
    await closed;
    await this.metrics?.close();
    this.fleet.flush();
    this.state.store.close();
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Where --metrics is served (with the port bound), once listening. */
  get metricsAddress(): Address | undefined {
    return this.metrics?.address;
  }

  private sessionsByRole(): Record<SessionRole, number> {
    const counts: Record<SessionRole, number> = { handshake: 0, peer: 0, tracker: 0, admin: 0 };
    for (const s of this.sessions) counts[s.role === Role.peer ? 'peer' : s.role === Role.tracker ? 'tracker' : s.role === Role.admin ? 'admin' : 'handshake']++;
    return counts;
  }

  private onSocket(socket: net.Socket): void {
    this.limiter.accept(socket, (accepted) => this.onAccepted(accepted));
  }

  private onAccepted({ conn, handshake }: AcceptedConnection): void {
    const session: Session = { conn, hs: handshake, role: 0, listenPort: 0 };
    this.sessions.add(session);
    conn.onRequest((req) => this.onRequest(session, req));
    conn.on('close', () => {
      this.sessions.delete(session);
      if (session.peerId && this.peerSessions.get(session.peerId) === session) {
        this.peerSessions.delete(session.peerId);
        if (!this.closing && this.cluster.isPrimary && this.state.hasPeer(session.peerId)) {
          this.peerWrite(session.peerId, { op: 'drop-peer', peerId: session.peerId }).catch((err: unknown) => {
            this.log.warn({ err, peerId: session.peerId }, 'could not drop a departed peer');
          });
        }
      }
    });
  }

  private async onRequest(s: Session, req: IncomingRequest): Promise<void> {
    const { conn } = s;
    if (req.name in this.anytimeRequests) return dispatch(this.anytimeRequests, req, s, 'a handshake request');
    s.hs.requireReady(req);

    if (s.role === Role.tracker) return this.cluster.onTrackerRequest(req, conn, s.trackerRank);
    if (s.role === Role.admin) return this.onAdmin(req, conn);
    return this.requests.run(() => {
      if (conn.isClosed) return undefined;
      // Withdrawn while it waited (the peer timed out and may have asked again): not worth the work.
      if (conn.isCancelled(req.requestId)) throw new P2PError('P2P_TIMEOUT', 'withdrawn by the peer before its turn came');
      return this.onPeerRequest(s, req);
    }, requestClass(req.name));
  }

  /** A warning at most every 10 s while requests are being shed. */
  private noteOverload(): void {
    const now = performance.now();
    if (now - this.overloadNotedAt < 10_000) return;
    this.log.warn({ shed: this.requests.shed - this.overloadShedAtNote, maxWaitMs: DEFAULTS.requestMaxWaitMs, queued: this.requests.queued }, 'overloaded: refusing lookups and searches that waited too long for their turn');
    this.overloadNotedAt = now;
    this.overloadShedAtNote = this.requests.shed;
  }

  /** Requests of every session, before its handshake too. */
  private readonly anytimeRequests: HandlerTable<Session> = {
    PING: (req, s) => {
      this.metrics?.heartbeat();
      s.conn.reply(req.requestId, 'PONG', {});
      if (!s.readsLease) return;
      // A standby with a backup keeps its long lease; once this tracker is main it is told the heartbeat's.
      if (s.standby && !this.cluster.isPrimary) this.tellStandbyLease(s);
      else this.retellLease(s);
    },
    HELLO: (req, s) => this.onHello(s, req),
  };

  private onHello(s: Session, req: IncomingRequest<'HELLO'>): void {
    s.hs.acceptHello();
    const { role, listenPort, link } = req.body;
    s.role = role;
    s.listenPort = listenPort;
    if (role === Role.peer) return this.welcomePeer(s, req);
    if (role === Role.tracker) {
      // TLS proved the dialler's key; it must be the key of the member whose rank it claims.
      const claim = decodeLinkClaim(link);
      const problem = this.linkClaimProblem(claim);
      if (problem || !claim) {
        this.log.warn({ remote: s.conn.remoteAddress, claim }, `tracker link refused: ${problem}`);
        this.metrics?.refused('P2P_UNAUTHORIZED');
        throw new P2PError('P2P_UNAUTHORIZED', `tracker link refused: ${problem}`);
      }
      try {
        this.memberKeys.checkIncoming(claim.from, s.conn.remoteKey);
      } catch (err) {
        this.log.warn({ remote: s.conn.remoteAddress, claim, err: (err as Error).message }, 'tracker link refused');
        this.metrics?.refused(err instanceof P2PError ? err.code : 'P2P_UNAUTHORIZED');
        // Not known yet: dialling that member learns its key; its next attempt then gets in.
        this.cluster.reach(claim.from);
        throw err;
      }
      s.trackerRank = claim.from;
      this.cluster.attach(s.conn, s.trackerRank);
    } else if (role !== Role.admin) throw new P2PError('P2P_BAD_REQUEST', `unknown role ${role}`);
    // Admins send the token with every request; first this tracker proves it knows the token too, for
    // this TLS session only, so that an impostor never gets to read it.
    const proof = role === Role.admin && this.adminToken ? adminProof(this.adminToken, channelBinding(s.conn.socket as tls.TLSSocket, ADMIN_BINDING_LABEL)) : Buffer.alloc(0);
    s.hs.markReady();
    s.conn.reply(req.requestId, 'WELCOME', { peerId: '', observedHost: s.conn.remoteAddress, observedPort: s.listenPort, leaseMs: 0, role: this.cluster.role, term: this.state.term, primary: this.cluster.primaryAddress ?? '', proof });
  }

  /**
   * The answer to a BLACKLIST_SYNC from a peer whose version differs: the whole list, sorted and encoded
   * once per change and shared by every such answer. Each peer that starts, and each one that was away
   * during a change, asks for it: at 100,000 entries building it took ~110 ms of the main's thread
   * (sorting 40, encoding 70), so a thousand peers starting at once cost it two minutes.
   */
  private wholeBlacklist(): EncodedBody<'BLACKLIST_STATE'> {
    // Keyed by the digest (the targets themselves) and the version told with them.
    const key = `${this.state.blacklistDigest()} ${this.state.blacklistVersion}`;
    if (this.blacklistAnswer?.key !== key) {
      const targets = this.state.blacklistTargets().map((target) => ({ target }));
      this.blacklistAnswer = { key, body: encodeBody('BLACKLIST_STATE', { version: this.state.blacklistVersion, changed: true, targets }) };
    }
    return this.blacklistAnswer.body;
  }

  /** Why a tracker link's claim cannot be a link from another member of --cluster to this tracker. */
  private linkClaimProblem(claim: TrackerLinkClaim | undefined): string | undefined {
    if (!claim) return 'its HELLO claims no ranks (a tracker sends its own rank and the rank it dials)';
    if (claim.to !== this.selfRank) return `it dialled rank ${claim.to}, but this tracker is rank ${this.selfRank}: the --cluster lists differ`;
    if (claim.from === this.selfRank) return `it claims rank ${claim.from}, which is this tracker's own`;
    if (claim.from >= this.clusterSize) return `it claims rank ${claim.from}, but --cluster lists ${this.clusterSize} trackers`;
    return undefined;
  }

  /** A peer's HELLO: its id is the key TLS proved; a blacklisted peer is refused. */
  private welcomePeer(s: Session, req: IncomingRequest<'HELLO'>): void {
    const peerId = s.hs.peerId(req, 'a peer must present the certificate of its Ed25519 key');
    const banned = this.state.isBanned(peerId, s.conn.remoteAddress);
    if (banned) {
      this.log.info({ peerId, remote: s.conn.remoteAddress }, 'blacklisted peer refused');
      this.metrics?.refused('P2P_BLACKLISTED');
      const err = new P2PError('P2P_BLACKLISTED', `blacklisted: ${banned.reason || 'by an administrator'}`);
      s.conn.replyError(req.requestId, err);
      s.conn.close(err);
      return;
    }
    s.peerId = peerId;
    s.hs.markReady();
    const previous = this.peerSessions.get(peerId);
    this.peerSessions.set(peerId, s);
    if (previous && previous !== s) previous.conn.close(new P2PError('P2P_CONNECTION_CLOSED', 'replaced by a newer session of the same peer'));
    const features = peerFeatures(req.body.link);
    s.readsLease = (features & PEER_FEATURES.lease) !== 0;
    s.standby = s.readsLease && (features & PEER_FEATURES.standby) !== 0;
    // A standby session with a backup pings only to stay open: told the silence it may keep (--lease-ms),
    // and given three times that before it is closed as idle (a busy peer's pings come late; the whole fleet
    // would otherwise reconnect through the handshake queue after a stall of its own). Once this tracker is
    // main, the limit is --lease-ms again (roleChanged).
    s.leaseMs = s.standby && !this.cluster.isPrimary ? this.opts.leaseMs : this.heartbeatLeaseMs();
    if (s.standby && !this.cluster.isPrimary) s.conn.setIdleTimeout(STANDBY_IDLE_LEASES * this.opts.leaseMs);
    s.conn.reply(req.requestId, 'WELCOME', {
      peerId,
      observedHost: s.conn.remoteAddress,
      observedPort: s.listenPort,
      leaseMs: s.leaseMs,
      role: this.cluster.role,
      term: this.state.term,
      primary: this.cluster.primaryAddress ?? '',
      proof: Buffer.alloc(0),
    });
  }

  private onPeerRequest(s: Session, req: IncomingRequest): void | Promise<void> {
    if (this.state.isBanned(s.peerId!, s.conn.remoteAddress)) {
      throw new P2PError('P2P_BLACKLISTED', 'this peer is blacklisted');
    }
    return dispatch(this.peerRequests, req, s, 'a peer request');
  }

  /** A peer's requests, one handler per message (after its HELLO, and while it is not blacklisted). */
  private readonly peerRequests: HandlerTable<Session> = {
    REGISTER: async (req, s) => {
      const { conn } = s;
      const peerId = s.peerId!;
      this.cluster.requirePrimary();
      const { files } = req.body;
      if (files.length > this.opts.maxFilesPerRegister) {
        throw new P2PError('P2P_TOO_MANY_FILES', `${files.length} files in one registration; the limit is ${this.opts.maxFilesPerRegister}`);
      }
      for (const f of files) validateName(f.name);
      const reg = files.map((f) => ({ id: f.id.toString('hex'), size: f.size, name: f.name, complete: f.complete }));
      const peer = { peerId, publicKey: conn.remoteKey!.toString('hex'), host: conn.remoteAddress, port: s.listenPort };
      // A peer announces everything again on each session (after a takeover, 20,000 of them at once): when
      // the main already holds exactly that, as of every write it has applied, there is nothing to write.
      if (this.settledFor(peerId) && this.state.holders.holdsExactly(peer, reg)) {
        this.metrics?.reannounced();
        conn.reply(req.requestId, 'OK', {});
        return;
      }
      const adds = this.reserveRegistration(peerId, reg);
      try {
        await this.peerWrite(peerId, { op: 'register', peer, files: reg });
      } finally {
        this.releaseRegistration(peerId, adds);
      }
      conn.reply(req.requestId, 'OK', {});
      return;
    },
    UNREGISTER: async (req, s) => {
      const { conn } = s;
      const peerId = s.peerId!;
      this.cluster.requirePrimary();
      const { all, ids } = req.body;
      await this.peerWrite(peerId, { op: 'unregister', peerId, ids: all ? 'all' : ids.map((x) => x.id.toString('hex')) });
      conn.reply(req.requestId, 'OK', {});
      return;
    },
    LEAVE: async (req, s) => {
      const { conn } = s;
      const peerId = s.peerId!;
      if (this.cluster.isPrimary && this.state.hasPeer(peerId)) await this.peerWrite(peerId, { op: 'drop-peer', peerId });
      conn.reply(req.requestId, 'OK', {});
      return;
    },
    SEARCH: (req, s) => {
      const { conn } = s;
      const startedAt = performance.now();
      const { text, limit } = req.body;
      conn.reply(req.requestId, 'SEARCH_RESULT', searchAnswer(this.state.search(text, Math.min(Math.max(limit, 1), MAX_SEARCH_HITS))));
      this.metrics?.search((performance.now() - startedAt) / 1000);
      return;
    },
    LOOKUP: (req, s) => {
      const { conn } = s;
      const startedAt = performance.now();
      const found = this.state.lookup(req.body.id.toString('hex'));
      if (!found) {
        this.metrics?.lookup((performance.now() - startedAt) / 1000, false);
        throw new P2PError('P2P_NOT_FOUND', 'no peer holds that file');
      }
      conn.reply(req.requestId, 'LOOKUP_RESULT', {
        size: found.size,
        peers: found.holders
          .filter((h) => !this.state.isBanned(h.peerId, h.host))
          .map((h) => ({ peerId: h.peerId, publicKey: Buffer.from(h.publicKey, 'hex'), host: h.host, port: h.port, complete: h.complete })),
      });
      this.metrics?.lookup((performance.now() - startedAt) / 1000, true);
      return;
    },
    BLACKLIST_SYNC: (req, s) =>
      this.afterPushes(() => {
        const { conn } = s;
        // A peer (re)connected: it may have missed pushes while it had no session here. A peer of this
        // release sends the digest of the list it holds (kept across its restarts): the same digest, the
        // same targets, so nothing is sent. A 0.1 peer sends back the version it was last told; that is the
        // list's term.index, which only moves forward, so it matches only while nothing changed. (A digest
        // told to a 0.1 peer could match again after a change and its undoing, while the pushes it got and
        // missed left its list different: it is never told one.)
        const { version } = req.body;
        if (version === this.state.blacklistDigest() || version === this.state.blacklistVersion) {
          conn.reply(req.requestId, 'BLACKLIST_STATE', { version: this.state.blacklistVersion, changed: false, targets: [] });
        } else conn.replyEncoded(req.requestId, this.wholeBlacklist());
      }),
    BLACKLIST_CHECK: (req, s) =>
      this.afterPushes(() => {
        const { conn } = s;
        const { peerId: who, host } = req.body;
        const entry = this.state.isBanned(who, host);
        conn.reply(req.requestId, 'BLACKLIST_VERDICT', { banned: !!entry, reason: entry?.reason ?? '' });
      }),
    REPORT: async (req, s) => {
      let outcome: ReportOutcome = 'refused';
      try {
        outcome = await this.onReport(s, req);
      } finally {
        this.metrics?.report(outcome);
      }
      return;
    },
  };

  /**
   * The lease told to a peer in WELCOME; a peer sends a PING every third of it. 900 ms (a ping every
   * 300 ms) while the peers this cluster knows, at that rate, stay within --peer-heartbeats-per-s; beyond
   * that the pings slow down in step with the fleet, and so does leaving a main that hangs (a main that
   * dies is left at once: its connections close). Never above --lease-ms, after which a silent session is
   * closed. Peers counted: those registered (replicated state, so a new main tells its peers the same from
   * the start), those with a session here, or the most seen lately (FleetPeak, kept in --data), whichever
   * is more. Connections not yet past their handshake do not count: anyone can open those. A peer of this
   * release is told a new lease when its fleet has grown or shrunk since (retellLease); a 0.1 peer keeps
   * the one told in WELCOME.
   */
  private heartbeatLeaseMs(): number {
    const peers = this.fleetNow();
    const intervalMs = Math.max(300, Math.ceil((1000 * peers) / this.opts.peerHeartbeatsPerSecond));
    return Math.min(this.opts.leaseMs, 3 * intervalMs);
  }

  /**
   * After a PING: a peer told a lease for a fleet much smaller (or larger) than the one there is now is told
   * the lease of now (LEASE), so its heartbeats keep to --peer-heartbeats-per-s as a fleet arrives at once.
   * Checked at its PINGs, so the news spreads over one round of them rather than in one burst.
   */
  private retellLease(s: Session): void {
    const leaseMs = this.heartbeatLeaseMs();
    const told = s.leaseMs ?? leaseMs;
    // Off by a quarter or more: the fleet's PINGs stay within 1.25 times --peer-heartbeats-per-s.
    if (leaseMs * 4 >= told * 5 || told * 4 >= leaseMs * 5) {
      s.leaseMs = leaseMs;
      s.conn.sendEvent('LEASE', { leaseMs });
    }
  }

  /**
   * After a PING on a backup, from a peer that keeps standby sessions: told the heartbeat lease while this
   * tracker was main, it is told --lease-ms now. At a takeback a peer keeps its session with the acting main
   * as its standby; without this, the whole fleet went on pinging that backup at the main's pace.
   */
  private tellStandbyLease(s: Session): void {
    if (s.leaseMs === this.opts.leaseMs) return;
    s.leaseMs = this.opts.leaseMs;
    s.conn.sendEvent('LEASE', { leaseMs: s.leaseMs });
  }

  /** The peers to expect now (see heartbeatLeaseMs). */
  private fleetNow(): number {
    return this.fleet.expected(Math.max(this.state.holders.sizes().peers, this.peerSessions.size));
  }

  /** Commits a write about one peer's holdings, counting it as in flight for that peer until it ends. */
  private async peerWrite(peerId: string, op: Op): Promise<void> {
    this.peerWritesInFlight.set(peerId, (this.peerWritesInFlight.get(peerId) ?? 0) + 1);
    try {
      await this.cluster.commit(op);
    } finally {
      const left = this.peerWritesInFlight.get(peerId)! - 1;
      if (left > 0) this.peerWritesInFlight.set(peerId, left);
      else this.peerWritesInFlight.delete(peerId);
    }
  }

  /**
   * Whether this main's holder lists are final for `peerId`: it has applied an entry of its own term (so
   * every entry of earlier mains), and no write about that peer is in flight here.
   */
  private settledFor(peerId: string): boolean {
    return this.cluster.isPrimary && this.state.appliedTerm === this.cluster.term && !this.peerWritesInFlight.has(peerId);
  }

  /**
   * Checks a REGISTER against the per-peer caps, counting what this peer's REGISTERs still in flight add,
   * and reserves what this one adds until it is committed. The cap is enforced here, on the main, before
   * the write is proposed: backups apply the log as it is.
   */
  private reserveRegistration(peerId: string, files: ReadonlyArray<{ id: string; name: string }>): RegistrationTotals {
    const now = this.state.registrationTotals(peerId);
    const after = this.state.registrationTotals(peerId, files);
    const pending = this.registering.get(peerId) ?? { files: 0, nameBytes: 0 };
    const adds = { files: Math.max(0, after.files - now.files), nameBytes: Math.max(0, after.nameBytes - now.nameBytes) };
    const { maxFilesPerPeer, maxNameBytesPerPeer } = this.opts;
    if (adds.files > 0 && after.files + pending.files > maxFilesPerPeer) {
      throw new P2PError('P2P_REGISTRATION_QUOTA', `this registration would bring this peer to ${after.files + pending.files} files; a peer may register at most ${maxFilesPerPeer}`);
    }
    if (adds.nameBytes > 0 && after.nameBytes + pending.nameBytes > maxNameBytesPerPeer) {
      throw new P2PError('P2P_REGISTRATION_QUOTA', `this registration would bring this peer's file names to ${after.nameBytes + pending.nameBytes} bytes; a peer may register at most ${maxNameBytesPerPeer}`);
    }
    this.registering.set(peerId, { files: pending.files + adds.files, nameBytes: pending.nameBytes + adds.nameBytes });
    return adds;
  }

  private releaseRegistration(peerId: string, adds: RegistrationTotals): void {
    const pending = this.registering.get(peerId);
    if (!pending) return;
    pending.files -= adds.files;
    pending.nameBytes -= adds.nameBytes;
    if (pending.files <= 0 && pending.nameBytes <= 0) this.registering.delete(peerId);
  }

  /** Takes `n` tokens from `key`'s bucket, which refills to `perMinute` over a minute; false (taking none) when short. */
  private takeTokens(buckets: LRUCache<string, { tokens: number; at: number }>, key: string, perMinute: number, n: number): boolean {
    const now = this.clock.now();
    const b = buckets.get(key) ?? { tokens: perMinute, at: now };
    b.tokens = Math.min(perMinute, b.tokens + ((now - b.at) / 60_000) * perMinute);
    b.at = now;
    const ok = b.tokens >= n;
    if (ok) b.tokens -= n;
    buckets.set(key, b);
    return ok;
  }

  /** Decides a report and answers it; resolves with what it came to (for --metrics). */
  private async onReport(s: Session, req: IncomingRequest<'REPORT'>): Promise<Exclude<ReportOutcome, 'refused'>> {
    this.cluster.requirePrimary();
    const reporter = s.peerId!;
    if (!this.takeTokens(this.reportBuckets, reporter, this.opts.reportsPerMinute, 1)) {
      throw new P2PError('P2P_RATE_LIMITED', `more than ${this.opts.reportsPerMinute} reports a minute from this peer`);
    }
    const body = req.body;
    validateReason(body.reason);
    // The caps and the choice of receipts cost nothing; the signatures are checked in slices (issue 10),
    // within the reporter's budget and the tracker's queue.
    const plan = planReport(body, reporter);
    if (!this.reportWork.canTake(plan.units)) {
      throw new P2PError('P2P_RATE_LIMITED', 'the tracker is busy checking other reports; try again in a few seconds');
    }
    if (!this.takeTokens(this.receiptCheckBuckets, reporter, this.opts.receiptChecksPerMinute, plan.signatureChecks)) {
      throw new P2PError('P2P_RATE_LIMITED', `this report needs ${plan.signatureChecks} receipt checks, more than this peer has left of its ${this.opts.receiptChecksPerMinute} a minute`);
    }
    const checked = await this.reportWork.run(plan.units, reportChecks(plan));
    const badData = body.evidence === EVIDENCE_BAD_DATA;
    // Evidence of bad data condemns exactly the peers it proves; a user's report names every peer served.
    const targets = (badData ? checked.badData : checked.servedBy).filter((t) => t !== reporter);
    if (targets.length === 0) throw new P2PError('P2P_BAD_EVIDENCE', 'the receipts name no other peer');
    const policy = this.opts.reportPolicy;
    const now = this.clock.wallNow();
    const toBan: string[] = [];
    const pending: string[] = [];
    if (badData || policy.kind === 'immediate') toBan.push(...targets);
    else if (policy.kind === 'review') pending.push(...targets);
    else {
      for (const t of targets) {
        const reporters = new Set(this.state.store.reportersOf(t));
        reporters.add(reporter);
        (reporters.size >= policy.k ? toBan : pending).push(t);
      }
    }
    const status = toBan.length > 0 && pending.length === 0 ? 'blacklisted' : toBan.length > 0 ? 'partly blacklisted' : 'pending';
    await this.cluster.commit({
      op: 'report',
      report: {
        id: `${this.state.term}:${this.state.seq + 1}:${reporter}`,
        reporter,
        fileId: body.fileId.toString('hex'),
        reason: body.reason,
        targets,
        evidence: body.evidence,
        time: now,
        status,
      },
    });
    for (const target of toBan) {
      if (this.state.isBanned(target, '')) continue;
      // A lone main commits at once: without this, a report naming hundreds of peers would write them all
      // in one turn of the event loop.
      await new Promise((resolve) => setImmediate(resolve));
      await this.cluster.commit({
        op: 'blacklist-add',
        entry: { target, reason: badData ? `sent data that fails verification (reported by ${reporter})` : `reported by ${reporter}: ${body.reason}`, since: now, addedBy: `report:${reporter}` },
      });
    }
    this.log.info({ reporter, targets, toBan, pending, evidence: body.evidence }, 'report accepted');
    s.conn.reply(req.requestId, 'REPORT_RESULT', { blacklisted: toBan.map((target) => ({ target })), pending: pending.map((target) => ({ target })) });
    return status;
  }

  private checkAdmin(token: string, what: string, conn: Connection): void {
    if (!this.adminTokenHash) {
      throw new P2PError('P2P_UNAUTHORIZED', 'this tracker has no admin token configured (--admin-token-file); admin commands are refused');
    }
    const given = createHash('sha256').update(token).digest();
    if (!timingSafeEqual(given, this.adminTokenHash)) {
      this.log.warn({ remote: conn.remoteAddress, request: what }, 'admin request with a wrong token');
      throw new P2PError('P2P_UNAUTHORIZED', 'wrong admin token');
    }
  }

  private onAdmin(req: IncomingRequest, conn: Connection): void | Promise<void> {
    const body = req.body as { token?: string };
    if (typeof body.token !== 'string') throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name} is not an admin request`);
    this.checkAdmin(body.token, req.name, conn);
    return dispatch(this.adminRequests, req, conn, 'an admin request');
  }

  /** An admin's requests (each carries the token, checked first), one handler per message. */
  private readonly adminRequests: HandlerTable<Connection> = {
    ADMIN_STATUS: async (req, conn) => {
      conn.reply(req.requestId, 'ADMIN_STATUS_RESULT', { trackers: await this.cluster.status() });
    },
    ADMIN_BLACKLIST_LIST: (req, conn) => {
      conn.reply(req.requestId, 'ADMIN_BLACKLIST', { entries: this.state.blacklistEntries() });
    },
    ADMIN_BLACKLIST_ADD: async (req, conn) => {
      this.cluster.requirePrimary();
      const { target, reason } = req.body;
      const t = normalizeTarget(target);
      validateReason(reason);
      if (!this.state.listed(t)) {
        await this.cluster.commit({ op: 'blacklist-add', entry: { target: t, reason, since: this.clock.wallNow(), addedBy: `admin@${conn.remoteAddress}` } });
      }
      conn.reply(req.requestId, 'OK', {});
    },
    ADMIN_BLACKLIST_REMOVE: async (req, conn) => {
      this.cluster.requirePrimary();
      const t = normalizeTarget(req.body.target);
      if (!this.state.listed(t)) throw new P2PError('P2P_NOT_FOUND', `${t} is not on the blacklist`);
      await this.cluster.commit({ op: 'blacklist-rm', target: t, by: `admin@${conn.remoteAddress}`, time: this.clock.wallNow() });
      conn.reply(req.requestId, 'OK', {});
    },
    ADMIN_REPORTS: (req, conn) => {
      conn.reply(req.requestId, 'ADMIN_REPORTS_RESULT', { reports: this.state.store.reports().map(reportEntry) });
    },
    ADMIN_BLACKLIST_PAGE: (req, conn) => {
      const { after, limit } = req.body;
      conn.reply(req.requestId, 'ADMIN_BLACKLIST_PAGE_RESULT', this.state.blacklistPage(after, pageLimit(limit), ADMIN_PAGE_BYTES));
    },
    ADMIN_REPORTS_PAGE: (req, conn) => {
      const { after, limit } = req.body;
      const max = pageLimit(limit);
      // One more than the page holds: whether another page follows.
      const reports = this.state.store.reportsAfter(parseReportCursor(after), max + 1);
      const { page, more } = fitPage(reports, max, ADMIN_PAGE_BYTES, (r) => 64 + Buffer.byteLength(r.reporter) + Buffer.byteLength(r.reason) + r.targets.reduce((n, t) => n + Buffer.byteLength(t) + 1, 0) + r.status.length);
      const last = page.at(-1);
      conn.reply(req.requestId, 'ADMIN_REPORTS_PAGE_RESULT', { reports: page.map(reportEntry), next: more && last ? `${last.time}/${last.id}` : '' });
    },
  };

  /** Side effects of an applied op on live sessions (on the main and on backups alike). */
  private afterApply(op: Op): void {
    if (op.op === 'blacklist-add') {
      const target = op.entry.target;
      for (const s of this.sessions) {
        if (s.role !== Role.peer || !s.peerId) continue;
        if (s.peerId === target || normalizeHostForMatch(s.conn.remoteAddress) === target) {
          s.conn.close(new P2PError('P2P_BLACKLISTED', `blacklisted: ${op.entry.reason}`));
        }
      }
      this.pushBlacklistChange(target, true);
    } else if (op.op === 'blacklist-rm') {
      this.pushBlacklistChange(op.target, false);
    }
  }

  /** The peer sessions now: who an event for all is told to (daemon/broadcast.ts). */
  private peerTargets(): Session[] {
    const targets: Session[] = [];
    for (const s of this.sessions) if (s.role === Role.peer) targets.push(s);
    return targets;
  }

  /**
   * Tells every peer of a ban (`added`) or its lifting. A change made while the last BLACKLIST_CHANGED
   * has not started out is folded into it, the later change of a target winning: a burst of bans (a
   * script) goes out as one event, not one event of 17,000 writes each.
   */
  private pushBlacklistChange(target: string, added: boolean): void {
    const open = this.blacklistPush;
    if (open && !open.told.started) {
      open.changes.delete(target);
      open.changes.set(target, added);
      return;
    }
    const changes = new Map([[target, added]]);
    const told = this.broadcaster.send(() => {
      const body: Body<'BLACKLIST_CHANGED'> = { added: [], removed: [] };
      for (const [t, a] of changes) (a ? body.added : body.removed).push({ target: t });
      return encodeFrame('BLACKLIST_CHANGED', 0, body);
    }, this.peerTargets());
    this.blacklistPush = { changes, told };
  }

  /**
   * Runs `answer` once the events already queued for every peer have been told, so that a session never
   * gets a push older than an answer it has (a BLACKLIST_SYNC answer, then the ban it already lists).
   */
  private afterPushes(answer: () => void): void | Promise<void> {
    if (this.broadcaster.idle) return answer();
    return new Promise((resolve, reject) => {
      this.broadcaster.afterQueued(() => {
        try {
          answer();
          resolve();
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  /** Tells every peer session of the main (only the latest matters); a tracker that lost command without knowing the next stops naming itself. */
  private announcePrimary(): void {
    const primary = this.cluster.primaryAddress;
    if (!primary) return this.broadcaster.cancel('TRACKER_CHANGED');
    const body = { primary, term: this.state.term };
    this.broadcaster.send(() => encodeFrame('TRACKER_CHANGED', 0, body), this.peerTargets(), 'TRACKER_CHANGED');
  }
}

/** An admin page holds at most this many entries, and about this many bytes (a frame holds 8 MiB). */
const ADMIN_PAGE_ENTRIES = 5000;
const ADMIN_PAGE_BYTES = 4 * 1024 * 1024;

function pageLimit(asked: number): number {
  return Math.min(Math.max(asked, 1), ADMIN_PAGE_ENTRIES);
}

/** ADMIN_REPORTS_PAGE's cursor: `time/id` of the last report given ('' for the first page). */
function parseReportCursor(after: string): { time: number; id: string } | undefined {
  if (after === '') return undefined;
  const m = /^(\d{1,16})\/(.+)$/.exec(after);
  if (!m) throw new P2PError('P2P_BAD_REQUEST', 'not a cursor this tracker gave (time/id)');
  return { time: Number(m[1]), id: m[2]! };
}

function reportEntry(r: ReportRecord): Body<'ADMIN_REPORTS_RESULT'>['reports'][number] {
  return { reporter: r.reporter, fileId: Buffer.from(r.fileId, 'hex'), reason: r.reason, targets: r.targets.join(','), evidence: r.evidence, time: r.time, status: r.status };
}

function validateReason(reason: string): void {
  if (reason.length > 500) throw new P2PError('P2P_BAD_REQUEST', 'reason longer than 500 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(reason)) throw new P2PError('P2P_BAD_REQUEST', 'reason contains control characters');
}
